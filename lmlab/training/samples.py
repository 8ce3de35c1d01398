"""The end-of-run samples: the configured prompts decoded, printed, saved as ``samples.txt`` and
handed to the trackers while they are still open (an MLflow artifact, TensorBoard text, a W&B
table; ``Tracker.log_samples``)."""

from __future__ import annotations

import warnings
from pathlib import Path

from lmlab.config import RunConfig
from lmlab.errors import LmlabError
from lmlab.generate import complete
from lmlab.training.trackers import Tracker, samples_text


def write_samples(model, tokenizer, cfg: RunConfig, run_dir: Path, trackers: Tracker, step: int) -> None:
    """Decode ``sample.prompts``, print the samples, save ``samples.txt``, log them at ``step``."""
    try:
        texts = complete(model, tokenizer, cfg.sample.prompts, cfg.sample)
    except LmlabError as e:  # e.g. a prompt the char tokenizer cannot encode: the run is still good
        warnings.warn(f"no samples written: sample.prompts: {e}", stacklevel=2)
        return
    block = samples_text(texts)
    (run_dir / "samples.txt").write_text(block + "\n", encoding="utf-8")
    print(block)
    trackers.log_samples(list(cfg.sample.prompts), texts, step)

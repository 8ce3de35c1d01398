"""A run dir read as a model: the saved config in today's schema, then (model, tokenizer, config,
snapshot). Above the registry and ``configure`` (it builds the family's model); ``rundir``
below it is storage only.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lmlab import rundir
from lmlab.configure import validate_config
from lmlab.devices import resolve_device
from lmlab.errors import LmlabError
from lmlab.init_from import checkpoint_config  # re-exported: readers of a run dir use it
from lmlab.registry import build_model
from lmlab.tokenizers import load_tokenizer


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", snapshot: str = "latest"):
    """Rebuild (model, tokenizer, run config, snapshot) from a run dir alone, model in eval mode;
    ``snapshot``: ``latest`` (the newest whole one) or ``best`` (lowest validation loss)."""
    device = resolve_device(device)  # before any reading: a device this build lacks is one line
    if snapshot not in ("latest", "best"):
        raise LmlabError(f"snapshot {snapshot!r}: use latest or best")
    run_dir, named = rundir.resolve_run_path(run_dir)
    if named is not None:  # a snapshot folder given by path: that one, not the newest
        snap = rundir.named_snapshot(named)
    else:
        snap = rundir.best_snapshot(run_dir) if snapshot == "best" else rundir.latest_snapshot(run_dir)
    cfg = validate_config(checkpoint_config(snap.meta), source=str(snap.path / rundir.META))
    tokenizer = load_tokenizer(rundir.tokenizer_dir(run_dir))
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise LmlabError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} ids but the checkpoint's model expects "
            f"{cfg.model.vocab_size}; the run dir mixes files of different runs"
        )
    model = build_model(cfg.model).to(device)
    snap.load_weights(model)
    model.eval()
    return model, tokenizer, cfg, snap

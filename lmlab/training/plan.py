"""What an entry point decides about a run, as one object the trainer takes.

``lmlab train``, the continuous trainer (``python main.py``) and ``LM.fit`` differ only in
this plan: how the run starts (continue the run dir's latest snapshot, or a warm start from
another snapshot's weights), where its data comes from (the config's sources, or token arrays
prepared in memory) and the snapshot layout it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmlab import rundir
from lmlab.config import RunConfig
from lmlab.data.cache import TokenArrays
from lmlab.tokenizers import Tokenizer


@dataclass
class PreparedData:
    """Data made outside the config's sources (``lmlab.TextData``): the tokenizer and the
    train/val token arrays, used instead of reading ``cfg.data`` and fitting ``cfg.tokenizer``."""

    tokenizer: Tokenizer
    arrays: TokenArrays


@dataclass
class TrainPlan:
    """One run of the trainer.

    ``warm_start``: None continues ``config.train.out_dir``'s latest snapshot when there is one
    (else starts fresh); a snapshot starts from its weights alone (loaded tolerantly, positions
    extended to ``model.block_size``), keeping the run dir's tokenizer, with a fresh optimizer,
    schedule and data position. ``train.init_from`` is a warm start too (``resume.InitWeights``:
    its tokenizer is written into the run dir first). ``data``: None reads ``config.data`` and fits
    ``config.tokenizer``. ``layout`` names the snapshots; ``meta`` is added to every meta.json.
    """

    config: RunConfig
    warm_start: rundir.Snapshot | Any | None = None
    data: PreparedData | None = None
    layout: rundir.Layout = rundir.CORE
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def resume_command(self) -> str:
        """What the user runs to continue after an interrupt."""
        if self.layout is rundir.CORE:
            return f"lmlab train --resume {self.config.train.out_dir}"
        return "python main.py (or lmlab run)"

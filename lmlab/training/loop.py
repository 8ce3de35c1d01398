"""The trainer's entry point: ``train(plan)`` sets up the processes and runs a :class:`Trainer`.

Every entry point (``lmlab train``, ``lmlab.train``, the continuous trainer, ``LM.fit``) builds
a :class:`TrainPlan` and calls this; the parts live beside it: ``trainer.py`` (the step loop),
``parallel.py`` (none | ddp | fsdp), ``checkpoint.py`` (snapshots through the strategy),
``state.py`` (the resumable state by parts: what ``trainer.pt`` holds), ``metrics.py`` (the
logged rows), ``trackers.py`` (where they go), ``precision.py`` (autocast, loss scaling, TF32),
``batch_probe.py`` (``batch_size: auto``), ``data.py`` (tokenizer, token arrays, sampler),
``budget.py`` (max_steps / max_tokens / epochs as steps), ``windows.py`` (the training windows
as a Dataset), ``resume.py`` (whether a checkpoint continues with this config; warm starts).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from lmlab import rundir
from lmlab.config import RunConfig
from lmlab.devices import resolve_backend
from lmlab.fsio import user_io
from lmlab.registry import get_family
from lmlab.training.budget import resolve_budget
from lmlab.training.distributed import setup_distributed, teardown_distributed
from lmlab.training.parallel import resolve_parallel, single_process_group
from lmlab.training.plan import PreparedData, TrainPlan
from lmlab.training.precision import backend_flags
from lmlab.training.resume import check_resumable, warm_model
from lmlab.training.trainer import Trainer

__all__ = ["PreparedData", "TrainPlan", "Trainer", "check_resumable", "resolve_budget", "train", "warm_model"]


def train(plan: TrainPlan | RunConfig) -> Path:
    """Run ``plan`` (a bare config: continue its run dir, or start it) and return the run dir."""
    if isinstance(plan, RunConfig):
        plan = TrainPlan(plan)
    t = plan.config.train
    get_family(plan.config.model.family)  # an unknown family fails before any process group exists
    # A caller that joined the group itself (lmlab compare: one group for every arm) keeps it:
    # a second init_process_group in one torchrun job cannot reconnect.
    owned = not torch.distributed.is_initialized()
    info = setup_distributed(t.device, t.distributed.backend)
    try:
        group = (single_process_group(info, resolve_backend(t.distributed.backend, info.device))
                 if resolve_parallel(t, info.world) == "fsdp" else contextlib.nullcontext())
        # Rank 0 holds the run dir's lock for the whole run (ranks of one job share the dir).
        lock = rundir.locked(t.out_dir) if info.is_main else contextlib.nullcontext()
        # A full disk or a read-only file met anywhere in the run (metrics, config, samples) is the
        # user's to fix: one line; the snapshot writer says more where it happens (rundir.py).
        with user_io("training", "; the snapshots saved before are kept"), lock, group, backend_flags(t):
            return Trainer(plan, info).fit()
    finally:
        if owned:
            teardown_distributed()


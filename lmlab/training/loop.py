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
import dataclasses
from pathlib import Path

import torch

from lmlab import rundir
from lmlab.config import RunConfig
from lmlab.devices import resolve_backend
from lmlab.fsio import check_path, user_io
from lmlab.registry import get_family
from lmlab.training.budget import resolve_budget
from lmlab.training.distributed import setup_distributed, teardown_distributed
from lmlab.training.parallel import resolve_parallel, single_process_group
from lmlab.training.plan import PreparedData, TrainPlan
from lmlab.training.precision import backend_flags
from lmlab.training.resume import InitWeights, check_resumable, init_weights, warm_model
from lmlab.training.trainer import Trainer

__all__ = ["PreparedData", "TrainPlan", "Trainer", "check_paths", "check_resumable", "resolve_budget", "train",
           "warm_model"]


def train(plan: TrainPlan | RunConfig) -> Path:
    """Run ``plan`` (a bare config: continue its run dir, or start it) and return the run dir."""
    if isinstance(plan, RunConfig):
        plan = TrainPlan(plan)
    t = plan.config.train
    if t.init_from is not None and plan.warm_start is None and not rundir.has_checkpoint(t.out_dir):
        plan = dataclasses.replace(plan, warm_start=init_weights(plan.config))  # a new run from those weights
    get_family(plan.config.model.family)  # an unknown family fails before any process group exists
    # A caller that joined the group itself (lmlab compare: one group for every arm) keeps it:
    # a second init_process_group in one torchrun job cannot reconnect.
    owned = not torch.distributed.is_initialized()
    info = setup_distributed(t.device, t.distributed.backend)
    try:
        group = (single_process_group(info, resolve_backend(t.distributed.backend, info.device))
                 if resolve_parallel(t, info.world) == "fsdp" else contextlib.nullcontext())
        # Rank 0 checks the paths (what the others read, rank 0 may be making: compare's tokenizer)
        # and holds the run dir's lock for the whole run (ranks of one job share the dir).
        if info.is_main:
            check_paths(plan)
        lock = rundir.locked(t.out_dir) if info.is_main else contextlib.nullcontext()
        # A full disk or a read-only file met anywhere in the run (metrics, config, samples) is the
        # user's to fix: one line; the snapshot writer says more where it happens (rundir.py).
        with user_io("training", "; the snapshots saved before are kept"), lock, group, backend_flags(t):
            if info.is_main and isinstance(plan.warm_start, InitWeights):
                plan.warm_start.place_tokenizer(t.out_dir)  # the weights' own, read as the run's
            return Trainer(plan, info).fit()
    finally:
        if owned:
            teardown_distributed()


def check_paths(plan: TrainPlan) -> None:
    """Every path of the run's config, checked before anything is read or written
    (``fsio.check_path``: one line each for empty, a symlink loop, a file in the way, a pipe, the
    wrong one of file and folder, an output that cannot be made). ``train.out_dir`` is checked
    where it is locked (``rundir.locked``: never inside another run dir)."""
    cfg = plan.config
    paths = []  # (value, key, role, how to fix it)
    if plan.data is None:  # data prepared in memory reads neither a tokenizer nor a cache
        paths += [(cfg.tokenizer.model_path, "tokenizer.model_path", "need_dir", "give a tokenizer folder (RUN/tokenizer)")]
        if cfg.data.token_cache:
            paths += [(cfg.data.token_cache_dir, "data.token_cache_dir", "out_dir", "give a folder")]
    if "tensorboard" in cfg.train.trackers:
        paths += [(cfg.train.tensorboard.log_dir, "train.tensorboard.log_dir", "out_dir", "give a folder")]
    if "wandb" in cfg.train.trackers:
        paths += [(cfg.train.wandb.dir, "train.wandb.dir", "out_dir", "give a folder")]
    # A family's own path fields (``ModelConfig.path_fields``: field -> role), and the fields its
    # train flags declare paths (read, must exist).
    fields = {f: "need_any" for f, spec in type(cfg.model).train_flags.items() if spec.get("path")}
    fields.update(type(cfg.model).path_fields)
    paths += [(getattr(cfg.model, f, None), f"model.{f}", role,
               "give a file name" if role.startswith("out") else "give a file or a run dir") for f, role in fields.items()]
    # What a fresh run reads at its start (a tokenizer, a stage-1 base), a resumed one has already.
    resuming = plan.warm_start is None and rundir.has_checkpoint(cfg.train.out_dir)
    for value, key, role, give in paths:
        if value is not None and not (resuming and not role.startswith("out")):
            check_path(value, key, role, give)

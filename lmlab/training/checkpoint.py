"""Save and load the training state of a run through the parallel strategy's state dicts.

What goes where (``rundir.py`` owns the layout, rotation and integrity checks):

- ``model.safetensors``: the whole model's weights, always, so ``sample``, ``eval``,
  ``export-gpt2`` and ``lmlab.load`` read any snapshot on one process;
- ``trainer.pt``: the trainer's resumable state, the union of its parts' state dicts
  (``state.py``): step, tokens, clocks, best loss, data position, every rank's RNG, loss scaler
  and (unsharded strategies, ``save_optimizer_state: true``) the optimizer state;
- ``dcp/`` (FSDP): the model and optimizer shards as a ``torch.distributed.checkpoint``
  folder, every rank writing its own; it reloads at any world size, with or without FSDP.

A snapshot is written collectively: rank 0 stages the temporary folder and tells the others its
name, every rank writes its shards there, then rank 0 writes the rest and rotates it in.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmlab import rundir
from lmlab.errors import LmlabError
from lmlab.training.distributed import DistInfo, barrier
from lmlab.training.optim import optimizer_parts
from lmlab.training.parallel import Parallel
from lmlab.training.state import TrainerState

DCP_DIR = "dcp"


class Checkpointer:
    """Writes and reads snapshots of one run for one parallel strategy.

    ``consolidated()`` is the plain module whose weights are the model's: the model itself
    unless the strategy shards it, then a CPU copy built by ``make_model`` and refreshed from
    the gathered full state dict (rank 0 only).
    """

    def __init__(self, run_dir: Path, layout: rundir.Layout, parallel: Parallel, info: DistInfo,
                 make_model: Callable[[], nn.Module], save_optimizer: bool = True):
        self.run_dir, self.layout, self.parallel, self.info = run_dir, layout, parallel, info
        self.make_model, self.save_optimizer = make_model, save_optimizer
        self._copy: nn.Module | None = None

    # ------------------------------------------------------------------------------- saving

    def snapshot_bytes(self, model: nn.Module) -> int:
        """About how many bytes one snapshot takes: the weights, AdamW's two moments when the
        optimizer state is saved, and under FSDP the DCP shards of both as well."""
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        optimizer = 2 * weights if self.save_optimizer else 0
        shards = weights + optimizer if self.parallel.sharded_state else 0
        return weights + optimizer + shards + (64 << 10)  # + headers, trainer state, meta

    def check_room(self, model: nn.Module, step: int, max_steps: int, save_interval: int) -> None:
        """Rank 0, before training: the run dir's filesystem holds every snapshot this run will
        have on disk at once (three kept + one being written, at most), or a one-line refusal."""
        if not self.info.is_main:
            return
        if step >= max_steps:
            return
        # steps in (step, max_steps] that save: multiples of the interval, and the last one
        saves = max_steps // save_interval - step // save_interval + (max_steps % save_interval != 0)
        existing = sum((self.run_dir / "checkpoints" / n).is_dir() for n in self.layout.names)
        more = min(existing + saves, len(self.layout.names) + 1) - existing
        if more > 0:
            rundir.check_room(self.run_dir, self.snapshot_bytes(model), more)

    def consolidated(self) -> nn.Module | None:
        """The whole model as a plain module on rank 0 (a collective under a sharding strategy;
        None on other ranks)."""
        if not self.parallel.sharded_state:
            return self.parallel.model if self.info.is_main else None
        full = self.parallel.full_state_dict()  # every rank takes part in the gather
        if not self.info.is_main:
            return None
        if self._copy is None:
            with torch.random.fork_rng(devices=[]):  # its init must not move the run's random streams
                self._copy = self.make_model()
        self._copy.load_state_dict(full)
        return self._copy.eval()

    def save(self, optimizer: torch.optim.Optimizer, meta_fn: Callable[[nn.Module], dict[str, Any]],
             state: TrainerState) -> None:
        """Write one snapshot (every rank calls it): ``meta_fn(model)`` gives its meta.json,
        ``state.state_dict()`` its trainer.pt (a collective: every rank's RNG, ZeRO's shards)."""
        trainer_state = state.state_dict()
        tmp = self._stage()
        extra: tuple[str, ...] = ()
        if self.parallel.sharded_state:
            extra = self._save_shards(tmp, optimizer)
        model = self.consolidated()
        if not self.info.is_main:
            return
        rundir.commit_snapshot(tmp, model, meta_fn(model), trainer_state, self.layout, extra)
        model.on_checkpoint()

    def _stage(self) -> Path | None:
        """Rank 0 makes the temporary folder; under a sharding strategy every rank learns its name."""
        tmp = [str(rundir.stage_snapshot(self.run_dir)) if self.info.is_main else None]
        if self.parallel.sharded_state and self.info.world > 1:
            dist.broadcast_object_list(tmp, src=0)
        return Path(tmp[0]) if tmp[0] is not None else None

    def _save_shards(self, tmp: Path, optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
        # deferred: torch.distributed.checkpoint takes ~1 s to import; only sharded strategies use it
        import torch.distributed.checkpoint as dcp

        # deferred: as above
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.parallel.model, optimizer_parts(optimizer))
        state = {"model": model_sd, **({"optim": optim_sd} if self.save_optimizer else {})}
        dcp.save(state, checkpoint_id=tmp / DCP_DIR)
        barrier(self.info)  # every shard is on disk before rank 0 lists and checksums them
        return tuple(sorted(f"{DCP_DIR}/{p.name}" for p in (tmp / DCP_DIR).iterdir()))

    # ------------------------------------------------------------------------------ loading

    def load_model(self, snap: rundir.Snapshot, model: nn.Module) -> None:
        """Before the strategy wraps the model: the consolidated weights (a sharded strategy
        reads a snapshot's shards after wrapping instead, in ``load_state``)."""
        if not (self.parallel.sharded_state and self.has_shards(snap)):
            snap.load_weights(model)

    @staticmethod
    def has_shards(snap: rundir.Snapshot) -> bool:
        return f"{DCP_DIR}/.metadata" in snap.meta.get("sha256", {})

    def load_state(self, snap: rundir.Snapshot, optimizer: torch.optim.Optimizer, state: TrainerState) -> bool:
        """After wrapping: the model shards and ``snap``'s trainer.pt into ``state``'s parts (the
        optimizer among them); False, loading nothing, for a weights-only snapshot (e.g. an
        imported GPT-2)."""
        if rundir.TRAINER not in snap.meta.get("sha256", {}):
            return False
        saved = snap.load_trainer_state()
        with_optimizer = saved.get("optimizer_saved", True)
        if self.has_shards(snap):
            self._load_shards(snap, optimizer, with_optimizer)
        elif self.parallel.sharded_state:
            raise LmlabError(f"{snap.path} was saved without parallel: fsdp (its optimizer state is in trainer.pt); "
                             "continue it with parallel: none or ddp, or start a new run dir with fsdp")
        state.load_state_dict(saved)
        if not with_optimizer:
            warnings.warn(f"{snap.path} has no optimizer state (train.save_optimizer_state: false): resuming at "
                          f"step {saved['step']} with a fresh optimizer, so the run is not bit-identical to an "
                          "uninterrupted one", stacklevel=2)
        return True

    def _load_shards(self, snap: rundir.Snapshot, optimizer: torch.optim.Optimizer, with_optimizer: bool) -> None:
        # deferred: torch.distributed.checkpoint takes ~1 s to import; only DCP snapshots need it
        import torch.distributed.checkpoint as dcp

        # deferred: as above
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model = self.parallel.model
        model_sd, optim_sd = get_state_dict(model, optimizer_parts(optimizer))
        state = {"model": model_sd, **({"optim": optim_sd} if with_optimizer else {})}
        # DCP reshards: the shards of a run at world N load into this run's layout (any world
        # size, sharded or not); without a process group it reads on this process alone.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load(state, checkpoint_id=snap.path / DCP_DIR)
        if with_optimizer:
            set_state_dict(model, optimizer_parts(optimizer), model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            # deferred: as above (torch.distributed.checkpoint)
            from torch.distributed.checkpoint.state_dict import set_model_state_dict

            set_model_state_dict(model, state["model"])

"""The trainer's resumable state, by parts: ``trainer.pt`` is the union of the parts' state dicts.

Each part gives ``state_dict()`` and takes ``load_state_dict(state)`` (torch's ``Stateful``
protocol, as torchtitan's trainer is one) and owns fixed top-level keys of ``trainer.pt``:

    progress   step, tokens_seen             the loop counters
    clock      wall_s, aside_s               training seconds over every resume; of them, the
                                             seconds spent evaluating and saving
    best       best_val_loss, best_step      the lowest validation loss so far (train.save_best)
    data       data                          {"step", "epoch", "sampler"}: the sampler's position
    schedule   schedule                      {"kind", "step", "max_steps"}: a record for readers
    scaler     scaler                        the loss scaler's state ({} when it is off)
    optimizer  optimizer, optimizer_saved    the optimizer through the strategy (a sharded one
                                             keeps it in the snapshot's DCP shards instead)
    rng        rng                           every rank's RNG state, stacked by rank

``load_state_dict`` gets the whole saved dict and reads its own keys; a key an older snapshot
lacks (``wall_s``, ``aside_s`` and ``best_*`` came later) takes its fresh value, so every
snapshot lmlab wrote still loads. :class:`TrainerState` collects the parts (their keys never
overlap) and loads them in order, the RNG last: another world size reseeds it by the step.
``state_dict()`` is a collective (the RNG gather, ZeRO's consolidation): every rank calls it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

from lmlab.data.mixing import MixtureSampler
from lmlab.training.distributed import DistInfo, gather_to_all
from lmlab.training.parallel import Parallel

SCHEDULE_KINDS = {"cosine": "warmup_cosine", "wsd": "warmup_stable_decay"}


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class Progress:
    """The loop counters: optimizer steps taken and tokens seen (over every rank)."""

    def __init__(self) -> None:
        self.step, self.tokens_seen = 0, 0

    def advance(self, tokens: int) -> None:
        self.step += 1
        self.tokens_seen += tokens

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "tokens_seen": self.tokens_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens_seen = int(state["step"]), int(state["tokens_seen"])


class Clock:
    """``wall_s``: training seconds over every resume (``train.max_seconds`` counts them);
    ``aside_s``: of those, the seconds spent evaluating and saving; ``train_s`` is the rest."""

    def __init__(self) -> None:
        self.wall_s, self.aside_s = 0.0, 0.0
        self._started, self._wall0 = time.perf_counter(), 0.0

    @property
    def train_s(self) -> float:
        return self.wall_s - self.aside_s

    def start(self) -> None:
        """The loop starts (or resumes): seconds from now add to the saved ``wall_s``."""
        self._started, self._wall0 = time.perf_counter(), self.wall_s

    def tick(self) -> float:
        self.wall_s = self._wall0 + time.perf_counter() - self._started
        return self.wall_s

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Time spent inside counts as evaluating and saving."""
        started = time.perf_counter()
        yield
        self.aside_s += time.perf_counter() - started

    def state_dict(self) -> dict[str, Any]:
        return {"wall_s": self.wall_s, "aside_s": self.aside_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wall_s = float(state.get("wall_s", 0.0))  # absent before lmlab kept it
        self.aside_s = float(state.get("aside_s", 0.0))


class BestLoss:
    """The lowest validation loss so far and its step (None: none yet), which
    ``checkpoints/best`` holds; a resume keeps comparing against it."""

    def __init__(self) -> None:
        self.val_loss, self.step = math.inf, None

    def improves(self, val_loss: float) -> bool:
        return math.isfinite(val_loss) and val_loss < self.val_loss

    def update(self, val_loss: float, step: int | None) -> None:
        self.val_loss, self.step = float(val_loss), step

    def state_dict(self) -> dict[str, Any]:
        return {"best_val_loss": self.val_loss, "best_step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.update(state.get("best_val_loss", math.inf), state.get("best_step"))


class DataPosition:
    """The sampler's position (cursors, mixing weights, the data layout it was drawn from); the
    step and epoch beside it are for readers of ``trainer.pt``."""

    def __init__(self, sampler: MixtureSampler, progress: Progress):
        self.sampler, self.progress = sampler, progress

    def state_dict(self) -> dict[str, Any]:
        step = self.progress.step
        return {"data": {"step": step, "epoch": step // self.sampler.steps_per_epoch,
                         "sampler": self.sampler.state_dict()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["data"]["sampler"])


class ScheduleRecord:
    """The learning-rate schedule, recorded: the rate is a function of the step and the budget
    (``optim.lr_at``), so nothing loads back."""

    def __init__(self, kind: str, progress: Progress, max_steps: int):
        self.kind, self.progress, self.max_steps = SCHEDULE_KINDS[kind], progress, max_steps

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": {"kind": self.kind, "step": self.progress.step, "max_steps": self.max_steps}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ScalerState:
    """The loss scaler (fp16): its scale and growth tracker; ``{}`` when it is off."""

    def __init__(self, scaler: torch.amp.GradScaler):
        self.scaler = scaler

    def state_dict(self) -> dict[str, Any]:
        return {"scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class OptimizerState:
    """The optimizer through the strategy: ``optimizer`` (the whole state, on rank 0, when an
    unsharded strategy saves it) and ``optimizer_saved`` (``train.save_optimizer_state``). A
    sharded strategy's optimizer is in the snapshot's DCP shards, which the checkpointer reads
    and writes with the model's."""

    def __init__(self, parallel: Parallel, optimizer: torch.optim.Optimizer, save: bool):
        self.parallel, self.optimizer, self.save = parallel, optimizer, save

    def state_dict(self) -> dict[str, Any]:
        state = self.parallel.optimizer_state(self.optimizer) if self.save else None  # a collective
        return {**({"optimizer": state} if state is not None else {}), "optimizer_saved": self.save}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "optimizer" in state:
            self.parallel.load_optimizer_state(self.optimizer, state["optimizer"])


def rng_state(info: DistInfo) -> dict[str, torch.Tensor]:
    """Every rank's RNG state, stacked by rank: {"torch": (world, n), "cuda": (world, m)}."""
    state = {"torch": gather_to_all(torch.get_rng_state(), info)}
    if info.device.type == "cuda":
        state["cuda"] = gather_to_all(torch.cuda.get_rng_state(info.device), info)
    return state


def restore_rng(rng: dict[str, torch.Tensor], info: DistInfo, seed: int, step: int) -> None:
    """Put this rank's saved RNG state back; with another world size, reseed by (seed, rank, step)."""
    if rng["torch"].size(0) != info.world:
        warnings.warn(
            f"the checkpoint was saved by {rng['torch'].size(0)} processes, this run has {info.world}: "
            "random streams (dropout) restart from the seed, so the run is not bit-identical",
            stacklevel=2,
        )
        torch.manual_seed(seed + 1000 * step + info.rank)
        return
    # clone(): a row of the stacked states is a view at an offset, which set_rng_state reads from
    # its storage's start (rank 1 of 2 crashed with a segfault resuming without it).
    torch.set_rng_state(rng["torch"][info.rank].clone())
    if info.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"][info.rank].clone(), info.device)


class RngState:
    """Every rank's random streams (dropout), so a resumed run draws the same numbers."""

    def __init__(self, info: DistInfo, seed: int, progress: Progress):
        self.info, self.seed, self.progress = info, seed, progress

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state(self.info)}  # a collective

    def load_state_dict(self, state: dict[str, Any]) -> None:
        restore_rng(state["rng"], self.info, self.seed, self.progress.step)


class TrainerState:
    """The parts, by name, in load order: ``state_dict()`` is their union (a key owned twice is
    an internal error), ``load_state_dict`` hands the saved dict to each."""

    def __init__(self, **parts: Stateful):
        self.parts = parts

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, part in self.parts.items():
            state = part.state_dict()
            if out.keys() & state.keys():
                raise RuntimeError(f"trainer state part {name} repeats the keys {sorted(out.keys() & state.keys())}")
            out.update(state)
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for part in self.parts.values():
            part.load_state_dict(state)

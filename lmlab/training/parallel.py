"""Data parallelism: the only file that touches torch.distributed's model and optimizer wrappers.

``build_parallel(train_cfg, info)`` picks one strategy for ``train.parallel``:

- ``none``  one process; the model as it is.
- ``ddp``   ``DistributedDataParallel`` (torchrun); optionally ``ZeroRedundancyOptimizer``
            (``train.distributed.zero_optimizer``) to shard the AdamW state over the ranks.
- ``fsdp``  FSDP2 (``fully_shard``): each of the family's ``shard_units()`` (its blocks) and then
            the root are sharded over the ranks, with a mixed-precision policy for bf16/fp16 and
            optional CPU offload. Works at world size 1 too (a one-process group).

Each strategy gives the trainer the same few operations: wrap the model for the forward, switch
gradient sync per micro-batch, clip the global grad norm, and move model / optimizer state in and
out of checkpoints (``checkpoint.py`` decides where it goes on disk). The step loop never asks
which one it has.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh

from lmlab.config import TrainConfig
from lmlab.errors import LmlabError
from lmlab.training.distributed import DistInfo
from lmlab.training.optim import build_optimizer, param_groups, use_fused


class Parallel:
    """One process, no wrapper: also the base whose methods the others override."""

    name = "none"
    # Snapshots keep model and optimizer as a torch.distributed.checkpoint (DCP) folder of
    # per-rank shards instead of trainer.pt's optimizer state.
    sharded_state = False
    # Every rank must run each forward together (FSDP all-gathers weights inside forward), so
    # rank-0-only work (diagnostics, samples) runs on a consolidated copy or on every rank.
    collective_forward = False

    def __init__(self, cfg: TrainConfig, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.model: nn.Module | None = None

    def prepare(self, model: nn.Module) -> None:
        """Take ``model`` (its weights loaded): a sharding strategy shards it in place here, before
        the optimizer is built over its parameters."""
        self.model = model

    def wrap(self) -> nn.Module:
        """What the step calls forward on (after the family's ``on_train_start``)."""
        return torch.compile(self.model) if self.cfg.compile else self.model

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(model, self.cfg, self.info.device)

    def sync(self, fwd: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Context for one micro-batch's forward + backward: gradients are reduced over the ranks
        only on the ``last`` micro-batch of a step."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm over every rank's gradients; returns the norm before."""
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The whole model's weights (a collective; every rank calls it, rank 0 uses it)."""
        return self.model.state_dict()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The optimizer's whole state for ``trainer.pt`` on rank 0 (a collective; every rank
        calls it). None on other ranks."""
        return optimizer.state_dict() if self.info.is_main else None

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)


class DDP(Parallel):
    """``DistributedDataParallel`` over torchrun's ranks; ZeRO shards the AdamW state."""

    name = "ddp"

    def wrap(self) -> nn.Module:
        fwd = super().wrap()
        ids = [self.info.device.index] if self.info.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(fwd, device_ids=ids)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if not self.cfg.distributed.zero_optimizer:
            return super().build_optimizer(model)
        # deferred: torch.distributed.optim takes ~1 s to import; only ZeRO uses it
        from torch.distributed.optim import ZeroRedundancyOptimizer

        t = self.cfg
        # Each rank builds AdamW over its share of the same two groups (optim.param_groups).
        return ZeroRedundancyOptimizer(param_groups(model, t), optimizer_class=torch.optim.AdamW, lr=t.lr,
                                       betas=(t.beta1, t.beta2), fused=use_fused(t, self.info.device))

    def sync(self, fwd: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        # DDP all-reduces in backward; skipping it on all but the last micro-batch saves
        # (accum - 1) all-reduces per step and gives the same summed gradient.
        return contextlib.nullcontext() if last else fwd.no_sync()

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        if self.cfg.distributed.zero_optimizer:
            optimizer.consolidate_state_dict(to=0)  # a collective: each rank sends its shard
        return super().optimizer_state(optimizer)


class FSDP(Parallel):
    """FSDP2: parameters, gradients and optimizer state sharded per block over the ranks."""

    name = "fsdp"
    sharded_state = True
    collective_forward = True

    def prepare(self, model: nn.Module) -> None:
        # deferred: FSDP's modules take ~0.6 s to import; only parallel: fsdp uses them
        from torch.distributed.fsdp import (
            CPUOffloadPolicy,
            MixedPrecisionPolicy,
            OffloadPolicy,
            fully_shard,
            register_fsdp_forward_method,
        )

        self.model = model
        if self.info.world > 1:
            # Ranks seed their RNG by rank, so their fresh weights differ; DDP broadcasts rank 0's
            # at construction and fully_shard does not: start every rank from rank 0's.
            with torch.no_grad():
                for t in [*model.parameters(), *model.buffers()]:
                    dist.broadcast(t.data, src=0)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.cfg.precision)
        # Weights are gathered in the compute dtype; gradients are reduced in fp32 so the
        # averaged gradient is the same as DDP's up to the forward's rounding.
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
        offload = CPUOffloadPolicy() if self.cfg.fsdp.cpu_offload else OffloadPolicy()
        mesh = init_device_mesh(self.info.device.type, (self.info.world,))
        kw = {"mesh": mesh, "mp_policy": mp, "offload_policy": offload}
        for unit in model.shard_units():
            if self.cfg.compile:  # compile per block before sharding (the graph breaks at FSDP's hooks)
                unit.compile()
            fully_shard(unit, reshard_after_forward=self.cfg.fsdp.reshard_after_forward, **kw)
        fully_shard(model, reshard_after_forward=self.cfg.fsdp.reshard_after_forward, **kw)
        # Methods other than forward that read the weights gather them like forward does.
        for method in ("log_probs", "diagnostics"):
            register_fsdp_forward_method(model, method)

    def wrap(self) -> nn.Module:
        return self.model  # sharded in place; blocks were compiled before sharding

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.cfg.precision != "fp16":
            return super().build_optimizer(model)
        # The sharded loss scaler hands fused AdamW a (1,)-shaped found_inf it cannot take; the
        # foreach AdamW lets the scaler skip an overflowing step itself.
        if self.cfg.fused_adamw is True:
            raise LmlabError("train.fused_adamw = true does not work with precision fp16 under parallel: fsdp "
                             "(the sharded loss scaler); set fused_adamw: auto or false, or use bf16")
        return build_optimizer(model, self.cfg.model_copy(update={"fused_adamw": False}), self.info.device)

    def sync(self, fwd: nn.Module, last: bool) -> contextlib.AbstractContextManager:
        # Reduce-scatter only after the last micro-batch; earlier ones accumulate unsharded grads.
        fwd.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        from torch.distributed.tensor import DTensor  # deferred: FSDP's modules (as in prepare)

        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        return norm.full_tensor() if isinstance(norm, DTensor) else norm  # a DTensor over the mesh

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        # deferred: torch.distributed.checkpoint takes ~1 s to import; only FSDP gathers through it
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        return None  # sharded, in the snapshot's DCP folder

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        raise LmlabError("this snapshot keeps its optimizer state in trainer.pt (saved without parallel: fsdp); "
                         "continue it with parallel: none or ddp, or start a new run dir with fsdp")


STRATEGIES: dict[str, Callable[[TrainConfig, DistInfo], Parallel]] = {"none": Parallel, "ddp": DDP, "fsdp": FSDP}


def resolve_parallel(cfg: TrainConfig, world: int) -> str:
    """The strategy name for ``train.parallel`` at this world size; a contradiction is one line."""
    mode = cfg.parallel
    if mode == "auto":
        mode = "ddp" if world > 1 else "none"
    if mode == "ddp" and world < 2:
        raise LmlabError("train.parallel = ddp needs a distributed launch (torchrun --nproc_per_node N ...); "
                         "use parallel: auto or none for one process")
    if mode == "none" and world > 1:
        raise LmlabError(f"train.parallel = none but this process was launched with WORLD_SIZE={world}; "
                         "use parallel: auto, ddp or fsdp, or run without torchrun")
    if cfg.distributed.zero_optimizer and mode == "fsdp":
        raise LmlabError("train.distributed.zero_optimizer is for parallel: ddp; fsdp already shards the "
                         "optimizer state, so drop zero_optimizer")
    return mode


def check_parallel(cfg: TrainConfig, info: DistInfo, model_cls: type, family: str) -> str:
    """Refuse, before anything is written, what this strategy cannot do here."""
    mode = resolve_parallel(cfg, info.world)
    if mode in model_cls.unsupported_parallel:
        raise LmlabError(f"train.parallel = {mode}: the {family} family cannot train sharded: "
                         f"{model_cls.unsupported_parallel[mode]}")
    if cfg.fsdp.cpu_offload and mode == "fsdp" and info.device.type != "cuda":
        raise LmlabError("train.fsdp.cpu_offload moves shards between a GPU and CPU memory; on a CPU device "
                         "they are in CPU memory already, so set it to false")
    return mode


def build_parallel(cfg: TrainConfig, info: DistInfo, mode: str) -> Parallel:
    return STRATEGIES[mode](cfg, info)


@contextlib.contextmanager
def single_process_group(info: DistInfo, backend: str) -> Iterator[None]:
    """A one-rank process group for FSDP without torchrun (world size 1); nothing if one exists."""
    if dist.is_initialized() or info.world > 1:
        yield
        return
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()

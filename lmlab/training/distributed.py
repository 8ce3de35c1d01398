"""torchrun-aware setup: rank, world size and device; gloo on CPU, nccl on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lmlab.devices import resolve_backend, resolve_device


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str, backend: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        name = resolve_backend(backend, dev)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=name)
    return DistInfo(rank, world, local_rank, dev)


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``x`` over ranks (identity in a single process)."""
    if info.world > 1:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        x /= info.world
    return x


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``x`` over ranks, returned on x's device (identity in a single process)."""
    if info.world == 1:
        return x
    y = x.to(info.device)  # nccl only reduces CUDA tensors
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y.to(x.device)


def all_reduce_max(x: float, info: DistInfo) -> float:
    """The largest ``x`` over ranks (``x`` in a single process)."""
    if info.world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def any_rank(flags: list[bool], info: DistInfo) -> list[bool]:
    """Each flag OR-ed over ranks, in one all-reduce (``flags`` in a single process)."""
    if info.world == 1:
        return flags
    t = torch.tensor(flags, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.world > 1:
        dist.barrier()


def gather_to_all(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Stack ``t`` (same shape on every rank) from all ranks: (world, *t.shape), on the CPU."""
    if info.world == 1:
        return t[None].cpu()
    src = t.to(info.device)  # nccl only moves CUDA tensors
    out = [torch.empty_like(src) for _ in range(info.world)]
    dist.all_gather(out, src)
    return torch.stack(out).cpu()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's picklable ``obj``, in rank order (``[obj]`` in a single process)."""
    if info.world == 1:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)  # pickled through the backend's device (set_device on CUDA)
    return out


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

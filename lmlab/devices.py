"""Device names as a run gives them (``auto``, ``cpu``, ``cuda``, ``cuda:N``) checked against this
machine and this PyTorch build, and the process-group backend that goes with a device. Below the
trainer: loading a run as a model (``runs.py``) needs a device too."""

from __future__ import annotations

import torch

from lmlab.errors import LmlabError

COMPUTE = ("cpu", "cuda", "mps", "xpu")
"""The device types a model trains and samples on (each but cpu with ``torch.<type>.is_available``)."""


def resolve_device(name: str | torch.device, local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda:<local_rank> when available, else cpu; a device this machine or this
    PyTorch build does not have is a one-line error."""
    name = str(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        dev = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except RuntimeError:
        raise LmlabError(f"device {name!r} is not a device name; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, driver)")
            raise LmlabError(f"device {name!r}: {why} (torch {torch.__version__}); use device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LmlabError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0")
    elif dev.type not in COMPUTE:  # meta (shapes only), lazy, hpu, ...: torch names them; lmlab does not run there
        raise LmlabError(f"device {name!r}: lmlab does not run on {dev.type} devices (only {', '.join(COMPUTE)}); "
                         "use cpu, cuda, cuda:N or auto")
    elif dev.type != "cpu" and not getattr(torch, dev.type).is_available():
        raise LmlabError(f"device {name!r}: not available on this machine; use device cpu or auto")
    return dev


def resolve_backend(backend: str, device: torch.device) -> str:
    """``train.distributed.backend``: auto is nccl on CUDA, gloo on CPU; nccl needs CUDA."""
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise LmlabError(f"train.distributed.backend = nccl needs CUDA devices, but this run uses {device}; "
                         "use backend: auto or gloo")
    return backend

"""Numerics knobs of a run: autocast dtype, the fp16 loss scaler, TF32 and matmul precision.

``train.precision`` picks autocast (bf16/fp16) around the forward; fp16 also scales the loss
(``GradScaler``; ``ShardedGradScaler`` under FSDP, which agrees on overflow across ranks).
``train.allow_tf32`` and ``train.matmul_precision`` are process-wide PyTorch settings: they are
set for the run and put back afterwards, so one run never changes the next one's numerics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from lmlab.config import TrainConfig

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast and loss scaling for ``train.precision`` on ``device``."""

    def __init__(self, cfg: TrainConfig, device: torch.device, sharded: bool = False):
        self.dtype = AMP_DTYPES.get(cfg.precision)
        self.device = device
        fp16 = cfg.precision == "fp16"
        if sharded:
            # deferred: FSDP's modules take ~0.6 s to import; only a sharded strategy needs this scaler
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            self.scaler = ShardedGradScaler(device.type, enabled=fp16)
        else:
            self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward's autocast region (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


@contextlib.contextmanager
def backend_flags(cfg: TrainConfig) -> Iterator[None]:
    """Apply ``matmul_precision`` and ``allow_tf32`` for the duration of a run."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    try:
        if cfg.matmul_precision is not None:
            torch.set_float32_matmul_precision(cfg.matmul_precision)
        if cfg.allow_tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        yield
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]

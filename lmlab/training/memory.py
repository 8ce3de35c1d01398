"""Refuse a model that cannot fit before building it: ``model.n_layer=100000`` would otherwise
allocate until the machine kills it.

The family's ``ModelConfig.size_estimate`` gives parameters and the activations a training step
keeps; AdamW training holds 16 bytes per parameter (fp32 weights, gradients, two moments;
sharded over the ranks under FSDP). The budget is the GPU's memory, or the RAM available now.
"""

from __future__ import annotations

import os

import torch

from lmlab.config import RunConfig
from lmlab.errors import LmlabError
from lmlab.training.distributed import DistInfo

BYTES_PER_PARAM = 16  # fp32 weights + gradients + AdamW's exp_avg and exp_avg_sq


def available_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes a run on ``device`` may use, where they are): the GPU's total memory, or the RAM
    available now (MemAvailable; the physical RAM where /proc is absent)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1], f"on {device}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024, "of RAM available"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "of RAM"


def check_fits(cfg: RunConfig, info: DistInfo, micro_batch: int, seq_len: int, sharded: bool) -> None:
    """A one-line refusal when the estimated training memory of one rank exceeds its device's."""
    params, activations = cfg.model.size_estimate(micro_batch * seq_len)
    if cfg.train.precision in ("bf16", "fp16"):
        activations //= 2  # autocast keeps most saved activations in 16 bits
    state = params * BYTES_PER_PARAM // (info.world if sharded else 1)
    # Gradient checkpointing keeps only each block's input: the estimate counts the state alone.
    need = state + (0 if cfg.train.grad_checkpoint else activations)
    have, where = available_bytes(info.device)
    if need <= have:
        return
    acts = ("" if cfg.train.grad_checkpoint else
            f" + activations of a {micro_batch} x {seq_len} micro-batch ~{activations / 2**30:,.1f} GiB")
    count = f"{params / 1e9:,.1f}B" if params >= 1e9 else f"{params / 1e6:,.1f}M"
    raise LmlabError(
        f"the model cannot train here: ~{count} parameters need ~{need / 2**30:,.1f} GiB "
        f"(weights, gradients and AdamW state {BYTES_PER_PARAM} bytes each ~{state / 2**30:,.1f} GiB{acts}), "
        f"and this machine has {have / 2**30:,.1f} GiB {where}; shrink model.* or train.batch_size / seq_len")

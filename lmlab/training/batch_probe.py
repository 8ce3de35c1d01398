"""``train.batch_size: auto``: find the largest micro-batch that fits in the GPU's memory.

The optimizer step keeps ``target = adaptive_batch.max_batch_size x grad_accum_steps`` sequences
per process whatever the probe finds: the micro-batch is a divisor of ``target`` and the rest is
gradient accumulation, so the probe changes memory use and speed, never the math.

The search is a pure function of a ``fits(micro_batch) -> bool`` oracle (unit-tested with an
injected memory model); on CUDA the oracle runs one forward + backward at that size and compares
the peak allocated memory, plus the AdamW state still to come, with ``safety_factor`` x the
device's memory. Every rank takes the worst peak of all ranks, so they all walk the same path
(FSDP's collectives stay matched) and pick the same size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmlab.config import AdaptiveBatchConfig
from lmlab.errors import LmlabError


def candidates(target: int, cfg: AdaptiveBatchConfig) -> list[int]:
    """Micro-batches that divide ``target`` within [min_batch_size, max_batch_size], ascending."""
    return [m for m in range(1, target + 1) if target % m == 0 and cfg.min_batch_size <= m <= cfg.max_batch_size]


def search_micro_batch(target: int, cfg: AdaptiveBatchConfig, fits: Callable[[int], bool]) -> int:
    """The largest candidate that ``fits``: start at ``probe_batch_size``, double while it fits,
    then bisect the last bracket (memory grows with the batch, so one failure bounds it)."""
    cands = candidates(target, cfg)
    if not cands:
        raise LmlabError(f"train.adaptive_batch: no micro-batch in [{cfg.min_batch_size}, {cfg.max_batch_size}] "
                         f"divides the {target} sequences per step; adjust min/max_batch_size or grad_accum_steps")
    start = max([i for i, m in enumerate(cands) if m <= cfg.probe_batch_size] or [0])
    if not fits(cands[start]):
        lo, hi = -1, start  # cands[hi] does not fit; search below it
    else:
        lo = start
        while True:  # gallop: the next candidate at least twice as large
            nxt = next((i for i in range(lo + 1, len(cands)) if cands[i] >= 2 * cands[lo]), len(cands) - 1)
            if nxt == lo:
                return cands[lo]
            if not fits(cands[nxt]):
                hi = nxt
                break
            lo = nxt
    while hi - lo > 1:  # cands[lo] fits (or lo == -1), cands[hi] does not
        mid = (lo + hi) // 2
        if fits(cands[mid]):
            lo = mid
        else:
            hi = mid
    if lo < 0:
        raise LmlabError(f"train.batch_size auto: even a micro-batch of {cands[0]} does not fit in "
                         f"{cfg.safety_factor:.0%} of the device's memory; lower model.block_size or the "
                         "model's size, or set train.grad_checkpoint: true")
    return cands[lo]


def cuda_fits(model: nn.Module, fwd: nn.Module, optimizer: torch.optim.Optimizer, seq_len: int, vocab: int,
              device: torch.device, safety: float, autocast, agree: Callable[[float], float]) -> Callable[[int], bool]:
    """The CUDA oracle: one forward + backward of ``fwd`` at micro-batch m on random ids (RNG,
    buffers and gradients are put back afterwards), peak memory compared with the budget."""
    capacity = torch.cuda.get_device_properties(device).total_memory
    trainable = [p for p in model.parameters() if p.requires_grad]
    # AdamW keeps two fp32 moments per parameter once it has stepped; count them if not yet there.
    pending = 0 if optimizer.state else 2 * sum(p.numel() * 4 for p in trainable)

    def fits(m: int) -> bool:
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        peak = float("inf")
        with torch.random.fork_rng(devices=[device]):
            try:
                ids = torch.randint(0, vocab, (m, seq_len + 1), device=device)
                with autocast():
                    out = fwd(ids[:, :-1], ids[:, 1:])
                out.loss.backward()
                peak = torch.cuda.max_memory_allocated(device) + pending
            except torch.OutOfMemoryError:
                pass
            finally:
                out = None
                for p in trainable:
                    p.grad = None
                with torch.no_grad():
                    for k, b in model.named_buffers():
                        b.copy_(buffers[k])
                torch.cuda.empty_cache()
        return agree(peak) <= safety * capacity

    return fits

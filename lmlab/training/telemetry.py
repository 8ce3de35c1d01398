"""What a run costs: wall-clock time, peak memory, throughput per device and MFU.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOPs / the device's peak:
tokens/s per device x ``ModelConfig.flops_per_token(seq_len)`` (forward + backward, each family
documents its formula) / the peak dense FLOPS of the device at the run's precision, from
``PEAK_TFLOPS`` (vendor datasheets, dense, no sparsity) or ``train.peak_tflops``. It is reported
on CUDA only: a CPU's peak depends on its vector units and clocks, which PyTorch does not expose.
"""

from __future__ import annotations

import resource
import sys

import torch

# Dense peak TFLOPS per GPU: (16-bit tensor cores, TF32, plain FP32). Matched by substring of
# torch.cuda.get_device_name, most specific first.
PEAK_TFLOPS: list[tuple[str, tuple[float, float, float]]] = [
    ("H200", (989.4, 494.7, 66.9)),
    ("H100 PCIe", (756.0, 378.0, 51.2)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.1, 183.0, 91.6)),
    ("L4", (121.0, 60.0, 30.3)),
    ("V100", (125.0, 15.7, 15.7)),  # no bf16 or TF32: fp16 tensor cores, fp32
    ("T4", (65.0, 8.1, 8.1)),
]


def peak_tflops(device: torch.device, precision: str, tf32: bool) -> float | None:
    """The table's peak for ``device`` at ``precision`` (None off CUDA or for an unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (half, tf32_peak, fp32) in PEAK_TFLOPS:
        if key in name:
            return half if precision in ("bf16", "fp16") else tf32_peak if tf32 else fp32
    return None


def peak_memory_mb(device: torch.device) -> float:
    """The run's peak memory so far, MiB: CUDA's max allocated on a GPU, else the process's
    peak resident set size (what the OS charged it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


class Telemetry:
    """Turns a log interval's tokens/s into per-device throughput and MFU."""

    def __init__(self, flops_per_token: float, device: torch.device, world: int, peak: float | None):
        self.flops_per_token, self.device, self.world = flops_per_token, device, world
        self.peak_flops = peak * 1e12 if peak else None

    def row(self, tokens_per_s: float) -> dict[str, float]:
        per_device = tokens_per_s / self.world
        out = {"tokens_per_s_per_device": per_device, "peak_mem_mb": peak_memory_mb(self.device)}
        if self.peak_flops:
            out["mfu"] = per_device * self.flops_per_token / self.peak_flops
        return out

"""What a scored task reports, and the statistics of its metrics.

Standard errors: of a mean, sample std / sqrt(n) (lm-eval's ``mean_stderr``); of a perplexity,
the delta method (lm-eval bootstraps lambada's and leaves the rolling ones blank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TaskResult:
    """Metrics of one task as {name: (value, stderr or None)}, and the per-example scores."""

    task: str
    n: int
    metrics: dict[str, tuple[float, float | None]]
    seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "seconds": round(self.seconds, 3),
                "examples_per_s": round(self.n / self.seconds, 2) if self.seconds > 0 else None,
                "metrics": {k: {"value": v, "stderr": s} for k, (v, s) in self.metrics.items()}}


def mean_stderr(xs: np.ndarray) -> float | None:
    """Sample standard deviation / sqrt(n): lm-eval's ``mean_stderr``."""
    return float(np.std(xs, ddof=1) / math.sqrt(len(xs))) if len(xs) > 1 else None


def capped_exp(x: float) -> float:
    """exp(x), capped below float overflow (an untrained model's perplexity stays a number)."""
    return math.exp(min(x, 700.0))


def ratio_perplexity(lls: np.ndarray, counts: np.ndarray) -> tuple[float, float | None]:
    """exp(-sum ll / sum counts) and its delta-method stderr over documents (ratio estimator)."""
    r = -lls.sum() / counts.sum()
    ppl = capped_exp(r)
    if len(lls) < 2:
        return ppl, None
    resid = -lls - r * counts
    se_r = math.sqrt((resid**2).sum() / (len(lls) * (len(lls) - 1))) / counts.mean()
    return ppl, ppl * se_r

"""bench/time_to_loss.py's own arithmetic: the split, the held-out windows' score and the
interpolated time to a target (the figures in BENCHMARKS.md rest on them)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import time_to_loss as ttl  # noqa: E402


def test_split_is_nanogpts_first_90_percent():
    text = "".join(chr(65 + i % 26) for i in range(1001))
    train, held = ttl.split(text)
    assert train + held == text and len(train) == int(1001 * 0.9)


def test_time_to_interpolates_between_evaluations():
    curve = [(10.0, 3.0), (20.0, 2.0), (30.0, 1.5)]
    assert ttl.time_to(curve, 2.5) == pytest.approx(15.0)
    assert ttl.time_to(curve, 3.5) == 10.0  # already there at the first evaluation
    assert ttl.time_to(curve, 1.0) is None


def test_score_predicts_every_held_out_token_after_the_first_once():
    ids = np.arange(1000) % 7
    seen = []

    def uniform(x, y):  # logits (B, T, V) of a model that knows nothing
        seen.append(y.numel())
        return torch.zeros(*x.shape, 7)

    assert ttl.score(uniform, ids) == pytest.approx(math.log(7))
    windows = (len(ids) - 1) // (ttl.BLOCK - 1)
    assert sum(seen) == windows * (ttl.BLOCK - 1)

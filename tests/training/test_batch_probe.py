"""``train.batch_size: auto``: the micro-batch search against an injected memory model, the sampler
keeping the step's sequences when the micro-batch changes, and the CPU behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lmlab
from lmlab.config import AdaptiveBatchConfig
from lmlab.data.mixing import MixtureSampler
from lmlab.errors import LmlabError
from lmlab.training.batch_probe import candidates, search_micro_batch


def _memory(per_seq: float, fixed: float, capacity: float, safety: float, calls: list[int]):
    """fits(m) for a device whose peak is fixed + m * per_seq bytes."""

    def fits(m: int) -> bool:
        calls.append(m)
        return fixed + m * per_seq <= safety * capacity

    return fits


@pytest.mark.parametrize("target, per_seq, expect", [
    (64, 1.0, 64),     # everything fits
    (64, 3.0, 16),     # 16 * 3 + 10 <= 90 < 32 * 3 + 10
    (64, 20.0, 4),
    (48, 5.0, 16),     # divisors of 48: 16 fits (90), 24 does not (130)
    (12, 7.0, 6),      # divisors of 12: 6 fits (52), 12 does not (94)
])
def test_search_finds_the_largest_divisor_that_fits(target, per_seq, expect):
    cfg = AdaptiveBatchConfig(probe_batch_size=2, min_batch_size=1, max_batch_size=64, safety_factor=0.9)
    calls: list[int] = []
    fits = _memory(per_seq, 10.0, 100.0, cfg.safety_factor, calls)
    brute = max(m for m in candidates(target, cfg) if fits(m))
    calls.clear()
    got = search_micro_batch(target, cfg, fits)
    assert got == brute == expect
    assert len(calls) <= 2 * len(candidates(target, cfg)).bit_length() + 2  # doubling + bisection


def test_search_respects_the_bounds_and_the_probe_start():
    cfg = AdaptiveBatchConfig(probe_batch_size=8, min_batch_size=4, max_batch_size=16)
    calls: list[int] = []
    assert search_micro_batch(64, cfg, _memory(1.0, 0.0, 1e9, 0.9, calls)) == 16
    assert calls[0] == 8 and max(calls) == 16 and min(calls) >= 4
    calls.clear()
    assert search_micro_batch(64, cfg, _memory(1.0, 0.0, 6 / 0.9, 0.9, calls)) == 4
    assert calls[0] == 8  # too big at the start: bisect below it


def test_nothing_fits_is_one_line():
    cfg = AdaptiveBatchConfig(min_batch_size=2, max_batch_size=8)
    with pytest.raises(LmlabError, match="even a micro-batch of 2 does not fit"):
        search_micro_batch(8, cfg, lambda m: False)
    with pytest.raises(LmlabError, match=r"no micro-batch in \[5, 7\] divides the 8"):
        search_micro_batch(8, AdaptiveBatchConfig(min_batch_size=5, max_batch_size=7), lambda m: True)


def test_a_new_micro_batch_draws_the_same_sequences_per_step():
    arr = np.arange(10_000, dtype=np.int64) % 97
    a = MixtureSampler([arr], ["s"], 16, micro_batch=8, accum=1, seed=3)
    b = MixtureSampler([arr], ["s"], 16, micro_batch=8, accum=1, seed=3)
    b.set_micro_batch(2)
    assert (b.micro_batch, b.accum) == (2, 4)
    for step in range(3):
        xa = torch.cat([x for x, _, _ in a.micro_batches(step)])
        xb = torch.cat([x for x, _, _ in b.micro_batches(step)])
        assert torch.equal(xa, xb)
    with pytest.raises(ValueError, match="does not divide"):
        b.set_micro_batch(3)


def test_auto_batch_on_cpu_says_what_it_does(tiny_config, capsys):
    _, raw, run = tiny_config(train={"batch_size": "auto", "adaptive_batch": {"max_batch_size": 4}, "max_steps": 4})
    lmlab.train(raw)
    out = capsys.readouterr().out
    assert "train.batch_size auto: no GPU memory to probe on cpu" in out and "max_batch_size = 4" in out
    # the same math as batch_size: 4
    import json

    assert json.loads((run / "metrics.json").read_text())["tokens"] == 4 * 4 * 32

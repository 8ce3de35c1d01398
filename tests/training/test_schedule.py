"""The lr schedule: linear warmup, then cosine to min_lr, or warmup-stable-decay (train.schedule)."""

from __future__ import annotations

import json

import pytest

import lmlab
from lmlab.config import TrainConfig
from lmlab.errors import ConfigError
from lmlab.training.optim import lr_at


def test_cosine_warms_up_and_ends_near_min_lr():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10)
    lrs = [lr_at(s, cfg, 100) for s in range(100)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 11 for s in range(10)])
    assert lrs[10] == pytest.approx(1e-3) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-4, abs=1e-6)


def test_wsd_holds_the_lr_then_decays_linearly_over_the_last_fraction():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, schedule="wsd", decay_fraction=0.2)
    lrs = [lr_at(s, cfg, 110) for s in range(110)]
    assert lrs[:10] == pytest.approx([lr_at(s, TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10), 110)
                                      for s in range(10)])  # the same warmup
    assert lrs[10:90] == pytest.approx([1e-3] * 80)  # stable: 80% of the 100 post-warmup steps
    decay = lrs[90:]
    steps = [b - a for a, b in zip(decay, decay[1:])]
    assert steps == pytest.approx([steps[0]] * len(steps)) and steps[0] < 0  # linear, downwards
    assert decay[0] == pytest.approx(1e-3) and lr_at(110, cfg, 110) == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        TrainConfig(schedule="wsd", decay_fraction=0)


def test_a_run_logs_the_wsd_lr(tiny_config):
    _, raw, run = tiny_config(train={"max_steps": 10, "warmup_steps": 2, "schedule": "wsd", "decay_fraction": 0.5,
                                     "log_interval": 1})
    lmlab.train(raw)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in rows if "lr" in r}
    from lmlab.configure import load_config

    t = load_config(raw=raw, notes=lambda _: None).train
    assert logged == pytest.approx({s + 1: lr_at(s, t, 10) for s in range(10)})
    assert logged[4] == logged[6] == t.lr  # the stable stretch


def test_a_bad_schedule_is_one_line():
    with pytest.raises(ConfigError, match=r"train.schedule = 'linear': Input should be 'cosine' or 'wsd'"):
        lmlab.configure.load_config(overrides=["train.schedule=linear"])

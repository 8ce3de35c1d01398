"""What a training process says and uses (issue 28): the CPU threads (an explicit OMP_NUM_THREADS
wins over train.num_threads, and the start line says which), and the one summary line a run ends
with (run dir, where it ended, val loss, best, time)."""

from __future__ import annotations

import re

import pytest
import torch

import lmlab
from lmlab.training.process import set_threads


@pytest.fixture
def _threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("env", "knob", "expected"), [
    ("1", 2, "1 thread(s) (OMP_NUM_THREADS)"),
    (None, 1, "1 thread(s) (train.num_threads)"),
    ("", 1, "1 thread(s) (train.num_threads)"),  # set but empty: not an explicit setting
    ("many", 1, "1 thread(s) (train.num_threads)"),
])
def test_an_explicit_omp_num_threads_wins_over_the_config(env, knob, expected, monkeypatch, _threads):
    if env is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", env)
    assert set_threads(knob) == expected
    assert torch.get_num_threads() == int(expected.split()[0])


def test_without_either_pytorch_keeps_its_default(monkeypatch, _threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(1)
    assert set_threads(None) == "1 thread(s) (default)"


def test_a_run_starts_naming_its_threads_and_ends_with_one_summary_line(tiny_config, monkeypatch, capsys, _threads):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    _, raw, run = tiny_config(train={"max_steps": 4, "num_threads": 2, "save_interval": 2, "eval_interval": 2})
    lmlab.train(raw)
    out = capsys.readouterr().out
    assert "cpu, fp32, world 1, none, 1 thread(s) (OMP_NUM_THREADS) |" in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(rf"lmlab: done: {re.escape(str(run))} \| step 4/4 \| val loss \d+\.\d{{4}} \(bpb \d+\.\d{{4}}\) "
                        r"\| best val loss \d+\.\d{4} at step [24] \| \d+\.\ds of training", last), last


def test_a_paused_run_says_it_paused(tiny_config, capsys):
    _, raw, run = tiny_config(train={"max_steps": 6, "stop_at_step": 2, "save_interval": 2})
    lmlab.train(raw)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"lmlab: paused (train.stop_at_step): {run} | "
                                                                      "step 2/6 |")

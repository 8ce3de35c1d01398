"""``train.stop_at_step``: a pause of the full budget's schedule that a later run resumes
exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmlab


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "current" / "model.safetensors")


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _summary(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _raw(make_raw, corpus: Path, run: Path, **train) -> dict:
    # eval_interval 3: the straight run evaluates where the paused one stops, so both score step 3
    return make_raw(corpus, run, train={"max_steps": 6, "eval_interval": 3, "save_interval": 6,
                                        "log_interval": 1, **train})


@pytest.fixture(scope="module")
def straight(corpus_dir, make_raw, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    lmlab.train(_raw(make_raw, corpus_dir, run))
    return run


def test_pause_then_resume_equals_a_straight_run(corpus_dir, make_raw, straight, tmp_path):
    run = tmp_path / "paused"
    lmlab.train(_raw(make_raw, corpus_dir, run, stop_at_step=3))
    paused = _summary(run)
    assert paused["stopped_by"] == "stop_at_step"
    assert paused["steps"] == 3 and paused["max_steps"] == 6
    meta = json.loads((run / "checkpoints" / "current" / "meta.json").read_text())
    assert meta["step"] == 3  # the pause saved a snapshot at its step (save_interval is 6)
    at3 = [r for r in _rows(run) if "val_loss" in r]
    straight_at3 = [r for r in _rows(straight) if "val_loss" in r and r["step"] == 3]
    assert [r["step"] for r in at3] == [3]
    assert at3[0]["val_loss"] == straight_at3[0]["val_loss"]
    # the lr at step 3 follows the 6-step schedule, not a 3-step one that would end at min_lr
    lr = {r["step"]: r["lr"] for r in _rows(straight) if "lr" in r}
    assert [r["lr"] for r in _rows(run) if "lr" in r] == [lr[1], lr[2], lr[3]]

    lmlab.train(_raw(make_raw, corpus_dir, run))  # stop_at_step removed: resumes to the budget
    done = _summary(run)
    assert done["stopped_by"] == "budget" and done["steps"] == 6
    want, got = _weights(straight), _weights(run)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert [r["step"] for r in _rows(run) if "val_loss" in r] == [3, 6]
    assert [r["step"] for r in _rows(run) if "loss" in r] == list(range(1, 7))  # no step twice


def test_stop_at_or_below_the_snapshot_trains_nothing(corpus_dir, make_raw, tmp_path):
    run = tmp_path / "run"
    lmlab.train(_raw(make_raw, corpus_dir, run, stop_at_step=4))
    before = _weights(run)
    lmlab.train(_raw(make_raw, corpus_dir, run, stop_at_step=2))  # a lower rung: still reports
    after = _summary(run)
    assert after["steps"] == 4 and after["stopped_by"] == "stop_at_step" and "val_loss" in after
    assert all(torch.equal(before[k], v) for k, v in _weights(run).items())
    lmlab.train(_raw(make_raw, corpus_dir, run, stop_at_step=5))  # a higher one continues
    assert _summary(run)["steps"] == 5
    lmlab.train(_raw(make_raw, corpus_dir, run, stop_at_step=9))  # past the budget: it ends there
    assert _summary(run)["steps"] == 6 and _summary(run)["stopped_by"] == "budget"


def test_resume_of_a_paused_run_continues_to_the_budget(corpus_dir, make_raw, straight, tmp_path, capsys):
    """``lmlab train --resume RUN`` on a run that reached its pause trains to the end (its
    config.yaml still holds stop_at_step); a --set stop_at_step of the user's own is kept."""
    from lmlab.cli import main

    run = tmp_path / "paused"
    lmlab.train(_raw(make_raw, corpus_dir, run, stop_at_step=2))
    assert main(["train", "--resume", str(run), "--set", "train.stop_at_step=3"]) == 0
    assert _summary(run)["steps"] == 3 and _summary(run)["stopped_by"] == "stop_at_step"
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "paused at train.stop_at_step 3 (step 3); resuming it to the end of its budget" in capsys.readouterr().out
    assert _summary(run)["steps"] == 6 and _summary(run)["stopped_by"] == "budget"
    want, got = _weights(straight), _weights(run)
    assert all(torch.equal(want[k], got[k]) for k in want)

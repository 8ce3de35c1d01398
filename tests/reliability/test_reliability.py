"""Reliability (issue 16): a diverging run never overwrites good snapshots with non-finite weights,
and a torn metrics.jsonl (a kill mid-write) does not stop a resume. One test per numbered item."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import lmlab
from lmlab import rundir
from lmlab.errors import LmlabError


def _all_finite(run) -> bool:
    ckpt = run / "checkpoints"
    return all(torch.isfinite(t).all() for name in rundir.SNAPSHOTS if (ckpt / name).is_dir()
               for t in load_file(ckpt / name / "model.safetensors").values())


def test_1_a_diverging_run_stops_in_one_line_and_keeps_finite_snapshots(tiny_config, run_cli, one_line_error):
    path, _, run = tiny_config(train={"max_steps": 60, "save_interval": 2, "log_interval": 1})
    first = run_cli("train", "--config", str(path), "--set", "train.max_steps=4")
    assert first.returncode == 0, first.stderr
    line = one_line_error(run_cli("train", "--resume", str(run), "--set", "train.lr=1e3", "--set", "train.min_lr=1e2",
                                  "--set", "train.max_steps=60"),
                          "is not finite", "last good snapshot is", "train.on_nonfinite: skip_step")
    stopped = int(line.split("step ")[1].split(":")[0])
    assert 4 < stopped < 60
    assert _all_finite(run)  # every kept snapshot: the good ones were not replaced by NaN weights
    assert rundir.latest_snapshot(run).step < stopped


def test_1_skip_step_drops_the_bad_step_and_carries_on(tiny_config, monkeypatch):
    from lmlab.models.transformer import Transformer

    real = Transformer.forward_hidden
    calls, poison = [0], {"from": 5, "to": 5}  # training forward calls whose loss turns NaN

    def poisoned(self, ids, targets=None, label_smoothing=0.0):
        h, out = real(self, ids, targets, label_smoothing)
        if targets is not None and self.training:
            calls[0] += 1
            if poison["from"] <= calls[0] <= poison["to"]:
                out.loss = out.loss * float("nan")
        return h, out

    monkeypatch.setattr(Transformer, "forward_hidden", poisoned)
    _, raw, run = tiny_config(train={"max_steps": 8, "log_interval": 1, "on_nonfinite": "skip_step"})
    lmlab.train(raw)  # the one micro-batch of step 5 is NaN: that step is dropped
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert math.isnan(losses[5]) and all(math.isfinite(v) for s, v in losses.items() if s != 5)
    assert rundir.latest_snapshot(run).step == 8 and _all_finite(run)

    poison.update({"from": 0, "to": 10**9})  # every step from now on: stop after 3 in a row
    with pytest.raises(LmlabError, match=r"step 11: .*3 step\(s\) in a row.*last good snapshot is .* \(step 8\)"):
        lmlab.train(raw, **{"train.max_steps": 12, "train.max_nonfinite_steps": 3})
    assert rundir.latest_snapshot(run).step == 8


def test_3_a_torn_metrics_line_is_dropped_with_a_warning_on_resume(tiny_config):
    _, raw, run = tiny_config(train={"max_steps": 6, "save_interval": 6})
    lmlab.train(raw)
    path = run / "metrics.jsonl"
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"step": 7, "tokens": 2')  # a kill in the middle of an append
    with pytest.warns(UserWarning, match="is torn"):
        lmlab.train(raw, **{"train.max_steps": 8})
    rows = [json.loads(line) for line in path.read_text().splitlines()]  # every line parses again
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 6, 8]
    assert not list(run.glob(".metrics.jsonl.tmp-*"))  # rewritten atomically, nothing left behind


def test_3_a_bad_line_before_the_end_is_one_error(tmp_path):
    from lmlab.fsio import read_jsonl

    (tmp_path / "m.jsonl").write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(LmlabError, match=r"m.jsonl: line 2 is not JSON"):
        read_jsonl(tmp_path / "m.jsonl")


def test_2_a_second_trainer_on_the_same_run_dir_is_refused_naming_the_holder(tiny_config, run_cli, one_line_error):
    import fcntl
    import os

    path, raw, run = tiny_config(train={"max_steps": 4})
    lmlab.train(raw)
    before = {p.name: p.read_bytes() for p in (run / "checkpoints" / "current").iterdir()}
    with open(run / ".lock", "r+") as held:  # stands in for a trainer that is running
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("424242\n")
        held.flush()
        one_line_error(run_cli("train", "--resume", str(run), "--set", "train.max_steps=8"),
                       "being trained by another process (PID 424242)")
        (run / "checkpoints" / ".tmp-other").mkdir()  # the holder's snapshot in progress
    assert {p.name: p.read_bytes() for p in (run / "checkpoints" / "current").iterdir()} == before
    assert (run / "checkpoints" / ".tmp-other").is_dir()  # nobody swept the holder's work
    lmlab.train(raw, **{"train.max_steps": 8})  # released (as the OS does when a holder dies): it trains
    assert rundir.latest_snapshot(run).step == 8 and not (run / "checkpoints" / ".tmp-other").exists()
    assert (run / ".lock").read_text().strip() == str(os.getpid())

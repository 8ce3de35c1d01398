"""Snapshots: atomic rotation, checksums, fallback to older snapshots, safe trainer state."""

from __future__ import annotations

import json

import pytest
import torch

from lmlab import rundir
from lmlab.config import build_model_config
from lmlab.errors import LmlabError
from lmlab.registry import build_model


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model(build_model_config({"preset": "tiny", "vocab_size": 40}))


def _save(run, model, step):
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).loss.backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}, "step": step}
    return rundir.save_snapshot(run, model, {"step": step, "config": {}}, state)


def test_rotation_keeps_three(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, _model(step), step)
    steps = {n: json.loads((tmp_path / "checkpoints" / n / "meta.json").read_text())["step"]
             for n in rundir.SNAPSHOTS}
    assert steps == {"current": 4, "prev": 3, "prev2": 2}
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_trainer_state_loads_with_weights_only(tmp_path):
    _save(tmp_path, _model(0), 5)
    state = rundir.latest_snapshot(tmp_path).load_trainer_state()
    assert state["step"] == 5 and "state" in state["optimizer"]


def test_weights_round_trip_with_tied_embeddings(tmp_path):
    a = _model(1)
    _save(tmp_path, a, 1)
    b = _model(2)
    rundir.latest_snapshot(tmp_path).load_weights(b)
    x = torch.randint(0, 40, (2, 10))
    assert torch.equal(a(x).logits, b(x).logits)
    assert b.lm_head.weight.data_ptr() == b.wte.weight.data_ptr()


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_meta", "bad_json"])
def test_corrupt_current_falls_back_to_prev(tmp_path, damage):
    _save(tmp_path, _model(1), 1)
    _save(tmp_path, _model(2), 2)
    cur = tmp_path / "checkpoints" / "current"
    w = cur / rundir.WEIGHTS
    if damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "flip":
        data = bytearray(w.read_bytes())
        data[-1] ^= 0xFF
        w.write_bytes(bytes(data))
    elif damage == "delete_meta":
        (cur / rundir.META).unlink()
    else:
        (cur / rundir.META).write_text("{not json")
    with pytest.warns(UserWarning, match="unusable"):
        snap = rundir.latest_snapshot(tmp_path)
    assert snap.step == 1 and snap.path.name == "prev"


def test_crash_mid_rotation_leaves_a_whole_snapshot(tmp_path):
    for step in (1, 2, 3):
        _save(tmp_path, _model(step), step)
    ckpt = tmp_path / "checkpoints"
    # The state after "current -> prev" and before "tmp -> current": no current at all.
    (ckpt / "prev2").rename(ckpt / "gone")
    (ckpt / "prev").rename(ckpt / "prev2")
    (ckpt / "current").rename(ckpt / "prev")
    assert rundir.latest_snapshot(tmp_path).step == 3


def test_no_checkpoint_errors(tmp_path):
    with pytest.raises(LmlabError, match="no checkpoint found"):
        rundir.latest_snapshot(tmp_path)
    with pytest.raises(LmlabError, match="run dir not found"):
        rundir.latest_snapshot(tmp_path / "nope")
    _save(tmp_path, _model(1), 1)
    (tmp_path / "checkpoints" / "current" / rundir.WEIGHTS).write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(LmlabError, match="no usable checkpoint"):
        rundir.latest_snapshot(tmp_path)


def test_weights_of_another_shape_are_refused(tmp_path):
    _save(tmp_path, _model(1), 1)
    other = build_model(build_model_config({"preset": "tiny", "vocab_size": 41}))
    with pytest.raises(LmlabError, match="weights do not fit the model"):
        rundir.latest_snapshot(tmp_path).load_weights(other)


def test_stale_temp_dirs_from_a_crash_are_removed(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-crashed"
    stale.mkdir(parents=True)
    (stale / rundir.WEIGHTS).write_bytes(b"half written")
    _save(tmp_path, _model(1), 1)
    assert not stale.exists() and rundir.latest_snapshot(tmp_path).step == 1

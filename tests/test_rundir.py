"""Snapshots: atomic rotation, checksums, fallback to older snapshots, safe trainer state."""

from __future__ import annotations

import json

import pytest
import torch

from lmlab import rundir
from lmlab.configure import build_model_config
from lmlab.errors import LmlabError
from lmlab.registry import build_model


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model(build_model_config({"preset": "tiny", "vocab_size": 40}))


def _save(run, model, step, layout=rundir.CORE):
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).loss.backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": {"torch": torch.get_rng_state()}, "step": step}
    return rundir.save_snapshot(run, model, {"step": step, "config": {}}, state, layout=layout)


def _step(path):
    return json.loads((path / rundir.META).read_text())["step"]


def _same_logits(snap, model):
    """Whether ``snap``'s weights, loaded into a fresh model, reproduce ``model``'s logits."""
    fresh = _model(99)
    snap.load_weights(fresh)
    x = torch.randint(0, 40, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(model(x).logits, fresh(x).logits)


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
    with pytest.raises(LmlabError, match="no usable checkpoint"):
        rundir.latest_snapshot(tmp_path)


def test_weights_of_another_shape_are_refused(tmp_path):
    _save(tmp_path, _model(1), 1)
    other = build_model(build_model_config({"preset": "tiny", "vocab_size": 41}))
    with pytest.raises(LmlabError, match="weights do not fit the model"):
        rundir.latest_snapshot(tmp_path).load_weights(other)
    with pytest.raises(LmlabError, match="weights do not fit the model") as e:  # tolerant: still refused
        rundir.latest_snapshot(tmp_path).load_weights(other, tolerant=True)
    assert "\n" not in str(e.value)


def test_stale_temp_dirs_from_a_crash_are_removed(tmp_path):
    stale = tmp_path / "checkpoints" / ".tmp-crashed"
    stale.mkdir(parents=True)
    (stale / rundir.WEIGHTS).write_bytes(b"half written")
    _save(tmp_path, _model(1), 1)
    assert not stale.exists() and rundir.latest_snapshot(tmp_path).step == 1


def test_continuous_rotation_keeps_three_and_mirrors_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        _save(tmp_path, _model(step), step, rundir.CONTINUOUS)
    ckpt = tmp_path / "checkpoints"
    assert {n: _step(ckpt / n) for n in rundir.CONTINUOUS.names} == {"lm_current": 4, "lm_prev": 3, "lm_prev2": 2}
    assert sorted(p.name for p in ckpt.iterdir()) == ["lm_current", "lm_prev", "lm_prev2", "simple_lm_trained"]
    mirror = ckpt / "simple_lm_trained"
    assert _step(mirror) == 4
    names = sorted(p.name for p in (ckpt / "lm_current").iterdir())
    assert sorted(p.name for p in mirror.iterdir()) == names
    for name in names:
        assert (mirror / name).read_bytes() == (ckpt / "lm_current" / name).read_bytes()
    snap = rundir.latest_snapshot(tmp_path)
    assert snap.path == ckpt / "lm_current" and snap.step == 4
    assert rundir.layout_of(tmp_path) == rundir.CONTINUOUS and rundir.has_checkpoint(tmp_path)


def test_layout_of_defaults_to_core(tmp_path):
    assert rundir.layout_of(tmp_path) == rundir.CORE
    _save(tmp_path, _model(1), 1)
    assert rundir.layout_of(tmp_path) == rundir.CORE
    assert not (tmp_path / "checkpoints" / "simple_lm_trained").exists()


def test_mirror_is_never_read(tmp_path):
    _save(tmp_path, _model(1), 1, rundir.CONTINUOUS)
    ckpt = tmp_path / "checkpoints"
    for name in rundir.CONTINUOUS.names:
        if (ckpt / name).exists():
            (ckpt / name).rename(ckpt / ("gone-" + name))
    assert not rundir.has_checkpoint(tmp_path)
    with pytest.raises(LmlabError, match="no checkpoint found"):
        rundir.latest_snapshot(tmp_path)


def _crash_on_call(monkeypatch, module, name, k):
    """Make ``module.name`` raise on its k-th call (0-based) from now on; returns the call counter."""
    real, calls = getattr(module, name), []

    def crashing(*args, **kwargs):
        calls.append(args)
        if len(calls) - 1 == k:
            raise KeyboardInterrupt(f"simulated kill at {name} #{k}")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, crashing)
    return calls


def test_a_kill_during_save_leaves_lm_prev_loadable(tmp_path, monkeypatch):
    """A kill at every os.replace of a save (rotation and mirror swap) leaves the newest whole
    snapshot under the layout's names, loadable bit-exactly; the next save then cleans up."""
    k = 0
    while True:
        run = tmp_path / f"k{k}"
        models = {step: _model(step) for step in (1, 2, 3, 4)}
        for step in (1, 2):
            _save(run, models[step], step, rundir.CONTINUOUS)
        ckpt = run / "checkpoints"
        with monkeypatch.context() as m:
            calls = _crash_on_call(m, rundir.os, "replace", k)
            try:
                _save(run, models[3], 3, rundir.CONTINUOUS)
                crashed = False
            except KeyboardInterrupt:
                crashed = True
        snap = rundir.latest_snapshot(run)
        assert snap.step in (2, 3) and snap.path.parent == ckpt
        assert _same_logits(snap, models[snap.step])
        if not (ckpt / "lm_current").is_dir() or _step(ckpt / "lm_current") == 2:
            # Killed before the new lm_current was renamed in: step 2 is still whole.
            assert snap.step == 2
            old = next(ckpt / n for n in ("lm_current", "lm_prev") if (ckpt / n).is_dir() and _step(ckpt / n) == 2)
            assert _same_logits(rundir.Snapshot(old, rundir.verify(old)), models[2])
        else:
            assert snap.step == 3 and snap.path.name == "lm_current"
        # The next save recovers: a whole rotation, a fresh mirror, no temp dirs left.
        _save(run, models[4], 4, rundir.CONTINUOUS)
        assert rundir.latest_snapshot(run).step == 4 and _step(ckpt / "simple_lm_trained") == 4
        assert not [p for p in ckpt.iterdir() if p.name.startswith(".tmp")]
        if not crashed:
            assert snap.step == 3 and k == len(calls) and k >= 5  # 3 rotation + 2 mirror renames
            break
        k += 1


def test_a_kill_while_removing_lm_prev2_leaves_lm_current(tmp_path, monkeypatch):
    models = {step: _model(step) for step in (1, 2, 3, 4)}
    for step in (1, 2, 3):
        _save(tmp_path, models[step], step, rundir.CONTINUOUS)
    real = rundir.shutil.rmtree

    def half_removed(path, *args, **kwargs):  # killed after deleting one file of the tree
        (path / rundir.WEIGHTS).unlink()
        raise KeyboardInterrupt("simulated kill in rmtree")

    with monkeypatch.context() as m:
        m.setattr(rundir.shutil, "rmtree", half_removed)
        with pytest.raises(KeyboardInterrupt):
            _save(tmp_path, models[4], 4, rundir.CONTINUOUS)
    snap = rundir.latest_snapshot(tmp_path)
    assert snap.step == 3 and snap.path.name == "lm_current" and _same_logits(snap, models[3])
    assert rundir.shutil.rmtree is real
    _save(tmp_path, models[4], 4, rundir.CONTINUOUS)
    ckpt = tmp_path / "checkpoints"
    assert {n: _step(ckpt / n) for n in rundir.CONTINUOUS.names} == {"lm_current": 4, "lm_prev": 3, "lm_prev2": 2}


def test_mirror_falls_back_to_copies_without_hard_links(tmp_path, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(rundir.os, "link", no_links)
    for step in (1, 2):
        _save(tmp_path, _model(step), step, rundir.CONTINUOUS)
    ckpt = tmp_path / "checkpoints"
    for name in (rundir.WEIGHTS, rundir.META, rundir.TRAINER):
        a, b = ckpt / "lm_current" / name, ckpt / "simple_lm_trained" / name
        assert a.read_bytes() == b.read_bytes() and a.stat().st_ino != b.stat().st_ino


def test_tolerant_load_is_forced_by_the_argument(tmp_path):
    saved = _model(1)
    _save(tmp_path, saved, 1)
    snap = rundir.latest_snapshot(tmp_path)
    bigger = _model(2)
    bigger.extra = torch.nn.Linear(3, 3)
    with pytest.warns(UserWarning, match=r"missing tensors \['extra.bias', 'extra.weight'\]"):
        snap.load_weights(bigger, tolerant=True)
    assert torch.equal(bigger.wte.weight, saved.wte.weight)
    assert _same_logits(snap, saved)  # the rest loaded: same logits without the extra module
    with pytest.raises(LmlabError, match="weights do not fit the model"):
        snap.load_weights(bigger, tolerant=False)
    bigger.tolerant_load = True  # the default follows the model; the argument overrides it
    with pytest.raises(LmlabError, match="weights do not fit the model"):
        snap.load_weights(bigger, tolerant=False)
    with pytest.warns(UserWarning, match="extra.weight"):
        snap.load_weights(bigger)

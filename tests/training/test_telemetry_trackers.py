"""Issue 17 items 1-2: wall time, memory, per-device throughput and MFU in the metrics; the best
snapshot; MLflow and TensorBoard read back through their own clients; plain progress lines."""

from __future__ import annotations

import json

import pytest
import torch

import lmlab
from lmlab import rundir
from lmlab.errors import LmlabError


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_rows_carry_wall_time_memory_and_per_device_throughput(tiny_config, capsys):
    _, raw, run = tiny_config(train={"max_steps": 8, "log_interval": 2, "eval_interval": 4, "progress": True})
    lmlab.train(raw)
    train = [r for r in _rows(run) if "loss" in r]
    walls = [r["wall_s"] for r in train]
    assert walls == sorted(walls) and walls[0] > 0
    assert all(r["peak_mem_mb"] > 50 and r["tokens_per_s_per_device"] == r["tokens_per_s"] for r in train)
    assert not any("mfu" in r for r in train)  # CPU: no peak FLOPs to divide by
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["wall_s"] == pytest.approx(walls[-1]) and summary["peak_mem_mb"] > 50
    lmlab.train(raw, **{"train.max_steps": 12})  # wall time adds up over a resume
    more = [r["wall_s"] for r in _rows(run) if "loss" in r and r["step"] > 8]
    assert more[0] > walls[-1]
    out = capsys.readouterr().out  # not a terminal: plain lines, no progress-bar frames
    assert "step 2/8 | loss " in out and "step 4: val loss " in out and "\r" not in out


def test_mfu_is_tokens_times_flops_over_the_peak():
    from lmlab.training.telemetry import Telemetry, peak_tflops

    tel = Telemetry(flops_per_token=6e9, device=torch.device("cpu"), world=2, peak=100.0)
    row = tel.row(tokens_per_s=20_000.0)
    assert row["tokens_per_s_per_device"] == 10_000.0
    assert row["mfu"] == pytest.approx(10_000 * 6e9 / 100e12)
    assert peak_tflops(torch.device("cpu"), "bf16", False) is None


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_transformer_flops_per_token_matches_torchs_flop_counter(mlp):
    """PaLM's formula against an independent count, torch's FlopCounterMode over a forward and
    backward pass. On CPU the counter does not see SDPA's fused kernel, so the attention term
    is counted on its own, from the same matmuls written out (q k^T, then the weights times v)."""
    from torch.utils.flop_counter import FlopCounterMode

    from lmlab.configure import build_model_config
    from lmlab.registry import build_model

    cfg = build_model_config({"preset": "small", "vocab_size": 512, "mlp": mlp})
    model = build_model(cfg)
    b, t, h, d = 2, cfg.block_size, cfg.n_head, cfg.d_model
    x = torch.randint(0, 512, (b, t))
    with FlopCounterMode(display=False) as blocks:
        model(x, x).loss.backward()
    q, k, v = (torch.randn(b, h, t, d // h, requires_grad=True) for _ in range(3))
    with FlopCounterMode(display=False) as attention:
        (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).sum().backward()
    counted = blocks.get_total_flops() / (b * t) + cfg.n_layer * attention.get_total_flops() / (b * t)
    assert cfg.flops_per_token(t) == pytest.approx(counted, rel=0.01)


def test_the_best_snapshot_follows_the_lowest_validation_loss(tiny_config):
    _, raw, run = tiny_config(train={"max_steps": 12, "eval_interval": 3, "lr": 3e-2})
    lmlab.train(raw)
    vals = {r["step"]: r["val_loss"] for r in _rows(run) if "val_loss" in r}
    best_step = min(vals, key=vals.get)
    snap = rundir.best_snapshot(run)
    assert snap.step == best_step and snap.meta["val_loss"] == pytest.approx(vals[best_step])
    assert snap.path.name == "best" and rundir.latest_snapshot(run).path.name == "current"
    lm = lmlab.load(run, snapshot="best")
    assert lm.snapshot.step == best_step
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["best_step"] == best_step


def test_no_best_snapshot_is_one_line(tiny_config):
    _, raw, run = tiny_config(train={"max_steps": 2, "save_best": False})
    lmlab.train(raw)
    with pytest.raises(LmlabError, match="no best snapshot"):
        lmlab.load(run, snapshot="best")


def test_mlflow_and_tensorboard_read_back_through_their_own_clients(tiny_config):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, raw, run = tiny_config(train={"max_steps": 6, "log_interval": 2, "eval_interval": 3, "save_interval": 3,
                                     "trackers": ["mlflow", "tensorboard"],
                                     "mlflow": {"experiment": "catalogue", "batch_interval": 2}})
    lmlab.train(raw)
    lmlab.train(raw, **{"train.max_steps": 8})  # resumes the same MLflow run
    rows = _rows(run)
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.params["model.n_layer"] == "2"
    assert client.get_experiment(got.info.experiment_id).name == "catalogue"
    history = {m.step: m.value for m in client.get_metric_history(run_id, "loss")}
    assert history == pytest.approx(losses)
    assert {m.step for m in client.get_metric_history(run_id, "val_loss")} == {3, 6, 8}

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    scalars = [(e.step, e.value) for e in events.Scalars("loss")]
    assert [s for s, _ in scalars] == sorted(losses)  # the resume purged nothing it should keep, added no dupes
    assert [v for _, v in scalars] == pytest.approx([losses[s] for s in sorted(losses)])


def test_a_missing_tracker_package_names_the_install_command(tiny_config, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    _, raw, run = tiny_config(train={"trackers": ["mlflow"]})
    with pytest.raises(LmlabError, match=r"mlflow needs the mlflow package: pip install 'lmlab\[track\]' torch==2.13.0"):
        lmlab.train(raw)
    assert not run.exists()


def test_trackers_added_to_a_finished_run_get_its_metrics(tiny_config, capsys):
    """The README's tracker command on a run that already finished (issue 28): nothing is left to
    train, so the new MLflow run and TensorBoard log take every row of metrics.jsonl, and MLflow's
    run ends FINISHED (not RUNNING with no metrics). Training on after that adds no duplicates."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, raw, run = tiny_config(train={"max_steps": 6, "log_interval": 2, "eval_interval": 3})
    lmlab.train(raw)
    before = _rows(run)
    lmlab.train(raw, **{"train.trackers": ["mlflow", "tensorboard"], "train.mlflow.experiment": "after"})
    assert "logged the run's 5 earlier rows" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    losses = {r["step"]: r["loss"] for r in before if "loss" in r}
    assert {m.step: m.value for m in client.get_metric_history(run_id, "loss")} == pytest.approx(losses)
    assert {m.step for m in client.get_metric_history(run_id, "val_loss")} == {3, 6}

    lmlab.train(raw, **{"train.trackers": ["mlflow", "tensorboard"], "train.mlflow.experiment": "after",
                        "train.max_steps": 8})  # the same MLflow run and log go on: nothing backfilled twice
    assert "earlier rows" not in capsys.readouterr().out
    losses = {r["step"]: r["loss"] for r in _rows(run) if "loss" in r}
    assert sorted(losses) == [2, 4, 6, 8]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [2, 4, 6, 8]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [2, 4, 6, 8]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([losses[s] for s in (2, 4, 6, 8)])


def test_console_lines_come_at_most_every_30_seconds_with_an_eta(tmp_path, capsys):
    """A fake clock (no timing in the test): a step every 2 s, a log row every step."""
    from lmlab.training.trackers import ConsoleTracker, TrackerContext

    console = ConsoleTracker(TrackerContext(tmp_path, None, total_steps=100))
    now = [1000.0]
    console.clock = lambda: now[0]
    console.start({}, step=40)  # a resume: the pace is this session's
    for step in range(41, 71):
        now[0] += 2.0
        console.log({"step": step, "loss": 2.0, "lr": 1e-3, "tokens_per_s": 1000.0, "wall_s": 5000.0 + step})
        if step == 60:
            console.log({"step": 60, "val_loss": 2.5, "val_ppl": 12.2, "val_bpb": 3.0})
    console.close("KILLED")  # stopped at 70: its row was held back, and shows now
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0].split(":")[0] for line in lines] == \
        ["step 41/100", "step 56/100", "step 60/100", "step 60", "step 70/100"]
    assert lines[0].endswith("| 1h24m | ETA 1m58s")  # 59 steps left at 2 s each
    assert lines[1].endswith("| ETA 1m28s") and lines[-1].endswith("| ETA 1m00s")
    console = ConsoleTracker(TrackerContext(tmp_path, None, total_steps=3))
    console.clock = lambda: now[0]
    console.start({}, step=0)
    for step in (1, 2, 3):
        console.log({"step": step, "loss": 2.0, "lr": 1e-3, "tokens_per_s": 1000.0})
    assert [line.split(" | ")[0] for line in capsys.readouterr().out.splitlines()] == ["step 1/3", "step 3/3"]

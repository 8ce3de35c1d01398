"""Issue 30 (W&B): ``train.trackers: [wandb]`` offline by default, read back through wandb's own
reader; a resume continues the same W&B run; the end-of-run samples reach every tracker that
holds text (an MLflow artifact, TensorBoard text, a W&B table)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lmlab
from lmlab.errors import LmlabError
from lmlab.training.trackers import wandb_mode


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """wandb with no network and nothing written outside ``tmp_path``; WANDB_MODE and
    WANDB_API_KEY unset, so the run's mode is lmlab's default rule (offline)."""
    pytest.importorskip("wandb", reason="wandb is not installed (pip install 'lmlab[track]')")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_PROJECT",
                 "WANDB_ENTITY"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "wandb-home"
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")  # no system-metrics sampler process
    return home


def _records(path: Path) -> list[dict]:
    """A ``.wandb`` file's records, read by wandb's own reader (``wandb leet inspect --json``,
    which wandb-core answers)."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_wandb_is_offline_backfilled_and_resumed_as_the_same_run(tiny_config, wandb_env, capsys):
    """A run trained without W&B, then with it (the new W&B run gets the earlier rows), then
    resumed (the same W&B run goes on, nothing backfilled twice): every row, the config and each
    session's samples are in the offline run files."""
    _, raw, run = tiny_config(train={"max_steps": 2, "log_interval": 2, "eval_interval": 2, "save_interval": 2})
    lmlab.train(raw)
    wandb = {"train.trackers": ["wandb"], "train.wandb": {"project": "catalogue", "tags": ["t1"]}}
    lmlab.train(raw, **wandb, **{"train.max_steps": 4})
    assert "wandb: logged the run's 2 earlier rows" in capsys.readouterr().out
    run_id = json.loads((run / "wandb_run.json").read_text())["run_id"]
    lmlab.train(raw, **wandb, **{"train.max_steps": 6})
    assert "earlier rows" not in capsys.readouterr().out
    assert json.loads((run / "wandb_run.json").read_text())["run_id"] == run_id
    # offline (no WANDB_MODE, no API key): one folder of run files per session, in session order
    files = sorted((run / "wandb").glob("offline-run-*/run-*.wandb"), key=lambda f: f.stat().st_mtime_ns)
    assert [f.name for f in files] == [f"run-{run_id}.wandb"] * 2
    records = {f: _records(f) for f in files}
    first = next(r["run"] for r in records[files[0]] if r["type"] == "run")
    config = first["config"]["update"]
    assert config["model"]["n_layer"] == 2 and config["train"]["trackers"] == ["wandb"]
    assert first["project"] == "catalogue" and first["run_id"] == run_id and first["tags"] == ["t1"]
    history = [r["history"]["item"] for f in files for r in records[f] if r["type"] == "history"]
    losses = {r["step"]: r["loss"] for r in _rows(run) if "loss" in r}
    assert [h["_step"] for h in history if "loss" in h] == [2, 4, 6]
    assert {h["_step"]: h["loss"] for h in history if "loss" in h} == pytest.approx(losses)
    assert [h["_step"] for h in history if "val_loss" in h] == [2, 4, 6]
    assert [r["exit"].get("exit_code", 0) for f in files for r in records[f] if r["type"] == "exit"] == [0, 0]
    # each session's samples, as a table of prompt and text
    tables = [(f, r["history"]["item"]) for f in files for r in records[f]
              if r["type"] == "history" and r["history"]["item"].get("samples._type") == "table-file"]
    assert [h["_step"] for _, h in tables] == [4, 6]
    folder, last = tables[-1]
    table = json.loads((folder.parent / "files" / last["samples.path"]).read_text())
    assert table["columns"] == ["prompt", "sample"] and len(table["data"]) == 1
    prompt, sample = table["data"][0]
    assert prompt == "The " and (run / "samples.txt").read_text() == f"--- sample 1 ---\n{sample}\n"


def test_the_wandb_mode_rule():
    """train.wandb.mode, else WANDB_MODE, else online only with an API key: no network guessing."""
    assert wandb_mode(None, {}) == "offline"
    assert wandb_mode(None, {"WANDB_API_KEY": "k"}) == "online"
    assert wandb_mode(None, {"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}) == "offline"
    assert wandb_mode(None, {"WANDB_MODE": "disabled"}) == "disabled"
    assert wandb_mode("offline", {"WANDB_MODE": "online", "WANDB_API_KEY": "k"}) == "offline"
    with pytest.raises(LmlabError, match="WANDB_MODE='nope'.*train.wandb.mode"):
        wandb_mode(None, {"WANDB_MODE": "nope"})


def test_wandb_mode_env_is_honoured(tiny_config, wandb_env, monkeypatch):
    """WANDB_MODE=disabled: the run trains and W&B writes nothing."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    _, raw, run = tiny_config(train={"max_steps": 2, "trackers": ["wandb"]})
    lmlab.train(raw)
    assert (run / "samples.txt").is_file() and not list((run / "wandb").glob("*run-*"))
    assert not (run / "wandb_run.json").exists()  # a disabled run's id names no run to resume


def test_samples_reach_mlflow_and_tensorboard(tiny_config, tmp_path, monkeypatch):
    """The end-of-run samples as an MLflow artifact (kept beside the run's store, not in the
    cwd's ./mlruns) and as TensorBoard text, each read back through its own client."""
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    _, raw, run = tiny_config(train={"max_steps": 2, "trackers": ["mlflow", "tensorboard"]})
    lmlab.train(raw)
    block = (run / "samples.txt").read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{(run / 'mlflow.db').resolve()}")
    run_id = json.loads((run / "mlflow_run.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    got = Path(client.download_artifacts(run_id, "samples/step_2.txt", str(tmp_path)))
    assert got.read_text() == block
    assert (run / "mlartifacts").is_dir() and not any(cwd.iterdir())
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    (text,) = events.Tensors("samples/text_summary")  # torch.utils.tensorboard names text tags so
    assert text.step == 2 and text.tensor_proto.string_val[0].decode() == f"```\n{block.rstrip()}\n```"


def test_wandb_missing_names_the_install_command(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    _, raw, run = tiny_config(train={"trackers": ["wandb"]})
    with pytest.raises(LmlabError, match=r"wandb needs the wandb package: pip install 'lmlab\[track\]'"):
        lmlab.train(raw)

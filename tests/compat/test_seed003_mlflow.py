"""Seed 003's ``project_name`` (issue 30): MLflow logging under ``./mlruns/<project_name>``, as
the seed does, said in the translation's note (what ``lmlab config convert`` prints)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from lmlab.cli import main as cli
from lmlab.configure import load_config

NAME = "TemporalAutoencodedLanguageModelling"
URI = f"sqlite:///mlruns/{NAME}/mlflow.db"


def _exp(tmp_path: Path, **extra) -> Path:
    """A seed 003 ``experiments/*.py`` with ``project_name`` (and ``extra`` keys)."""
    path = tmp_path / "exp_config.py"
    exp = {"max_steps": 2, "project_name": NAME, "mlflow_batch_interval": 1, **extra}
    path.write_text(f"exp_config = {exp!r}\n", encoding="utf-8")
    return path


def test_convert_turns_mlflow_on_under_mlruns_project_name(tmp_path, capsys):
    assert cli(["config", "convert", str(_exp(tmp_path))]) == 0
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if line.startswith("# seed 003 `project_name`")]
    assert len(notes) == 1, out
    assert "`train.mlflow.experiment`, MLflow on (`train.trackers` = [jsonl, mlflow]" in notes[0]
    assert f"`train.mlflow.tracking_uri` = {URI} (./mlruns/{NAME} in the folder lmlab trains from" in notes[0]
    train = yaml.safe_load(out)["train"]
    assert train["trackers"] == ["jsonl", "mlflow"]
    assert train["mlflow"] == {"tracking_uri": URI, "experiment": NAME, "batch_interval": 1}


def test_a_config_that_chose_its_trackers_or_store_keeps_them(tmp_path):
    notes: list[str] = []
    cfg = load_config(_exp(tmp_path, train={"trackers": ["jsonl"]}), notes=notes.append)
    assert cfg.train.trackers == ["jsonl"] and cfg.train.mlflow.tracking_uri == URI
    assert any("`train.trackers` = ['jsonl'] is kept: add mlflow" in n for n in notes), notes
    notes.clear()
    cfg = load_config(_exp(tmp_path, train={"mlflow": {"tracking_uri": "sqlite:///elsewhere.db"}}),
                      notes=notes.append)
    assert cfg.train.trackers == ["jsonl", "mlflow"] and cfg.train.mlflow.tracking_uri == "sqlite:///elsewhere.db"
    assert any("tracking_uri` = sqlite:///elsewhere.db is kept" in n for n in notes), notes


def test_a_seed003_run_logs_to_mlruns_project_name(tmp_path, monkeypatch, corpus_dir):
    """Trained from its folder: the MLflow run, its metrics and its samples are under
    ./mlruns/<project_name>, read back through MLflow's client with the seed's store."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    path = _exp(tmp_path)
    sets = [f"data.sources=[{{type: text, path: '{corpus_dir}'}}]", "model.preset=tiny", "train.batch_size=2",
            "train.warmup_steps=1", "train.progress=false", "train.eval_batches=1", "train.log_interval=1",
            "sample.max_new_tokens=4", "train.out_dir=run"]
    assert cli(["train", "--config", str(path), *[a for s in sets for a in ("--set", s)]]) == 0
    store = tmp_path / "mlruns" / NAME
    assert (store / "mlflow.db").is_file() and sorted(p.name for p in tmp_path.iterdir()) == \
        ["exp_config.py", "mlruns", "run"]
    client = MlflowClient(tracking_uri=URI)
    run_id = json.loads((tmp_path / "run" / "mlflow_run.json").read_text())["run_id"]
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and client.get_experiment(got.info.experiment_id).name == NAME
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    samples = Path(client.download_artifacts(run_id, "samples/step_2.txt", str(tmp_path / "run")))
    assert samples.read_text() == (tmp_path / "run" / "samples.txt").read_text()
    assert (store / "mlartifacts").is_dir()

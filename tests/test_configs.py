"""Every config shipped in configs/ loads (run configs and comparison specs), and the speed recipe
(configs/speedrun.yaml) trains as documented: Muon + warmup-stable-decay, train_s logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmlab
from lmlab.compare.spec import load_spec
from lmlab.configure import load_config

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO / "configs")) for p in CONFIGS])
def test_shipped_config_loads(path, monkeypatch):
    monkeypatch.chdir(REPO)  # their data paths are relative to the repo root
    if path.parent.name == "compare":
        assert load_spec(path).arms
    else:
        cfg = load_config(path, notes=lambda _: None)
        assert cfg.train.out_dir.startswith("runs/")


def test_speedrun_recipe_trains_with_its_knobs(tmp_path, monkeypatch):
    if not (REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip("../shared/data/tinyshakespeare is absent (the recipe trains on it)")
    monkeypatch.chdir(REPO)
    cfg = load_config(REPO / "configs" / "speedrun.yaml")
    t = cfg.train
    assert (t.optimizer, t.schedule, t.precision, t.compile, cfg.model.pos_encoding) == ("muon", "wsd", "fp32", False,
                                                                                            "rope")
    lmlab.train(str(REPO / "configs" / "speedrun.yaml"),
                **{"train.out_dir": str(tmp_path / "run"), "train.max_steps": 4, "train.log_interval": 2,
                   "train.eval_batches": 1, "sample.max_new_tokens": 4})
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]
    assert all(0 < r["train_s"] <= r["wall_s"] for r in rows if "loss" in r)
    assert any("val_loss" in r and "train_s" in r for r in rows)

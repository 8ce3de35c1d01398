"""lmlab compare: a tiny two-arm spec trains on one tokenizer, scores, and writes results.json,
report.md and a self-contained report.html; param matching; a killed compare resumes to the same
results; lmlab report reads run dirs and compare dirs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lmlab.cli import main as cli
from lmlab.compare.run import run_compare
from lmlab.compare.spec import load_spec, select_arms
from lmlab.compare.widths import count_params
from lmlab.configure import validate_config
from lmlab.errors import ConfigError
from lmlab.registry import build_model
from lmlab.rundir import latest_snapshot

REPO = Path(__file__).resolve().parents[2]
EXACT = ("num_params", "tokens", "val_loss", "val_bpb")  # what a resumed compare must reproduce bit for bit


def _spec(tmp_path: Path, corpus_dir: Path, **over) -> Path:
    spec = {
        "name": "duel",
        "out_dir": str(tmp_path / "cmp"),
        "data": {"sources": [{"type": "text", "path": str(corpus_dir)}], "val_fraction": 0.1},
        "tokenizer": {"type": "char"},
        "model": {"block_size": 32},
        "train": {"max_steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "eval_interval": 3,
                  "save_interval": 2, "log_interval": 1, "progress": False, "eval_batches": 2, "num_threads": 1},
        "sample": {"max_new_tokens": 4},
        "seeds": [1, 2],
        "arms": [{"name": "transformer", "model": {"family": "transformer", "preset": "tiny"}},
                 {"name": "apelr", "model": {"family": "apelr", "preset": "tiny"}}],
        **over,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _numbers(root: Path) -> dict:
    res = json.loads((root / "results.json").read_text())
    return {(a["name"], r["seed"]): {k: r["numbers"][k] for k in EXACT} for a in res["arms"] for r in a["runs"]}


def test_a_two_arm_compare_trains_scores_and_reports(tmp_path, corpus_dir):
    data = REPO.parent / "shared" / "data"
    tasks = {"eval": {"tasks": ["piqa"], "max_examples": 4, "data_dir": str(data)}} if (data / "eval").is_dir() else {}
    path = _spec(tmp_path, corpus_dir, match_params={"arm": "transformer", "width": "d_ff", "tolerance": 0.02},
                 **tasks)
    assert cli(["compare", str(path)]) == 0
    root = tmp_path / "cmp"
    res = json.loads((root / "results.json").read_text())
    assert [a["name"] for a in res["arms"]] == ["transformer", "apelr"]
    for arm in res["arms"]:
        assert [r["seed"] for r in arm["runs"]] == [1, 2]
        assert arm["summary"]["val_bpb"]["n"] == 2 and arm["summary"]["val_bpb"]["std"] >= 0
        if tasks:
            assert "piqa/acc" in arm["summary"]
    # one tokenizer, one batch order: every run read the same tokenizer; seeds differ in data order
    toks = {(root / a / f"seed{s}" / "tokenizer" / "tokenizer_meta.json").read_text()
            for a in ("transformer", "apelr") for s in (1, 2)}
    assert len(toks) == 1
    # parameters matched within the tolerance, exactly as counted on the meta device
    p_ref, p_apelr = (a["summary"]["num_params"]["mean"] for a in res["arms"])
    assert abs(p_apelr - p_ref) / p_ref <= 0.02
    assert "diag/belief_entropy" in res["arms"][1]["summary"]  # apelr's own diagnostics
    md = (root / "report.md").read_text()
    assert "| transformer | transformer |" in md and "| apelr | apelr |" in md
    page = (root / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page) and "http" not in page
    assert "diag/usage[0]" in res["arms"][1]["summary"]  # apelr's plan usage, per state


def test_the_report_loads_in_a_headless_browser(tmp_path, corpus_dir):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless browser here (chromium from Debian packages runs this check)")
    spec = _spec(tmp_path, corpus_dir, seeds=[1], train={"max_steps": 2, "batch_size": 2, "progress": False,
                                                         "eval_batches": 1, "num_threads": 1})
    assert cli(["compare", str(spec)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,1600", (tmp_path / "cmp" / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_param_matching_refuses_what_cannot_match(tmp_path, corpus_dir):
    path = _spec(tmp_path, corpus_dir, match_params={"arm": "transformer", "width": "d_ff", "tolerance": 1e-6},
                 arms=[{"name": "transformer", "model": {"family": "transformer", "preset": "tiny"}},
                       {"name": "wide", "model": {"family": "transformer", "preset": "tiny", "d_model": 128}},
                       {"name": "bytes", "model": {"family": "abstractinator", "preset": "tiny", "block_size": 32}}])
    with pytest.raises(ConfigError) as e:
        run_compare(path, log=lambda *_: None)
    line = str(e.value)
    assert "arm bytes: the abstractinator family has no d_ff" in line
    assert "arm wide: the nearest d_ff" in line and "tolerance 0%" in line


def test_count_params_is_exact():
    section = {"family": "apelr", "preset": "tiny", "d_ff": 100}
    cfg = validate_config({"model": {**section, "vocab_size": 50}})
    torch.manual_seed(0)
    assert count_params(section, 50, {"type": "char"}) == sum(p.numel() for p in build_model(cfg.model).parameters())


def test_a_bad_spec_lists_every_arm_problem(tmp_path, corpus_dir):
    path = _spec(tmp_path, corpus_dir, arms=[{"name": "a", "model": {"family": "transformer", "n_layerz": 2}},
                                             {"name": "b", "model": {"family": "nope"}},
                                             {"name": "c", "run": str(tmp_path / "missing")}])
    with pytest.raises(ConfigError) as e:
        load_spec(path)
    line = str(e.value)
    assert "arm a: model.n_layerz = 2: unknown key" in line and "arm b: model.family = 'nope'" in line
    assert "arm c: run" in line and "\n" not in line
    assert cli(["compare", str(path)]) == 2



def test_arms_selects_arms_with_the_ones_they_need(tmp_path, corpus_dir):
    """--arms keeps the named arms, the match_params arm and the arms they cite (arm:NAME, also
    through another cited arm), in the spec's order; an unknown name is refused in one line."""
    tiny = {"family": "transformer", "preset": "tiny"}
    arms = [{"name": "base", "model": tiny}, {"name": "other", "model": tiny},
            {"name": "stage1", "model": tiny}, {"name": "mid", "model": tiny, "train": {"init_from": "arm:stage1"}},
            {"name": "stage2", "model": tiny, "train": {"init_from": "arm:mid"}}]
    raw = {"match_params": {"arm": "base", "width": "d_ff"}, "arms": arms}
    assert [a["name"] for a in select_arms(raw, ["stage2"], "s.yaml")["arms"]] == ["base", "stage1", "mid", "stage2"]
    assert [a["name"] for a in select_arms({"arms": arms}, ["other"], "s.yaml")["arms"]] == ["other"]
    with pytest.raises(ConfigError, match=r"^s.yaml: --arms names nope, not arms of the spec \(base, other, "):
        select_arms(raw, ["other", "nope"], "s.yaml")
    path = _spec(tmp_path, corpus_dir)
    assert [a.name for a in load_spec(path, arms=["apelr"]).arms] == ["apelr"]
    assert cli(["compare", str(path), "--arms", "nope"]) == 2


def test_a_spec_is_read_safely(tmp_path, corpus_dir):
    path = _spec(tmp_path, corpus_dir)
    text = path.read_text()
    path.write_text(text + "seeds: [3]\n")  # a second `seeds:` silently replaced the first
    with pytest.raises(ConfigError, match=r"spec.yaml: line \d+: duplicate key 'seeds' \(first at line \d+\)"):
        load_spec(path)
    bomb = "".join(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}" if i else "lol"] * 10) + "]\n" for i in range(10))
    path.write_text(text + bomb)
    with pytest.raises(ConfigError, match="spec.yaml: its aliases expand to more than 100,000 values"):
        load_spec(path)
    path.write_text("")
    with pytest.raises(ConfigError, match="spec.yaml: the compare spec file is empty"):
        load_spec(path)
    path.write_text("- arms\n")
    with pytest.raises(ConfigError, match="spec.yaml: a compare spec must be a mapping"):
        load_spec(path)


@pytest.mark.slow
def test_a_killed_compare_resumes_to_the_same_results(tmp_path, corpus_dir):
    """SIGINT while the second arm trains, then the same command again: finished runs are kept,
    the interrupted one resumes exactly, and results.json matches an uninterrupted compare."""
    whole = _spec(tmp_path / "a", corpus_dir) if (tmp_path / "a").mkdir() is None else None
    assert cli(["compare", str(whole)]) == 0
    broken = _spec(tmp_path / "b", corpus_dir) if (tmp_path / "b").mkdir() is None else None
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "compare", str(broken)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    target = tmp_path / "b" / "cmp" / "apelr" / "seed1" / "checkpoints" / "current"
    deadline = time.time() + 300
    while not target.is_dir():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert not (tmp_path / "b" / "cmp" / "results.json").exists()
    assert cli(["compare", str(broken)]) == 0
    assert _numbers(tmp_path / "b" / "cmp") == _numbers(tmp_path / "a" / "cmp")


def test_lmlab_report_of_runs_and_a_compare(tmp_path, corpus_dir, tiny_config):
    path, raw, run = tiny_config(train={"max_steps": 4})
    assert cli(["train", "--config", str(path)]) == 0
    assert cli(["report", str(run)]) == 0  # one run: its panels too
    assert (run / "report" / "run.png").is_file() and (run / "report" / "report.html").is_file()
    spec = _spec(tmp_path, corpus_dir, seeds=[1], train={"max_steps": 2, "batch_size": 2, "progress": False,
                                                         "eval_batches": 1, "num_threads": 1})
    assert cli(["compare", str(spec)]) == 0
    out = tmp_path / "mixed"
    assert cli(["report", str(tmp_path / "cmp"), str(run), "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [a["name"] for a in res["arms"]] == ["transformer", "apelr", "run"]
    assert cli(["report", str(tmp_path / "nothing")]) == 2
    # apelr with its planner diagnostics at every eval: they are charted over time
    path, raw, run = tiny_config(model={"family": "apelr", "preset": "tiny", "block_size": 32},
                                 train={"max_steps": 4, "eval_interval": 2, "eval_planner_diagnostics": True,
                                        "out_dir": str(tmp_path / "apelr")})
    assert cli(["train", "--config", str(path)]) == 0
    assert cli(["report", str(tmp_path / "apelr")]) == 0
    assert (tmp_path / "apelr" / "report" / "diagnostics.png").is_file()


def test_max_seconds_caps_a_run_and_a_resume_keeps_it_finished(tiny_config):
    """train.max_seconds: the run stops (evaluates, saves) at the first step past it; running it
    again trains nothing more, since the cap counts training time over resumes."""
    path, raw, run = tiny_config(train={"max_steps": 500, "max_seconds": 1e-6})
    assert cli(["train", "--config", str(path)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    assert (m["steps"], m["stopped_by"]) == (1, "max_seconds") and "val_loss" in m
    assert cli(["train", "--config", str(path)]) == 0
    assert latest_snapshot(run).meta["step"] == 1


def test_datasets_each_get_their_arms_tokenizer_and_section(tmp_path, corpus_dir):
    """A spec with datasets runs every arm x seed on each (its own tokenizer and split) under
    <root>/<dataset>/, with a section per dataset in the top-level report; match_params.widths
    lets a family without d_ff (the abstractinator) match on d_model."""
    md = tmp_path / "md"
    md.mkdir()
    (md / "a.md").write_text("# A\n\n" + "Some markdown text about the lazy dog. " * 40)
    (md / "b.md").write_text("# B\n\n" + "More text, of another kind, for a second document. " * 40)
    spec = _spec(tmp_path, corpus_dir, seeds=[3],
                 train={"max_steps": 2, "batch_size": 2, "progress": False, "eval_batches": 1, "num_threads": 1},
                 datasets=[{"name": "docs", "data": {"sources": [{"type": "text", "path": str(corpus_dir)}]}},
                           {"name": "md", "data": {"sources": [{"type": "text", "path": str(md)}]},
                            "tokenizer": {"type": "byte"}}],
                 match_params={"arm": "transformer", "tolerance": 0.1, "widths": {"bytes": "d_model"}},
                 arms=[{"name": "transformer", "model": {"family": "transformer", "preset": "tiny"}},
                       {"name": "bytes", "model": {"family": "abstractinator", "preset": "tiny", "block_size": 32}}])
    assert cli(["compare", str(spec)]) == 0
    root = tmp_path / "cmp"
    res = json.loads((root / "results.json").read_text())
    assert sorted(res["datasets"]) == ["docs", "md"]
    for name in ("docs", "md"):
        arms = res["datasets"][name]["arms"]
        assert [a["name"] for a in arms] == ["transformer", "bytes"]
        p_ref, p_bytes = (a["summary"]["num_params"]["mean"] for a in arms)
        assert abs(p_bytes - p_ref) / p_ref <= 0.1
    report = (root / "report.md").read_text()
    assert "## docs" in report and "## md" in report
    assert (root / "report.html").read_text().count("data:image/png;base64,") == 4


@pytest.mark.slow
def test_a_compare_runs_under_torchrun(tmp_path, corpus_dir):
    """torchrun --nproc_per_node 2 -m lmlab compare: one process group for every arm (each arm
    trains DDP on 2 CPU processes), rank 0 scores and reports."""
    spec = _spec(tmp_path, corpus_dir, seeds=[1], train={"max_steps": 2, "batch_size": 2, "progress": False,
                                                         "eval_batches": 1, "num_threads": 1})
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "lmlab",
                           "compare", str(spec)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert [a["name"] for a in res["arms"]] == ["transformer", "apelr"]
    meta = json.loads((tmp_path / "cmp" / "apelr" / "seed1" / "metrics.json").read_text())
    assert meta["world"] == 2 and meta["steps"] == 2
    assert proc.stdout.count("lmlab compare: apelr seed 1: training") == 1  # rank 0 alone speaks


def test_report_of_one_comparison_never_overwrites_its_results(tmp_path, corpus_dir):
    spec = _spec(tmp_path, corpus_dir, seeds=[1], train={"max_steps": 2, "batch_size": 2, "progress": False,
                                                         "eval_batches": 1, "num_threads": 1})
    assert cli(["compare", str(spec)]) == 0
    before = (tmp_path / "cmp" / "results.json").read_text()
    assert cli(["report", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "results.json").read_text() == before
    assert (tmp_path / "cmp" / "report" / "report.html").is_file()

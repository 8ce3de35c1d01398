"""Shared fixtures: a small on-disk corpus and a tiny run config that trains in a second or two."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The suite never needs the network: MLflow's usage telemetry stays off in tests (and their subprocesses).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Nor the hub: a test that reaches for it (lm-eval's hf model, transformers) fails instead of downloading.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
SHARED_DATA = REPO.parent / "shared" / "data"


def _one_line_error(proc, *needles: str) -> str:
    """Assert a CLI run failed the user-error way (exit 2, one stderr line, no traceback) and that
    the line names every needle; returns the line."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _reseal(snapshot: Path) -> None:
    """Recompute a tampered snapshot's checksums (meta.json's map, then SHA256SUMS), as a hand edit
    that also fixes them would leave it: only loading can then tell what is wrong."""
    import json

    from lmlab.integrity import META, SUMS, sha256

    meta = json.loads((snapshot / META).read_text())
    meta["sha256"] = {n: sha256(snapshot / n) for n in meta["sha256"]}
    (snapshot / META).write_text(json.dumps(meta))
    sums = {**meta["sha256"], META: sha256(snapshot / META)}
    (snapshot / SUMS).write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))


@pytest.fixture
def reseal():
    """``reseal(snapshot_dir)``: checksums that fit a hand-edited snapshot again (``_reseal``)."""
    return _reseal


@pytest.fixture
def one_line_error():
    """``one_line_error(proc, *needles) -> str``: the CLI user-error check (see ``_one_line_error``)."""
    return _one_line_error


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Every test uses tiny shapes: one thread avoids OpenMP overhead and contention on 2 cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """~40 short English documents (Python doc topics) as .txt files, plus one .md."""
    from pydoc_data.topics import topics

    root = tmp_path_factory.mktemp("corpus")
    for i, name in enumerate(sorted(topics)[:40]):
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(exist_ok=True)
        (sub / f"{name}.txt").write_text(topics[name][:3000], encoding="utf-8")
    (root / "notes.md").write_text("# Notes\n\nThe quick brown fox jumps over the lazy dog.\n", encoding="utf-8")
    return root


def tiny_raw(corpus: Path, out_dir: Path, **sections) -> dict:
    """A run config dict: char tokenizer, tiny transformer, a dozen steps."""
    raw = {
        "data": {"sources": [{"type": "text", "path": str(corpus)}], "val_fraction": 0.1},
        "tokenizer": {"type": "char"},
        "model": {"family": "transformer", "preset": "tiny", "block_size": 32},
        "train": {
            "out_dir": str(out_dir), "batch_size": 4, "max_steps": 12, "lr": 3e-3, "warmup_steps": 2,
            "log_interval": 2, "eval_interval": 6, "eval_batches": 2, "save_interval": 6,
            "progress": False, "num_threads": 1, "seed": 7,
        },
        "sample": {"prompts": ["The "], "max_new_tokens": 16},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


@pytest.fixture(scope="session")
def make_raw():
    """The ``tiny_raw`` builder, for module- or session-scoped fixtures."""
    return tiny_raw


@pytest.fixture
def tiny_config(corpus_dir, tmp_path):
    """Write a tiny config file; returns (path, raw dict, run dir)."""

    def make(**sections):
        run = tmp_path / "run"
        raw = tiny_raw(corpus_dir, run, **sections)
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        return path, raw, run

    return make


@pytest.fixture
def run_cli():
    """Run ``python -m lmlab ARGS`` in a subprocess; returns the CompletedProcess (text mode)."""
    import subprocess

    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"

    def run(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lmlab", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, **kw)

    run.env = env
    return run

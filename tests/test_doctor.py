"""``lmlab doctor`` at tiny sizes on CPU: every check runs (or says why not) for every family, and
the report files are written, so the GPU suite cannot rot between GPU sessions. ``compile`` is
skipped here (inductor builds CPU kernels for minutes) and ``ddp_fsdp`` needs ``--processes 2``
(the torchrun tests cover it)."""

from __future__ import annotations

import csv
import json

import pytest

from lmlab.doctor import CHECKS, run_doctor
from lmlab.registry import FAMILIES


def test_every_check_passes_or_says_why_not_for_every_family(tmp_path, capsys):
    folder = run_doctor("cpu", tmp_path / "reports", skip=("compile",))
    results = json.loads((folder / "results.json").read_text())["results"]
    assert {(r["family"], r["check"]) for r in results} == {(f, c) for f in FAMILIES for c in CHECKS}
    failed = [(r["family"], r["check"], r.get("error")) for r in results if r["status"] == "FAIL"]
    assert not failed, failed
    passed = {(r["family"], r["check"]) for r in results if r["status"] == "PASS"}
    for family in FAMILIES:  # what every family must pass on a CPU
        for check in ("forward_backward", "precision", "throughput", "generation", "continuity"):
            assert (family, check) in passed, (family, check)
    skipped = {r["check"]: r["reason"] for r in results if r["status"] == "SKIP" and r["family"] == "transformer"}
    assert "needs 2 devices" in skipped["ddp_fsdp"] and skipped["compile"] == "--skip"
    rows = list(csv.DictReader(open(folder / "throughput.csv")))
    assert len(rows) == 3 * len(FAMILIES) and all(float(r["tokens_per_s"]) > 0 for r in rows)
    system = json.loads((folder / "system.json").read_text())
    assert system["device"] == "cpu" and system["torch"]
    assert "transformer" in json.loads((folder / "memory.json").read_text())["grad_checkpoint"]
    assert "passed, 0 failed" in capsys.readouterr().out


def test_unknown_names_are_one_line(tmp_path):
    from lmlab.errors import LmlabError

    with pytest.raises(LmlabError, match="--skip: unknown check"):
        run_doctor("cpu", tmp_path, skip=("speed",))
    with pytest.raises(LmlabError, match="--families: unknown"):
        run_doctor("cpu", tmp_path, families=["rnn"])


@pytest.mark.slow
def test_the_compile_check_runs_on_cpu(tmp_path):
    pytest.importorskip("torch._inductor")
    folder = run_doctor("cpu", tmp_path, families=["transformer"], skip=tuple(c for c in CHECKS if c != "compile"))
    row = next(r for r in json.loads((folder / "results.json").read_text())["results"] if r["check"] == "compile")
    assert row["status"] == "PASS" and row["rel"] < 1e-3, row

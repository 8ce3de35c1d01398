"""``lmlab doctor`` at tiny sizes on CPU: every check runs (or says why not) for every family, and
the report files are written, so the GPU suite cannot rot between GPU sessions. ``compile`` is
skipped here (inductor builds CPU kernels for minutes) and ``ddp`` / ``fsdp`` (GPU-05/06) need
``--processes 2`` (the torchrun tests cover them)."""

from __future__ import annotations

import csv
import json
import re

import pytest

from lmlab.cli import main
from lmlab.doctor import CHECKS, IDS, THRESHOLDS, Doctor, failures, resolve_checks, run_doctor
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
    assert "needs 2 devices" in skipped["ddp"] and "needs 2 devices" in skipped["fsdp"]
    assert skipped["compile"] == "--skip"
    assert {r["id"] for r in results} == {f"GPU-0{i}" for i in range(1, 9)} | {"-"}
    rows = list(csv.DictReader(open(folder / "throughput.csv")))
    assert len(rows) == 3 * len(FAMILIES) and all(float(r["tokens_per_s"]) > 0 for r in rows)
    system = json.loads((folder / "system.json").read_text())
    assert system["device"] == "cpu" and system["torch"]
    assert "transformer" in json.loads((folder / "memory.json").read_text())["grad_checkpoint"]
    out = capsys.readouterr().out
    assert "passed, 0 failed" in out
    assert re.search(r"transformer +GPU-02 precision +PASS +rel_bf16=\S+ +\[threshold: rel < 0.02 vs fp32\]", out)


def test_unknown_names_are_one_line(tmp_path, capsys):
    from lmlab.errors import LmlabError

    assert main(["doctor", "--device", "cpu", "--out", str(tmp_path), "--only", "GPU-3,throughput"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lmlab doctor: error: --only: unknown check(s) ['GPU-3']; checks: GPU-01 ")
    with pytest.raises(SystemExit) as usage:  # one of the two: argparse says so in one line
        main(["doctor", "--device", "cpu", "--out", str(tmp_path), "--only", "GPU-03", "--skip", "compile"])
    assert usage.value.code == 2 and "not allowed with argument" in capsys.readouterr().err

    with pytest.raises(LmlabError, match="--skip: unknown check"):
        run_doctor("cpu", tmp_path, skip=("speed",))
    with pytest.raises(LmlabError, match=r"--only: unknown check\(s\) \['GPU-09'\]; checks: GPU-01 forward_backward"):
        run_doctor("cpu", tmp_path, only=("GPU-09",))
    with pytest.raises(LmlabError, match="--only and --skip: give one"):
        run_doctor("cpu", tmp_path, only=("GPU-01",), skip=("compile",))
    assert not any(tmp_path.iterdir())  # refused before a report folder was made
    with pytest.raises(LmlabError, match="--families: unknown"):
        run_doctor("cpu", tmp_path, families=["rnn"])


@pytest.mark.slow
def test_the_compile_check_runs_on_cpu(tmp_path):
    pytest.importorskip("torch._inductor")
    folder = run_doctor("cpu", tmp_path, families=["transformer"], skip=tuple(c for c in CHECKS if c != "compile"))
    row = next(r for r in json.loads((folder / "results.json").read_text())["results"] if r["check"] == "compile")
    assert row["status"] == "PASS" and row["rel"] < 1e-3, row


def test_checks_are_named_by_seed_id_or_name():
    assert resolve_checks(["GPU-03", "gpu-07", "compile"], "--only") == {"throughput", "generation", "compile"}
    assert resolve_checks(["ddp_fsdp"], "--skip") == {"ddp", "fsdp"} == {c for c, i in IDS.items() if i in
                                                                         ("GPU-05", "GPU-06")}
    assert sorted(IDS.values()) == [f"GPU-0{i}" for i in range(1, 9)] and set(THRESHOLDS) == set(CHECKS)


def test_only_runs_the_named_checks_and_a_fail_exits_1_with_its_threshold(tmp_path, capsys, monkeypatch):
    """``--only GPU-07`` reports that check alone, prints its threshold and exits 0; a FAIL is
    still written to the report, named in the summary, and makes the command exit 1."""
    argv = ["doctor", "--device", "cpu", "--families", "transformer", "--out", str(tmp_path / "a")]
    assert main([*argv, "--only", "GPU-07"]) == 0
    out = capsys.readouterr().out
    assert "GPU-07 generation" in out and f"[threshold: {THRESHOLDS['generation']}]" in out
    (folder,) = (tmp_path / "a").iterdir()
    rows = json.loads((folder / "results.json").read_text())["results"]
    assert [(r["id"], r["check"], r["status"]) for r in rows] == [("GPU-07", "generation", "PASS")]

    monkeypatch.setattr(Doctor, "precision", lambda self, family: {"ok": False, "fp32": 1.0, "rel_bf16": 0.5})
    assert main([*argv[:-1], str(tmp_path / "b"), "--only", "precision,GPU-07"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"GPU-02 precision +FAIL +rel_bf16=0.5 +\[threshold: rel < 0.02 vs fp32\]", out)
    assert "1 passed, 1 failed, 0 skipped; FAIL GPU-02 precision (transformer)" in out
    (folder,) = (tmp_path / "b").iterdir()
    assert [r["check"] for r in failures(folder)] == ["precision"]

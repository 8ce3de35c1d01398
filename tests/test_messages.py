"""One-line messages where a traceback used to be: lm-eval's command line with lmlab's model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="the lm-eval command line needs lm-eval (pip install lmlab[eval])")

from lmlab.eval.lm_eval_cli import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def test_lm_eval_cli_with_a_missing_run_is_one_line_and_exit_2():
    """The issue's command as typed: no --model (lmlab is the default here), no --tasks, a run
    dir that does not exist: one line naming it, exit 2, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lmlab.eval.lm_eval_cli", "--model_args", "pretrained=/nonexistent"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line == ("lmlab.eval.lm_eval_cli: error: --model_args pretrained=/nonexistent: no such run dir; "
                    "give a run dir lmlab train wrote")


@pytest.mark.parametrize("args, needle", [
    (["--model", "lmlab", "--model_args", "pretrained={file}", "--tasks", "piqa"], "pretrained={file}: not a folder"),
    (["run", "-M", "lmlab", "-a", "pretrained={empty},batch_size=4", "-t", "piqa"], "holds no checkpoint"),
    (["--model", "lmlab", "--tasks", "piqa"], "--model_args: no pretrained=RUN_DIR"),
    (["-a", '{{"pretrained": "{empty}"}}', "-a", "batch_size=2", "-t", "piqa"], "holds no checkpoint"),
    (["--model_args", "pretrained={run}"], "--tasks: none given"),
])
def test_lm_eval_cli_checks_what_lmlab_can_before_lm_eval_starts(tmp_path, capsys, args, needle):
    paths = {"file": tmp_path / "weights.bin", "empty": tmp_path / "empty", "run": tmp_path / "run"}
    paths["file"].write_text("x")
    paths["empty"].mkdir()
    (paths["run"] / "checkpoints" / "current").mkdir(parents=True)
    argv = [a.format(**paths) for a in args]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lmlab.eval.lm_eval_cli: error: ") and needle.format(**paths) in line


@pytest.mark.slow
def test_lm_eval_cli_unknown_task_is_one_line(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints" / "current").mkdir(parents=True)
    assert main(["--model_args", f"pretrained={tmp_path / 'run'}", "--tasks", "nosuchtask"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--tasks: Tasks not found: nosuchtask" in line

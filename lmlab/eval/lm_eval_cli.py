"""lm-eval's own command line with the ``lmlab`` model registered.

    python -m lmlab.eval.lm_eval_cli --model lmlab --model_args pretrained=runs/default \\
        --tasks hellaswag --batch_size 32

Takes exactly lm-eval's arguments (``run``/``ls``/``validate`` subcommands included; with none,
lm-eval assumes ``run``), with ``lmlab`` as the model when neither ``--model`` nor ``--config``
names one. Before lm-eval starts, an lmlab run is checked (``pretrained=`` names a run dir
with a checkpoint) and ``--tasks`` must be given, so a typo is one line and exit 2, not a
traceback after the task index is built; any lmlab error while it runs is one line too. See
:mod:`lmlab.eval.lm_eval_adapter`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from lm_eval.__main__ import cli_evaluate

import lmlab.eval.lm_eval_adapter  # noqa: F401  (registers --model lmlab)
from lmlab import rundir
from lmlab.console import run_command
from lmlab.errors import LmlabError

NAME = "lmlab.eval.lm_eval_cli"
SUBCOMMANDS = ("run", "ls", "validate")
TASK_ERRORS = ("Tasks not found", "No tasks specified")


def _model_args(given: list[list[str]] | None) -> dict[str, Any]:
    """``--model_args`` (each use) as lm-eval reads it: a JSON object, ``k=v,k2=v2`` and/or
    ``k=v k2=v2``; later uses win."""
    out: dict[str, Any] = {}
    for tokens in given or []:
        with contextlib.suppress(ValueError):
            parsed = json.loads(tokens[0])
            if isinstance(parsed, dict):
                out.update(parsed)
                continue
        pairs = [p for t in tokens for p in t.split(",") if "=" in p]
        out.update(p.split("=", 1) for p in pairs)
    return out


def check_run_args(argv: list[str]) -> list[str]:
    """``argv`` with ``--model lmlab`` added where no model is named, after checking what lmlab
    can check before lm-eval starts (LmlabError, one line): the run dir, and that tasks are
    named."""
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    if command not in (None, "run") or not argv or any(a in ("-h", "--help") for a in argv):
        return argv
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", "-M")
    parser.add_argument("--model_args", "-a", nargs="+", action="append")
    parser.add_argument("--tasks", "-t", nargs="+")
    parser.add_argument("--config", "-C")
    known, _ = parser.parse_known_args(argv[1:] if command else argv)
    if known.model is None and known.config is None:
        argv = [*argv, "--model", "lmlab"]
    if (known.model or "lmlab") == "lmlab" and known.config is None:
        _check_run(_model_args(known.model_args).get("pretrained"))
    if known.config is None and not known.tasks:
        raise LmlabError("--tasks: none given; name the lm-eval tasks to run, e.g. --tasks hellaswag "
                         "(lm-eval ls tasks lists them)")
    return argv


def _check_run(given: Any) -> None:
    """``pretrained=`` names a run dir with a checkpoint (LmlabError, one line, else)."""
    if not given:
        raise LmlabError("--model_args: no pretrained=RUN_DIR; name the lmlab run dir to score, "
                         "e.g. --model_args pretrained=runs/default")
    given = str(given)
    run, _ = rundir.resolve_run_path(given, quiet=True)
    if not Path(run).is_dir():
        what = "not a folder" if Path(run).exists() else "no such run dir"
        raise LmlabError(f"--model_args pretrained={given}: {what}; give a run dir lmlab train wrote")
    if not rundir.has_checkpoint(run):
        raise LmlabError(f"--model_args pretrained={given}: {run} holds no checkpoint; train it first "
                         "or give another run dir")


def _evaluate(argv: list[str]) -> None:
    """lm-eval's CLI on ``argv`` (it reads ``sys.argv``, put back afterwards)."""
    argv = check_run_args(argv)
    saved = sys.argv
    sys.argv = [saved[0] if saved else NAME, *argv]
    try:
        cli_evaluate()
    except ValueError as e:  # lm-eval's own words for a task name it does not know
        if not str(e).startswith(TASK_ERRORS):
            raise
        raise LmlabError(f"--tasks: {str(e).splitlines()[0]}; lm-eval ls tasks lists them") from None
    finally:
        sys.argv = saved


def main(argv: list[str] | None = None) -> int:
    """Run lm-eval's CLI; a user error is one line and exit 2."""
    code, _ = run_command(NAME, lambda: _evaluate(list(sys.argv[1:] if argv is None else argv)))
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``lmlab eval``: score checkpoints on tasks, write one JSON per run and a markdown table.

Each task is an object from the task table (``lmlab.eval.tasks``): it loads its documents,
makes its requests and computes its metrics (``tasks/base.py`` says how for each kind), so this
module only loads checkpoints, hands each task the Scorer and writes the reports.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmlab import rundir
from lmlab.devices import resolve_device
from lmlab.errors import LmlabError
from lmlab.eval.metrics import TaskResult
from lmlab.eval.scoring import Scorer
from lmlab.eval.tasks import Doc, Task, get_task, resolve_tasks
from lmlab.fsio import atomic_write_text, check_writable, user_io, user_os_error
from lmlab.interop.hf import is_hf_folder, load_hf
from lmlab.interop.hf_config import hf_model_type
from lmlab.runs import load_run

RESULTS_FILE = "eval_results.json"
BATCH_SIZE = 32
"""Scored sequences per forward (``--batch-size``); training's ``eval_tasks`` use it too: a
document's score depends, in its last bits, on the batch it was padded into."""


def run_task(scorer: Scorer, task: str | Task, docs: list[Doc], stride: int | None = None) -> TaskResult:
    """Score ``docs`` of ``task`` (a task object or a task name) with ``scorer``."""
    task = get_task(task) if isinstance(task, str) else task
    if not docs:
        raise LmlabError(f"{task.name}: no examples to score")
    t0 = time.perf_counter()
    res = task.score(scorer, docs, stride)
    res.seconds = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------ checkpoints


def load_checkpoint(path: str | Path, device: str = "cpu", snapshot: str = "latest"):
    """(model, tokenizer, description dict) of an lmlab run dir or an HF folder (GPT-2, Llama)."""
    path = Path(path)
    if is_hf_folder(path):
        model, tokenizer, _ = load_hf(path)
        if tokenizer is None:
            raise LmlabError(f"{path}: HF model folder without tokenizer.json (or GPT-2's vocab.json + merges.txt)")
        return model.to(device).eval(), tokenizer, {"path": str(path), "format": f"hf-{hf_model_type(path)}",
                                                    "family": "transformer", "params": model.num_params()}
    model, tokenizer, cfg, snap = load_run(path, device, snapshot)
    return model, tokenizer, {"path": str(path), "format": "lmlab", "family": cfg.model.family,
                              "snapshot": snap.path.name, "step": snap.step, "params": model.num_params(),
                              "tokenizer": tokenizer.backend, "vocab_size": tokenizer.vocab_size}


# ------------------------------------------------------------------------------ reports


def _fmt(value: float, stderr: float | None) -> str:
    digits = 4 if abs(value) < 10 else 2
    return f"{value:.{digits}f}" + ("" if stderr is None else f" ± {stderr:.{digits}f}")


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One row per (task, metric), one column per checkpoint: value ± stderr."""
    names = [r["name"] for r in runs]
    lines = ["| task | metric | n | " + " | ".join(names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    rows: dict[tuple[str, str], dict[int, str]] = {}
    counts: dict[str, int] = {}
    for j, run in enumerate(runs):
        for task, res in run["tasks"].items():
            counts.setdefault(task, res["n"])
            for metric, m in res["metrics"].items():
                rows.setdefault((task, metric), {})[j] = _fmt(m["value"], m["stderr"])
    for (task, metric), cells in rows.items():
        cols = [cells.get(j, "—") for j in range(len(runs))]
        lines.append(f"| {task} | {metric} | {counts[task]} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def _run_dir_of(path: str | Path) -> Path:
    """The run dir a checkpoint argument names (``rundir.resolve_run_path``; an HF folder is itself)."""
    return rundir.resolve_run_path(path, quiet=True)[0]


def _run_names(paths: list[str]) -> list[str]:
    """Column names: each run dir's name (its path where two share one)."""
    dirs = [_run_dir_of(p) for p in paths]
    names = [d.name or str(d) for d in dirs]
    return [str(d) if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def _merge_run_file(path: Path, run: dict[str, Any]) -> None:
    """Update ``path`` with this evaluation: new tasks replace the same tasks, others are kept."""
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            backup = path.with_suffix(".json.corrupt")
            path.replace(backup)  # keep what was there, never overwrite it blindly
            old = {}
    merged = {**old, **{k: v for k, v in run.items() if k != "tasks"},
              "tasks": {**old.get("tasks", {}), **run["tasks"]}}
    atomic_write_text(path, json.dumps(merged, indent=2) + "\n")


def _scorer(model: Any, tokenizer: Any, info: dict[str, Any], make: dict[str, Any]) -> Scorer:
    """The Scorer of one checkpoint, checking ``--max-input-len`` and ``--stride`` against it.
    lmlab runs are trained with eos before every document; HF GPT-2 folders are scored as
    lm-eval's hf model scores GPT-2 (eos only before an empty context)."""
    scorer = Scorer(model, tokenizer, max_input_len=make["max_input_len"], batch_size=make["batch_size"],
                    progress=make["progress"], always_prefix=info["format"] == "lmlab")
    if make["stride"] is not None:
        scorer.check_stride(make["stride"])
    return scorer


def _check_checkpoints(checkpoints: list[str], snapshot: str, make: dict[str, Any]) -> list[tuple]:
    """(path, column name, description, (model, tokenizer) or None) per checkpoint, each loaded
    (checksums verified) on the CPU and its Scorer settings checked, so a bad last checkpoint
    or a ``--max-input-len`` one model cannot take is refused before anything is scored. The
    first stays loaded (it is scored next); the others load again in turn, never all at once."""
    checked = []
    for path, name in zip(checkpoints, _run_names(checkpoints)):
        try:
            model, tokenizer, info = load_checkpoint(path, "cpu", snapshot)
            _scorer(model, tokenizer, info, make)
        except LmlabError as e:
            raise LmlabError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
        checked.append((path, name, info, (model, tokenizer) if not checked else None))
    return checked


def evaluate(
    checkpoints: list[str],
    tasks: str | list[str],
    *,
    data_dir: str | Path | None = None,
    max_examples: int | None = None,
    max_input_len: int | None = None,
    batch_size: int = BATCH_SIZE,
    stride: int | None = None,
    output: str | Path | None = None,
    device: str = "cpu",
    snapshot: str = "latest",
    progress: bool = False,
    log=print,
) -> dict[str, Any]:
    """Evaluate each checkpoint on each task; returns the combined report (also written to
    ``output`` as JSON, with the markdown table beside it as ``.md``, and merged into each run
    dir's ``eval_results.json``)."""
    if not checkpoints:
        raise LmlabError("--checkpoints: name at least one run dir")
    device = str(resolve_device(device))
    out = Path(output) if output is not None else None
    if out is not None:
        check_writable(out, "--output")  # before minutes of scoring, not after
    chosen = [get_task(name) for name in resolve_tasks(tasks)]
    data = Path(data_dir) if data_dir is not None else None
    docs = {t.name: t.load(data, max_examples) for t in chosen}  # fail on data before any scoring
    if data is not None:
        for note in dict.fromkeys(t.local_note for t in chosen if t.local_note):
            log(note)
    settings = {"max_examples": max_examples, "max_input_len": max_input_len, "batch_size": batch_size,
                "stride": stride, "data": str(data) if data else "hf-hub", "device": device}
    make = {"max_input_len": max_input_len, "batch_size": batch_size, "progress": progress,
            "stride": stride if any(t.uses_stride for t in chosen) else None}
    checked = _check_checkpoints(checkpoints, snapshot, make)  # every one, before any scoring
    runs = []
    scorer = model = None
    for i, (path, name, info, kept) in enumerate(checked):
        checked[i] = scorer = model = None  # the last model is let go before the next one loads
        model, tokenizer = kept or load_checkpoint(path, "cpu", snapshot)[:2]
        scorer = _scorer(model.to(device), tokenizer, info, make)
        run = {"name": name, "checkpoint": info,
               "settings": {**settings, "max_input_len": scorer.max_input_len, "eos_prefix":
                            "always" if scorer.always_prefix else "empty context only"},
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tasks": {}}
        for task in chosen:
            res = run_task(scorer, task, docs[task.name], stride)
            run["tasks"][task.name] = {**res.to_json(), "data": task.data_source(data)}
            shown = ", ".join(f"{k} {_fmt(v, s)}" for k, (v, s) in res.metrics.items())
            log(f"[{name}] {task.name} (n={res.n}, {res.seconds:.1f}s): {shown}")
        runs.append(run)
    report = {"runs": runs, "table": markdown_table(runs)}
    if out is not None:  # the asked-for output first: nothing after it can lose the scores
        with user_io("--output"):
            atomic_write_text(out, json.dumps({"runs": runs}, indent=2) + "\n")
            atomic_write_text(out.with_suffix(".md"), report["table"])
    for path, run in zip(checkpoints, runs):
        if run["checkpoint"]["format"] == "lmlab":
            try:
                _merge_run_file(_run_dir_of(path) / RESULTS_FILE, run)
            except OSError as e:  # e.g. a read-only run dir: the scores are in --output already
                if not user_os_error(e):
                    raise
                where = f"; the results are in {out}" if out is not None else ""
                warnings.warn(f"{_run_dir_of(path) / RESULTS_FILE} not updated ({e.strerror}){where}", stacklevel=2)
    return report

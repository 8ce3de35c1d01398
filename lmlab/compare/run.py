"""``lmlab compare SPEC``: every arm x seed trained on one tokenizer and one batch order, scored
on the shared held-out split and the spec's tasks, then summarised (``report.py``).

The comparison is a folder of ordinary run dirs (``<root>/<arm>/seed<k>``), so a second start
skips finished runs and resumes an unfinished one exactly (the trainer's own resume); scores of
a finished run are kept in its ``eval_results.json`` and reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmlab import rundir
from lmlab.compare.executors import Executor, build_executor
from lmlab.compare.report import collect, run_record, write_combined, write_reports
from lmlab.compare.scaling import build_cells, run_waves
from lmlab.compare.spec import (
    ArmSpec,
    CompareSpec,
    dump_spec,
    load_spec,
    with_refs,
)
from lmlab.compare.verdict import verdict
from lmlab.compare.widths import shared_settings
from lmlab.configure import deep_merge, validate_config
from lmlab.errors import LmlabError
from lmlab.eval.runner import RESULTS_FILE, evaluate
from lmlab.eval.tasks import resolve_tasks
from lmlab.fsio import atomic_write_text
from lmlab.training.distributed import barrier, setup_distributed, teardown_distributed
from lmlab.training.loop import train


def run_compare(spec_path: str | Path, overrides: list[str] | None = None, log=print,
                jobs: int | None = None, arms: list[str] | None = None) -> Path:
    """Train, score and report every arm of the spec at ``spec_path``; returns the compare dir
    (``jobs``: trials at once in a tuned comparison, over the spec's ``execution.jobs``;
    ``arms``: only these arms and the ones they need, :func:`~lmlab.compare.spec.select_arms`)."""
    spec = load_spec(spec_path, overrides, arms)
    # Under torchrun the job joins one process group for every arm (the trainer keeps a group it
    # did not make), and leaves it once rank 0 has scored and written the reports.
    first = next((a for a in spec.arms if a.run is None), None)
    info = setup_distributed(*(_device_backend(spec, first) if first else ("cpu", "auto")))
    try:
        _run(spec, info.is_main, log if info.is_main else (lambda *_, **__: None), jobs)
        barrier(info)
    finally:
        teardown_distributed()
    return spec.root


def _device_backend(spec: CompareSpec, arm: ArmSpec) -> tuple[str, str]:
    cfg = validate_config(spec.arm_raw(arm, spec.seeds[0]), source=f"arm {arm.name}")
    return cfg.train.device, cfg.train.distributed.backend


def _run(spec: CompareSpec, is_main: bool, log, jobs: int | None = None) -> None:
    root = spec.root
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "spec.yaml", dump_spec(spec))
    parts = spec.parts()
    cells: dict[str | None, list] = {}
    for dataset, part in parts:
        if dataset:
            log(f"lmlab compare: dataset {dataset} ({part.root})")
        if part.scaling:  # tuned and/or scaled: cells of trials in waves (scaling.py)
            cells[dataset] = build_cells(part, is_main, log)
            run_waves(part, cells[dataset], executor_for(part, jobs, log), log)
            continue
        extra, _ = shared_settings(part, is_main, log)
        for arm in part.arms:
            if arm.run is not None:
                continue
            for seed in part.seeds:
                train_arm(part, arm, seed, extra[arm.name], log)
    if not is_main:
        return
    done = []
    for dataset, part in parts:
        if part.scaling:
            results = scaled_results(part, cells[dataset], log)
        else:
            results = collect(part, score(part, log))
        write_reports(part.root, results)
        done.append((dataset, results))
    if spec.datasets:
        write_combined(root, spec, done)
    log(f"lmlab compare: {root}/results.json, report.md, report.html")


def executor_for(spec: CompareSpec, jobs: int | None, log) -> Executor:
    """The spec's executor (``execution``), with ``--jobs`` over its ``jobs``; under torchrun
    every trial runs in this process group (a multi-GPU trial is torchrun's)."""
    ex = spec.execution
    n = jobs or ex.jobs
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if n > 1 or ex.executor != "local":
            raise LmlabError("under torchrun a comparison runs its trials in the job's process group, one at a "
                             "time: drop --jobs / execution (or run lmlab compare without torchrun)")
        return build_executor("local", 1, "auto", None, log=log)
    first = validate_config(spec.arm_raw(spec.arms[0], spec.seeds[0]), source=f"arm {spec.arms[0].name}")
    options = {"folder": str(spec.root / "submitit"), **ex.submitit} if ex.executor == "submitit" else None
    return build_executor(ex.executor, n, first.train.device, options, log=log)


def scaled_results(spec: CompareSpec, cells: list, log) -> dict[str, Any]:
    """results.json of a tuned comparison: the largest rung's tuned runs as the arms' runs (the
    table and charts of every comparison) and the verdict (fits, multipliers) beside them."""
    scaling = verdict(spec, cells)
    top = spec.n_rungs() - 1
    records = [run_record(Path(r["run"]), r["arm"], r["seed"]) for r in scaling["runs"] if r["rung"] == top]
    results = collect(spec, records)
    results["budget"] = {"compute_total_flops": scaling["compute_total"], "steps": {
        arm: {r: e["steps"] for r, e in rungs.items()} for arm, rungs in scaling["search"].items()}}
    results["scaling"] = scaling
    for arm, m in scaling["multiplier"].items():
        if m.get("value") is not None:
            log(f"lmlab compare: {arm}: compute multiplier {m['value']:.3g} "
                f"(95% CI {m['ci95'][0]:.3g}-{m['ci95'][1]:.3g}) against {scaling['baseline']}")
    return results


# ---------------------------------------------------------------------------------- training


def finished(run: Path) -> bool:
    """A run that reached its budget (or its max_seconds): metrics.json written at its last step."""
    summary = run / "metrics.json"
    if not summary.is_file() or not rundir.has_checkpoint(run):
        return False
    m = json.loads(summary.read_text(encoding="utf-8"))
    step = rundir.latest_snapshot(run).meta.get("step")
    return step == m.get("steps") and (m.get("steps") == m.get("max_steps") or m.get("stopped_by") == "max_seconds")


def train_arm(spec: CompareSpec, arm: ArmSpec, seed: int, extra: dict[str, Any], log=print) -> Path:
    """Train (or resume, or skip when finished) one arm x seed; returns its run dir."""
    run = spec.run_dir(arm, seed)
    if finished(run):
        log(f"lmlab compare: {arm.name} seed {seed}: finished before, kept ({run})")
        return run
    log(f"lmlab compare: {arm.name} seed {seed}: {'resuming' if rundir.has_checkpoint(run) else 'training'} ({run})")
    # an arm:NAME value is that (earlier, already trained) arm's run dir at this seed
    raw = with_refs(deep_merge(spec.arm_raw(arm, seed), extra), lambda name: spec.run_dir(spec.arm_named(name), seed))
    return train(validate_config(raw, source=f"arm {arm.name}"))


# ----------------------------------------------------------------------------------- scoring


def score(spec: CompareSpec, log=print) -> list[dict[str, Any]]:
    """Per arm x seed: what its run dir says (``report.run_record``) with the spec's tasks,
    scored once (kept in the run's eval_results.json and reused when the settings match)."""
    out = []
    for arm in spec.arms:
        for seed in spec.seeds_of(arm):
            run = spec.run_dir(arm, seed)
            record = run_record(run, arm.name, seed)
            record["tasks"] = {}
            if spec.eval.tasks:
                kept = _kept_scores(run / RESULTS_FILE, spec)
                if kept is None:
                    report = evaluate([str(run)], spec.eval.tasks, data_dir=spec.eval.data_dir,
                                      max_examples=spec.eval.max_examples, max_input_len=spec.eval.max_input_len,
                                      batch_size=spec.eval.batch_size, log=log)
                    kept = report["runs"][0]["tasks"]
                record["tasks"] = kept
            out.append(record)
    return out


def _kept_scores(path: Path, spec: CompareSpec) -> dict[str, Any] | None:
    """The run's earlier scores of every spec task with the same settings, else None."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    settings = saved.get("settings", {})
    if settings.get("max_examples") != spec.eval.max_examples:
        return None
    names = resolve_tasks(spec.eval.tasks)
    tasks = saved.get("tasks", {})
    return {t: tasks[t] for t in names} if all(t in tasks for t in names) else None

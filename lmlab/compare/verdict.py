"""The verdict of a tuned, scaled comparison: what every trial reached, each cell's tuned value,
and per arm the fit of held-out bits per byte against training compute, with the compute
multiplier against the baseline and 95% intervals (``fit.py``).

Compute is counted, not estimated from parameters: a run's training FLOPs are its family's
``flops_per_token`` (forward + backward, checked against FlopCounterMode) times the tokens it
trained. Loss is bits per byte on the shared held-out split, so token- and byte-level families
sit on one axis.
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

import numpy as np

from lmlab.compare.fit import bootstrap, ci95, crossing, fit_arm, multiplier_ci
from lmlab.compare.scaling import (
    Cell,
    best_value,
    cell_dir,
    reached,
    results_of,
    seeds_of,
    trial_dir,
)
from lmlab.compare.spec import CompareSpec
from lmlab.fsio import read_jsonl

BOOTSTRAP = 1000


def trial_rows(spec: CompareSpec, cells: list[Cell]) -> list[dict[str, Any]]:
    """One row per trial run dir: where it stopped and its last evaluation there."""
    rows = []
    for cell in cells:
        root = cell_dir(spec, cell)
        for folder in sorted(root.glob(f"{cell.key}=*")) if root.is_dir() else []:
            for run in sorted(d for d in folder.glob("seed*") if d.is_dir()):  # not seed<k>.trial.yaml
                evals = [r for r in read_jsonl(run / "metrics.jsonl") if "val_loss" in r] \
                    if (run / "metrics.jsonl").is_file() else []
                last = evals[-1] if evals else {}
                rows.append({"arm": cell.arm.name, "rung": cell.rung, "value": float(folder.name.split("=", 1)[1]),
                             "seed": int(run.name[4:]), "step": reached(run), "steps": cell.steps,
                             "val_loss": last.get("val_loss"), "val_bpb": last.get("val_bpb"),
                             "diverged": (run / "diverged.json").is_file(),
                             "compute": cell.flops_per_token * cell.tokens_per_step * reached(run)})
    return rows


def tuned_runs(spec: CompareSpec, cells: list[Cell]) -> list[dict[str, Any]]:
    """Per cell and seed, the run of the tuned value at its full budget: the points of the fits."""
    out = []
    for cell in cells:
        value = best_value(spec, cell, cells)
        for seed in seeds_of(spec, cell) if value is not None else []:
            run = trial_dir(spec, cell, value, seed)
            summary = run / "metrics.json"
            if not summary.is_file() or reached(run) != cell.steps:
                continue
            m = json.loads(summary.read_text(encoding="utf-8"))
            out.append({"arm": cell.arm.name, "rung": cell.rung, "seed": seed,
                        "value": value, "run": str(run), "params": cell.params,
                        "flops_per_token": cell.flops_per_token, "tokens": m["tokens"],
                        "compute": cell.flops_per_token * m["tokens"], "val_loss": m["val_loss"],
                        "val_bpb": m["val_bpb"]})
    return out


def search_summary(spec: CompareSpec, cells: list[Cell]) -> dict[str, Any]:
    """Per arm and rung: the tuned value, whether it sits on the grid's edge, the grid searched
    and the steps the search trained against what a full grid would have."""
    out: dict[str, Any] = {}
    for cell in cells:
        entry: dict[str, Any] = {"value": best_value(spec, cell, cells), "steps": cell.steps,
                                 "params": cell.params, "flops_per_token": cell.flops_per_token}
        if cell.policy is not None:
            results = results_of(spec, cell, spec.seeds[0])
            entry.update(grid=list(cell.policy.values), method=cell.policy.kind, edge=cell.policy.edge(results),
                         extensions=cell.extensions, search_steps=cell.policy.cost(results),
                         grid_steps=cell.policy.full_cost,
                         curve=_tuning_curve(cell, results))
        elif cell.tune is not None:
            entry["carried"] = cell.tune.carry
        out.setdefault(cell.arm.name, {})[f"r{cell.rung}"] = entry
    return out


def _tuning_curve(cell: Cell, results) -> list[list[float]]:
    """(value, final val loss) of the values that reached the full budget: the tuning curve."""
    final = {v: x for v, s, x in results if s == cell.steps}
    return [[v, final[v] if math.isfinite(final[v]) else None] for v in sorted(final)]


def fits(spec: CompareSpec, runs: list[dict[str, Any]], n: int = BOOTSTRAP) -> dict[str, Any]:
    """Per arm, the fit of bits per byte against compute over the rungs, with 95% intervals of
    E, A and alpha; per non-baseline arm its compute multiplier at the largest rung and where the
    two fitted curves cross."""
    base = spec.match_params.arm if spec.match_params is not None else spec.arms[0].name
    points = {a.name: [(r["rung"], r["seed"], r["compute"], r["val_bpb"]) for r in runs if r["arm"] == a.name]
              for a in spec.arms}
    out: dict[str, Any] = {"fits": {}, "multiplier": {}, "crossing": {}, "baseline": base}
    fitted = {}
    for arm, pts in points.items():
        sizes = len({p[0] for p in pts})
        if sizes < 2:
            out["fits"][arm] = {"error": f"{sizes} size(s) finished: a fit needs 2 or more"}
            continue
        fit_fn = partial(fit_arm, n_sizes=sizes)
        C, L = np.array([p[2] for p in pts]), np.array([p[3] for p in pts])
        fitted[arm] = f = fit_fn(C, L)
        entry = {**f.to_dict(), "points": len(pts), "sizes": sizes}
        try:
            boots = bootstrap(pts, fit_fn, n=n, seed=0)
            dof = len(pts) - f.n_params  # the noise is itself estimated from few runs: widen
            entry["ci95"] = {k: list(ci95([getattr(b, k) for b in boots], dof=dof)[:2]) for k in ("E", "A", "alpha")}
        except ValueError as e:  # too few runs for an interval: say so instead
            entry["ci95"] = None
            entry["ci_note"] = str(e)
        out["fits"][arm] = entry
    if base not in fitted:
        return out
    top = spec.n_rungs() - 1
    for arm, f in fitted.items():
        if arm == base:
            continue
        at_top = [p[2] for p in points[arm] if p[0] == top]
        c_arm = float(np.exp(np.mean(np.log(at_top)))) if at_top else max(p[2] for p in points[arm])
        try:
            value, (lo, hi) = multiplier_ci(points[arm], points[base], c_arm, n=n, seed=0)
            out["multiplier"][arm] = {"value": value, "ci95": [lo, hi], "at_compute": c_arm}
        except ValueError as e:
            out["multiplier"][arm] = {"value": None, "ci95": None, "note": str(e), "at_compute": c_arm}
        every = [p[2] for pts in (points[arm], points[base]) for p in pts]
        out["crossing"][arm] = crossing(f, fitted[base], min(every), max(every)) if len(set(every)) > 1 else None
    return out


def verdict(spec: CompareSpec, cells: list[Cell]) -> dict[str, Any]:
    """The ``scaling`` block of results.json (the key names are the spec's contract). A value
    the fits leave infinite (a multiplier whose loss the baseline's curve never reaches) is
    written as null, so the file stays standard JSON."""
    runs = tuned_runs(spec, cells)
    search = search_summary(spec, cells)
    trials = trial_rows(spec, cells)
    key = cells[0].key if cells else "lr"
    out = {"tune_key": key,
           "tuned_lr": {arm: {r: e["value"] for r, e in rungs.items()} for arm, rungs in search.items()},
           "search": search, **fits(spec, runs), "runs": runs, "trials": trials,
           "compute_total": sum(t["compute"] for t in trials)}
    return _finite(out)


def _finite(node: Any) -> Any:
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_finite(v) for v in node]
    return node

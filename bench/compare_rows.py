"""Rows of a BENCHMARKS table from an ``lmlab compare`` run's trial dirs (each trial's
``metrics.json``; an arm whose seeds are still running shows the seeds done), one per arm:

- the first seed's val bpb at every lr searched;
- the tuned lr and the number of seeds;
- the val bpb mean ± sd over the seeds, and its ratio to the baseline arm's mean;
- ``codes_gain_bpb`` (an abstractinator's bits per byte less its byte entropy model's alone, on
  the same diagnostics windows) mean ± sd, where logged;
- each seed's ``l{i}_code_usage`` where logged: at the end, or with ``--usage-at STEP`` at that
  step's eval (from ``metrics.jsonl``).

Run from the repo root: .venv/bin/python bench/compare_rows.py compare/NAME ARM [ARM ...]
[--baseline byte_transformer] [--usage-at STEP]. The tuned lr is the one run with more than the first seed; an arm
with no runs prints as not run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path


def _lr(path: Path) -> float:
    return float(re.search(r"lr=([^/]+)", str(path)).group(1))


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def _arm(root: Path, name: str) -> tuple[list[Path], list[dict]] | None:
    """(seed-1 metrics files at every lr searched, the tuned lr's metrics of every seed): the
    tuned lr is the one whose runs span seeds beyond the first (a search runs seed 1 alone)."""
    first = sorted((root / name).glob("r0/lr=*/seed1/metrics.json"), key=_lr)
    if not first:
        return None
    tuned = max((p.parent.parent for p in first), key=lambda d: len(list(d.glob("seed*/metrics.json"))))
    return first, [json.loads(p.read_text()) | {"lr": _lr(p), "dir": p.parent} for p in sorted(tuned.glob("seed*/metrics.json"))]


def _at(run: Path, step: int | None, final: dict) -> dict:
    """The eval row of ``run`` at ``step`` (metrics.jsonl), or its final numbers."""
    if step is None:
        return final
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in rows if r.get("step") == step and "val_loss" in r)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("arms", nargs="+")
    ap.add_argument("--baseline", default="byte_transformer")
    ap.add_argument("--usage-at", type=int, help="code usage at this eval step instead of the end")
    args = ap.parse_args()
    base = _arm(args.root, args.baseline)
    assert base is not None, f"no runs of the baseline arm {args.baseline} under {args.root}"
    base_mean, _ = _mean_sd([m["val_bpb"] for m in base[1]])
    for name in args.arms:
        arm = _arm(args.root, name)
        if arm is None:
            print(f"| {name} | (not run) |")
            continue
        first, metrics = arm
        grid = " ".join(f"{_lr(p):g}: {json.loads(p.read_text())['val_bpb']:.3f}" for p in first)
        mean, sd = _mean_sd([m["val_bpb"] for m in metrics])
        gain = [m["codes_gain_bpb"] for m in metrics if "codes_gain_bpb" in m]
        at = [_at(m["dir"], args.usage_at, m) for m in metrics]
        usage = " / ".join(",".join(f"{m[k]:.2f}" for m in at)
                           for k in sorted({k for m in metrics for k in m if re.fullmatch(r"l\d+_code_usage", k)}))
        gains = "{:+.3f} ± {:.3f}".format(*_mean_sd(gain)) if gain else "-"
        print(f"| {name} | {grid} | {metrics[0]['lr']:g} | {len(metrics)} | **{mean:.3f}** ± {sd:.3f} | "
              f"{mean / base_mean:.2f} | {gains} | {usage or '-'} |")


if __name__ == "__main__":
    main()

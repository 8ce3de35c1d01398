"""Peak resident memory (RSS) and wall time of a command, by default the ``default`` training run.

Runs the command given after ``--`` as a subprocess, waits for it, and reports its wall time and
peak RSS. The peak comes from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` read after the
wait: the largest RSS of any single waited-for descendant process (the kernel's high-water mark,
so short spikes are not missed); it is not the sum over processes running at the same time.
Nothing else is run as a child of this script before the command, so the figure is the command's.
With ``--repeats`` > 1 the peak is the max over runs; note that ``lmlab train`` reuses what an
existing out_dir already holds (e.g. the trained tokenizer), so delete it first for a cold run.

Run:  .venv/bin/python bench/peak_rss.py [--threads 2] [--repeats 1] [--json out.json] [-- CMD ...]
Default CMD: .venv/bin/lmlab train --config configs/default.yaml
             --set train.out_dir=runs/bench_rss --set train.progress=false
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

from _common import machine, print_table, write_json

DEFAULT_CMD = [
    ".venv/bin/lmlab",
    "train",
    "--config",
    "configs/default.yaml",
    "--set",
    "train.out_dir=runs/bench_rss",
    "--set",
    "train.progress=false",
]


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """-> (wall seconds, peak RSS in MiB) of one run of ``cmd``; raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"command failed with exit code {proc.returncode}: {' '.join(cmd)}")
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    return wall, peak_kib / 1024


def main() -> None:
    argv = sys.argv[1:]
    cmd = DEFAULT_CMD
    if "--" in argv:
        i = argv.index("--")
        argv, cmd = argv[:i], argv[i + 1 :] or DEFAULT_CMD
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for the command")
    ap.add_argument("--repeats", type=int, default=1, help="runs; the median wall time is reported")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    # Seeding is the command's own business (lmlab train seeds from train.seed).
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONHASHSEED": "0"}
    walls, peaks = [], []
    for _ in range(args.repeats):
        wall, peak = run_once(cmd, env)
        walls.append(wall)
        peaks.append(peak)  # ru_maxrss of children is a running max over all runs so far

    result = {
        "command": " ".join(cmd),
        "wall_s": round(statistics.median(walls), 1),
        "peak_rss_mib": round(max(peaks), 1),
        "method": "getrusage(RUSAGE_CHILDREN).ru_maxrss after wait",
    }
    print_table(
        ["command", "wall s (median)", "peak RSS (MiB)"],
        [[f"`{result['command']}`", result["wall_s"], result["peak_rss_mib"]]],
    )
    write_json(args.json, {"machine": {**machine(), "threads": args.threads}, **result})


if __name__ == "__main__":
    main()

"""Data parallelism on CPU: DDP and FSDP over 2 processes vs 1 process with 2 accumulation steps.

Every variant trains ``--config`` for ``--steps`` steps at the same global batch, 2 x ``--batch``
sequences per optimizer step, through ``lmlab train`` subprocesses (fresh run dirs, no progress
bar, log every 10 steps, no eval or save before the final step; OMP_NUM_THREADS unset):

- ``1 proc, accum 2, 2 threads``: one process, ``grad_accum_steps=2``, ``num_threads=2``;
- ``1 proc, accum 2, 1 thread``: the same on one thread (the per-process share of the 2-rank runs);
- ``ddp, 2 procs x 1 thread``: ``torchrun --standalone --nproc_per_node=2``, ``parallel=ddp``;
- ``fsdp, 2 procs x 1 thread``: the same with ``parallel=fsdp``.

Variants run interleaved (a b c d a b c d ...) ``--rounds`` times. A run's rate is the median
``tokens_per_s`` of its metrics.jsonl train rows after the first (warmup; under torchrun rank 0
writes global tokens), turned into ms/step; reported are the medians over rounds and the ratio of
each variant's ms/step to the first's (above 1: slower).

Run: .venv/bin/python bench/parallel.py [--config configs/default.yaml] [--steps 40] [--rounds 2]
     [--batch 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from _common import machine, median, print_table, write_json
from trainer_ab import ROOT, run_train, train_flags

TORCHRUN = Path(sys.executable).parent / "torchrun"


def variants(config: str, batch: int) -> dict[str, tuple[list[str], dict[str, object]]]:
    """Name -> (launcher command, ``--set`` overrides) of each variant."""
    one = [sys.executable, "-m", "lmlab", "train", "--config", config]
    two = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config", config]
    single = {"train.parallel": "none", "train.batch_size": batch, "train.grad_accum_steps": 2}
    multi = {"train.batch_size": batch, "train.grad_accum_steps": 1, "train.num_threads": 1}
    return {
        "1 proc, accum 2, 2 threads": (one, {**single, "train.num_threads": 2}),
        "1 proc, accum 2, 1 thread": (one, {**single, "train.num_threads": 1}),
        "ddp, 2 procs x 1 thread": (two, {**multi, "train.parallel": "ddp"}),
        "fsdp, 2 procs x 1 thread": (two, {**multi, "train.parallel": "fsdp"}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the median is reported")
    ap.add_argument("--batch", type=int, default=8, help="sequences per micro-batch (global batch: 2x this)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the runs and removes tmp
    if not TORCHRUN.is_file():
        raise SystemExit(f"no torchrun at {TORCHRUN}")
    config = str((ROOT / args.config).resolve())

    todo = variants(config, args.batch)
    ms: dict[str, list[float]] = {k: [] for k in todo}
    with tempfile.TemporaryDirectory(prefix="lmlab-parallel-") as tmp:
        for rnd in range(args.rounds):
            for i, (name, (launch, sets)) in enumerate(todo.items()):
                run_dir = Path(tmp) / f"run{rnd}-{i}"
                flags = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
                m, wall = run_train([*launch, *flags, *train_flags(args.steps, run_dir)], ROOT, run_dir,
                                    pythonpath=ROOT)
                ms[name].append(m)
                print(f"round {rnd + 1}/{args.rounds} {name}: {m:.1f} ms/step, run {wall:.1f} s", flush=True)

    base = median(next(iter(ms.values())))
    rows = [{"variant": name, "ms_per_step": round(median(xs), 1), "vs_first": round(median(xs) / base, 3),
             "ms_per_step_all": [round(x, 1) for x in xs]} for name, xs in ms.items()]
    print_table(["variant", "ms/step", "vs 1 proc 2 threads", "per round"], [list(r.values()) for r in rows])
    print(f"global batch {2 * args.batch} sequences per step in every variant; the 1-thread single process "
          "is the per-rank compute share of the 2-process runs (each rank runs 1 thread)")
    write_json(args.json, {"machine": machine(), "config": args.config, "steps": args.steps,
                           "rounds": args.rounds, "batch": args.batch, "global_batch": 2 * args.batch,
                           "results": rows})


if __name__ == "__main__":
    main()

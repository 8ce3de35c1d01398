"""``lmlab compare --jobs``: the wall time of one wave of trials in process (jobs 1, every core)
against a local pool of 2 ``lmlab train`` children (cores split between them), on a CPU.

The wave is ``--trials`` runs of the default transformer (``--preset small``: 4 layers, d_model
192, context 192) on the built-in pydocs corpus, one lr each (log-spaced from 1e-3 by 2x), with
one BPE tokenizer fitted once beforehand and shared (as ``lmlab compare`` does). Each trial
trains ``--steps`` steps and evaluates and saves once, at the end. The two arms alternate
(A B A B ...) ``--rounds`` times, each into fresh run dirs; an arm's time is the wall time of
its whole wave (children's start-up, data preparation and samples included: what a comparison
waits for). Reported: each round's times, the medians and pool / in-process (below 1: the pool
is faster), and each trial's final validation loss per arm (the two arms run different thread
counts, so they agree closely but need not be bit-identical).

Size ``--steps`` so one trial takes ~20-40 s on one core (the in-process arm prints its per-trial
time as it goes); run it on a quiet machine.

Run: .venv/bin/python bench/compare_jobs.py [--trials 4] [--steps 50] [--batch-size 8]
     [--preset small] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median, print_table, write_json

from lmlab.compare.executors import InProcess, LocalPool, Trial
from lmlab.configure import validate_config
from lmlab.tokenizers import build_tokenizer
from lmlab.training.data import fit_texts, readable_sources

JOBS = 2


def base_config(args: argparse.Namespace) -> dict:
    """One trial's config, before its lr and run dir."""
    return {
        "data": {"sources": [{"type": "builtin", "name": "pydocs"}], "val_fraction": 0.05},
        "tokenizer": {"type": "bpe", "vocab_size": args.vocab_size},
        "model": {"family": "transformer", "preset": args.preset},
        "train": {"batch_size": args.batch_size, "max_steps": args.steps, "lr": 1e-3,
                  "min_lr": 1e-4,
                  "warmup_steps": max(1, args.steps // 10), "log_interval": max(1, args.steps // 5),
                  "eval_interval": args.steps, "save_interval": args.steps, "eval_batches": 5,
                  "progress": False, "seed": 1},
        "sample": {"prompts": ["The "], "max_new_tokens": 16},
    }


def shared_tokenizer(raw: dict, folder: Path) -> dict:
    """Fit the wave's one tokenizer into ``folder``; returns the tokenizer section that reads it."""
    cfg = validate_config(raw)
    tok = build_tokenizer(cfg.tokenizer, fit_texts(cfg, readable_sources(cfg), True))
    tok.save(folder)
    return {"type": tok.backend, "model_path": str(folder)}


def wave(raw: dict, root: Path, n: int, threads: int | None) -> list[Trial]:
    trials = []
    for i in range(n):
        run = root / f"lr{i}"
        config = copy.deepcopy(raw)
        config["train"].update(out_dir=str(run), lr=1e-3 * 2**i, min_lr=1e-4 * 2**i)
        if threads is not None:
            config["train"]["num_threads"] = threads
        trials.append(Trial(run, config, f"lr{i}"))
    return trials


def _quiet(line: str) -> None:
    """The executors' progress lines: the bench prints its own."""


def run_wave(name: str, raw: dict, work: Path, n: int, cores: int, log: Path) -> tuple[float, dict]:
    """One arm's wave into a fresh folder: (wall seconds, {label: final val_loss})."""
    root = work / f"{name}-{time.monotonic_ns()}"
    if name == "in_process":
        executor, trials = InProcess(log=_quiet), wave(raw, root, n, cores)
    else:
        executor, trials = LocalPool(JOBS, "cpu", log=_quiet), wave(raw, root, n, None)
    t0 = time.perf_counter()
    with open(log, "a") as f, contextlib.redirect_stdout(f):  # the trainer's own lines
        failures = executor.run(trials)
    wall = time.perf_counter() - t0
    if failures:
        raise SystemExit(f"{name}: trials failed: {failures} (see {log} and the .trial.log files)")
    losses = {t.label: json.loads((t.run_dir / "metrics.json").read_text())["val_loss"]
              for t in trials}
    shutil.rmtree(root)
    return wall, losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--preset", default="small")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args()
    info = machine()
    cores = len(os.sched_getaffinity(0))  # what LocalPool splits: cores // jobs threads each
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("machine:", ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"wave: {args.trials} trials x {args.steps} steps, transformer {args.preset}, batch "
          f"{args.batch_size}; in process with {cores} threads vs {JOBS} children x "
          f"{max(1, cores // JOBS)}")
    times: dict[str, list[float]] = {"in_process": [], "pool": []}
    losses: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-jobs-") as tmp:
        work = Path(tmp)
        raw = base_config(args)
        raw["tokenizer"] = shared_tokenizer(raw, work / "tokenizer")
        for r in range(args.rounds):
            for name in times:
                wall, losses[name] = run_wave(name, raw, work, args.trials, cores,
                                              work / "train.log")
                times[name].append(wall)
                print(f"round {r + 1}: {name}: {wall:.1f} s ({wall / args.trials:.1f} s per trial)",
                      flush=True)
    a, b = median(times["in_process"]), median(times["pool"])
    rounds = {k: ", ".join(f"{t:.1f}" for t in v) for k, v in times.items()}
    print_table(["arm", "wall s (median)", "rounds"],
                [["in process, 1 job", f"{a:.1f}", rounds["in_process"]],
                 [f"pool, {JOBS} jobs", f"{b:.1f}", rounds["pool"]]])
    print(f"pool / in process: {b / a:.3f}")
    print_table(["trial", "val_loss in process", "val_loss pool"],
                [[k, f"{v:.5f}", f"{losses['pool'][k]:.5f}"]
                 for k, v in losses["in_process"].items()])
    write_json(args.json, {"command": sys.argv, "machine": info, "args": vars(args), "times": times,
                           "ratio_pool_over_in_process": b / a, "val_loss": losses})


if __name__ == "__main__":
    main()

"""Trainer A/B on CPU: ms per optimizer step of ``lmlab train`` at two git revisions.

Checks out REV_A and REV_B with ``git worktree add --detach`` into a temporary directory outside
the repo (removed with ``git worktree remove --force`` at the end, also on error), then trains
``--config`` (the file of that path inside each checkout) for ``--steps`` steps, interleaved
A B A B ... ``--rounds`` times, each run into a fresh run dir (no resume). A run is a subprocess
``python -m lmlab train`` (this venv's interpreter and packages, OMP_NUM_THREADS unset) with cwd
and PYTHONPATH set to its checkout, so it imports that commit's lmlab. Its rate is the median
``tokens_per_s`` of its metrics.jsonl train rows (log_interval 10) after the first (warmup),
turned into ms/step with the tokens per step; tokenizer fitting, data prep and the final
eval/save/samples are outside it. Reported: per revision the median over rounds, and B/A.
``--b .`` measures this checkout as it is (uncommitted and untracked files included, no worktree).

Run: .venv/bin/python bench/trainer_ab.py --a REV_A --b REV_B [--config configs/default.yaml]
     [--steps 60] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, median, print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
LOG_INTERVAL = 10


def train_flags(steps: int, out_dir: Path) -> list[str]:
    """The ``--set`` flags of every benchmark run: ``steps`` steps into ``out_dir``, no progress
    bar, log every 10 steps, no eval or save before the final step."""
    sets = {"train.max_steps": steps, "train.out_dir": out_dir, "train.progress": "false",
            "train.eval_interval": 100000, "train.save_interval": 100000, "train.log_interval": LOG_INTERVAL}
    return [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]


def ms_per_step(run_dir: Path) -> float:
    """Median in-loop ms/step of a finished run: its train rows' ``tokens_per_s`` after the first."""
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    rows = [r for r in rows if "tokens_per_s" in r]
    if len(rows) < 2:
        raise SystemExit(f"{run_dir}: {len(rows)} train row(s) in metrics.jsonl; use --steps >= {2 * LOG_INTERVAL}")
    per_step = (rows[1]["tokens"] - rows[0]["tokens"]) / (rows[1]["step"] - rows[0]["step"])
    return 1000 * per_step / median([r["tokens_per_s"] for r in rows[1:]])


def run_train(cmd: list[str], cwd: Path, run_dir: Path, pythonpath: Path | None = None) -> tuple[float, float]:
    """Run ``cmd`` (a training into ``run_dir``) in ``cwd``; returns (ms/step, wall seconds) and
    deletes the run dir. A failure prints the end of its output and exits; an interrupt (Ctrl-C,
    or SIGTERM once ``main`` routes it to an exit) stops the run first."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.with_name(run_dir.name + ".log")
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait()
        except BaseException:  # interrupted: stop the run (torchrun passes SIGTERM on to its workers)
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise SystemExit(f"exit {proc.returncode}: {' '.join(cmd)} (in {cwd})")
    ms = ms_per_step(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    log.unlink()
    return ms, wall


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="baseline revision (anything git rev-parse takes)")
    ap.add_argument("--b", required=True, help="candidate revision; '.' is this checkout as it is, uncommitted "
                    "and untracked files included")
    ap.add_argument("--config", default="configs/default.yaml", help="config path, relative to each checkout")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved A B rounds; the median is reported")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still removes the worktrees

    revs = {name: "working tree" if rev == "." else git("rev-parse", "--verify", f"{rev}^{{commit}}")
            for name, rev in (("A", args.a), ("B", args.b))}
    tmp = Path(tempfile.mkdtemp(prefix="lmlab-trainer-ab-"))
    trees: dict[str, Path] = {}
    try:
        for name, sha in revs.items():
            if sha != "working tree":
                git("worktree", "add", "--detach", str(tmp / name), sha)
            trees[name] = ROOT if sha == "working tree" else tmp / name
            if not (trees[name] / args.config).is_file():
                raise SystemExit(f"{args.config} does not exist at {name} = {sha}")
        ms: dict[str, list[float]] = {k: [] for k in revs}
        walls: dict[str, list[float]] = {k: [] for k in revs}
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                run_dir = tmp / "runs" / f"{name}{rnd}"
                cmd = [sys.executable, "-m", "lmlab", "train", "--config", str(tree / args.config),
                       *train_flags(args.steps, run_dir)]
                m, w = run_train(cmd, tree, run_dir, pythonpath=tree)
                ms[name].append(m)
                walls[name].append(w)
                print(f"round {rnd + 1}/{args.rounds} {name} ({revs[name][:12]}): {m:.1f} ms/step, "
                      f"run {w:.1f} s", flush=True)
    finally:
        for tree in trees.values():
            if tree != ROOT:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    base = median(ms["A"])
    rows = [{"variant": name, "rev": f"{getattr(args, name.lower())} ({sha[:12]})",
             "ms_per_step": round(median(ms[name]), 1), "vs_A": round(median(ms[name]) / base, 3),
             "run_wall_s": round(median(walls[name]), 1), "ms_per_step_all": [round(x, 1) for x in ms[name]]}
            for name, sha in revs.items()]
    print_table(["variant", "revision", "ms/step", "vs A", "run wall (s)", "per round"],
                [list(r.values()) for r in rows])
    write_json(args.json, {"machine": machine(), "config": args.config, "steps": args.steps,
                           "rounds": args.rounds, "results": rows})


if __name__ == "__main__":
    main()

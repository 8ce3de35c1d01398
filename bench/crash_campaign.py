"""Crash campaign: SIGKILL a training run N times at random moments, resume each time, and check
the finished run against an uninterrupted one bit for bit.

For each target (``transformer``, ``apelr``, ``main``), in a temporary folder:

1. a reference run trains to the end without interruption;
2. the campaign run is started, killed with SIGKILL, started again (``--resume``; for ``main``
   the same call again), ... ``--kills`` times. Half of the kills land at a random moment of the
   process's life (``U(0.3, --max-delay)`` seconds after its start: import, data, steps, saves,
   samples); the other half wait until a snapshot is being written (a ``checkpoints/.tmp-*``
   folder exists), then kill after ``U(0, 10)`` ms, inside the save (counted as such when the
folder is still there just before the kill). A kill that finds the
   process already finished counts as "missed" and the next start resumes a finished run;
3. the campaign run then runs to its end, and its final ``model.safetensors`` and every kept
   snapshot's weights are compared with the reference's, byte for byte.

The campaign stops early if the run completes first (``kills`` then says how many landed).
Counted: kills, kills with a save in progress, starts that failed (any exit but 0 or the kill:
what a user would see as "resume broke"), runs that ended bit-identical. ``main`` drives the
continuous trainer (``lmlab.continuous.run.run``, what ``python main.py`` calls) with a small
``target_tokens``: main.py itself always trains 100M tokens.

Run: .venv/bin/python bench/crash_campaign.py [--targets transformer,apelr,main] [--kills 50]
     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, print_table, write_json

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [{"type": "builtin", "name": "pydocs"}]  # many documents, offline, no shared data needed

# Tiny models (a step is tens of ms, a start ~3 s of imports) and enough steps that the kills
# run out before the training does: every start trains a little, saves, and is killed.
STEPS = {"transformer": 12000, "apelr": 6000, "main": 6000}
TRAIN = {"save_interval": 12, "eval_interval": 300, "eval_batches": 2, "log_interval": 1,
         "batch_size": 8, "lr": 3e-3, "warmup_steps": 4, "progress": False, "num_threads": 1, "seed": 11}


def config(family: str, out_dir: Path) -> dict:
    model = {"family": family, "preset": "tiny", "block_size": 64, "dropout": 0.1}  # dropout: RNG state matters
    train = {**TRAIN, "max_steps": STEPS[family], "out_dir": str(out_dir)}
    return {"data": {"sources": SOURCES, "val_fraction": 0.05, "max_train_tokens": 200_000},
            "tokenizer": {"type": "char"}, "model": model, "train": train,
            "sample": {"prompts": ["The "], "max_new_tokens": 16}}


MAIN_DRIVER = """
import sys
from lmlab.continuous.run import run
run("crash", target_tokens=int(sys.argv[1]), interactive=False)
"""


def main_preset(home: Path) -> int:
    """A tiny continuous-trainer preset in ``home/configs/presets``; returns its target tokens."""
    folder = home / "configs" / "presets"
    folder.mkdir(parents=True)
    preset = {"description": "crash campaign",
              "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "seq_length": 64, "dropout": 0.1},
              "train": {"per_gpu_batch_size": 8, "eval_tokens": 1024, "eval_interval_tokens": 300 * 8 * 64,
                        "save_interval_tokens": 12 * 8 * 64, "log_interval_steps": 1, "warmup_steps": 4, "lr": 3e-3},
              "data": {"sources": SOURCES, "val_fraction": 0.05, "token_cache": False, "max_train_tokens": 200_000},
              "tokenizer": {"type": "char"}, "sample": {"prompts": ["The "], "max_new_tokens": 16}}
    (folder / "crash.json").write_text(json.dumps(preset), encoding="utf-8")
    return STEPS["main"] * 8 * 64


class Target:
    """How to start, resume and locate one campaign target in its own folder."""

    def __init__(self, name: str, folder: Path):
        import yaml

        self.name, self.folder = name, folder
        folder.mkdir(parents=True)
        if name == "main":
            self.tokens = main_preset(folder)
            self.run_dir = folder / "runs" / "main"
            self.snapshots = ("lm_current", "lm_prev", "lm_prev2")
        else:
            self.run_dir = folder / "run"
            self.cfg = folder / "cfg.yaml"
            self.cfg.write_text(yaml.safe_dump(config(name, self.run_dir)), encoding="utf-8")
            self.snapshots = ("current", "prev", "prev2")

    def command(self) -> list[str]:
        if self.name == "main":
            return [sys.executable, "-c", MAIN_DRIVER, str(self.tokens)]
        if (self.run_dir / "checkpoints").is_dir():
            return [sys.executable, "-m", "lmlab", "train", "--resume", str(self.run_dir)]
        return [sys.executable, "-m", "lmlab", "train", "--config", str(self.cfg)]

    def start(self) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(self.command(), cwd=self.folder, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def saving(self) -> bool:
        ckpt = self.run_dir / "checkpoints"
        return ckpt.is_dir() and any(p.name.startswith(".tmp-") for p in ckpt.iterdir())

    def finished(self) -> bool:
        """The run is complete (a new start would only re-report it, or, for main, begin a new
        cycle): the campaign stops killing."""
        return (self.run_dir / "metrics.json").is_file()

    def weights(self) -> dict[str, bytes]:
        ckpt = self.run_dir / "checkpoints"
        return {n: (ckpt / n / "model.safetensors").read_bytes() for n in self.snapshots
                if (ckpt / n / "model.safetensors").is_file()}


def run_to_end(target: Target) -> tuple[int, str]:
    proc = target.start()
    _, err = proc.communicate(timeout=1800)
    return proc.returncode, err


def campaign(name: str, kills: int, max_delay: float, rng: random.Random, work: Path) -> dict:
    ref = Target(name, work / f"{name}-ref")
    rc, err = run_to_end(ref)
    if rc != 0:
        raise SystemExit(f"{name}: the reference run failed (exit {rc}): {err.strip()[-500:]}")
    target = Target(name, work / f"{name}-crash")
    counts = {"kills": 0, "in_save": 0, "missed": 0, "failed_starts": 0, "failures": []}
    t0 = time.perf_counter()
    for i in range(kills):
        if target.finished():
            break
        proc = target.start()
        in_save = i % 2 == 1
        deadline = time.perf_counter() + (60 if in_save else rng.uniform(0.3, max_delay))
        while time.perf_counter() < deadline and proc.poll() is None:
            if in_save and target.saving():
                time.sleep(rng.uniform(0, 0.01))  # a tiny model's save takes ~10-30 ms
                break
            time.sleep(0.002 if in_save else 0.02)
        if proc.poll() is not None:  # it finished (or failed) before the kill
            counts["missed"] += 1
            if proc.returncode != 0:
                counts["failed_starts"] += 1
                counts["failures"].append(proc.stderr.read().strip().splitlines()[-1:])
            continue
        saving = target.saving()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts["kills"] += 1
        counts["in_save"] += saving
    if not target.finished():
        rc, err = run_to_end(target)
        if rc != 0:
            counts["failed_starts"] += 1
            counts["failures"].append(err.strip().splitlines()[-1:])
    a, b = ref.weights(), target.weights()
    counts["snapshots_identical"] = f"{sum(a[n] == b.get(n) for n in a)}/{len(a)}"
    counts["final_identical"] = bool(a) and a.get(ref.snapshots[0]) == b.get(ref.snapshots[0])
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="transformer,apelr,main")
    ap.add_argument("--kills", type=int, default=50, help="kills for the transformer; half that for the others")
    ap.add_argument("--max-delay", type=float, default=8.0, help="latest random kill, seconds after a start")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="lmlab-crash-"))
    results = {}
    try:
        for name in args.targets.split(","):
            n = args.kills if name == "transformer" else max(1, args.kills // 2)
            results[name] = campaign(name, n, args.max_delay, rng, work)
            print(name, json.dumps(results[name]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [[name, r["kills"], r["in_save"], r["missed"], r["failed_starts"], r["snapshots_identical"],
             "yes" if r["final_identical"] else "NO", r["seconds"]] for name, r in results.items()]
    print_table(["target", "kills", "in a save", "missed", "failed starts", "kept snapshots identical",
                 "final bit-identical", "s"], rows)
    if args.json:
        write_json(args.json, {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                               "results": results})


if __name__ == "__main__":
    main()

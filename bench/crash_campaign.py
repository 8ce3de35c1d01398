"""Crash campaign: SIGKILL, SIGINT and SIGTERM a training run N times, resume each time, and check
the finished run against an uninterrupted one bit for bit.

For each target (``transformer``, ``apelr``, ``main``), in a temporary folder:

1. a reference run trains to the end without interruption;
2. the campaign run is started, stopped, started again (``--resume``; for ``main`` the same call
   again), ... ``--kills`` times, in turn:
   - SIGKILL at a random moment of the process's life (``U(0.3, --max-delay)`` seconds after its
     start: import, data, steps, saves, samples);
   - SIGKILL inside a save: once a snapshot is being written (a ``checkpoints/.tmp-*`` folder
     exists), after ``U(0, 10)`` ms (counted as such when the folder is still there just before
     the kill);
   - SIGINT, then SIGTERM, during an evaluation: sent as soon as ``metrics.jsonl``'s last row is
     the train row of an evaluation step (the evaluation runs right after it is written; the
     evaluation steps are not save steps). The process must exit 130 / 143 with a snapshot of
     that very step (counted "saved at the signal's step").
   A stop that finds the process already finished counts as "missed" and the next start resumes
   a finished run;
3. (``transformer`` and ``apelr``) once the last step is saved, a SIGTERM while the run writes
   its summary and samples (``metrics.json`` has appeared), then, in the start that writes them
   again, a SIGINT: each must exit 143 / 130; the start after writes them;
4. the campaign run then runs to its end, and its final ``model.safetensors``, every kept
   snapshot's weights and its ``samples.txt`` are compared with the reference's, byte for byte.

The campaign stops early if the run completes first (``kills`` then says how many landed).
Counted: kills, kills with a save in progress, signals during an evaluation (and how many left a
snapshot of their step), signals during the summary and samples, starts that failed (any exit
but 0, the kill or 128 + the signal: what a user would see as "resume broke"), runs that ended
bit-identical. ``main`` drives the
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
# eval_interval is not a multiple of save_interval: a signal during an evaluation must save itself
EVAL_INTERVAL = 250
TRAIN = {"save_interval": 12, "eval_interval": EVAL_INTERVAL, "eval_batches": 8, "log_interval": 1,
         "batch_size": 8, "lr": 3e-3, "warmup_steps": 4, "progress": False, "num_threads": 1, "seed": 11}


def config(family: str, out_dir: Path) -> dict:
    model = {"family": family, "preset": "tiny", "block_size": 64, "dropout": 0.1}  # dropout: RNG state matters
    train = {**TRAIN, "max_steps": STEPS[family], "out_dir": str(out_dir)}
    return {"data": {"sources": SOURCES, "val_fraction": 0.05, "max_train_tokens": 200_000},
            "tokenizer": {"type": "char"}, "model": model, "train": train,
            "sample": SAMPLE}


# long enough (about a second) that a signal sent once metrics.json appears lands in the samples
SAMPLE = {"prompts": ["The ", "def ", "import ", "class "], "max_new_tokens": 200}
MAIN_DRIVER = """
import sys
from lmlab.console import run_command
from lmlab.continuous.run import run
sys.exit(run_command("lmlab run", lambda: run("crash", target_tokens=int(sys.argv[1]), interactive=False),
                     interrupts=(KeyboardInterrupt, EOFError))[0])
"""


def main_preset(home: Path) -> int:
    """A tiny continuous-trainer preset in ``home/configs/presets``; returns its target tokens."""
    folder = home / "configs" / "presets"
    folder.mkdir(parents=True)
    preset = {"description": "crash campaign",
              "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "seq_length": 64, "dropout": 0.1},
              "train": {"per_gpu_batch_size": 8, "eval_tokens": 4096, "eval_interval_tokens": EVAL_INTERVAL * 8 * 64,
                        "save_interval_tokens": 12 * 8 * 64, "log_interval_steps": 1, "warmup_steps": 4, "lr": 3e-3},
              "data": {"sources": SOURCES, "val_fraction": 0.05, "token_cache": False, "max_train_tokens": 200_000},
              "tokenizer": {"type": "char"}, "sample": SAMPLE}
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
        # --resume once a snapshot exists; a start killed before its first save (or inside it:
        # only a checkpoints/.tmp-* folder) left nothing to resume, so it starts again as a user would
        if any((self.run_dir / "checkpoints" / n).is_dir() for n in self.snapshots):
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

    def last_row(self) -> dict:
        """metrics.jsonl's last whole row ({} before the first)."""
        path = self.run_dir / "metrics.jsonl"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - 4096))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return {}
        for line in reversed(lines):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return {}

    def snapshot_step(self) -> int | None:
        meta = self.run_dir / "checkpoints" / self.snapshots[0] / "meta.json"
        return json.loads(meta.read_text())["step"] if meta.is_file() else None

    def samples(self) -> str | None:
        path = self.run_dir / "samples.txt"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def weights(self) -> dict[str, bytes]:
        ckpt = self.run_dir / "checkpoints"
        return {n: (ckpt / n / "model.safetensors").read_bytes() for n in self.snapshots
                if (ckpt / n / "model.safetensors").is_file()}


def run_to_end(target: Target) -> tuple[int, str]:
    proc = target.start()
    _, err = proc.communicate(timeout=1800)
    return proc.returncode, err


def _fail(counts: dict, why: str) -> None:
    counts["failed_starts"] += 1
    counts["failures"].append(why)


def _last_line(err: str) -> str:
    lines = err.strip().splitlines()
    return lines[-1] if lines else ""


def _kill(target: Target, counts: dict, in_save: bool, max_delay: float, rng: random.Random) -> None:
    """One start ended by SIGKILL, at a random moment or inside a save."""
    proc = target.start()
    deadline = time.perf_counter() + (60 if in_save else rng.uniform(0.3, max_delay))
    while time.perf_counter() < deadline and proc.poll() is None:
        if in_save and target.saving():
            time.sleep(rng.uniform(0, 0.01))  # a tiny model's save takes ~10-30 ms
            break
        time.sleep(0.002 if in_save else 0.02)
    if proc.poll() is not None:  # it finished (or failed) before the kill
        counts["missed"] += 1
        if proc.returncode != 0:
            _fail(counts, f"exit {proc.returncode}: {_last_line(proc.stderr.read())}")
        return
    saving = target.saving()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    counts["kills"] += 1
    counts["in_save"] += saving


def _signal_in_eval(target: Target, counts: dict, sig: signal.Signals) -> None:
    """One start stopped by ``sig`` during an evaluation: exit 128 + sig, that step saved."""
    seen = target.last_row()  # a row from before this start (dropped when it resumes) is not the sign
    proc = target.start()
    step = None
    while proc.poll() is None:
        row = target.last_row()
        if row != seen and "loss" in row and row["step"] % EVAL_INTERVAL == 0:
            step = row["step"]
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=600)
    if step is None:
        counts["missed"] += 1
        if proc.returncode != 0:
            _fail(counts, f"exit {proc.returncode}: {_last_line(err)}")
        return
    if proc.returncode != 128 + sig:
        _fail(counts, f"{sig.name} during the evaluation of step {step}: exit {proc.returncode}: {_last_line(err)}")
        return
    counts["eval_signals"] += 1
    counts["saved_at_signal_step"] += target.snapshot_step() == step


def _signal_in_summary(target: Target, counts: dict, sig: signal.Signals) -> None:
    """One start stopped by ``sig`` once it writes the summary (metrics.json, rewritten by every
    start of a trained run) and the samples: exit 128 + sig."""
    summary = target.run_dir / "metrics.json"
    before = summary.stat().st_mtime_ns if summary.is_file() else None
    proc = target.start()
    sent = False
    while proc.poll() is None:
        if summary.is_file() and summary.stat().st_mtime_ns != before:
            proc.send_signal(sig)
            sent = True
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=600)
    if not sent:
        counts["missed"] += 1
        if proc.returncode != 0:
            _fail(counts, f"exit {proc.returncode}: {_last_line(err)}")
    elif proc.returncode != 128 + sig:
        _fail(counts, f"{sig.name} while writing the summary and samples: exit {proc.returncode}: {_last_line(err)}")
    else:
        counts["summary_signals"] += 1


def campaign(name: str, kills: int, max_delay: float, rng: random.Random, work: Path) -> dict:
    ref = Target(name, work / f"{name}-ref")
    rc, err = run_to_end(ref)
    if rc != 0:
        raise SystemExit(f"{name}: the reference run failed (exit {rc}): {err.strip()[-500:]}")
    target = Target(name, work / f"{name}-crash")
    counts = {"kills": 0, "in_save": 0, "eval_signals": 0, "saved_at_signal_step": 0, "summary_signals": 0,
              "missed": 0, "failed_starts": 0, "failures": []}
    t0 = time.perf_counter()
    for i in range(kills):
        if target.finished():
            break
        kind = i % 4
        if kind < 2:
            _kill(target, counts, in_save=kind == 1, max_delay=max_delay, rng=rng)
        else:
            _signal_in_eval(target, counts, signal.SIGINT if kind == 2 else signal.SIGTERM)
    if name != "main":  # main's next start after the end begins a new cycle
        _signal_in_summary(target, counts, signal.SIGTERM)
        _signal_in_summary(target, counts, signal.SIGINT)
    if not target.finished() or target.samples() is None:
        rc, err = run_to_end(target)
        if rc != 0:
            _fail(counts, f"exit {rc}: {_last_line(err)}")
    a, b = ref.weights(), target.weights()
    counts["snapshots_identical"] = f"{sum(a[n] == b.get(n) for n in a)}/{len(a)}"
    counts["final_identical"] = bool(a) and a.get(ref.snapshots[0]) == b.get(ref.snapshots[0])
    counts["samples_identical"] = ref.samples() is not None and ref.samples() == target.samples()
    counts["seconds"] = round(time.perf_counter() - t0, 1)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="transformer,apelr,main")
    ap.add_argument("--kills", type=int, default=50, help="stops for the transformer (SIGKILLs and, every 3rd and "
                    "4th, SIGINT/SIGTERM in an evaluation); half that for the others")
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
    rows = [[name, r["kills"], r["in_save"], r["eval_signals"], r["saved_at_signal_step"], r["summary_signals"],
             r["missed"], r["failed_starts"], r["snapshots_identical"], "yes" if r["final_identical"] else "NO",
             "yes" if r["samples_identical"] else "NO", r["seconds"]] for name, r in results.items()]
    print_table(["target", "SIGKILLs", "in a save", "SIGINT/SIGTERM in an eval", "saved at that step",
                 "in the summary", "missed", "failed starts", "kept snapshots identical", "final bit-identical",
                 "samples identical", "s"], rows)
    if args.json:
        write_json(args.json, {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                               "results": results})


if __name__ == "__main__":
    main()

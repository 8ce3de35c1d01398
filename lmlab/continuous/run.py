"""The continuous trainer (seed 001): one model, improved run after run, no runtime flags.

Each run picks a preset, then trains ``TARGET_TOKENS`` tokens into ``train.out_dir`` (default
``runs/main``) with the shared trainer, saving rolling snapshots ``checkpoints/lm_current ->
lm_prev -> lm_prev2`` and the legacy mirror ``simple_lm_trained``. It always resumes:

- an unfinished run of the same preset continues exactly (optimizer, schedule, data position);
- otherwise a new *cycle* starts from ``lm_current``'s weights: fresh optimizer and schedule, a
  new data order (seed + cycle), tolerant load (heads added or dropped are a warning), learned
  positions extended when the preset raises ``seq_length``. The model's shape and tokenizer stay.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmlab import rundir, runs
from lmlab.config import DEFAULT_FAMILY
from lmlab.configure import validate_config
from lmlab.console import run_command
from lmlab.continuous.picker import broadcast_choice, choose
from lmlab.continuous.presets import (
    DEFAULT_PRESET,
    TARGET_TOKENS,
    cpu_estimate,
    list_presets,
    load_preset,
    presets_dir,
    to_run_config,
)
from lmlab.errors import LmlabError
from lmlab.training.distributed import setup_distributed, teardown_distributed
from lmlab.training.loop import TrainPlan, check_resumable, train
from lmlab.training.memory import available_bytes

# Model fields a new cycle may change: the rest fixes the weights' shapes.
CHANGEABLE = {"block_size", "auxiliary", "dropout", "preset", "vocab_size"}


@dataclass
class ContinuousPlan(TrainPlan):
    """A continuous run's plan: its resume hint names the preset, so the resume picks the same
    one (the picker's Enter may take another, which would start a new cycle instead)."""

    resume: str = "python main.py (or lmlab run)"

    @property
    def resume_command(self) -> str:
        return self.resume


def resume_hint(preset: str, world: int) -> str:
    """The command that continues this run: the preset by ``LMLAB_PRESET``, torchrun's too."""
    if world > 1:
        per_node = os.environ.get("LOCAL_WORLD_SIZE") or world
        return f"LMLAB_PRESET={preset} torchrun --nproc_per_node={per_node} main.py"
    return f"LMLAB_PRESET={preset} python main.py (or LMLAB_PRESET={preset} lmlab run)"


def run(preset: str | None = None, *, target_tokens: int = TARGET_TOKENS, cwd: Path | None = None,
        interactive: bool | None = None) -> Path:
    """Choose a preset (``preset`` skips the question), train one run of ``target_tokens``
    tokens and return the run dir. ``main()`` always trains ``TARGET_TOKENS``."""
    info = setup_distributed("auto")  # joins torchrun's group now: the choice is broadcast on it
    try:
        folder = presets_dir(cwd)
        choice = None
        if info.is_main:
            choice = preset or os.environ.get("LMLAB_PRESET") or _ask(folder, info.device, interactive)
        choice = broadcast_choice(choice, info.rank, info.world)
        path = folder / f"{choice}.json"
        if not path.is_file():
            names = ", ".join(n for n, _ in list_presets(folder))
            raise LmlabError(f"no preset {choice!r} in {folder}; presets: {names}")
        spec = load_preset(path)
        if info.is_main and spec.train.train_tokens not in (None, target_tokens):
            print(f"lmlab: {path.name}: train.train_tokens = {spec.train.train_tokens:,} is ignored: every run "
                  f"trains {target_tokens:,} tokens", flush=True)
        cuda = info.device.type == "cuda"
        raw = to_run_config(spec, choice, target_tokens, info.world, cuda and torch.cuda.is_bf16_supported())
        raw["train"]["allow_tf32"] = cuda  # seed 001: TF32 matmuls, bf16 autocast where the GPU has it
        run_dir = train(_plan(raw, choice, target_tokens, str(path), info.is_main, resume_hint(choice, info.world)))
    finally:
        teardown_distributed()
    return run_dir


def _ask(folder: Path, device: torch.device, interactive: bool | None) -> str:
    """The picker. With a GPU, Enter takes ``DEFAULT_PRESET``. On a CPU-only machine every preset
    is marked with whether it fits (a run in ``CPU_HOURS_LIMIT`` hours, in RAM) and Enter takes
    ``DEFAULT_PRESET`` if it fits, else the first preset that does."""
    presets = list_presets(folder)
    if device.type != "cpu":
        return choose(presets, DEFAULT_PRESET, interactive=interactive)
    cores, (ram, _) = torch.get_num_threads(), available_bytes(device)
    marks, fits = {}, []
    for name, _ in presets:
        try:
            hours, need, ok = cpu_estimate(load_preset(folder / f"{name}.json"), name, cores, ram)
        except LmlabError:
            continue  # a broken preset says so when it is picked
        when = f"~{hours:,.0f} h" if hours >= 1 else f"~{hours * 60:,.0f} min"
        per_run = f"{when} per run on {cores} core{'s' if cores > 1 else ''}"
        marks[name] = (f"fits this CPU: {per_run}" if ok else
                       f"too big for this CPU's RAM: {need / 2**30:,.1f} GiB of {ram / 2**30:,.1f}" if need > ram else
                       f"too slow for this CPU: {per_run}")
        if ok:
            fits.append(name)
    default, why = DEFAULT_PRESET, ""
    if DEFAULT_PRESET not in fits and fits:
        default = fits[0]
        why = f" (this machine has no GPU; {DEFAULT_PRESET} is {marks.get(DEFAULT_PRESET, 'unreadable')})"
    return choose(presets, default, interactive=interactive, marks=marks, why=why)


def _plan(raw: dict[str, Any], choice: str, target: int, source: str, is_main: bool, resume: str) -> TrainPlan:
    """This run: a new model, the exact continuation of an unfinished cycle, or a new cycle
    warm-started from the newest snapshot."""
    run_dir = Path(raw["train"]["out_dir"])
    snap = rundir.latest_snapshot(run_dir) if rundir.has_checkpoint(run_dir) else None
    if snap is None:
        cfg = validate_config(raw, source)
        _say(is_main, f"lmlab: preset {choice}: a new model in {run_dir} (cycle 1, {target:,} tokens)")
        return ContinuousPlan(cfg, resume=resume, layout=rundir.CONTINUOUS,
                              meta={"continuous": _meta(choice, 1, target, 0)})
    if rundir.layout_of(run_dir) is not rundir.CONTINUOUS:
        raise LmlabError(f"{run_dir} holds the snapshots of lmlab train (current), not the continuous "
                         "trainer's; set train.out_dir in the preset to another folder")
    saved = runs.checkpoint_config(snap.meta)
    _check_same_shape(raw["model"], saved["model"], run_dir, source)
    if raw["tokenizer"] != saved["tokenizer"]:
        _say(is_main, f"lmlab: {source}: the tokenizer section differs from the model's; the model keeps its "
             f"tokenizer ({run_dir}/tokenizer)")
        raw["tokenizer"] = saved["tokenizer"]
    seq = raw["model"]["block_size"]
    raw["model"]["block_size"] = max(seq, saved["model"]["block_size"])  # never shrink the model
    cont = snap.meta.get("continuous", {})
    cycle, before = int(cont.get("cycle", 1)), int(cont.get("tokens_before", 0))
    done = int(snap.meta["tokens_seen"]) >= int(cont.get("target_tokens", target))
    full = rundir.TRAINER in snap.meta.get("sha256", {})
    base_seed = raw["train"]["seed"]  # cycle c trains data order base_seed + c - 1
    if not done and full and cont.get("preset") == choice:
        raw["train"]["seed"] = base_seed + cycle - 1
        cfg = validate_config(raw, source)
        try:
            check_resumable(cfg, snap.meta, run_dir)
        except LmlabError as e:
            _say(is_main, f"lmlab: preset {choice} changed since the unfinished run ({e}); starting a new cycle")
        else:
            _say(is_main, f"lmlab: preset {choice}: continuing cycle {cycle} at {snap.meta['tokens_seen']:,} of "
                 f"{target:,} tokens ({snap.path.name})")
            return ContinuousPlan(cfg, resume=resume, layout=rundir.CONTINUOUS,
                                  meta={"continuous": _meta(choice, cycle, target, before)})
    total = before + int(snap.meta["tokens_seen"])
    cycle += 1
    raw["train"]["seed"] = base_seed + cycle - 1  # a new data order each cycle
    cfg = validate_config(raw, source)
    if is_main:
        _archive_metrics(run_dir, cycle - 1)
    grow = f", positions {saved['model']['block_size']} -> {seq}" if seq > saved["model"]["block_size"] else ""
    _say(is_main, f"lmlab: preset {choice}: cycle {cycle} from {snap.path.name} ({total:,} tokens so far{grow}), "
         f"{target:,} more tokens")
    return ContinuousPlan(cfg, resume=resume, warm_start=snap, layout=rundir.CONTINUOUS,
                          meta={"continuous": _meta(choice, cycle, target, total)})


def _meta(preset: str, cycle: int, target: int, before: int) -> dict[str, Any]:
    """What a snapshot records about the continuous run (docs/model_versions.md)."""
    return {"preset": preset, "cycle": cycle, "target_tokens": target, "tokens_before": before}


def _check_same_shape(new: dict[str, Any], old: dict[str, Any], run_dir: Path, source: str) -> None:
    """A new cycle loads the old weights: refuse a preset whose model has other shapes."""
    family = new.get("family", DEFAULT_FAMILY)
    if family != old.get("family"):
        raise LmlabError(f"{source}: model.family = {family!r} but {run_dir} holds a {old.get('family')} model; "
                         "use a preset of that family, or set train.out_dir to start another model")
    cfg = validate_config({"model": new}, source).model.model_dump(mode="json")
    for key, value in cfg.items():
        if key not in CHANGEABLE and old.get(key) != value:
            names = {"d_model": "hidden_size", "n_layer": "num_layers", "n_head": "num_heads"}
            raise LmlabError(f"{source}: model.{names.get(key, key)} = {value!r} but the model in {run_dir} has "
                             f"{old.get(key)!r}; keep the model's shape, or set train.out_dir to start another model")


def _archive_metrics(run_dir: Path, cycle: int) -> None:
    """Keep a finished cycle's metrics as ``history/cycle-NNN-*`` (the new cycle restarts at step 0)."""
    for name in ("metrics.jsonl", "metrics.json", "samples.txt"):
        if (run_dir / name).is_file():
            (run_dir / "history").mkdir(exist_ok=True)
            shutil.move(run_dir / name, run_dir / "history" / f"cycle-{cycle:03d}-{name}")


def _say(is_main: bool, line: str) -> None:
    if is_main:
        print(line, flush=True)


def summary(run_dir: Path) -> str:
    """One line: where the model is and its final eval (CE and perplexity)."""
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return (f"lmlab: run complete: {m['tokens']:,} tokens, val CE {m['val_loss']:.4f}, ppl {m['val_ppl']:.2f}; "
            f"model in {run_dir}/checkpoints/lm_current")


def main() -> int:
    """``python main.py`` / ``lmlab run``: no flags; user errors are one line and exit 2."""
    code, run_dir = run_command("lmlab run", run, interrupts=(KeyboardInterrupt, EOFError))
    if run_dir is not None and (run_dir / "metrics.json").is_file() and os.environ.get("RANK", "0") == "0":
        print(summary(run_dir), flush=True)
    return code

"""Tuned and scaled comparisons (``tune`` / ``scale`` in a spec): every arm at every size, each
with its own search of one train key, as ordinary run dirs.

A *cell* is one arm at one rung (size) of one dataset: its model (the rung's keys, its width
solved to the baseline's parameters or FLOPs per token at that rung), its budget in steps and
its search policy (``search.py``). Trials live at ``<root>/<arm>/r<rung>/<key>=<value>/seed<s>``
and run in waves through an executor (``executors.py``); a wave is every trial any cell needs
next. What a trial reached is read back from its run dir (the eval rows of metrics.jsonl, and
``diverged.json`` where it stopped on a non-finite loss), so a killed comparison resumes by
making the same decisions again; a grown grid is kept in ``<root>/<arm>/r<rung>/search.json``.

When every search is done, the winning value of each cell trains the other seeds (at the largest
rung, or at every rung with ``scale.seeds_at: every``); ``verdict.py`` fits the curves.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lmlab import rundir
from lmlab.compare.executors import Executor, Trial
from lmlab.compare.search import GridSearch, SearchPolicy, SuccessiveHalving
from lmlab.compare.spec import ArmSpec, CompareSpec, TuneSpec, arm_refs, resolved, with_refs
from lmlab.compare.widths import count_params, match_widths, shared_settings, unit_vocab
from lmlab.configure import deep_merge, validate_config
from lmlab.errors import ConfigError, LmlabError
from lmlab.fsio import atomic_write_text, read_jsonl

DIVERGED = "diverged.json"
SEARCH = "search.json"


@dataclass
class Cell:
    """One arm at one rung: what its trials share."""

    arm: ArmSpec
    rung: int
    extra: dict[str, Any]
    """Merged over the arm's config: the shared tokenizer, the rung's keys, the solved width."""
    key: str
    default: float
    """The tuned key's value in the arm's own config (the only value when nothing is tuned)."""
    tune: TuneSpec | None
    steps: int
    params: int
    flops_per_token: float
    tokens_per_step: int
    min_lr_ratio: float = 0.1
    width: int = 0
    """The model's d_model (``carry: inverse_width`` scales the carried value by it)."""
    """Tuning lr moves min_lr with it, keeping the arm's min_lr / lr (the cosine's floor)."""
    policy: SearchPolicy | None = None
    """None: one value, no search (nothing tuned, or carried up from the smallest rung)."""
    extensions: int = 0

    @property
    def name(self) -> str:
        return f"{self.arm.name} r{self.rung}"


def cell_dir(spec: CompareSpec, cell: Cell) -> Path:
    return spec.root / cell.arm.name / f"r{cell.rung}"


def trial_dir(spec: CompareSpec, cell: Cell, value: float, seed: int) -> Path:
    return cell_dir(spec, cell) / f"{cell.key}={value:g}" / f"seed{seed}"


# ------------------------------------------------------------------------------------ cells


def build_cells(spec: CompareSpec, is_main: bool, log: Callable[[str], None]) -> list[Cell]:
    """Every arm at every rung: widths solved to the baseline's rung, budgets in steps."""
    base, vocab = shared_settings(spec, is_main, log, match=False)
    for arm in spec.arms:  # an arm that reads its own unit (bytes) has that unit's vocabulary
        if arm.name not in vocab:
            vocab[arm.name] = unit_vocab(resolved(spec, arm, spec.seeds[0], base[arm.name]).tokenizer.type)
    measure, what = _measure(spec)
    cells = []
    for rung in range(spec.n_rungs()):
        extra = {a.name: deep_merge(copy.deepcopy(base[a.name]), {"model": spec.rung_model(a, rung)})
                 for a in spec.arms}
        if spec.match_params is not None:
            if spec.scale is not None:
                log(f"lmlab compare: rung {rung}")
            match_widths(spec, extra, vocab, log, measure=measure, what=what)
        sizes = {a.name: _size(spec, a, extra[a.name], vocab[a.name]) for a in spec.arms}
        ref = spec.match_params.arm if spec.match_params is not None else spec.arms[0].name
        for arm in spec.arms:
            params, fpt, per_step, cfg = sizes[arm.name]
            tune = spec.arm_tune(arm)
            key = tune.key if tune is not None else "lr"
            steps = _steps(spec, rung, sizes[ref][0], fpt, per_step, cfg, arm)
            width = int(getattr(cfg.model, "d_model", 0) or 0)
            if tune is not None and tune.carry == "inverse_width" and not width:
                raise ConfigError(f"arm {arm.name}: tune.carry inverse_width scales by d_model, which the "
                                  f"{cfg.model.family} family does not have; use carry: same")
            cells.append(Cell(arm, rung, extra[arm.name], key, float(getattr(cfg.train, key)), tune,
                              steps, params, fpt, per_step, cfg.train.min_lr / cfg.train.lr, width))
    return cells


def _measure(spec: CompareSpec):
    """What match_params equalises at each rung: parameters, or training FLOPs per token."""
    if spec.scale is None or spec.scale.match == "params":
        return count_params, "parameters"

    def flops(model: dict[str, Any], vocab: int, tokenizer: dict[str, Any]) -> float:
        cfg = validate_config({"model": {**model, "vocab_size": vocab}, "tokenizer": tokenizer})
        return cfg.model.flops_per_token(cfg.model.block_size)
    return flops, "FLOPs per token"


def _size(spec: CompareSpec, arm: ArmSpec, extra: dict[str, Any], vocab: int):
    """(parameters, training FLOPs per token, tokens per step, config) of an arm at a rung."""
    cfg = resolved(spec, arm, spec.seeds[0], extra)
    t = cfg.train
    if t.batch_size == "auto":
        raise ConfigError(f"arm {arm.name}: train.batch_size auto: a tuned comparison counts its budget in "
                          "tokens and needs a fixed batch; set train.batch_size")
    seq = t.seq_len or cfg.model.block_size
    model = cfg.model.model_dump(mode="json", exclude={"vocab_size"})
    tokenizer = {"type": cfg.tokenizer.type}
    params = count_params(model, vocab, tokenizer)
    fpt = validate_config({"model": {**model, "vocab_size": vocab}, "tokenizer": tokenizer}).model.flops_per_token(seq)
    return params, fpt, t.batch_size * t.grad_accum_steps * seq, cfg


def _steps(spec: CompareSpec, rung: int, base_params: int, fpt: float, per_step: int, cfg, arm: ArmSpec) -> int:
    """A cell's budget in optimizer steps: the rung's tokens (per baseline parameter, or the
    rung's FLOPs over the arm's FLOPs per token); without a ladder, the spec's own budget."""
    if spec.scale is not None:
        s = spec.scale
        tokens = s.tokens_per_param * base_params if s.tokens_per_param is not None else s.flops[rung] / fpt
        return max(1, round(tokens / per_step))
    t = cfg.train
    if t.max_steps is not None:
        return t.max_steps
    if t.max_tokens is not None:
        return max(1, math.ceil(t.max_tokens / per_step))
    raise ConfigError(f"arm {arm.name}: tune needs a budget in steps or tokens (train.max_steps or "
                      "train.max_tokens), not epochs: every trial must know its step count up front")


# ----------------------------------------------------------------------------------- policies


def make_policy(tune: TuneSpec, steps: int) -> SearchPolicy:
    if tune.method == "halving":
        return SuccessiveHalving(tune.values, steps, rungs=tune.rungs)
    return GridSearch(tune.values, steps)


def load_policy(spec: CompareSpec, cell: Cell) -> None:
    """The cell's search: its saved (possibly extended) policy, else a new one from its tune."""
    if cell.tune is None or (cell.tune.at == "smallest" and cell.rung > 0):
        return
    path = cell_dir(spec, cell) / SEARCH
    fresh = make_policy(cell.tune, cell.steps)
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        policy = SearchPolicy.from_dict(saved["policy"])
        # the spec may have changed since (another grid, budget): start over from it
        if policy.total_steps == cell.steps and set(fresh.values) <= set(policy.values):
            cell.policy, cell.extensions = policy, int(saved.get("extensions", 0))
            return
    cell.policy = fresh


def save_policy(spec: CompareSpec, cell: Cell) -> None:
    path = cell_dir(spec, cell) / SEARCH
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"policy": cell.policy.to_dict(), "extensions": cell.extensions}) + "\n")


def results_of(spec: CompareSpec, cell: Cell, seed: int) -> list[tuple[float, int, float]]:
    """(value, step, val_loss) of every evaluation of every trial of the cell at ``seed``;
    a diverged trial reports +inf at the step it stopped."""
    out: list[tuple[float, int, float]] = []
    root = cell_dir(spec, cell)
    prefix = f"{cell.key}="
    for folder in sorted(d for d in root.glob(f"{prefix}*") if d.is_dir()) if root.is_dir() else []:
        value = float(folder.name[len(prefix):])
        run = folder / f"seed{seed}"
        if (run / "metrics.jsonl").is_file():
            out += [(value, int(r["step"]), float(r["val_loss"])) for r in read_jsonl(run / "metrics.jsonl")
                    if "val_loss" in r]
        if (run / DIVERGED).is_file():
            out.append((value, int(json.loads((run / DIVERGED).read_text(encoding="utf-8"))["step"]), math.inf))
    return out


def reached(run: Path) -> int:
    """The step of a trial's newest whole snapshot (0: none)."""
    if not rundir.has_checkpoint(run):
        return 0
    return int(rundir.latest_snapshot(run).meta.get("step", 0))


def best_value(spec: CompareSpec, cell: Cell, cells: list[Cell]) -> float | None:
    """The cell's value: its search's winner, the smallest rung's carried up, or its own."""
    if cell.policy is not None:
        return cell.policy.best(results_of(spec, cell, spec.seeds[0]))
    if cell.tune is None:
        return cell.default
    first = next(c for c in cells if c.arm.name == cell.arm.name and c.rung == 0)
    if first.policy is None or first.policy.next_wave(results_of(spec, first, spec.seeds[0])):
        return None  # not searched yet
    won = first.policy.best(results_of(spec, first, spec.seeds[0]))
    if won is None or cell.tune.carry == "same":
        return won
    return float(f"{won * first.width / cell.width:.3g}")


# -------------------------------------------------------------------------------------- waves


def trial(spec: CompareSpec, cell: Cell, value: float, seed: int, target: int,
          cited: dict[str, Path] | None = None) -> Trial:
    """One trial: the arm's config at the rung, the value, the seed, its budget and its pause;
    ``cited``: the run dir of each arm its config cites (``arm:NAME``) at this seed."""
    run = trial_dir(spec, cell, value, seed)
    raw = with_refs(deep_merge(spec.arm_raw(cell.arm, seed), cell.extra), lambda name: cited[name])
    raw["train"] = {**raw["train"], cell.key: value, "out_dir": str(run), "max_steps": cell.steps,
                    "max_tokens": None, "epochs": None,
                    "stop_at_step": target if target < cell.steps else None}
    if cell.key == "lr":
        raw["train"]["min_lr"] = float(f"{value * cell.min_lr_ratio:.6g}")
    return Trial(run, raw, f"{cell.name} {cell.key}={value:g} seed{seed} to step {target}/{cell.steps}")


def next_wave(spec: CompareSpec, cells: list[Cell]) -> list[Trial]:
    """Every trial some cell needs now: its search's next wave, then its winner's other seeds.
    A cell whose config cites an earlier arm (``arm:NAME``) waits, seed by seed, until that
    arm's winner has finished at the seed (cited arms come first, so they are decided above)."""
    wave = []
    done: dict[tuple[str, int, int], Path] = {}  # (arm, rung, seed) -> its winner's finished run dir
    for cell in cells:
        cited = partial(_cited, done, cell)
        if cell.policy is not None:
            results = results_of(spec, cell, spec.seeds[0])
            todo = cell.policy.next_wave(results)
            if not todo:
                grown = _extend(spec, cell, results)
                todo = grown.next_wave(results) if grown is not None else []
            runs = cited(spec.seeds[0])
            if todo and runs is not None:
                wave += [trial(spec, cell, v, spec.seeds[0], t, runs) for v, t in todo
                         if reached(trial_dir(spec, cell, v, spec.seeds[0])) < t]
            if todo:
                continue
        value = best_value(spec, cell, cells)
        if value is None:
            continue
        for seed in seeds_of(spec, cell):
            run = trial_dir(spec, cell, value, seed)
            if reached(run) >= cell.steps:
                done[(cell.arm.name, cell.rung, seed)] = run
            elif not _diverged(spec, cell, value, seed) and (runs := cited(seed)) is not None:
                wave.append(trial(spec, cell, value, seed, cell.steps, runs))
    return wave


def _cited(done: dict[tuple[str, int, int], Path], cell: Cell, seed: int) -> dict[str, Path] | None:
    """The finished run dir of every arm the cell's config cites, at this seed (None: not yet)."""
    runs = {name: done.get((name, cell.rung, seed)) for name in arm_refs(cell.arm)}
    return None if any(r is None for r in runs.values()) else runs  # type: ignore[return-value]


def _extend(spec: CompareSpec, cell: Cell, results) -> SearchPolicy | None:
    """``tune.extend``: an optimum on the grid's edge grows the grid one point that way."""
    edge = cell.policy.edge(results)
    if edge is None or not cell.tune.extend or cell.extensions >= cell.tune.max_extend:
        return None
    grown = cell.policy.extended(edge)
    if grown is not None:
        cell.policy, cell.extensions = grown, cell.extensions + 1
        save_policy(spec, cell)
    return grown


def seeds_of(spec: CompareSpec, cell: Cell) -> list[int]:
    """The seeds a cell's winner trains: every spec seed at the largest rung (or at every rung
    with ``scale.seeds_at: every``), the first elsewhere."""
    every = spec.scale is None or spec.scale.seeds_at == "every" or cell.rung == spec.n_rungs() - 1
    return list(spec.seeds) if every else [spec.seeds[0]]


def _diverged(spec: CompareSpec, cell: Cell, value: float, seed: int) -> bool:
    return (trial_dir(spec, cell, value, seed) / DIVERGED).is_file()


def run_waves(spec: CompareSpec, cells: list[Cell], executor: Executor, log: Callable[[str], None]) -> None:
    """Run waves until no cell needs a trial. A trial that stopped on a non-finite loss is
    recorded as diverged (its search ranks it last); any other failure stops the comparison."""
    for cell in cells:
        load_policy(spec, cell)
    wave_no = 0
    while wave := next_wave(spec, cells):
        wave_no += 1
        log(f"lmlab compare: wave {wave_no}: {len(wave)} trial(s)")
        failures = executor.run(wave)
        other = []
        for t in wave:
            reason = failures.get(t.label)
            if reason is None:
                continue
            if "not finite" in reason:  # on_nonfinite: stop names the step and saves nothing spoiled
                said = re.match(r"step (\d+)", reason)
                step = int(said.group(1)) if said else reached(t.run_dir) + 1
                t.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(t.run_dir / DIVERGED, json.dumps({"step": step, "reason": reason}) + "\n")
                log(f"lmlab compare: {t.label}: diverged ({reason})")
            else:
                other.append(f"{t.label}: {reason}")
        if other:
            raise LmlabError(f"{len(other)} trial(s) failed: {'; '.join(other)}")

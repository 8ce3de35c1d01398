"""``lmlab compare SPEC``: every arm x seed trained on one tokenizer and one batch order, scored
on the shared held-out split and the spec's tasks, then summarised (``report.py``).

The comparison is a folder of ordinary run dirs (``<root>/<arm>/seed<k>``), so a second start
skips finished runs and resumes an unfinished one exactly (the trainer's own resume); scores of
a finished run are kept in its ``eval_results.json`` and reused.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import torch

from lmlab import rundir
from lmlab.compare.report import collect, run_record, write_combined, write_reports
from lmlab.compare.spec import (
    ArmSpec,
    CompareSpec,
    dump_spec,
    load_spec,
    required_tokenizer,
    resolved,
)
from lmlab.config import RunConfig, TokenizerConfig
from lmlab.configure import validate_config
from lmlab.errors import ConfigError
from lmlab.eval.runner import RESULTS_FILE, evaluate
from lmlab.eval.tasks import resolve_tasks
from lmlab.fsio import atomic_write_text
from lmlab.registry import build_model
from lmlab.tokenizers import Tokenizer, build_tokenizer, load_tokenizer, resolve_backend
from lmlab.training.data import fit_texts, readable_sources
from lmlab.training.distributed import barrier, setup_distributed, teardown_distributed
from lmlab.training.loop import train

TOKENIZER_DIR = "tokenizer"


def run_compare(spec_path: str | Path, overrides: list[str] | None = None, log=print) -> Path:
    """Train, score and report every arm of the spec at ``spec_path``; returns the compare dir."""
    spec = load_spec(spec_path, overrides)
    # Under torchrun the job joins one process group for every arm (the trainer keeps a group it
    # did not make), and leaves it once rank 0 has scored and written the reports.
    first = next((a for a in spec.arms if a.run is None), None)
    info = setup_distributed(*(_device_backend(spec, first) if first else ("cpu", "auto")))
    try:
        _run(spec, info.is_main, log if info.is_main else (lambda *_, **__: None))
        barrier(info)
    finally:
        teardown_distributed()
    return spec.root


def _device_backend(spec: CompareSpec, arm: ArmSpec) -> tuple[str, str]:
    cfg = validate_config(spec.arm_raw(arm, spec.seeds[0]), source=f"arm {arm.name}")
    return cfg.train.device, cfg.train.distributed.backend


def _run(spec: CompareSpec, is_main: bool, log) -> None:
    root = spec.root
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "spec.yaml", dump_spec(spec))
    parts = spec.parts()
    for dataset, part in parts:
        if dataset:
            log(f"lmlab compare: dataset {dataset} ({part.root})")
        extra = shared_settings(part, is_main, log)
        for arm in part.arms:
            if arm.run is not None:
                continue
            for seed in part.seeds:
                train_arm(part, arm, seed, extra[arm.name], log)
    if not is_main:
        return
    done = []
    for dataset, part in parts:
        results = collect(part, score(part, log))
        write_reports(part.root, results)
        done.append((dataset, results))
    if spec.datasets:
        write_combined(root, spec, done)
    log(f"lmlab compare: {root}/results.json, report.md, report.html")


# ------------------------------------------------------------------------- shared settings


def shared_settings(spec: CompareSpec, is_main: bool, log=print) -> dict[str, dict[str, Any]]:
    """Per trained arm, what every seed of it gets on top of its sections: the comparison's
    one tokenizer (fitted once into ``<root>/tokenizer``; a family that reads another unit,
    e.g. bytes, keeps its own) and, with ``match_params``, its solved width."""
    tok_dir = spec.root / TOKENIZER_DIR
    trained = [a for a in spec.arms if a.run is None]
    # arms whose family reads its own unit (bytes) keep it (arm_raw sets it); the rest share one
    sharing = [a for a in trained if required_tokenizer(spec.arm_raw(a, spec.seeds[0])["model"]) is None]
    out: dict[str, dict[str, Any]] = {a.name: {} for a in trained}
    vocab: dict[str, int] = {}  # from memory: under torchrun only rank 0 has written the tokenizer yet
    if sharing:
        first = validate_config(spec.arm_raw(sharing[0], spec.seeds[0]), source=f"arm {sharing[0].name}")
        tokenizer = _shared_tokenizer(first, tok_dir, is_main, log)
        for arm in sharing:
            out[arm.name] = {"tokenizer": {"type": tokenizer.backend, "model_path": str(tok_dir.resolve())}}
            vocab[arm.name] = tokenizer.vocab_size
    if spec.match_params is not None:
        match_widths(spec, out, vocab, log)
    return out


def _shared_tokenizer(cfg: RunConfig, tok_dir: Path, is_main: bool, log) -> Tokenizer:
    """The comparison's tokenizer: read back when it was fitted before, else fitted on the
    shared data's training documents (as a run fits its own) and saved by rank 0."""
    if (tok_dir / "tokenizer_meta.json").is_file():
        return load_tokenizer(tok_dir)
    strict = resolve_backend(cfg.tokenizer.type) != "byte"
    tok = build_tokenizer(cfg.tokenizer, fit_texts(cfg, readable_sources(cfg), strict))
    if is_main:
        tok.save(tok_dir)
        log(f"lmlab compare: one {tok.backend} tokenizer of {tok.vocab_size} ids for every arm ({tok_dir})")
    return tok


def count_params(model_section: dict[str, Any], vocab_size: int, tokenizer: dict[str, Any]) -> int:
    """Exact parameters of a model section (built on the meta device: no memory, no time)."""
    cfg = validate_config({"model": {**model_section, "vocab_size": vocab_size}, "tokenizer": tokenizer})
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg.model).parameters())


def match_widths(spec: CompareSpec, extra: dict[str, dict[str, Any]], vocab_of: dict[str, int], log=print) -> None:
    """Set ``match_params.width`` of every trained arm but the reference so its parameter count
    is the nearest to the reference's; refused in one line when the nearest is off by more than
    the tolerance (or the family has no such width)."""
    mp = spec.match_params
    arms = {a.name: a for a in spec.arms}

    def section(arm: ArmSpec) -> tuple[dict[str, Any], int, dict[str, Any]]:
        cfg = resolved(spec, arm, spec.seeds[0], extra.get(arm.name, {}))
        vocab = vocab_of.get(arm.name) or _unit_vocab(cfg.tokenizer.type)
        return cfg.model.model_dump(mode="json", exclude={"vocab_size"}), vocab, {"type": cfg.tokenizer.type}

    ref = arms[mp.arm]
    if ref.run is not None:
        meta = rundir.latest_snapshot(ref.run).meta
        target = int(meta["num_params"])
    else:
        target = count_params(*section(ref))
    problems = []
    for arm in spec.arms:
        if arm.run is not None or arm.name == mp.arm:
            continue
        model, vocab, tok = section(arm)
        width = mp.widths.get(arm.name, mp.width)
        if width not in model:
            problems.append(f"arm {arm.name}: the {model['family']} family has no {width} "
                            f"(match_params.widths: {{{arm.name}: d_model}})")
            continue
        # d_model: whole heads of an even size (rotary positions pair the channels)
        step = 2 * (model.get("n_head") or 1) if width == "d_model" else 1

        @functools.cache  # keyed by k alone (one function per arm); the search asks for some twice
        def at(k: int, model=model, width=width, step=step, vocab=vocab, tok=tok) -> int | None:
            try:
                return count_params({**model, width: k * step}, vocab, tok)
            except ConfigError:
                return None  # too narrow for the family (d_model >= 8, ...)

        lo = next(k for k in range(1, 1 << 12) if at(k) is not None)  # the narrowest valid width
        hi = lo
        while at(hi) < target and hi < 1 << 20:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # parameters grow with the width: bisect to the crossing
            mid = (lo + hi) // 2
            if at(mid) < target:
                lo = mid
            else:
                hi = mid
        best = min((lo, hi), key=lambda k: abs(at(k) - target))
        got = at(best)
        off = abs(got - target) / target
        if off > mp.tolerance:
            problems.append(f"arm {arm.name}: the nearest {width} ({best * step}) gives {got:,} parameters, "
                            f"{off:.1%} from {mp.arm}'s {target:,} (tolerance {mp.tolerance:.0%})")
            continue
        extra.setdefault(arm.name, {}).setdefault("model", {})[width] = best * step
        log(f"lmlab compare: arm {arm.name}: {width} = {best * step} -> {got:,} parameters "
            f"({mp.arm}: {target:,}, {off:.2%} apart)")
    if problems:
        raise ConfigError(f"match_params: {'; '.join(problems)}")


def _unit_vocab(kind: str) -> int:
    return build_tokenizer(TokenizerConfig(type=kind), []).vocab_size


# ---------------------------------------------------------------------------------- training


def finished(run: Path) -> bool:
    """A run that reached its budget (or its max_seconds): metrics.json written at its last step."""
    summary = run / "metrics.json"
    if not summary.is_file() or not rundir.has_checkpoint(run):
        return False
    m = json.loads(summary.read_text(encoding="utf-8"))
    step = rundir.latest_snapshot(run).meta.get("step")
    return step == m.get("steps") and (m.get("steps") == m.get("max_steps") or m.get("stopped_by") == "max_seconds")


def train_arm(spec: CompareSpec, arm: ArmSpec, seed: int, extra: dict[str, Any], log=print) -> Path:
    """Train (or resume, or skip when finished) one arm x seed; returns its run dir."""
    run = spec.run_dir(arm, seed)
    if finished(run):
        log(f"lmlab compare: {arm.name} seed {seed}: finished before, kept ({run})")
        return run
    log(f"lmlab compare: {arm.name} seed {seed}: {'resuming' if rundir.has_checkpoint(run) else 'training'} ({run})")
    return train(resolved(spec, arm, seed, extra))


# ----------------------------------------------------------------------------------- scoring


def score(spec: CompareSpec, log=print) -> list[dict[str, Any]]:
    """Per arm x seed: what its run dir says (``report.run_record``) with the spec's tasks,
    scored once (kept in the run's eval_results.json and reused when the settings match)."""
    out = []
    for arm in spec.arms:
        for seed in spec.seeds_of(arm):
            run = spec.run_dir(arm, seed)
            record = run_record(run, arm.name, seed)
            record["tasks"] = {}
            if spec.eval.tasks:
                kept = _kept_scores(run / RESULTS_FILE, spec)
                if kept is None:
                    report = evaluate([str(run)], spec.eval.tasks, data_dir=spec.eval.data_dir,
                                      max_examples=spec.eval.max_examples, max_input_len=spec.eval.max_input_len,
                                      batch_size=spec.eval.batch_size, log=log)
                    kept = report["runs"][0]["tasks"]
                record["tasks"] = kept
            out.append(record)
    return out


def _kept_scores(path: Path, spec: CompareSpec) -> dict[str, Any] | None:
    """The run's earlier scores of every spec task with the same settings, else None."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text(encoding="utf-8"))
    settings = saved.get("settings", {})
    if settings.get("max_examples") != spec.eval.max_examples:
        return None
    names = resolve_tasks(spec.eval.tasks)
    tasks = saved.get("tasks", {})
    return {t: tasks[t] for t in names} if all(t in tasks for t in names) else None

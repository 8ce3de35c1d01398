"""The family-agnostic, rank-aware training loop.

The loop knows only the model contracts: ``model(x, y, label_smoothing) -> ModelOutput`` for
training and ``log_probs`` for validation. Rank 0 alone logs and saves; every rank evaluates the
same validation windows, so no collective is needed outside the backward pass.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lmlab import rundir
from lmlab.config import RunConfig, save_config
from lmlab.data.batches import eval_windows
from lmlab.data.cache import TokenArrays
from lmlab.data.mixing import Adaptive, MixtureSampler
from lmlab.errors import LmlabError
from lmlab.fsio import atomic_write_text
from lmlab.registry import build_model, get_family
from lmlab.report.plots import plot_loss_curve, read_metrics
from lmlab.tokenizers import Tokenizer
from lmlab.training.data import prepare_tokenizer, prepare_tokens, readable_sources
from lmlab.training.distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_sum,
    barrier,
    gather_to_all,
    setup_distributed,
    teardown_distributed,
)
from lmlab.training.evaluate import lm_metrics, score_windows
from lmlab.training.optim import build_optimizer, lr_at


@dataclass
class Budget:
    max_steps: int
    tokens_per_step: int


def _n_tokens(arrays: list) -> int:
    """Tokens in per-source arrays, each one array or a list of segments (cache shards)."""
    return sum(len(a) if isinstance(a, np.ndarray) else sum(len(x) for x in a) for a in arrays)


def resolve_budget(cfg: RunConfig, sampler: MixtureSampler) -> Budget:
    """Turn max_steps / max_tokens / epochs into a number of optimizer steps."""
    per_step = sampler.global_batch * sampler.block_size
    t = cfg.train
    if t.max_tokens is not None:
        steps = math.ceil(t.max_tokens / per_step)
    elif t.epochs is not None:
        steps = math.ceil(t.epochs * sampler.steps_per_epoch)
    else:
        steps = t.max_steps
    return Budget(max(1, steps), per_step)


def check_resumable(cfg: RunConfig, meta: dict[str, Any], run_dir: Path) -> None:
    """A checkpoint continues only the same model, tokenizer, data and seed (the data order).

    A weights-only snapshot (an imported model) has no data position to keep: its data and seed
    may change, which is how it is fine-tuned on a new corpus.
    """
    saved = rundir.checkpoint_config(meta)
    now = cfg.to_dict()
    weights_only = rundir.TRAINER not in meta.get("sha256", {})
    for section in ("model", "tokenizer") if weights_only else ("model", "tokenizer", "data", "train.seed"):
        section, _, only = section.partition(".")
        keys = [only] if only else sorted(set(saved.get(section, {})) | set(now[section]))
        for key in keys:
            a, b = saved.get(section, {}).get(key), now[section].get(key)
            if section == "model" and key == "vocab_size" and b is None:
                continue
            if a != b:
                raise LmlabError(
                    f"{run_dir} holds a checkpoint with {section}.{key} = {a!r} but the config asks for "
                    f"{b!r}; drop that change to continue the run (lmlab train --resume {run_dir}), "
                    "or pick a new train.out_dir"
                )


class _Interrupt:
    """Turn SIGINT/SIGTERM into a flag so the loop saves a snapshot at the next step boundary."""

    def __init__(self):
        self.hit = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class PreparedData:
    """Data made outside the config's sources (``lmlab.TextData``): the tokenizer and the
    train/val token arrays, used instead of reading ``cfg.data`` and fitting ``cfg.tokenizer``."""

    tokenizer: Tokenizer
    arrays: TokenArrays


def train(cfg: RunConfig, resume: bool = True, prepared: PreparedData | None = None, *,
          layout: rundir.Layout = rundir.CORE, warm_start: rundir.Snapshot | None = None,
          extra_meta: dict[str, Any] | None = None) -> Path:
    """Train ``cfg`` into ``cfg.train.out_dir`` (resuming its latest checkpoint if any); return it.

    ``layout`` names the snapshots written; ``warm_start`` (with ``resume=False``) starts from a
    snapshot's weights alone, loaded tolerantly and with positions extended to
    ``model.block_size``, keeping the run dir's tokenizer (the continuous trainer's new cycle);
    ``extra_meta`` is added to every snapshot's meta.json.
    """
    t = cfg.train
    info = setup_distributed(t.device)
    try:
        return _train(cfg, info, resume, prepared, layout, warm_start, extra_meta or {})
    finally:
        teardown_distributed()


def warm_model(cfg: RunConfig, snap: rundir.Snapshot, device: torch.device) -> torch.nn.Module:
    """A model of ``cfg`` with ``snap``'s weights: added or missing tensors (auxiliary heads) are a
    warning; a longer ``block_size`` than the snapshot's extends its positions (seed 001)."""
    saved = int(rundir.checkpoint_config(snap.meta)["model"]["block_size"])
    grow = saved < cfg.model.block_size
    model_cfg = cfg.model.model_copy(update={"block_size": saved}) if grow else cfg.model
    model = build_model(model_cfg).to(device)
    snap.load_weights(model, tolerant=True)
    if grow:
        model.extend_max_seq_len(cfg.model.block_size)
    return model


def _train(cfg: RunConfig, info: DistInfo, resume: bool, prepared: PreparedData | None = None,
           layout: rundir.Layout = rundir.CORE, warm_start: rundir.Snapshot | None = None,
           extra_meta: dict[str, Any] | None = None) -> Path:
    t = cfg.train
    run_dir = Path(t.out_dir)
    if t.grad_checkpoint and not get_family(cfg.model.family)[1].supports_grad_checkpointing:
        raise LmlabError(f"train.grad_checkpoint: the {cfg.model.family} family does not support gradient "
                         "checkpointing; set train.grad_checkpoint: false")
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    torch.manual_seed(t.seed + info.rank)

    if rundir.has_checkpoint(run_dir) and rundir.layout_of(run_dir) is not layout:
        owner = "lmlab train" if rundir.layout_of(run_dir) is rundir.CORE else "python main.py (lmlab run)"
        raise LmlabError(f"{run_dir} holds the snapshots of {owner} ({rundir.layout_of(run_dir).names[0]}); "
                         f"continue it with {owner}, or pick another train.out_dir")
    snap = rundir.latest_snapshot(run_dir) if resume and rundir.has_checkpoint(run_dir) else None
    if snap is not None:
        check_resumable(cfg, snap.meta, run_dir)

    if prepared is None:
        indices = readable_sources(cfg)  # the failure policy, decided once for the run
        tokenizer = prepare_tokenizer(cfg, info, run_dir, snap is not None or warm_start is not None, indices)
    else:
        indices, tokenizer = list(range(len(prepared.arrays.names))), prepared.tokenizer
        if info.is_main and not rundir.tokenizer_dir(run_dir).is_dir():
            tokenizer.save(rundir.tokenizer_dir(run_dir))
    if cfg.model.vocab_size not in (None, tokenizer.vocab_size):
        raise LmlabError(
            f"model.vocab_size = {cfg.model.vocab_size} but the tokenizer has {tokenizer.vocab_size} ids; "
            "leave model.vocab_size unset to take the tokenizer's"
        )
    cfg.model.vocab_size = tokenizer.vocab_size
    arrays = prepare_tokens(cfg, tokenizer, info, run_dir, indices) if prepared is None else prepared.arrays
    n_sources = len(arrays.names)

    block, d = t.seq_len or cfg.model.block_size, cfg.data
    adaptive = (Adaptive(d.adaptive_interval_tokens, d.adaptive_smoothing, d.adaptive_min_weight,
                         d.adaptive_max_weight) if d.adaptive else None)
    sampler = MixtureSampler(arrays.train, arrays.names, block, t.batch_size, t.grad_accum_steps,
                             info.world, info.rank, t.seed, d.mix_strategy,
                             [d.source_weights[i] for i in indices] if d.source_weights else None, adaptive)
    budget = resolve_budget(cfg, sampler)
    per_source = max(1, t.eval_batches * t.batch_size // n_sources)
    val_sets = [(name, eval_windows(v, block, per_source)) for name, v in zip(arrays.names, arrays.val)
                if len(v) >= 2]
    if not val_sets:
        raise LmlabError("the validation split is empty; raise data.val_fraction or add documents")
    byte_lengths = tokenizer.token_byte_lengths()

    device = info.device
    model = build_model(cfg.model).to(device) if warm_start is None else warm_model(cfg, warm_start, device)
    model.set_grad_checkpointing(t.grad_checkpoint)
    optimizer = build_optimizer(model, t, device)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    step, tokens_seen = 0, 0
    if snap is not None:
        snap.load_weights(model)
    if hasattr(model, "on_train_start"):  # e.g. abstractinator stage 2 loads its frozen base
        model.on_train_start(resumed=snap is not None)
    # A weights-only snapshot (an imported model, e.g. GPT-2) starts a fresh optimizer and data
    # position: that is fine-tuning it in place.
    if snap is not None and rundir.TRAINER in snap.meta.get("sha256", {}):
        state = snap.load_trainer_state()
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, tokens_seen = int(state["step"]), int(state["tokens_seen"])
        sampler.load_state_dict(state["data"]["sampler"])
        _restore_rng(state["rng"], info, t.seed, step)
    if info.is_main:  # written only once the checkpoint has loaded: a refused resume changes nothing
        save_config(cfg, rundir.config_path(run_dir))
        _truncate_metrics(run_dir, step)

    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else None
    fwd_model = torch.compile(model) if t.compile else model
    if info.world > 1:
        ddp_ids = [device.index] if device.type == "cuda" else None
        fwd_model = torch.nn.parallel.DistributedDataParallel(fwd_model, device_ids=ddp_ids)

    def save() -> None:
        rng = _rng_state(info)  # a collective: every rank takes part, rank 0 writes
        if not info.is_main:
            return
        meta = rundir.snapshot_meta(cfg, tokenizer, model, step, tokens_seen, **(extra_meta or {}))
        trainer_state = {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "schedule": {"kind": "warmup_cosine", "step": step, "max_steps": budget.max_steps},
            "rng": rng,
            "step": step,
            "tokens_seen": tokens_seen,
            "data": {"step": step, "epoch": step // sampler.steps_per_epoch, "sampler": sampler.state_dict()},
        }
        rundir.save_snapshot(run_dir, model, meta, trainer_state, layout)
        if hasattr(model, "on_checkpoint"):  # e.g. abstractinator stage 1 writes its base file
            model.on_checkpoint()

    def evaluate() -> dict[str, Any]:
        """Overall val metrics, plus val loss by source when there are several."""
        scores = {name: score_windows(model, w, byte_lengths, device, t.batch_size, autocast)
                  for name, w in val_sets}
        total = [sum(x) for x in zip(*scores.values())]
        out: dict[str, Any] = lm_metrics(*total)
        if len(scores) > 1:
            out["val_loss_by_source"] = {n: lm_metrics(*sc)["val_loss"] for n, sc in scores.items()}
        return out

    planner_log: dict[str, Any] = {"periodic": []}

    # A family's own diagnostics of the first val windows (rank 0): planner families write
    # planner_eval.json, others with a ``diagnostics`` hook (abstractinator) diagnostics.json.
    diagnose = getattr(model, "planner_diagnostics", None)
    diag_file = "planner_eval.json"
    if diagnose is None:
        diagnose, diag_file = getattr(model, "diagnostics", None), "diagnostics.json"

    def planner_eval(final: bool) -> None:
        if diagnose is None or not info.is_main:
            return
        windows = [w for _, ws in val_sets for w in ws]
        windows = [w for w in windows if len(w) == len(windows[0])][: max(1, t.batch_size)]
        ids = torch.from_numpy(np.stack(windows).astype(np.int64)).to(device)
        entry = {"step": step, **diagnose(ids)}
        if final:
            planner_log["final"] = entry
        else:
            planner_log["periodic"].append(entry)
        atomic_write_text(run_dir / diag_file, json.dumps(planner_log, indent=2) + "\n")

    if info.is_main:
        start = f"resuming {snap.path} at step {step}" if snap is not None else "starting"
        print(f"lmlab: {start}: {cfg.model.family} ({model.num_params() / 1e6:.2f}M params) | "
              f"tokenizer {tokenizer.backend} ({tokenizer.vocab_size} ids) | {n_sources} source(s), train "
              f"{_n_tokens(arrays.train):,} / val {sum(len(a) for a in arrays.val):,} tokens | {budget.max_steps} steps x {budget.tokens_per_step:,} tokens | "
              f"{device}, {t.precision}, world {info.world} | {run_dir}", flush=True)
    log = _MetricsLog(run_dir, info.is_main)
    bar = tqdm(total=budget.max_steps, initial=step, disable=not (t.progress and info.is_main),
               unit="step", dynamic_ncols=True, mininterval=1.0)
    last_val: dict[str, float] = {}
    tick, tick_tokens = time.perf_counter(), tokens_seen
    log_src = torch.zeros(2, n_sources, dtype=torch.float64)
    data_time = 0.0
    with _Interrupt() as interrupt:
        model.train()
        while step < budget.max_steps:
            lr = lr_at(step, t, budget.max_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            terms_sum: dict[str, torch.Tensor] = {}
            t_data = time.perf_counter()
            batches = list(sampler.micro_batches(step))
            data_time += time.perf_counter() - t_data
            src_stats = torch.zeros(2, n_sources, dtype=torch.float64)  # per-source CE sums, rows
            if hasattr(model, "set_train_step"):  # families with step-dependent loss weights
                model.set_train_step(step)
            for m, (x, y, src) in enumerate(batches):
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                last = m == len(batches) - 1
                sync = contextlib.nullcontext() if last or info.world == 1 else fwd_model.no_sync()
                with sync:
                    with autocast or contextlib.nullcontext():
                        out = fwd_model(x, y, label_smoothing=t.label_smoothing)
                    scaler.scale(out.loss / len(batches)).backward()
                loss_sum += out.loss.detach().float()
                if n_sources > 1:
                    src_stats += _per_source_loss(out.logits, y, src, n_sources)
                for k, v in out.terms.items():
                    terms_sum[k] = terms_sum.get(k, 0) + v.detach().float()
            if t.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            else:
                grad_norm = torch.zeros(())
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += budget.tokens_per_step
            bar.update(1)
            if n_sources > 1:  # the same totals on every rank, so every rank reweights alike
                src_stats = all_reduce_sum(src_stats, info)
                sampler.observe(src_stats[0], src_stats[1], budget.tokens_per_step)
                log_src += src_stats

            if step % t.log_interval == 0 or step == budget.max_steps:
                loss = all_reduce_mean(loss_sum / len(batches), info).item()
                now = time.perf_counter()
                tps = (tokens_seen - tick_tokens) / max(now - tick, 1e-9)
                data_wait = data_time / max(now - tick, 1e-9)  # share of wall time spent making batches
                tick, tick_tokens, data_time = now, tokens_seen, 0.0
                terms = {k: all_reduce_mean(v / len(batches), info).item() for k, v in terms_sum.items()}
                row = {"step": step, "tokens": tokens_seen, "loss": loss, "lr": lr,
                       "grad_norm": float(grad_norm), "tokens_per_s": tps, "data_wait": data_wait, **terms}
                if n_sources > 1:
                    row["source_loss"] = {n: (log_src[0, i] / log_src[1, i]).item()
                                          for i, n in enumerate(arrays.names) if log_src[1, i] > 0}
                    row["source_weights"] = sampler.weights()
                    log_src.zero_()
                log.write(row)
                bar.set_postfix(tokens=f"{tokens_seen:,}", loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            if step % t.eval_interval == 0 or step == budget.max_steps:
                last_val = evaluate()
                log.write({"step": step, "tokens": tokens_seen, **last_val})
                if t.eval_planner_diagnostics:
                    planner_eval(final=False)
                if info.is_main and t.progress:
                    bar.write(f"step {step}: val loss {last_val['val_loss']:.4f}, "
                              f"ppl {last_val['val_ppl']:.2f}, bpb {last_val['val_bpb']:.4f}")
            if info.world > 1:  # every rank must stop at the same step
                flag = torch.tensor([float(interrupt.hit)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                interrupt.hit = bool(flag.item())
            if step % t.save_interval == 0 or step == budget.max_steps or interrupt.hit:
                save()
            if interrupt.hit:
                bar.close()
                again = f"lmlab train --resume {run_dir}" if layout is rundir.CORE else "python main.py (or lmlab run)"
                raise KeyboardInterrupt(f"interrupted at step {step}; resume with: {again}")
    bar.close()
    if not last_val:  # nothing left to train (a finished run re-run): still report where it stands
        last_val = evaluate()
    if info.is_main:
        summary = {"steps": step, "tokens": tokens_seen, "max_steps": budget.max_steps,
                   "num_params": sum(p.numel() for p in model.parameters()),
                   "tokenizer": tokenizer.backend, "vocab_size": tokenizer.vocab_size,
                   "train_tokens": _n_tokens(arrays.train), "val_tokens": sum(len(a) for a in arrays.val),
                   "sources": arrays.names, **last_val}
        train_rows = [r for r in read_metrics(run_dir) if "loss" in r]
        if train_rows:
            summary.update({"final_train_loss": train_rows[-1]["loss"],
                            "tokens_per_s": train_rows[-1]["tokens_per_s"]})
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        plot_loss_curve(run_dir)
        if t.final_eval_planner_diagnostics:
            planner_eval(final=True)
        _write_samples(model, tokenizer, cfg, run_dir)
    # Ranks leave together: a rank that tears its process group down while rank 0 still writes
    # the summary and samples is a known race at gloo teardown (PyTorch's advice: barrier first).
    barrier(info)
    return run_dir


def _per_source_loss(logits: torch.Tensor, y: torch.Tensor, src: torch.Tensor, n: int) -> torch.Tensor:
    """Per-source sums of row-mean CE and row counts, (2, n), from logits (B, T, V) and y (B, T)."""
    out = torch.zeros(2, n, dtype=torch.float64)
    if logits.shape[:2] != y.shape:  # a family whose outputs are not per-target logits
        return out
    with torch.no_grad():
        ce = F.cross_entropy(logits.detach().float().transpose(1, 2), y, ignore_index=-1, reduction="none")
        rows = ce.mean(dim=1).double().cpu()  # (B,)
    out[0].index_add_(0, src, rows)
    out[1].index_add_(0, src, torch.ones_like(rows))
    return out


def _rng_state(info: DistInfo) -> dict[str, torch.Tensor]:
    """Every rank's RNG state, stacked by rank: {"torch": (world, n), "cuda": (world, m)}."""
    state = {"torch": gather_to_all(torch.get_rng_state(), info)}
    if info.device.type == "cuda":
        state["cuda"] = gather_to_all(torch.cuda.get_rng_state(info.device), info)
    return state


def _restore_rng(rng: dict[str, torch.Tensor], info: DistInfo, seed: int, step: int) -> None:
    """Put this rank's saved RNG state back; with another world size, reseed by (seed, rank, step)."""
    if rng["torch"].size(0) != info.world:
        warnings.warn(
            f"the checkpoint was saved by {rng['torch'].size(0)} processes, this run has {info.world}: "
            "random streams (dropout) restart from the seed, so the run is not bit-identical",
            stacklevel=2,
        )
        torch.manual_seed(seed + 1000 * step + info.rank)
        return
    torch.set_rng_state(rng["torch"][info.rank])
    if info.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"][info.rank], info.device)


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume, drop metrics logged after the snapshot (they will be logged again)."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        keep = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


class _MetricsLog:
    """Append-only metrics.jsonl, written by rank 0 alone."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path, self.enabled = run_dir / "metrics.jsonl", enabled

    def write(self, row: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


def _write_samples(model, tokenizer, cfg: RunConfig, run_dir: Path) -> None:
    """Decode the configured prompts, print them and save samples.txt."""
    from lmlab.generate import complete

    try:
        texts = complete(model, tokenizer, cfg.sample.prompts, cfg.sample)
    except LmlabError as e:  # e.g. a prompt the char tokenizer cannot encode: the run is still good
        warnings.warn(f"no samples written: sample.prompts: {e}", stacklevel=2)
        return
    block = "\n\n".join(f"--- sample {i + 1} ---\n{text}" for i, text in enumerate(texts))
    (run_dir / "samples.txt").write_text(block + "\n", encoding="utf-8")
    print(block)

"""The family-agnostic, rank-aware trainer.

``Trainer(plan, info)`` builds a run from a :class:`TrainPlan`: data, tokenizer and sampler
(``data.py``), the budget (``budget.py``), the model (fresh, resumed or warm-started), the
parallel strategy (``parallel.py``), the optimizer, precision and checkpointer
(``checkpoint.py``), its resumable state by parts (``state.py``), the metrics processor that
builds every logged row (``metrics.py``) and the trackers that deliver them (``trackers.py``).
``fit()`` runs ``train_step`` until the budget is spent, evaluating, logging and saving at their
intervals. It knows only the model contracts: ``model(x, y, label_smoothing) -> ModelOutput``
for training, ``log_probs`` for validation and the hooks ``LanguageModel`` declares. Rank 0
alone logs and writes; every rank evaluates the same validation windows.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from lmlab import rundir
from lmlab.configure import save_config
from lmlab.errors import Interrupted, LmlabError
from lmlab.fsio import atomic_write_text
from lmlab.registry import build_model, get_family
from lmlab.report.plots import plot_loss_curve, read_metrics
from lmlab.training import batch_probe, memory
from lmlab.training.budget import n_tokens, resolve_budget
from lmlab.training.checkpoint import Checkpointer
from lmlab.training.data import prepare_data
from lmlab.training.distributed import DistInfo, all_reduce_max, all_reduce_sum, any_rank, barrier
from lmlab.training.eval_tasks import TaskEval
from lmlab.training.evaluate import lm_metrics, score_windows
from lmlab.training.metrics import MetricsProcessor, per_source_loss
from lmlab.training.optim import lr_at
from lmlab.training.parallel import build_parallel, check_parallel
from lmlab.training.plan import TrainPlan
from lmlab.training.precision import Precision
from lmlab.training.process import Interrupt, set_threads
from lmlab.training.resume import check_resumable, warm_model
from lmlab.training.samples import write_samples
from lmlab.training.state import (
    BestLoss,
    Clock,
    DataPosition,
    OptimizerState,
    Progress,
    RngState,
    ScalerState,
    ScheduleRecord,
    TrainerState,
)
from lmlab.training.telemetry import Telemetry, peak_tflops
from lmlab.training.trackers import TrackerContext, build_trackers, duration


class Trainer:
    """One training run: ``Trainer(plan, info).fit()`` returns the run dir."""

    def __init__(self, plan: TrainPlan, info: DistInfo):
        self.plan, self.cfg, self.info = plan, plan.config, info
        cfg, t = self.cfg, self.cfg.train
        self.run_dir = run_dir = Path(t.out_dir)
        model_cls = get_family(cfg.model.family)[1]
        if t.grad_checkpoint and not model_cls.supports_grad_checkpointing:
            raise LmlabError(f"train.grad_checkpoint: the {cfg.model.family} family does not support gradient "
                             "checkpointing; set train.grad_checkpoint: false")
        mode = check_parallel(t, info, model_cls, cfg.model.family)
        self.threads = set_threads(t.num_threads)
        torch.manual_seed(t.seed + info.rank)

        snap = self.snapshot = self._snapshot_to_resume()
        data = prepare_data(cfg, info, run_dir, plan.data, resuming=snap is not None or plan.warm_start is not None)
        self.tokenizer, self.arrays, self.sampler, self.val_sets = data.tokenizer, data.arrays, data.sampler, data.val_sets
        self.n_sources, self.block = len(self.arrays.names), self.sampler.block_size
        self.byte_lengths = self.tokenizer.token_byte_lengths()
        self.budget = resolve_budget(cfg, self.sampler)

        # Estimated first: a size that cannot fit is refused before anything is allocated.
        memory.check_fits(cfg, info, self.sampler.micro_batch, self.block, mode == "fsdp")
        # The model, loaded before the strategy shards it; the optimizer over what it made.
        device = info.device
        model = (build_model(cfg.model).to(device) if plan.warm_start is None
                 else warm_model(cfg, plan.warm_start, device))
        model.set_grad_checkpointing(t.grad_checkpoint)
        self.model = model
        self.parallel = build_parallel(t, info, mode)
        self.checkpointer = Checkpointer(run_dir, plan.layout, self.parallel, info,
                                         lambda: build_model(cfg.model), t.save_optimizer_state)
        if snap is not None:
            self.checkpointer.load_model(snap, model)
        self.parallel.prepare(model)
        self.task_eval = TaskEval(t, model, self.tokenizer, info, self.parallel.collective_forward)  # its data read now
        self.optimizer = self.parallel.build_optimizer(model)
        self.precision = Precision(t, device, sharded=self.parallel.sharded_state)
        self.bad_steps = 0
        # on_nonfinite: stop watches the steps on the device and reads the flag at log, eval and save
        # steps only (no host sync per step): the first non-finite step, or -1.
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=info.device)
        # What trainer.pt holds, by parts (state.py); the RNG loads last (it may reseed by the step).
        self.progress, self.clock, self.best = Progress(), Clock(), BestLoss()
        self.state = TrainerState(
            progress=self.progress, clock=self.clock, best=self.best, data=DataPosition(self.sampler, self.progress),
            schedule=ScheduleRecord(t.schedule, self.progress, self.budget.max_steps),
            scaler=ScalerState(self.precision.scaler),
            optimizer=OptimizerState(self.parallel, self.optimizer, t.save_optimizer_state),
            rng=RngState(info, t.seed, self.progress))
        # A weights-only snapshot (an imported model, e.g. GPT-2) loads no state: a fresh optimizer
        # and data position fine-tune it in place.
        if snap is not None:
            self.checkpointer.load_state(snap, self.optimizer, self.state)
        model.on_train_start(resumed=snap is not None, weights_file=rundir.weights_file)
        # train.max_seconds counts training time over every resume: a run past it stays finished.
        self.out_of_time = t.max_seconds is not None and self.clock.wall_s >= t.max_seconds
        if self.best.step is None and (run_dir / "checkpoints" / plan.layout.best).is_dir():
            # a warm start in the same run dir (the continuous trainer's next cycle) keeps the bar
            with contextlib.suppress(LmlabError):
                kept = rundir.best_snapshot(run_dir)
                self.best.update(float(kept.meta["val_loss"]), kept.step)
        self.fwd = self.parallel.wrap()
        self.checkpointer.check_room(model, self.step, self.budget.max_steps, t.save_interval)
        self._choose_micro_batch()

        telemetry = Telemetry(cfg.model.flops_per_token(self.block), device, info.world,
                              t.peak_tflops or peak_tflops(device, t.precision, t.allow_tf32))
        self.metrics = MetricsProcessor(telemetry, info, self.arrays.names)
        self.trackers = build_trackers(TrackerContext(run_dir, t, self.budget.max_steps), info.is_main)
        if info.is_main:  # written only once the checkpoint has loaded: a refused resume changes nothing
            save_config(cfg, rundir.config_path(run_dir))
        self.trackers.start(cfg.to_dict(), self.step)
        self.diagnostics_log: dict[str, Any] = {"periodic": []}
        self.last_val: dict[str, float] = {}

    def _snapshot_to_resume(self) -> rundir.Snapshot | None:
        """The run dir's latest snapshot, when this run continues it (checked against the config)."""
        run_dir, plan = self.run_dir, self.plan
        if rundir.has_checkpoint(run_dir) and rundir.layout_of(run_dir) is not plan.layout:
            owner = "lmlab train" if rundir.layout_of(run_dir) is rundir.CORE else "python main.py (lmlab run)"
            raise LmlabError(f"{run_dir} holds the snapshots of {owner} ({rundir.layout_of(run_dir).names[0]}); "
                             f"continue it with {owner}, or pick another train.out_dir")
        if plan.warm_start is not None or not rundir.has_checkpoint(run_dir):
            return None
        snap = rundir.latest_snapshot(run_dir, with_trainer_state=True)
        check_resumable(self.cfg, snap.meta, run_dir)
        return snap

    @property
    def step(self) -> int:
        """Optimizer steps taken (``progress``, a part of the resumable state)."""
        return self.progress.step

    @property
    def tokens_seen(self) -> int:
        return self.progress.tokens_seen

    # ------------------------------------------------------------------------------- build

    def _choose_micro_batch(self) -> None:
        """``batch_size: auto``: probe the device for the micro-batch (the step's math is fixed)."""
        t = self.cfg.train
        if t.batch_size != "auto":
            return
        target = t.batch_target * t.grad_accum_steps
        ab = t.adaptive_batch
        if self.info.device.type != "cuda" or not ab.enabled:
            why = "adaptive_batch.enabled is false" if not ab.enabled else f"no GPU memory to probe on {self.info.device}"
            self._say(f"lmlab: train.batch_size auto: {why}, so micro-batches are adaptive_batch.max_batch_size = "
                      f"{t.batch_target} sequences, {t.grad_accum_steps} per step per process")
            return
        fits = batch_probe.cuda_fits(
            self.model, self.fwd, self.optimizer, self.block, self.tokenizer.vocab_size, self.info.device,
            ab.safety_factor, self.precision.autocast,
            lambda peak: all_reduce_max(peak, self.info))
        micro = batch_probe.search_micro_batch(target, ab, fits)
        if micro != self.sampler.micro_batch:
            self.sampler.set_micro_batch(micro)
        self._say(f"lmlab: train.batch_size auto: micro-batch {micro} x {self.sampler.accum} accumulation steps "
                  f"= {target} sequences per step per process (probed at step {self.step})")

    # ------------------------------------------------------------------------------- steps

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over this rank's micro-batches; returns the step's (unreduced)
        loss sum, terms, per-source stats, grad norm and lr, as tensors."""
        t, step = self.cfg.train, self.step
        lr = lr_at(step, t, self.budget.max_steps)
        for group in self.optimizer.param_groups:
            # Muon's groups follow the schedule at muon_lr; a part's (train.part_lr) at its own
            at = lr if "part" not in group else lr_at(step, t, self.budget.max_steps, group["part"])
            group["lr"] = at * group.get("lr_scale", 1.0)
        loss_sum = torch.zeros((), device=self.info.device)
        terms_sum: dict[str, torch.Tensor] = {}
        t_data = time.perf_counter()
        batches = list(self.sampler.micro_batches(step))
        data_time = time.perf_counter() - t_data
        src_stats = torch.zeros(2, self.n_sources, dtype=torch.float64)  # per-source CE sums, rows
        self.model.set_train_step(step)
        scaler = self.precision.scaler
        for m, (x, y, src) in enumerate(batches):
            x, y = x.to(self.info.device, non_blocking=True), y.to(self.info.device, non_blocking=True)
            with self.parallel.sync(self.fwd, last=m == len(batches) - 1):
                with self.precision.autocast():
                    out = self.fwd(x, y, label_smoothing=t.label_smoothing)
                scaler.scale(out.loss / len(batches)).backward()
            loss_sum += out.loss.detach().float()
            if self.n_sources > 1:
                src_stats += per_source_loss(out.logits, y, src, self.n_sources)
            for k, v in out.terms.items():
                terms_sum[k] = terms_sum.get(k, 0) + v.detach().float()
        scaler.unscale_(self.optimizer)
        # Without clipping the norm is still taken (an infinite max clips nothing): it is how a
        # diverging step is caught before it is saved.
        grad_norm = self.parallel.clip_grad_norm(t.grad_clip if t.grad_clip > 0 else float("inf"))
        if t.on_nonfinite == "stop" and not scaler.is_enabled():
            # Decided later, on the device: a bad step's weights are never saved or scored, since
            # check_finite runs before every log, eval and save (the run stops there).
            finite = torch.isfinite(torch.stack([loss_sum, grad_norm.detach().float().to(loss_sum.device)])).all()
            self.first_bad = torch.where(finite | (self.first_bad >= 0), self.first_bad, step + 1)
            scaler.step(self.optimizer)
        elif self._finite(loss_sum, grad_norm):
            scaler.step(self.optimizer)
            self.bad_steps = 0
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.on_step_end()
        self.progress.advance(self.budget.tokens_per_step)
        if self.n_sources > 1:  # the same totals on every rank, so every rank reweights alike
            src_stats = all_reduce_sum(src_stats, self.info)
            self.sampler.observe(src_stats[0], src_stats[1], self.budget.tokens_per_step)
        return {"loss_sum": loss_sum, "terms": terms_sum, "n": len(batches), "src": src_stats,
                "grad_norm": grad_norm, "lr": lr, "data_time": data_time}

    def _finite(self, loss_sum: torch.Tensor, grad_norm: torch.Tensor) -> bool:
        """Whether this step's loss and gradient norm are finite on every rank. A non-finite one
        stops the run (``on_nonfinite: stop``) or drops the step (``skip_step``) until too many
        in a row. fp16's loss scaler skips overflowing gradients itself: there only the loss counts."""
        checked = [loss_sum.float()]
        if not self.precision.scaler.is_enabled():
            checked.append(grad_norm.detach().float().to(loss_sum.device))
        bad = all_reduce_max(float(not bool(torch.isfinite(torch.stack(checked)).all())), self.info) > 0
        if not bad:
            return True
        t, step = self.cfg.train, self.step + 1
        self.bad_steps += 1
        if t.on_nonfinite == "skip_step" and self.bad_steps < t.max_nonfinite_steps:
            self._say(f"lmlab: step {step}: non-finite loss or gradient norm; skipping this optimizer step "
                      f"({self.bad_steps} in a row, stop at {t.max_nonfinite_steps})")
            return False
        raise LmlabError(self._nonfinite_message(step, f"{self.bad_steps} step(s) in a row" if t.on_nonfinite ==
                                                 "skip_step" else "train.on_nonfinite: stop"))

    def check_finite(self) -> None:
        """Stop (one line, nothing saved) when a step since the last check was not finite on some
        rank (``on_nonfinite: stop``, whose steps are watched on the device)."""
        bad = int(all_reduce_max(float(self.first_bad.item()), self.info))
        if bad >= 0:
            seen = "" if bad == self.step else f", seen at step {self.step}"
            raise LmlabError(self._nonfinite_message(bad, f"train.on_nonfinite: stop{seen}"))

    def _nonfinite_message(self, step: int, why: str) -> str:
        last = rundir.latest_snapshot(self.run_dir) if rundir.has_checkpoint(self.run_dir) else None
        kept = f"the last good snapshot is {last.path} (step {last.step})" if last is not None else "no snapshot was saved"
        t = self.cfg.train
        # the advice fits the mode: skip_step is already on when it ran out of skips
        other = ("or raise train.max_nonfinite_steps" if t.on_nonfinite == "skip_step"
                 else "or set train.on_nonfinite: skip_step")
        return (f"step {step}: the loss or gradient norm is not finite ({why}); stopped without saving it, "
                f"{kept}; lower train.lr or raise train.warmup_steps, {other}")

    def _weights_finite(self) -> bool:
        """Whether every parameter is finite on every rank (each checks its own shards)."""
        # deferred: torch.distributed.tensor takes ~0.6 s to import, and only FSDP makes DTensors
        from torch.distributed.tensor import DTensor

        local = [p.to_local() if isinstance(p, DTensor) else p for p in self.model.parameters()]
        ok = all(bool(torch.isfinite(p.detach()).all()) for p in local if p.numel())
        return all_reduce_max(float(not ok), self.info) == 0

    def evaluate(self) -> dict[str, Any]:
        """Overall val metrics, plus val loss by source when there are several."""
        scores = {name: score_windows(self.model, w, self.byte_lengths, self.info.device, self.sampler.micro_batch,
                                      self.precision.autocast())
                  for name, w in self.val_sets}
        total = [sum(x) for x in zip(*scores.values())]
        out: dict[str, Any] = lm_metrics(*total)
        if len(scores) > 1:
            out["val_loss_by_source"] = {n: lm_metrics(*sc)["val_loss"] for n, sc in scores.items()}
        if self.info.is_main or self.parallel.collective_forward:  # the family's numbers of every eval
            out.update(self.model.eval_diagnostics(self._held_out_ids()))
        return out

    def save(self) -> None:
        """A snapshot of everything needed to continue exactly (every rank calls it); weights that
        are not finite are never saved: the run stops instead, keeping the snapshots it has."""
        if not self._weights_finite():
            raise LmlabError(self._nonfinite_message(self.step, "the weights themselves"))
        step, tokens = self.step, self.tokens_seen
        self.checkpointer.save(
            self.optimizer,
            lambda model: rundir.snapshot_meta(self.cfg, self.tokenizer, model, step, tokens, **self.plan.meta),
            self.state)

    def _held_out_ids(self) -> torch.Tensor:
        """The first held-out windows of one length (N, T): the family's ``diagnostics_rows``, or
        one micro-batch."""
        windows = [w for _, ws in self.val_sets for w in ws]
        rows = self.model.diagnostics_rows or max(1, self.sampler.micro_batch)
        windows = [w for w in windows if len(w) == len(windows[0])][:rows]
        return torch.from_numpy(np.stack(windows).astype(np.int64)).to(self.info.device)

    def diagnose(self, final: bool) -> None:
        """The family's own diagnostics of the first val windows, written by rank 0 to its
        ``diagnostics_file`` (under a strategy whose forward is collective, every rank runs it)."""
        if not (self.info.is_main or self.parallel.collective_forward):
            return
        result = self.model.diagnostics(self._held_out_ids())
        if result is None or not self.info.is_main:
            return
        entry = {"step": self.step, **result}
        if final:
            self.diagnostics_log["final"] = entry
        else:
            self.diagnostics_log["periodic"].append(entry)
        atomic_write_text(self.run_dir / self.model.diagnostics_file, json.dumps(self.diagnostics_log, indent=2) + "\n")

    # --------------------------------------------------------------------------------- fit

    def fit(self) -> Path:
        """Train to the budget, then write the summary, plot and samples; returns the run dir."""
        cfg, t, info, budget = self.cfg, self.cfg.train, self.info, self.budget
        if info.is_main:
            snap = self.snapshot
            start = f"resuming {snap.path} at step {self.step}" if snap is not None else "starting"
            print(f"lmlab: {start}: {cfg.model.family} ({self.model.num_params() / 1e6:.2f}M params) | "
                  f"tokenizer {self.tokenizer.backend} ({self.tokenizer.vocab_size} ids) | {self.n_sources} source(s), "
                  f"train {n_tokens(self.arrays.train):,} / val {sum(len(a) for a in self.arrays.val):,} tokens | "
                  f"{budget.max_steps} steps x {budget.tokens_per_step:,} tokens | "
                  f"{info.device}, {t.precision}, world {info.world}, {self.parallel.name}"
                  f"{', ' + self.threads if info.device.type == 'cpu' else ''} | {self.run_dir}", flush=True)
            if t.distributed.zero_optimizer and self.parallel.name == "none":
                print("lmlab: train.distributed.zero_optimizer: one process has nothing to shard; plain AdamW",
                      flush=True)
            if not t.save_optimizer_state:
                print("lmlab: train.save_optimizer_state: false: snapshots keep weights, step and data position but "
                      "not the optimizer state, so a resume will not be exact", flush=True)
        # The bar only on a terminal: a redirected log gets the console tracker's plain lines.
        bar = tqdm(total=budget.max_steps, initial=self.step, unit="step", dynamic_ncols=True, mininterval=1.0,
                   disable=not (t.progress and info.is_main and sys.stderr.isatty()))
        try:
            with Interrupt(self.plan.resume_command, info.is_main) as interrupt:
                self._loop(bar, interrupt)
        except KeyboardInterrupt:
            bar.close()
            self.trackers.close("KILLED")
            raise
        except BaseException:
            bar.close()
            self.trackers.close("FAILED")
            raise
        bar.close()
        try:
            self._wrap_up()
        except KeyboardInterrupt as e:  # the last step is saved: only the summary and samples are missing
            self.trackers.close("KILLED")
            raise Interrupted(f"interrupted while writing the summary and samples (every step is saved); write them "
                              f"with: {self.plan.resume_command}", getattr(e, "signum", signal.SIGINT.value)) from None
        self.trackers.close("FINISHED")
        # Ranks leave together: a rank that tears its process group down while rank 0 still writes
        # the summary and samples is a known race at gloo teardown (PyTorch's advice: barrier first).
        barrier(info)
        return self.run_dir

    def _wrap_up(self) -> None:
        """After the loop: the final evaluation, diagnostics, summary, plot, samples, one line."""
        if not self.last_val:  # nothing left to train (a finished run re-run): still report where it stands
            self.last_val = self.evaluate()
        if self.cfg.train.final_eval_planner_diagnostics:
            self.diagnose(final=True)
        self._finish()
        best = (f"best val loss {self.best.val_loss:.4f} at step {self.best.step}" if self.best.step is not None
                else "no best snapshot")
        ended = ("done" if self.step >= self.budget.max_steps else "stopped by train.max_seconds" if self.out_of_time
                 else "paused (train.stop_at_step)")
        self._say(f"lmlab: {ended}: {self.run_dir} | step {self.step}/{self.budget.max_steps} | val loss "
                  f"{self.last_val['val_loss']:.4f} (bpb {self.last_val['val_bpb']:.4f}) | {best} | "
                  f"{duration(self.clock.wall_s)} of training")

    def _loop(self, bar: tqdm, interrupt: Interrupt) -> None:
        """Steps until the budget is spent (or ``stop_at_step``, a pause): log, evaluate (keeping
        the best), save at intervals."""
        t, info, budget = self.cfg.train, self.info, self.budget
        # a pause: the loop ends at stop_at_step, the schedule (lr_at) still spans max_steps
        end = min(budget.max_steps, t.stop_at_step or budget.max_steps)
        self.clock.start()
        self.metrics.start(self.tokens_seen)
        self.model.train()
        while self.step < end and not self.out_of_time:
            if (t.batch_size == "auto" and t.adaptive_batch.reprobe_interval_steps
                    and self.step % t.adaptive_batch.reprobe_interval_steps == 0 and self.step > 0):
                self._choose_micro_batch()
            r = self.train_step()
            step = self.step
            wall = self.clock.tick()  # training time over every resume (saved too)
            self.metrics.observe(r)
            bar.update(1)
            # Every rank stops at the same step: a signal or the time cap on any rank, agreed in one
            # all-reduce per step (none in a single process). The agreement is read once per step:
            # a signal that lands later in the step (while logging, say) stops the next one, so no
            # step raises without the save it decided on.
            stop, self.out_of_time = any_rank(
                [interrupt.hit, t.max_seconds is not None and wall >= t.max_seconds], info)
            last = step == end or self.out_of_time
            evaluating = step % t.eval_interval == 0 or last
            scoring_tasks = self.task_eval.due(step, last)  # train.eval_tasks: lmlab eval's benchmarks
            if step % t.log_interval == 0 or evaluating or scoring_tasks or step % t.save_interval == 0 or last or stop:
                self.check_finite()
            if step % t.log_interval == 0 or last:
                row = self.metrics.train_row(r, self.progress, self.clock, self.sampler.weights())
                self.trackers.log(row)
                bar.set_postfix(tokens=f"{row['tokens']:,}", loss=f"{row['loss']:.3f}",
                                tok_s=f"{row['tokens_per_s']:,.0f}", refresh=False)
            with self.clock.aside():
                if evaluating:
                    self._validate(bar)
                if scoring_tasks:
                    self.task_eval.run(self.progress, self.clock, self.trackers, bar)
                if evaluating or scoring_tasks:
                    # an evaluation can take minutes: a signal during it stops at this step, saved
                    stop = any_rank([stop or interrupt.hit], info)[0]
                if step % t.save_interval == 0 or last or stop:
                    self.save()
                    # a signal during the save: this step is saved, so it stops here
                    stop = any_rank([stop or interrupt.hit], info)[0]
            if stop:
                raise interrupt.stopped(step)

    def _validate(self, bar: tqdm) -> None:
        """An eval step: score, log, keep the best snapshot, the family's diagnostics."""
        self.last_val = v = self.evaluate()
        self.trackers.log(self.metrics.eval_row(self.progress, self.clock, v))
        self._keep_best()
        if self.cfg.train.eval_planner_diagnostics:
            self.diagnose(final=False)
        if not bar.disable:
            bar.write(f"step {self.step}: val loss {v['val_loss']:.4f}, ppl {v['val_ppl']:.2f}, bpb {v['val_bpb']:.4f}")

    def _keep_best(self) -> None:
        """``train.save_best``: a new lowest validation loss replaces ``checkpoints/best`` (every
        rank takes part: under FSDP the weights are gathered)."""
        val = self.last_val["val_loss"]
        if not self.cfg.train.save_best or not self.best.improves(val):
            return
        self.best.update(val, self.step)
        model = self.checkpointer.consolidated()
        if self.info.is_main:
            meta = rundir.snapshot_meta(self.cfg, self.tokenizer, model, self.step, self.tokens_seen,
                                        val_loss=val, **self.plan.meta)
            rundir.save_best(self.run_dir, model, meta, self.plan.layout)

    def _finish(self) -> None:
        """Rank 0: metrics.json, the loss curve and samples (from the whole model)."""
        model = self.checkpointer.consolidated()  # a gather under FSDP: every rank takes part
        if not self.info.is_main:
            return
        run_dir = self.run_dir
        counts = {"steps": self.step, "tokens": self.tokens_seen, "max_steps": self.budget.max_steps,
                  "num_params": sum(p.numel() for p in model.parameters()),
                  "tokenizer": self.tokenizer.backend, "vocab_size": self.tokenizer.vocab_size,
                  "train_tokens": n_tokens(self.arrays.train), "val_tokens": sum(len(a) for a in self.arrays.val),
                  "sources": self.arrays.names}
        stop = self.cfg.train.stop_at_step
        paused = stop is not None and stop <= self.step < self.budget.max_steps
        stopped_by = "max_seconds" if self.out_of_time else "stop_at_step" if paused else "budget"
        summary = self.metrics.summary(counts, self.last_val, read_metrics(run_dir), self.clock, self.best,
                                       stopped_by)
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        plot_loss_curve(run_dir)
        write_samples(model, self.tokenizer, self.cfg, run_dir, self.trackers, self.step)

    def _say(self, line: str) -> None:
        if self.info.is_main:
            print(line, flush=True)


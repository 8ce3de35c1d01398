"""The rows a run logs, built in one place and handed to the trackers, which only deliver them
(torchtitan's ``components/metrics.py``: a metrics processor beside its loggers).

A train row, every ``train.log_interval`` steps and at the last one::

    step, tokens, loss, lr, grad_norm, tokens_per_s, data_wait, wall_s, train_s,
    tokens_per_s_per_device, peak_mem_mb, [mfu], <the model's loss terms>,
    [source_loss, source_weights]                                   (several sources)

``loss`` and the terms are means over the ranks and the step's micro-batches, ``peak_mem_mb``
the fullest rank's; ``tokens_per_s``, ``data_wait`` (the share of the time spent making batches)
and ``source_loss`` cover the steps since the last row. An eval row is ``step, tokens, train_s``
and the validation metrics; ``metrics.json`` (:meth:`MetricsProcessor.summary`) repeats the last
ones when the run ends. A ``train.eval_tasks`` row is ``step, tokens, train_s, tasks: {task:
{metric: value}}`` (``tasks/<task>/<metric>`` to the trackers); ``metrics.json`` keeps the last
as ``tasks`` and ``tasks_step``. Every rank builds the train rows (their reductions are collectives);
only rank 0's trackers write them.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from lmlab.training.distributed import DistInfo, all_reduce_max, all_reduce_mean
from lmlab.training.state import BestLoss, Clock, Progress
from lmlab.training.telemetry import Telemetry

COST_KEYS = ("tokens_per_s_per_device", "peak_mem_mb", "mfu")


def per_source_loss(logits: torch.Tensor, y: torch.Tensor, src: torch.Tensor, n: int) -> torch.Tensor:
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


class MetricsProcessor:
    """Accumulates what a train row covers between log steps and builds the rows."""

    def __init__(self, telemetry: Telemetry, info: DistInfo, names: list[str]):
        self.telemetry, self.info, self.names = telemetry, info, names
        self.source_stats = torch.zeros(2, len(names), dtype=torch.float64)  # per-source CE sums, rows
        self.tick, self.tick_tokens, self.data_time = time.perf_counter(), 0, 0.0

    def start(self, tokens_seen: int) -> None:
        """The loop starts: the first row's throughput counts from here."""
        self.tick, self.tick_tokens, self.data_time = time.perf_counter(), tokens_seen, 0.0

    def observe(self, out: dict[str, Any]) -> None:
        """One step's output of ``Trainer.train_step``."""
        self.data_time += out["data_time"]
        self.source_stats += out["src"]

    def train_row(self, out: dict[str, Any], progress: Progress, clock: Clock,
                  source_weights: dict[str, float]) -> dict[str, Any]:
        """The row of the step ``out`` (a collective); starts the next interval."""
        info = self.info
        loss = all_reduce_mean(out["loss_sum"] / out["n"], info).item()
        now = time.perf_counter()
        tps = (progress.tokens_seen - self.tick_tokens) / max(now - self.tick, 1e-9)
        data_wait = self.data_time / max(now - self.tick, 1e-9)
        self.tick, self.tick_tokens, self.data_time = now, progress.tokens_seen, 0.0
        terms = {k: all_reduce_mean(v / out["n"], info).item() for k, v in out["terms"].items()}
        cost = self.telemetry.row(tps)
        cost["peak_mem_mb"] = all_reduce_max(cost["peak_mem_mb"], info)  # the fullest rank
        row = {"step": progress.step, "tokens": progress.tokens_seen, "loss": loss, "lr": out["lr"],
               "grad_norm": float(out["grad_norm"]), "tokens_per_s": tps, "data_wait": data_wait,
               "wall_s": clock.wall_s, "train_s": clock.train_s, **cost, **terms}
        if len(self.names) > 1:
            src = self.source_stats
            row["source_loss"] = {n: (src[0, i] / src[1, i]).item() for i, n in enumerate(self.names) if src[1, i] > 0}
            row["source_weights"] = source_weights
            src.zero_()
        return row

    @staticmethod
    def eval_row(progress: Progress, clock: Clock, val: dict[str, Any]) -> dict[str, Any]:
        return {"step": progress.step, "tokens": progress.tokens_seen, "train_s": clock.train_s, **val}

    def summary(self, counts: dict[str, Any], last_val: dict[str, Any], rows: list[dict[str, Any]],
                clock: Clock, best: BestLoss, stopped_by: str) -> dict[str, Any]:
        """``metrics.json``: the run's ``counts`` (steps, tokens, sizes), the last validation
        metrics, the last train row's loss and cost (``rows``: metrics.jsonl), the clock, where
        it ran, why it stopped and the best validation loss."""
        out = {**counts, **last_val}
        train_rows = [r for r in rows if "loss" in r]
        if train_rows:
            last = train_rows[-1]
            out.update({"final_train_loss": last["loss"], "tokens_per_s": last["tokens_per_s"],
                        **{k: last[k] for k in COST_KEYS if k in last}})
        out.update({"wall_s": clock.wall_s, "device": str(self.info.device), "world": self.info.world,
                    "stopped_by": stopped_by})
        if best.step is not None:
            out.update({"best_val_loss": best.val_loss, "best_step": best.step})
        task_rows = [r for r in rows if "tasks" in r]  # train.eval_tasks: the last scores and their step
        if task_rows:
            out.update({"tasks": task_rows[-1]["tasks"], "tasks_step": task_rows[-1]["step"]})
        return out

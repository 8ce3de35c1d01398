"""Where a run's metrics go: a tracker interface with do-nothing defaults and a container.

The trainer logs every row to one :class:`Trackers` and never asks which trackers are on; a new
tracker is a subclass of :class:`Tracker` and an entry in ``TRACKERS``. Only rank 0 has any
(other ranks hold an empty container). ``jsonl`` (``metrics.jsonl``) is always on: it is what
lmlab itself reads back (``lmlab report``, resumption). ``train.trackers`` adds ``mlflow`` and
``tensorboard`` (the ``track`` extra); the console tracker prints one plain line per log
interval when ``train.progress`` is on but stderr is not a terminal (no progress bar frames in
a redirected log).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError
from lmlab.fsio import atomic_write_text, read_jsonl

INSTALL = "pip install 'lmlab[track]' torch==2.13.0 (or: pip install -e '.[track]' torch==2.13.0 in a checkout)"


@dataclass(frozen=True)
class TrackerContext:
    """What a tracker may need to set itself up: the run dir, the train section, the budget."""

    run_dir: Path
    train: Any  # lmlab.train_config.TrainConfig
    total_steps: int


class Tracker:
    """A metrics sink. Every method is a no-op here; trackers override what they use."""

    def start(self, config: dict[str, Any], step: int) -> None:
        """The run begins (or resumes) at ``step``; ``config`` is the resolved run config."""

    def log(self, row: dict[str, Any]) -> None:
        """One row of metrics (it has ``step`` and ``tokens``; values are numbers or small dicts)."""

    def backfill(self, rows: list[dict[str, Any]]) -> None:
        """After ``start``: the rows the run logged before this tracker was on it (``metrics.jsonl``
        up to the resumed step). A tracker that started afresh on a resumed or finished run (added
        after the fact) logs them; one that already has them ignores them (the default)."""

    def close(self, status: str = "FINISHED") -> None:
        """The run ends: ``FINISHED``, ``KILLED`` (interrupted) or ``FAILED``; flush and release."""


def scalars(row: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a row, nested dicts and lists flattened to ``a/b`` names (``step`` left out)."""
    out: dict[str, float] = {}
    items = row.items() if isinstance(row, dict) else enumerate(row)
    for key, value in items:
        name = f"{prefix}{key}"
        if name == "step":
            continue
        if isinstance(value, (dict, list, tuple)):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class JsonlTracker(Tracker):
    """Append-only ``metrics.jsonl``; on resume, rows after the snapshot's step are dropped
    (they will be logged again) and a torn last row (a kill mid-write) goes with a warning."""

    def __init__(self, ctx: TrackerContext):
        self.path = ctx.run_dir / "metrics.jsonl"

    def start(self, config: dict[str, Any], step: int) -> None:
        if self.path.is_file():  # rewritten whole or not at all; a torn last row is dropped
            keep = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in keep))

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class ConsoleTracker(Tracker):
    """Plain lines on stdout, for logs that are not a terminal: every evaluation, and a training
    row at most every ``EVERY_S`` seconds (the first, and the budget's last step, always; a row
    held back is printed at close, so a stopped run shows where it stopped), with the time left
    to the end of the budget (the cycle's, in the continuous trainer). ``metrics.jsonl`` keeps
    every row; a log interval of 1 step would otherwise print tens of thousands of lines."""

    EVERY_S = 30.0

    def __init__(self, ctx: TrackerContext):
        self.total = ctx.total_steps
        self.clock: Callable[[], float] = time.monotonic
        self.begun, self.first_step = 0.0, 0
        self.shown: float | None = None  # when the last training line was printed
        self.held: tuple[dict[str, Any], float] | None = None

    def start(self, config: dict[str, Any], step: int) -> None:
        self.begun, self.first_step = self.clock(), step

    def log(self, row: dict[str, Any]) -> None:
        step = row["step"]
        if "val_loss" in row:
            if self.held is not None:  # the step being evaluated first, in order
                self._print(*self.held)
            print(f"step {step}: val loss {row['val_loss']:.4f}, ppl {row['val_ppl']:.2f}, bpb {row['val_bpb']:.4f}",
                  flush=True)
        elif "loss" in row:
            now = self.clock()
            if self.shown is None or step >= self.total or now - self.shown >= self.EVERY_S:
                self._print(row, now)
            else:
                self.held = (row, now)

    def close(self, status: str = "FINISHED") -> None:
        if self.held is not None:
            self._print(*self.held)

    def _print(self, row: dict[str, Any], now: float) -> None:
        step = row["step"]
        parts = [f"step {step}/{self.total}", f"loss {row['loss']:.4f}", f"lr {row['lr']:.2e}",
                 f"{row['tokens_per_s']:,.0f} tok/s"]
        if "wall_s" in row:
            parts.append(duration(row["wall_s"]))
        if "mfu" in row:
            parts.append(f"MFU {row['mfu']:.1%}")
        done = step - self.first_step
        if 0 < done and step < self.total:  # this session's pace, evaluations and saves included
            parts.append(f"ETA {duration((now - self.begun) / done * (self.total - step))}")
        print(" | ".join(parts), flush=True)
        self.shown, self.held = now, None


def duration(seconds: float) -> str:
    """``12.3s``, ``4m05s``, ``3h07m``: short enough for a log line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


class MlflowTracker(Tracker):
    """An MLflow run (seed 003): the config as params, every row's numbers as metrics by step,
    sent in batches of ``train.mlflow.batch_interval`` rows. The run id is kept in
    ``RUN/mlflow_run.json`` so a resumed lmlab run continues the same MLflow run."""

    def __init__(self, ctx: TrackerContext):
        try:
            # deferred: mlflow is optional (the track extra)
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise LmlabError(f"train.trackers: mlflow needs the mlflow package: {INSTALL}") from None
        for name in ("mlflow", "alembic"):  # their INFO lines (creating the sqlite tables) are noise here
            logging.getLogger(name).setLevel(logging.WARNING)
        cfg = ctx.train.mlflow
        self.run_dir = ctx.run_dir
        self.uri = cfg.tracking_uri or f"sqlite:///{(ctx.run_dir / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment, self.run_name = cfg.experiment, cfg.run_name or ctx.run_dir.resolve().name
        self.batch_interval, self.rows = cfg.batch_interval, 0
        self.pending: list = []
        self.run_id: str | None = None
        self.fresh = False  # a new MLflow run: it has none of the run's earlier rows

    def start(self, config: dict[str, Any], step: int) -> None:
        from mlflow.entities import Param  # deferred: mlflow is optional

        saved = self.run_dir / "mlflow_run.json"
        if saved.is_file():
            known = json.loads(saved.read_text(encoding="utf-8"))
            if known.get("tracking_uri") == self.uri:
                self.run_id = known["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                return
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(self.experiment)
        self.run_id = self.client.create_run(exp_id, run_name=self.run_name).info.run_id
        self.fresh = True
        atomic_write_text(saved, json.dumps({"tracking_uri": self.uri, "run_id": self.run_id}) + "\n")
        # MLflow keeps at most 6000 characters of a param and takes at most 100 params per batch
        params = [Param(k, (json.dumps(v) if isinstance(v, (list, dict)) else str(v))[:6000])
                  for k, v in _flat(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, row: dict[str, Any]) -> None:
        self._add(row)
        self.rows += 1
        if self.rows % self.batch_interval == 0 or "val_loss" in row:  # evals are seen at once
            self._flush()

    def _add(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric  # deferred: mlflow is optional

        now, step = int(time.time() * 1000), int(row["step"])
        self.pending += [Metric(k.replace("/", "."), v, now, step) for k, v in scalars(row).items() if math.isfinite(v)]

    def backfill(self, rows: list[dict[str, Any]]) -> None:
        if not (self.fresh and rows):
            return
        for row in rows:
            self._add(row)
        self._flush()
        print(f"lmlab: mlflow: logged the run's {len(rows)} earlier rows (metrics.jsonl, steps {rows[0]['step']}-"
              f"{rows[-1]['step']}) to the new MLflow run {self.run_id}", flush=True)

    def _flush(self) -> None:
        for i in range(0, len(self.pending), 1000):  # at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending = []

    def close(self, status: str = "FINISHED") -> None:
        if self.run_id is None:
            return
        self._flush()
        self.client.set_terminated(self.run_id, status=status)


class TensorBoardTracker(Tracker):
    """TensorBoard event files (``torch.utils.tensorboard``); a resume purges the events after
    the snapshot's step, so curves have no duplicate tail."""

    def __init__(self, ctx: TrackerContext):
        try:
            # deferred: tensorboard is optional (the track extra); torch.utils.tensorboard needs it
            import tensorboard  # noqa: F401
        except ImportError:
            raise LmlabError(f"train.trackers: tensorboard needs the tensorboard package: {INSTALL}") from None
        self.log_dir = Path(ctx.train.tensorboard.log_dir or ctx.run_dir / "tensorboard")
        self.writer = None

    def start(self, config: dict[str, Any], step: int) -> None:
        # deferred: it needs the optional tensorboard package
        from torch.utils.tensorboard import SummaryWriter

        # no event files yet: a new log (the tracker added to a resumed or finished run)
        self.fresh = not any(self.log_dir.glob("**/events.out.tfevents.*"))
        self.writer = SummaryWriter(str(self.log_dir), purge_step=step + 1 if step else None)
        if not step:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def log(self, row: dict[str, Any]) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(key, value, int(row["step"]))

    def backfill(self, rows: list[dict[str, Any]]) -> None:
        if self.fresh and rows:
            for row in rows:
                self.log(row)
            print(f"lmlab: tensorboard: logged the run's {len(rows)} earlier rows (metrics.jsonl) to {self.log_dir}",
                  flush=True)

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Trackers(Tracker):
    """Forwards every call to each of its trackers (none: a null object). ``history``: the run's
    ``metrics.jsonl``, whose rows up to a resumed step go to each tracker's ``backfill``."""

    def __init__(self, trackers: list[Tracker], history: Path | None = None):
        self.trackers = trackers
        self.history = history

    def start(self, config: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.start(config, step)
        # After every start: the jsonl tracker has cut the rows past the snapshot (a torn row too).
        if step and self.history is not None and self.history.is_file():
            rows = [row for row in read_jsonl(self.history) if row.get("step", 0) <= step]
            for t in self.trackers:
                t.backfill(rows)

    def backfill(self, rows: list[dict[str, Any]]) -> None:
        for t in self.trackers:
            t.backfill(rows)

    def log(self, row: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(row)

    def close(self, status: str = "FINISHED") -> None:
        for t in self.trackers:
            t.close(status)


TRACKERS: dict[str, Callable[[TrackerContext], Tracker]] = {
    "jsonl": JsonlTracker, "mlflow": MlflowTracker, "tensorboard": TensorBoardTracker, "console": ConsoleTracker,
}


def build_trackers(ctx: TrackerContext, is_main: bool) -> Trackers:
    """The run's trackers on rank 0 (none elsewhere): jsonl always, ``train.trackers``, and the
    console when progress is on and stderr is not a terminal (the bar is used on a terminal)."""
    if not is_main:
        return Trackers([])
    names = ["jsonl", *(n for n in ctx.train.trackers if n != "jsonl")]
    if ctx.train.progress and not sys.stderr.isatty():
        names.append("console")
    return Trackers([TRACKERS[n](ctx) for n in dict.fromkeys(names)], history=ctx.run_dir / "metrics.jsonl")

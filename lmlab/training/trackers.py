"""Where a run's metrics go: a tracker interface with do-nothing defaults and a container.

The trainer logs every row to one :class:`Trackers` and never asks which trackers are on; a new
tracker is a subclass of :class:`Tracker` and an entry in ``TRACKERS``. Only rank 0 has any
(other ranks hold an empty container). ``jsonl`` (``metrics.jsonl``) is always on: it is what
lmlab itself reads back (``lmlab report``, resumption). ``train.trackers`` adds ``mlflow``,
``tensorboard`` and ``wandb`` (the ``track`` extra), which also get the end-of-run samples
(``log_samples``); the console tracker prints one plain line per log interval when
``train.progress`` is on but stderr is not a terminal (no progress bar frames in a redirected
log).
"""

from __future__ import annotations

import json
import logging
import math
import os
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

    def log_samples(self, prompts: list[str], samples: list[str], step: int) -> None:
        """The run's end-of-run samples (``samples.txt``): each prompt and its text (the prompt
        and its continuation), at ``step``. Trackers that cannot hold text ignore them."""

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


def samples_text(samples: list[str]) -> str:
    """The samples as ``samples.txt`` holds them: ``--- sample N ---`` then the text, each."""
    return "\n\n".join(f"--- sample {i + 1} ---\n{text}" for i, text in enumerate(samples))


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
        elif "tasks" in row:
            print(tasks_line(row), flush=True)
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


def tasks_line(row: dict[str, Any]) -> str:
    """``step 200: tasks: piqa acc 0.5800, acc_norm 0.5900; ...``: a ``train.eval_tasks`` row."""
    tasks = "; ".join(f"{task} " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                      for task, metrics in row["tasks"].items())
    return f"step {row['step']}: tasks: {tasks}"


def duration(seconds: float) -> str:
    """``12.3s``, ``4m05s``, ``3h07m``: short enough for a log line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


class MlflowTracker(Tracker):
    """An MLflow run (seed 003): the config as params, every row's numbers as metrics by step,
    sent in batches of ``train.mlflow.batch_interval`` rows, the samples as the artifact
    ``samples/step_N.txt``. The run id is kept in ``RUN/mlflow_run.json`` so a resumed lmlab run
    continues the same MLflow run. A sqlite store's relative path is the cwd's at train time; a
    new experiment keeps its artifacts beside the database (``mlartifacts/``), not in the cwd's
    ``./mlruns`` (MLflow's default for a database store)."""

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
        db = ctx.run_dir / "mlflow.db" if cfg.tracking_uri is None else _sqlite_path(cfg.tracking_uri)
        self.uri = cfg.tracking_uri
        self.artifacts: str | None = None  # None: the server's (or MLflow's) default
        if db is not None:
            query = cfg.tracking_uri.partition("?")[2] if cfg.tracking_uri else ""
            self.uri = f"sqlite:///{db.resolve()}" + (f"?{query}" if query else "")
            self.artifacts = (db.resolve().parent / "mlartifacts").as_uri()
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
            # a relative sqlite path saved by an older lmlab reads as it did: against this folder
            if _absolute_sqlite(known.get("tracking_uri")) == self.uri:
                self.run_id = known["run_id"]
                self.client.update_run(self.run_id, status="RUNNING")
                return
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = (exp.experiment_id if exp is not None
                  else self.client.create_experiment(self.experiment, artifact_location=self.artifacts))
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
        if self.rows % self.batch_interval == 0 or "val_loss" in row or "tasks" in row:  # evals are seen at once
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

    def log_samples(self, prompts: list[str], samples: list[str], step: int) -> None:
        self.client.log_text(self.run_id, samples_text(samples) + "\n", f"samples/step_{step}.txt")

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

    def log_samples(self, prompts: list[str], samples: list[str], step: int) -> None:
        self.writer.add_text("samples", "```\n" + samples_text(samples) + "\n```", step)

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()


class WandbTracker(Tracker):
    """A Weights & Biases run: the run config as its config, every row's numbers by step, the
    samples as a ``samples`` table (prompt, sample). Its files go to ``RUN/wandb`` (or
    ``train.wandb.dir``); offline unless told otherwise (:func:`wandb_mode`), so ``wandb sync
    RUN/wandb/offline-run-*`` uploads it later. The run id is kept in ``RUN/wandb_run.json`` so a
    resumed lmlab run continues the same W&B run (offline, each session is one more folder of
    that run). W&B keeps one value per step: rows a killed run logged past its last snapshot are
    not replaced when they are logged again (online, W&B drops steps below its last one)."""

    EXIT_CODES = {"FINISHED": 0, "KILLED": 130, "FAILED": 1}  # W&B marks a nonzero exit failed

    def __init__(self, ctx: TrackerContext):
        try:
            import wandb  # deferred: wandb is optional (the track extra)
        except ImportError:
            raise LmlabError(f"train.trackers: wandb needs the wandb package: {INSTALL}") from None
        self.wandb = wandb
        self.cfg, self.run_dir = ctx.train.wandb, ctx.run_dir
        self.mode = wandb_mode(self.cfg.mode, os.environ)
        self.run: Any = None
        self.fresh = False  # a new W&B run: it has none of the run's earlier rows

    def start(self, config: dict[str, Any], step: int) -> None:
        saved = self.run_dir / "wandb_run.json"
        where = {"project": self.cfg.project, "entity": self.cfg.entity}
        known = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
        run_id = known.get("run_id") if all(known.get(k) == v for k, v in where.items()) else None
        self.fresh = run_id is None
        out = Path(self.cfg.dir) if self.cfg.dir is not None else self.run_dir
        out.mkdir(parents=True, exist_ok=True)
        # console off: lmlab's own lines stay as they are (no stdout wrapping); reinit: a run an
        # earlier lmlab.train in this process left open (an error before its close) is ended
        settings = self.wandb.Settings(mode=self.mode, console="off", reinit="finish_previous")
        try:
            self.run = self.wandb.init(project=self.cfg.project, entity=self.cfg.entity, dir=str(out), config=config,
                                       name=self.cfg.run_name or self.run_dir.resolve().name,
                                       tags=self.cfg.tags or None, id=run_id, resume="allow", settings=settings)
        except self.wandb.Error as e:  # no login, no network, a project it may not write to
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise LmlabError(f"train.trackers: wandb could not start its run ({self.mode}): {first}; offline needs "
                             "neither a login nor a network: --set train.wandb.mode=offline") from None
        if self.fresh and self.mode != "disabled":  # a disabled run's id names no run
            atomic_write_text(saved, json.dumps({**where, "run_id": self.run.id}) + "\n")

    def log(self, row: dict[str, Any]) -> None:
        self.run.log(scalars(row), step=int(row["step"]))

    def backfill(self, rows: list[dict[str, Any]]) -> None:
        if not (self.fresh and rows):
            return
        for row in rows:
            self.log(row)
        print(f"lmlab: wandb: logged the run's {len(rows)} earlier rows (metrics.jsonl) to the new W&B run "
              f"{self.run.id}", flush=True)

    def log_samples(self, prompts: list[str], samples: list[str], step: int) -> None:
        table = self.wandb.Table(columns=["prompt", "sample"], data=[list(p) for p in zip(prompts, samples)])
        self.run.log({"samples": table}, step=step)

    def close(self, status: str = "FINISHED") -> None:
        if self.run is not None:
            self.run.finish(exit_code=self.EXIT_CODES.get(status, 1))
            self.run = None


WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")  # what wandb reads in WANDB_MODE


def wandb_mode(mode: str | None, env: Any) -> str:
    """``train.wandb.mode`` when set; else ``WANDB_MODE``; else online when ``WANDB_API_KEY`` is
    set and offline otherwise, so a run never waits on a network it does not have (a login kept
    in ``~/.netrc`` is not looked at: set the mode or ``WANDB_MODE=online`` to use it)."""
    if mode is not None:
        return mode
    env_mode = env.get("WANDB_MODE")
    if env_mode:
        if env_mode not in WANDB_MODES:
            raise LmlabError(f"WANDB_MODE={env_mode!r} (train.trackers: wandb): W&B takes one of "
                             f"{', '.join(WANDB_MODES)}; fix or unset it, or set train.wandb.mode")
        return env_mode
    return "online" if env.get("WANDB_API_KEY") else "offline"


def _absolute_sqlite(uri: Any) -> Any:
    """``sqlite:///rel/x.db`` as ``sqlite:////abs/rel/x.db`` (against the working folder); any
    other URI as it is."""
    path = _sqlite_path(uri) if isinstance(uri, str) else None
    if path is None or path.is_absolute():
        return uri
    query = uri.partition("?")[2]
    return f"sqlite:///{path.resolve()}" + (f"?{query}" if query else "")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (``sqlite:////abs`` is absolute), else None."""
    prefix = "sqlite:///"
    path = uri[len(prefix):].partition("?")[0] if uri.startswith(prefix) else ""
    return Path(path) if path and path != ":memory:" else None


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

    def log_samples(self, prompts: list[str], samples: list[str], step: int) -> None:
        for t in self.trackers:
            t.log_samples(prompts, samples, step)

    def close(self, status: str = "FINISHED") -> None:
        for t in self.trackers:
            t.close(status)


TRACKERS: dict[str, Callable[[TrackerContext], Tracker]] = {
    "jsonl": JsonlTracker, "mlflow": MlflowTracker, "tensorboard": TensorBoardTracker, "wandb": WandbTracker,
    "console": ConsoleTracker,
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

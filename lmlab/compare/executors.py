"""Who trains a wave of trials for ``lmlab compare``: this process, a local pool of processes, or
a SLURM cluster through submitit.

A trial is an ordinary run dir and a complete run config whose ``train.out_dir`` is that dir, so
running a trial again resumes it (the trainer's own resume; ``train.stop_at_step`` pauses one at a
rung of successive halving). An executor runs a wave to completion and returns the trials that
failed, ``{label: one-line reason}``; a failed trial never stops the others, the caller decides.

Every executor first writes each trial's config to ``<run_dir>/../<run_dir.name>.trial.yaml``
(beside the run dir, not in it: the trainer owns the run dir) and a pool's child or a cluster job
reads that; a pool child's stdout and stderr go to ``<run_dir.name>.trial.log`` beside it.

- :class:`InProcess`: one trial after another in this process (``--jobs 1``, and under torchrun).
- :class:`LocalPool`: ``jobs`` trials at once, each ``python -m lmlab train --config <trial
  yaml>``; on a CPU the cores are split between the jobs, on a GPU machine one job per GPU.
- :class:`SubmititExecutor`: one job array per wave (``submitit``, the ``cluster`` extra); its
  local flavour runs the same arrays as local processes, with no cluster.

No scheduler of our own: a thread pool waits on ``subprocess``, submitit waits on SLURM. A trial
on several GPUs is still ``torchrun lmlab compare`` with the in-process executor.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from lmlab.configure import validate_config
from lmlab.devices import resolve_device
from lmlab.errors import LmlabError
from lmlab.fsio import atomic_write_text
from lmlab.training.loop import train

TRIAL_CONFIG = ".trial.yaml"
TRIAL_LOG = ".trial.log"
# A local submitit job is stopped after timeout_min (submitit's default: 2 minutes): too short.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
# The folder that holds this lmlab package: a pool's children import the same lmlab as the parent.
SOURCE_ROOT = Path(__file__).resolve().parents[2]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Trial:
    """One training run of a wave: its run dir, its complete raw run config (``train.out_dir``
    is ``run_dir``) and the label its results and failures go by."""

    run_dir: Path
    config: dict[str, Any]
    label: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        out = (self.config.get("train") or {}).get("out_dir")
        if out is None or os.path.abspath(out) != os.path.abspath(self.run_dir):
            raise ValueError(f"trial {self.label}: train.out_dir {out!r} is not its run dir "
                             f"{self.run_dir}")

    @property
    def config_path(self) -> Path:
        """Where the trial's config is written for a child process or a cluster job to read."""
        return self.run_dir.parent / f"{self.run_dir.name}{TRIAL_CONFIG}"

    @property
    def log_path(self) -> Path:
        """A pool child's stdout and stderr (an in-process trial's unexpected traceback)."""
        return self.run_dir.parent / f"{self.run_dir.name}{TRIAL_LOG}"


def write_trial_config(trial: Trial, config: dict[str, Any] | None = None) -> Path:
    """Write ``config`` (default: the trial's) to ``trial.config_path``, atomically; returns it."""
    path = trial.config_path
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config if config is not None else trial.config, sort_keys=False)
    atomic_write_text(path, text)
    return path


def run_trial(trial: Trial) -> str | None:
    """Train (or resume) one trial in this process: None once it is done, else the one-line user
    error (a config refused, data missing). Anything else raises, with its traceback: in a cluster
    job submitit keeps it in the job's log. Module-level, so submitit can pickle it."""
    try:
        train(validate_config(trial.config, source=str(trial.config_path)))
    except LmlabError as e:
        return _one_line(str(e))
    return None


class Executor(ABC):
    """Runs a wave of trials to completion; ``run(trials)`` returns ``{label: reason}`` of those
    that failed."""

    def __init__(self, log: Log = print):
        self.log = log

    def run(self, trials: Sequence[Trial]) -> dict[str, str]:
        labels = [t.label for t in trials]
        if len(set(labels)) != len(labels):
            raise ValueError(f"trial labels repeat in one wave: {labels}")
        if not trials:
            return {}
        for trial in trials:
            write_trial_config(trial, self.trial_config(trial))
        return self._run(list(trials))

    def trial_config(self, trial: Trial) -> dict[str, Any]:
        """The config written for the trial (an executor may set threads or the device)."""
        return trial.config

    @abstractmethod
    def _run(self, trials: list[Trial]) -> dict[str, str]: ...


class InProcess(Executor):
    """Each trial in this process, one after another: what ``lmlab compare`` did before there were
    executors, and the one that runs under torchrun (every rank trains every trial)."""

    def run(self, trials: Sequence[Trial]) -> dict[str, str]:
        if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 alone writes the configs
            return self._run(list(trials))
        return super().run(trials)

    def _run(self, trials: list[Trial]) -> dict[str, str]:
        failures = {}
        for trial in trials:
            try:
                reason = run_trial(trial)
            except Exception as e:  # a bug in one trial must not stop the wave
                trial.log_path.parent.mkdir(parents=True, exist_ok=True)
                trial.log_path.write_text(traceback.format_exc(), encoding="utf-8")
                reason = f"{type(e).__name__}: {_one_line(str(e))} (traceback in {trial.log_path})"
            if reason is not None:
                failures[trial.label] = reason
                self.log(f"lmlab compare: trial {trial.label} failed: {reason}")
        return failures


class LocalPool(Executor):
    """Up to ``jobs`` trials at once, each a ``python -m lmlab train --config <trial yaml>`` child.

    On a CPU each child gets ``cores // jobs`` threads (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``
    and ``train.num_threads``): the same for every trial whatever the size of its wave, so a
    trial's numbers never depend on how many siblings it had. With GPUs (device ``cuda`` or
    ``auto`` on a GPU machine) each running child holds one GPU (``CUDA_VISIBLE_DEVICES``) and
    at most one child runs per GPU; ``cuda:N`` is that one GPU alone. Ctrl-C sends each child one
    SIGINT (it saves a snapshot and exits 130), then raises KeyboardInterrupt here.
    """

    def __init__(self, jobs: int, device: str = "auto", log: Log = print):
        super().__init__(log)
        if jobs < 1:
            raise LmlabError(f"--jobs {jobs}: run at least one trial at a time")
        _refuse_under_torchrun(f"--jobs {jobs}")
        self.gpus = _gpu_ids(device)
        self.workers = min(jobs, len(self.gpus)) if self.gpus else jobs
        self.threads = max(1, _cpu_count() // self.workers)
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()
        self._stopping = False

    def trial_config(self, trial: Trial) -> dict[str, Any]:
        t = dict(trial.config.get("train") or {})
        if self.gpus:
            # the child sees its one GPU as cuda:0
            if str(t.get("device", "auto")).startswith("cuda:"):
                t["device"] = "cuda"
        else:
            t["num_threads"] = self.threads
        return {**trial.config, "train": t}

    def _run(self, trials: list[Trial]) -> dict[str, str]:
        self._stopping = False
        free: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        for gpu in self.gpus or [None] * self.workers:
            free.put(gpu)
        on = f"{len(self.gpus)} GPU(s)" if self.gpus else f"{self.threads} thread(s) each"
        self.log(f"lmlab compare: {len(trials)} trial(s), {self.workers} at a time ({on})")
        with ThreadPoolExecutor(self.workers, thread_name_prefix="lmlab-trial") as pool:
            futures = [pool.submit(self._one, trial, free) for trial in trials]
            try:
                wait(futures)
            except KeyboardInterrupt:
                self._interrupt(pool)
                raise
        reasons = {t.label: f.result() for t, f in zip(trials, futures)}
        return {label: r for label, r in reasons.items() if r is not None}

    def _interrupt(self, pool: ThreadPoolExecutor) -> None:
        """One SIGINT to each child (each saves and exits), none started after; a second Ctrl-C
        while they save sends another (they stop at once, keeping their last snapshot)."""
        for attempt in range(2):
            with self._lock:
                self._stopping = True
                for proc in self._live:
                    proc.send_signal(signal.SIGINT)
            if attempt == 0:
                self.log("lmlab compare: interrupted; each running trial saves and stops")
            try:
                pool.shutdown(wait=True, cancel_futures=True)
                return
            except KeyboardInterrupt:
                continue

    def _one(self, trial: Trial, free: queue.SimpleQueue) -> str | None:
        """Run one child, holding a GPU (or a CPU slot) while it runs: None, or why it failed."""
        gpu = free.get()
        try:
            return self._child(trial, gpu)
        finally:
            free.put(gpu)

    def _child(self, trial: Trial, gpu: str | None) -> str | None:
        cmd = [sys.executable, "-m", "lmlab", "train", "--config", str(trial.config_path)]
        with open(trial.log_path, "ab") as log:
            log.write(f"lmlab compare: trial {trial.label}: {' '.join(cmd)}\n".encode())
            log.flush()
            with self._lock:
                if self._stopping:
                    return "interrupted before it started"
                # A session of its own: a terminal's Ctrl-C reaches the pool alone, which sends each
                # child exactly one SIGINT (a second one would stop it without saving).
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.PIPE, env=self._env(gpu),
                                        start_new_session=True)
                self._live.add(proc)
            where = f" on GPU {gpu}" if gpu is not None else ""
            self.log(f"lmlab compare: trial {trial.label}: started{where} (log {trial.log_path})")
            try:
                _, err = proc.communicate()
            finally:
                with self._lock:
                    self._live.discard(proc)
            log.write(err)
        if proc.returncode == 0:
            self.log(f"lmlab compare: trial {trial.label}: done")
            return None
        lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        code = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                else f"exit status {proc.returncode}")
        reason = _one_line(lines[-1]) if lines else code
        self.log(f"lmlab compare: trial {trial.label} failed: {reason}")
        return reason

    def _env(self, gpu: str | None) -> dict[str, str]:
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads),
                   PYTHONUNBUFFERED="1")
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        # A source checkout run without installing: the child imports this lmlab, not another
        # (an installed one needs nothing, and its site-packages must not move ahead of the stdlib).
        if not {"site-packages", "dist-packages"} & set(SOURCE_ROOT.parts):
            paths = (str(SOURCE_ROOT), env.get("PYTHONPATH"))
            env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return env


class SubmititExecutor(Executor):
    """One submitit job array per wave (``map_array(run_trial, trials)``), then wait for every
    job. ``params`` are submitit's (``timeout_min``, ``gpus_per_node``, ``cpus_per_task``,
    ``slurm_partition``, ``slurm_array_parallelism``, ...); ``local``: submitit's local
    executor (every trial of the wave at once, as local processes: for tests, no cluster)."""

    def __init__(self, folder: str | Path, params: dict[str, Any] | None = None,
                 local: bool = False, log: Log = print):
        super().__init__(log)
        _refuse_under_torchrun("the submitit executor")
        try:
            # deferred: submitit is optional (the cluster extra)
            import submitit
        except ImportError:
            raise LmlabError("the submitit executor needs submitit: "
                             "pip install 'lmlab[cluster]'") from None
        self.folder = Path(folder)
        params = dict(params or {})
        if local:
            params.setdefault("timeout_min", LOCAL_TIMEOUT_MIN)
        try:
            # AutoExecutor for the local flavour too: the same params are checked the same way
            # (slurm_* keys are ignored there) and it runs submitit.LocalExecutor underneath.
            cluster = "local" if local else "slurm"
            self.executor = submitit.AutoExecutor(self.folder, cluster=cluster)
            self.executor.update_parameters(**params)
        except (RuntimeError, NameError, ValueError, TypeError) as e:
            raise LmlabError(f"submitit: {_one_line(str(e))}") from None
        self.waves: list[list[str]] = []  # the job ids of each wave's array, for the caller's log

    def _run(self, trials: list[Trial]) -> dict[str, str]:
        try:
            jobs = self.executor.map_array(run_trial, trials)
        except (OSError, RuntimeError) as e:  # sbatch missing or refusing (FailedSubmissionError)
            raise LmlabError(f"submitit: the wave of {len(trials)} trial(s) was not submitted: "
                             f"{_one_line(str(e))}") from None
        self.waves.append([job.job_id for job in jobs])
        self.log(f"lmlab compare: {len(trials)} trial(s) submitted as one job array "
                 f"({_array_name(self.waves[-1])}; logs in {self.folder})")
        failures = {}
        try:
            for trial, job in zip(trials, jobs):
                try:
                    reason = job.result()
                except Exception as e:  # submitit's FailedJobError carries the trace
                    reason = _job_reason(e)
                if reason is not None:
                    failures[trial.label] = reason
                    self.log(f"lmlab compare: trial {trial.label} failed (job {job.job_id}): "
                             f"{reason}")
        except KeyboardInterrupt:
            for job in jobs:  # scancel sends SIGTERM: each trial saves a snapshot and stops
                job.cancel(check=False)
            raise
        return failures


def build_executor(kind: str, jobs: int = 1, device: str = "auto",
                   submitit: dict[str, Any] | None = None, log: Log = print) -> Executor:
    """The executor of the spec's ``execution`` section and the CLI's ``--jobs``.

    ``local``: in process for ``jobs`` 1, else a :class:`LocalPool` of ``jobs`` over ``device``
    (the trials' ``train.device``). ``submitit``: ``submitit`` holds ``folder`` (where submitit
    keeps its job files and logs, required), ``local`` (default false) and submitit's
    parameters; ``jobs`` above 1 caps the array's running jobs (``slurm_array_parallelism``)."""
    if jobs < 1:
        raise LmlabError(f"--jobs {jobs}: run at least one trial at a time")
    if kind == "local":
        if submitit:
            raise LmlabError("execution.submitit is set but the executor is local; drop it, or use "
                             "executor: submitit")
        return InProcess(log) if jobs == 1 else LocalPool(jobs, device, log)
    if kind == "submitit":
        settings = dict(submitit or {})
        folder = settings.pop("folder", None)
        if not folder:
            raise LmlabError("execution.submitit.folder: where submitit keeps its job files and "
                             "logs (a shared folder on a cluster) is required")
        local = bool(settings.pop("local", False))
        if jobs > 1 and not local:
            settings.setdefault("slurm_array_parallelism", jobs)
        return SubmititExecutor(folder, settings, local=local, log=log)
    raise LmlabError(f"execution.executor {kind!r}: use local or submitit")


def _refuse_under_torchrun(what: str) -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LmlabError(f"{what} under torchrun: every rank would start every trial; a trial on "
                         "several GPUs runs in process (drop --jobs / the submitit executor)")


def _gpu_ids(device: str) -> list[str]:
    """The GPUs a pool shares out, as ``CUDA_VISIBLE_DEVICES`` entries (the ones this process
    sees): none on a CPU; one with ``cuda:N``."""
    dev = resolve_device(device)  # a device this machine lacks is a one-line error here
    if dev.type != "cuda":
        return []
    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = ([x.strip() for x in visible.split(",") if x.strip()][:n] if visible
           else [str(i) for i in range(n)])
    return [ids[dev.index]] if ":" in str(device) else ids


def _cpu_count() -> int:
    """The cores this process may run on (a cgroup or taskset narrows ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def _job_reason(e: BaseException) -> str:
    """The last line of a failed job's traceback (submitit wraps it between dashed lines)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    dashes = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    if len(dashes) >= 2 and dashes[1] > dashes[0] + 1:
        return lines[dashes[1] - 1]
    return f"{type(e).__name__}: {lines[0] if lines else '(no message)'}"


def _array_name(job_ids: list[str]) -> str:
    """A SLURM array's id (``123_0``, ``123_1`` -> ``array 123``), else the job ids."""
    heads = {j.split("_")[0] for j in job_ids}
    if len(heads) == 1 and all("_" in j for j in job_ids):
        return f"array {heads.pop()}"
    return f"jobs {', '.join(job_ids)}"

"""Executors of a wave of trials (``lmlab/compare/executors.py``): in process, a local pool of
``lmlab train`` children, and submitit job arrays (its local executor: no cluster)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmlab import rundir
from lmlab.compare import executors
from lmlab.compare.executors import (
    InProcess,
    LocalPool,
    SubmititExecutor,
    Trial,
    _job_reason,
    build_executor,
)
from lmlab.errors import LmlabError

REPO = Path(__file__).resolve().parents[2]
LRS = {"lr3": 3e-3, "lr10": 1e-2}


def _trial(make_raw, corpus: Path, run: Path, label: str, threads: int = 1, **train) -> Trial:
    raw = make_raw(corpus, run, train={"max_steps": 6, "eval_interval": 3, "save_interval": 6,
                                       "num_threads": threads, **train})
    return Trial(run, raw, label)


def _wave(make_raw, corpus: Path, root: Path) -> list[Trial]:
    return [_trial(make_raw, corpus, root / label, label, lr=lr) for label, lr in LRS.items()]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "current" / "model.safetensors")


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _summary(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def pool() -> LocalPool:
    return LocalPool(2, "cpu", log=lambda _: None)


@pytest.fixture(scope="module")
def straight(corpus_dir, make_raw, tmp_path_factory, pool) -> dict[str, Path]:
    """Each lr trained in this process, with the threads a pool child gets (so the pool's runs
    must match them bit for bit: same thread count, same CPU kernels)."""
    root = tmp_path_factory.mktemp("inprocess")
    trials = [_trial(make_raw, corpus_dir, root / label, label, pool.threads, lr=lr)
              for label, lr in LRS.items()]
    assert InProcess(log=lambda _: None).run(trials) == {}
    return {t.label: t.run_dir for t in trials}


def test_local_pool_runs_a_wave_like_in_process(corpus_dir, make_raw, tmp_path, pool, straight):
    trials = _wave(make_raw, corpus_dir, tmp_path)
    assert pool.run(trials) == {}
    for trial in trials:
        assert _summary(trial.run_dir)["steps"] == 6
        assert _summary(trial.run_dir)["stopped_by"] == "budget"
        assert _same_weights(trial.run_dir, straight[trial.label]), trial.label
        written = trial.run_dir.parent / f"{trial.run_dir.name}.trial.yaml"
        assert written == trial.config_path and written.is_file()
        assert yaml.safe_load(written.read_text())["train"]["num_threads"] == pool.threads
        assert "resuming" not in trial.log_path.read_text()
    assert not _same_weights(trials[0].run_dir, trials[1].run_dir)  # two lrs, two models


@pytest.mark.parametrize("kind", ["in_process", "pool"])
def test_a_failed_trial_is_reported_and_the_others_finish(corpus_dir, make_raw, tmp_path, pool,
                                                          kind):
    good = _trial(make_raw, corpus_dir, tmp_path / "good", "good")
    bad_lr = _trial(make_raw, corpus_dir, tmp_path / "bad_lr", "bad-lr", lr=-1)
    no_data = _trial(make_raw, tmp_path / "nowhere", tmp_path / "no_data", "no-data")
    executor = InProcess(log=lambda _: None) if kind == "in_process" else pool
    failures = executor.run([bad_lr, good, no_data])
    assert set(failures) == {"bad-lr", "no-data"}
    assert "train.lr" in failures["bad-lr"] and "greater than 0" in failures["bad-lr"]
    assert "no such file or folder" in failures["no-data"] and "nowhere" in failures["no-data"]
    assert all("\n" not in reason for reason in failures.values())
    assert _summary(good.run_dir)["steps"] == 6


def test_submitit_local_runs_one_array_per_wave(corpus_dir, make_raw, tmp_path, monkeypatch,
                                                straight):
    executor = SubmititExecutor(tmp_path / "submitit", {"timeout_min": 10}, local=True,
                                log=lambda _: None)
    calls = []
    submit = executor.executor.map_array
    monkeypatch.setattr(executor.executor, "map_array",
                        lambda fn, items: calls.append(len(items)) or submit(fn, items))
    trials = _wave(make_raw, corpus_dir, tmp_path)
    trials.append(_trial(make_raw, corpus_dir, tmp_path / "bad", "bad", lr=-1))
    failures = executor.run(trials)
    assert calls == [3]  # the whole wave in one map_array: one job array
    assert len(executor.waves) == 1 and len(set(executor.waves[0])) == 3
    assert list(failures) == ["bad"] and "train.lr" in failures["bad"]
    for trial in trials[:2]:
        assert _summary(trial.run_dir)["steps"] == 6
        assert _same_weights(trial.run_dir, straight[trial.label]), trial.label


def test_a_paused_trial_resumes_through_the_executor(corpus_dir, make_raw, tmp_path, pool,
                                                     straight):
    run = tmp_path / "lr3"
    assert pool.run([_trial(make_raw, corpus_dir, run, "lr3", lr=LRS["lr3"], stop_at_step=3)]) == {}
    assert _summary(run)["stopped_by"] == "stop_at_step" and _summary(run)["steps"] == 3
    assert pool.run([_trial(make_raw, corpus_dir, run, "lr3", lr=LRS["lr3"], stop_at_step=6)]) == {}
    assert "resuming" in (run.parent / "lr3.trial.log").read_text()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # continued, never restarted
    assert _same_weights(run, straight["lr3"])  # and exactly where the straight run is


def test_ctrl_c_stops_the_children_with_a_snapshot(corpus_dir, make_raw, tmp_path):
    run = tmp_path / "long"
    # max_seconds: a child the pool failed to stop still ends, and then says so in its log; long
    # enough that a loaded machine (the first rows reach metrics.jsonl late) never ends it first
    raw = make_raw(corpus_dir, run, train={"max_steps": 100000, "save_interval": 100000,
                                           "eval_interval": 100000, "log_interval": 1,
                                           "max_seconds": 300})
    # The parent restores Python's SIGINT handler: a process started with SIGINT ignored (as an
    # xdist worker's children are) keeps it ignored, and a Ctrl-C would never reach the pool.
    script = ("import json, signal, sys\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from pathlib import Path\n"
              "from lmlab.compare.executors import LocalPool, Trial\n"
              "raw = json.loads(sys.argv[1])\n"
              "try:\n"
              "    LocalPool(2, 'cpu').run([Trial(Path(raw['train']['out_dir']), raw, 'long')])\n"
              "except KeyboardInterrupt:\n"
              "    sys.exit(130)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    parent = subprocess.Popen([sys.executable, "-c", script, json.dumps(raw)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (run / "metrics.jsonl").is_file(), "the child never started training"
    parent.send_signal(signal.SIGINT)
    out, _ = parent.communicate(timeout=240)
    assert parent.returncode == 130, out
    log = (tmp_path / "long.trial.log").read_text()
    assert rundir.has_checkpoint(run), f"no snapshot; the pool said:\n{out}\nthe trial's log:\n{log}"
    snap = rundir.latest_snapshot(run)  # saved at the step where the SIGINT reached the child
    assert 0 < snap.step < 100000
    assert "interrupted at step" in log and "resume with" in log


def test_local_pool_gives_each_running_child_its_own_gpu(monkeypatch, tmp_path):
    """Without GPUs here: the devices are faked and the child is a stand-in that checks no GPU
    is held twice at once."""
    monkeypatch.setattr(executors, "resolve_device",
                        lambda name: torch.device("cuda", int(name[5:]) if ":" in name else 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the pool hands out what it sees
    assert LocalPool(3, "cuda:1").gpus == ["5"]
    pool = LocalPool(3, "cuda", log=lambda _: None)
    assert pool.gpus == ["3", "5"] and pool.workers == 2  # at most one child per GPU
    assert pool._env("5")["CUDA_VISIBLE_DEVICES"] == "5"
    busy, seen, lock = set(), [], threading.Lock()

    def child(trial: Trial, gpu: str) -> str | None:
        with lock:
            assert gpu not in busy, gpu
            busy.add(gpu)
            seen.append(gpu)
        time.sleep(0.05)
        with lock:
            busy.discard(gpu)
        return "boom" if trial.label == "t3" else None

    monkeypatch.setattr(pool, "_child", child)
    trials = [Trial(tmp_path / f"t{i}", {"train": {"out_dir": str(tmp_path / f"t{i}"),
                                                   "device": "cuda:1", "num_threads": 7}}, f"t{i}")
              for i in range(6)]
    assert pool.run(trials) == {"t3": "boom"}
    assert sorted(set(seen)) == ["3", "5"] and len(seen) == 6
    written = yaml.safe_load(trials[0].config_path.read_text())["train"]
    assert written["device"] == "cuda" and written["num_threads"] == 7  # its one GPU is cuda:0


def test_build_executor():
    assert isinstance(build_executor("local", 1, "cpu"), InProcess)
    pool = build_executor("local", 2, "cpu")
    assert isinstance(pool, LocalPool) and pool.workers == 2
    assert pool.threads == max(1, len(os.sched_getaffinity(0)) // 2)
    with pytest.raises(LmlabError, match="folder"):
        build_executor("submitit", 1, "cpu", {})
    with pytest.raises(LmlabError, match="use local or submitit"):
        build_executor("slurm", 1, "cpu")
    with pytest.raises(LmlabError, match="at least one"):
        build_executor("local", 0, "cpu")
    with pytest.raises(LmlabError, match="submitit"):
        SubmititExecutor("/tmp/x", {"bogus": 1}, local=True)


def test_in_process_a_bug_is_one_line_and_its_traceback_is_kept(corpus_dir, make_raw, tmp_path,
                                                               monkeypatch):
    def broken(cfg):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(executors, "train", broken)
    trials = _wave(make_raw, corpus_dir, tmp_path)
    failures = InProcess(log=lambda _: None).run(trials)
    assert set(failures) == set(LRS)  # the first one's bug did not stop the second
    assert failures["lr3"].startswith("RuntimeError: a bug (traceback in ")
    assert "Traceback" in trials[0].log_path.read_text()


def test_job_reason_is_the_last_line_of_the_trace():
    e = RuntimeError("Job (task=0) failed during processing with trace:\n----------------------\n"
                     "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                     "ValueError: boom\n\n----------------------\nYou can check full logs ...")
    assert _job_reason(e) == "ValueError: boom"
    assert _job_reason(RuntimeError("one\ntwo")) == "RuntimeError: one"

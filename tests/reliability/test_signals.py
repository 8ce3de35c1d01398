"""The signal class (issue 28): every signal (SIGINT once, SIGINT twice, SIGTERM) x every phase
of a run (starting, training, evaluating, saving). Each case runs ``lmlab train`` in this
process and sends the signal(s) to itself from inside the phase (a wrapper around the function
that does it), so the moment is exact, not a race against a timer. Then:

- the exit code is 128 + the signal (130, 143) and stderr's last line says what happened;
- the snapshot left is the one the phase promises (a first signal saves the step it stopped at;
  a second one stops at once and keeps the snapshot before it; nothing is saved while starting);
- resuming ends bit-identical to the same run never interrupted.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmlab import rundir
from lmlab.cli import main
from lmlab.training import trainer as trainer_mod

STEPS, SAVE, EVAL = 8, 3, 5  # the evaluation at 5 is not a save step
SIGNALS = {"sigint-once": [signal.SIGINT], "sigint-twice": [signal.SIGINT, signal.SIGINT],
           "sigterm": [signal.SIGTERM]}
# phase -> (the function the signals are sent from inside, the trainer's step when it is called
# (train_step at 3 makes step 4), the snapshot a first signal leaves, the snapshot a second one
# leaves); None: no snapshot at all
PHASES = {
    "starting": ("prepare_data", None, None, None),
    "training": ("train_step", 3, 4, 3),
    "evaluating": ("evaluate", 5, 5, 3),
    "saving": ("_write_files", 6, 6, 3),
}


@pytest.fixture(autouse=True)
def _python_handlers():
    """xdist starts its workers with SIGINT ignored; a user's shell does not."""
    old = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                                (signal.SIGTERM, signal.SIG_DFL))}
    yield
    for s, h in old.items():
        signal.signal(s, h)


def _config(tmp: Path, corpus_dir: Path, make_raw, name: str) -> Path:
    raw = make_raw(corpus_dir, tmp / name, train={"max_steps": STEPS, "save_interval": SAVE,
                                                  "eval_interval": EVAL, "log_interval": 1})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(rundir.latest_snapshot(run).path / rundir.WEIGHTS))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_dir, make_raw) -> dict[str, torch.Tensor]:
    """The same run, never interrupted."""
    tmp = tmp_path_factory.mktemp("signals-reference")
    assert main(["train", "--config", str(_config(tmp, corpus_dir, make_raw, "ref"))]) == 0
    return _weights(tmp / "ref")


def _send_inside(monkeypatch, phase: str, sigs: list[int]) -> None:
    """Wrap the phase's function so that, at its step, it sends ``sigs`` to this process first."""
    name, at, _, _ = PHASES[phase]
    owner = (trainer_mod if name == "prepare_data" else rundir if name == "_write_files"
             else trainer_mod.Trainer)
    original = getattr(owner, name)
    trainers: list = []
    sent = []

    def step() -> int | None:
        return trainers[-1].step if trainers else None

    def wrapper(*args, **kwargs):
        if owner is trainer_mod.Trainer:
            trainers.append(args[0])
        if not sent and (at is None or step() == at):
            sent.append(True)
            for sig in sigs:
                os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    if owner is not trainer_mod.Trainer:  # the step is read from the trainer the loop runs
        real_init = trainer_mod.Trainer.__init__

        def init(self, *a, **k):
            trainers.append(self)
            real_init(self, *a, **k)

        monkeypatch.setattr(trainer_mod.Trainer, "__init__", init)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_in_each_phase_stops_cleanly_and_resumes_bit_identical(phase, sig, tmp_path, corpus_dir, make_raw,
                                                                        reference, monkeypatch, capsys):
    cfg = _config(tmp_path, corpus_dir, make_raw, "run")
    run = tmp_path / "run"
    sigs = SIGNALS[sig]
    with monkeypatch.context() as m:
        _send_inside(m, phase, sigs)
        code = main(["train", "--config", str(cfg)])
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert code == 128 + sigs[0], err
    _, _, once, twice = PHASES[phase]
    expected = twice if len(sigs) == 2 else once
    if expected is None:
        assert not rundir.has_checkpoint(run) and "nothing was lost" in last, err
        return
    assert rundir.latest_snapshot(run).step == expected, err
    if len(sigs) == 2:
        assert "stopped at once; the last snapshot is kept" in last, err
    else:
        assert f"interrupted at step {expected}; resume with: lmlab train --resume {run}" in last, err
    assert main(["train", "--resume", str(run)]) == 0
    assert rundir.latest_snapshot(run).step == STEPS
    got = _weights(run)
    assert got.keys() == reference.keys()
    assert all(torch.equal(got[k], reference[k]) for k in got)


def test_a_signal_while_writing_the_summary_keeps_the_trained_run(tmp_path, corpus_dir, make_raw, reference,
                                                                  monkeypatch, capsys):
    """After the last save only the summary and samples are missing: the line says how to write
    them, and the resume that does so trains nothing."""
    cfg = _config(tmp_path, corpus_dir, make_raw, "run")
    run = tmp_path / "run"
    original = trainer_mod.write_samples

    def interrupted(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(trainer_mod, "write_samples", interrupted)
        assert main(["train", "--config", str(cfg)]) == 143
    assert "write them with: lmlab train --resume" in capsys.readouterr().err
    assert rundir.latest_snapshot(run).step == STEPS
    assert main(["train", "--resume", str(run)]) == 0
    assert (run / "samples.txt").is_file() or any(run.glob("samples*"))
    got = _weights(run)
    assert all(torch.equal(got[k], reference[k]) for k in reference)

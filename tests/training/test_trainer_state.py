"""The trainer's resumable state by parts (training/state.py) and its rows built in one place
(training/metrics.py): trainer.pt is exactly the union of the parts' state dicts, each part reads
back what it wrote, a snapshot from before some parts existed still resumes exactly, and a train
row keeps its keys in their order."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

import lmlab
import lmlab.training.trainer as trainer_module
from lmlab.training.distributed import DistInfo
from lmlab.training.metrics import MetricsProcessor
from lmlab.training.state import BestLoss, Clock, Progress, TrainerState
from lmlab.training.telemetry import Telemetry

# trainer.pt's top-level keys, as every snapshot since lmlab kept clocks and the best loss has them
# (and "optimizer" whenever an unsharded strategy saves it).
TRAINER_PT = {"step", "tokens_seen", "wall_s", "aside_s", "best_val_loss", "best_step", "data", "schedule",
              "scaler", "optimizer", "optimizer_saved", "rng"}
ADDED_LATER = ("wall_s", "aside_s", "best_val_loss", "best_step")


def _same(a, b) -> bool:
    """Equal as saved: tensors elementwise (NaN-free), containers recursively, the rest by ==."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints/current/model.safetensors")


@pytest.fixture
def trained(tiny_config, monkeypatch):
    """A finished tiny run (with dropout, so its RNG matters), the Trainer that ran it and its
    last trainer.pt."""
    seen = {}
    real_fit = trainer_module.Trainer.fit

    def keep(self):
        seen["trainer"] = self
        return real_fit(self)

    monkeypatch.setattr(trainer_module.Trainer, "fit", keep)
    _, raw, run = tiny_config(model={"dropout": 0.1}, train={"max_steps": 6, "save_interval": 3})
    lmlab.train(raw)
    return seen["trainer"], torch.load(run / "checkpoints/current/trainer.pt", weights_only=True)


def test_trainer_pt_is_exactly_the_union_of_the_parts(trained):
    trainer, saved = trained
    owner: dict[str, str] = {}
    for name, part in trainer.state.parts.items():
        for key in part.state_dict():
            assert key not in owner, f"{key} is written by {owner[key]} and {name}"
            owner[key] = name
    assert set(saved) == set(owner) == TRAINER_PT  # every key comes from a part, and only from one
    assert list(trainer.state.parts)[-1] == "rng"  # loads last: another world size reseeds by the step
    assert saved["step"] == trainer.step == 6 and saved["tokens_seen"] == trainer.tokens_seen


def test_each_part_reads_back_what_it_wrote(trained):
    trainer, saved = trained
    for name, part in trainer.state.parts.items():
        part.load_state_dict(saved)
        mine = part.state_dict()
        assert _same(mine, {k: saved[k] for k in mine}), name
    trainer.state.load_state_dict(saved)  # and the whole, in order
    assert _same(trainer.state.state_dict(), saved)


def test_parts_give_fresh_values_for_keys_an_older_snapshot_lacks():
    clock, best, progress = Clock(), BestLoss(), Progress()
    clock.load_state_dict({"step": 3, "tokens_seen": 96})
    best.load_state_dict({"step": 3, "tokens_seen": 96})
    progress.load_state_dict({"step": 3, "tokens_seen": 96})
    assert clock.state_dict() == {"wall_s": 0.0, "aside_s": 0.0}
    assert best.state_dict() == {"best_val_loss": math.inf, "best_step": None}
    assert progress.state_dict() == {"step": 3, "tokens_seen": 96}
    assert best.improves(2.5) and not best.improves(math.nan)


def test_a_key_written_by_two_parts_is_refused():
    with pytest.raises(RuntimeError, match="repeats the keys"):
        TrainerState(a=Progress(), b=Progress()).state_dict()


def test_a_snapshot_from_before_the_clock_and_best_keys_resumes_exactly(tiny_config, monkeypatch, reseal,
                                                                         tmp_path):
    """trainer.pt without wall_s, aside_s and best_* (as lmlab wrote it before it kept them):
    interrupted at step 5 and resumed, the run ends bit-identical to an uninterrupted one."""
    _, raw, run = tiny_config(model={"dropout": 0.1}, train={"max_steps": 10, "save_interval": 4})
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "whole")})
    steps = [0]

    class StopAt5(trainer_module.Interrupt):
        @property
        def hit(self):
            return steps[0] >= 5

        @hit.setter
        def hit(self, value):
            pass

    real_step = trainer_module.Trainer.train_step

    def counting(self):
        out = real_step(self)
        steps[0] = self.step
        return out

    with monkeypatch.context() as m:
        m.setattr(trainer_module, "Interrupt", StopAt5)
        m.setattr(trainer_module.Trainer, "train_step", counting)
        with pytest.raises(KeyboardInterrupt, match="interrupted at step 5"):
            lmlab.train(raw)
    snap = run / "checkpoints/current"
    state = torch.load(snap / "trainer.pt", weights_only=True)
    assert state["step"] == 5
    torch.save({k: v for k, v in state.items() if k not in ADDED_LATER}, snap / "trainer.pt")
    reseal(snap)
    lmlab.train(raw)
    a, b = _weights(tmp_path / "whole"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run) == _losses(tmp_path / "whole")
    assert set(torch.load(snap / "trainer.pt", weights_only=True)) == TRAINER_PT  # written whole again


def test_a_train_row_keeps_its_keys_in_order():
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    metrics = MetricsProcessor(Telemetry(6e6, info.device, 1, None), info, ["a", "b"])
    progress, clock = Progress(), Clock()
    metrics.start(progress.tokens_seen)
    progress.advance(128)
    out = {"loss_sum": torch.tensor(6.0), "n": 2, "terms": {"ce": torch.tensor(6.0)},
           "src": torch.tensor([[2.0, 4.0], [1.0, 1.0]], dtype=torch.float64), "grad_norm": torch.tensor(0.5),
           "lr": 1e-3, "data_time": 0.0}
    metrics.observe(out)
    row = metrics.train_row(out, progress, clock, {"a": 0.5, "b": 0.5})
    assert list(row) == ["step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "data_wait", "wall_s",
                         "train_s", "tokens_per_s_per_device", "peak_mem_mb", "ce", "source_loss",
                         "source_weights"]
    assert (row["step"], row["tokens"], row["loss"], row["ce"]) == (1, 128, 3.0, 3.0)
    assert row["source_loss"] == {"a": 2.0, "b": 4.0} and row["source_weights"] == {"a": 0.5, "b": 0.5}
    assert metrics.eval_row(progress, clock, {"val_loss": 2.0}) == {"step": 1, "tokens": 128, "train_s": 0.0,
                                                                    "val_loss": 2.0}

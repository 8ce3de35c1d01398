"""The trainer end to end: outputs, budgets, resumption, accumulation, precision, DDP."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import lmlab
from lmlab.errors import LmlabError


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "current" / "model.safetensors")


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_the_whole_run_dir(tiny_config):
    _, raw, run = tiny_config(train={"max_steps": 40, "eval_interval": 20, "log_interval": 5})
    assert lmlab.train(raw) == run
    for name in ("config.yaml", "tokenizer/tokenizer_meta.json", "checkpoints/current/model.safetensors",
                 "checkpoints/current/trainer.pt", "checkpoints/prev/meta.json", "metrics.jsonl",
                 "metrics.json", "samples.txt", "loss_curve.png"):
        assert (run / name).is_file(), name
    rows = _metrics(run)
    train_rows = [r for r in rows if "loss" in r]
    val_rows = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(5, 41, 5))
    assert [r["step"] for r in val_rows] == [20, 40]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.3
    assert {"lr", "grad_norm", "tokens_per_s", "data_wait", "ce", "tokens"} <= set(train_rows[0])
    assert all(0 <= r["data_wait"] < 1 for r in train_rows)
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["steps"] == 40 and summary["tokens"] == 40 * 4 * 32
    assert math.isclose(summary["val_ppl"], math.exp(summary["val_loss"]), rel_tol=1e-9)
    assert 0 < summary["val_bpb"] < 8
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["vocab_size"] == summary["vocab_size"] and saved["model"]["n_layer"] == 2
    meta = json.loads((run / "checkpoints/current/meta.json").read_text())
    assert meta["family"] == "transformer" and meta["step"] == 40 and meta["tokens_seen"] == 40 * 128
    assert meta["tokenizer"]["backend"] == "char"
    assert (run / "samples.txt").read_text().startswith("--- sample 1 ---\nThe ")


@pytest.mark.parametrize("budget, expected", [({"max_tokens": 1000}, math.ceil(1000 / 128)), ({"epochs": 0.5}, None)])
def test_budget_by_tokens_or_epochs(tiny_config, budget, expected):
    _, raw, run = tiny_config(train={"max_steps": None, **budget})
    lmlab.train(raw)
    steps = json.loads((run / "metrics.json").read_text())["steps"]
    if expected is None:  # half an epoch of the train split, in windows of 33 tokens, 4 per step
        train_tokens = json.loads((run / "metrics.json").read_text())["train_tokens"]
        expected = math.ceil(0.5 * (((train_tokens - 1) // 32) // 4))
    assert steps == expected


def test_rerun_resumes_and_extends(tiny_config):
    _, raw, run = tiny_config()
    lmlab.train(raw)
    first = _weights(run)
    summary = json.loads((run / "metrics.json").read_text())
    lmlab.train(raw)  # already at max_steps: nothing more to do, weights unchanged
    assert all(torch.equal(first[k], v) for k, v in _weights(run).items())
    again = json.loads((run / "metrics.json").read_text())
    for key in ("val_loss", "val_bpb", "final_train_loss", "steps"):
        assert again[key] == pytest.approx(summary[key], rel=1e-6), key
    raw["train"]["max_steps"] = 18
    lmlab.train(raw)
    assert json.loads((run / "checkpoints/current/meta.json").read_text())["step"] == 18
    steps = [r["step"] for r in _metrics(run) if "loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 18


def test_rerun_with_another_model_or_tokenizer_is_refused_and_keeps_the_run(tiny_config):
    _, raw, run = tiny_config()
    lmlab.train(raw)
    before = (run / "checkpoints/current/model.safetensors").read_bytes()
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(LmlabError, match=r"model.n_layer = 2 but the config asks for 3"):
        lmlab.train(raw, **{"model.n_layer": 3})
    with pytest.raises(LmlabError, match=r"tokenizer.type = 'char' but the config asks for 'byte'"):
        lmlab.train(raw, **{"tokenizer.type": "byte"})
    with pytest.raises(LmlabError, match=r"train.seed = 7 but the config asks for 8"):
        lmlab.train(raw, **{"train.seed": 8})
    assert (run / "checkpoints/current/model.safetensors").read_bytes() == before
    assert (run / "config.yaml").read_text() == config_before


def test_grad_accumulation_matches_one_big_batch(tiny_config, tmp_path):
    _, raw, run = tiny_config(train={"batch_size": 4, "grad_accum_steps": 1})
    lmlab.train(raw)
    raw2 = json.loads(json.dumps(raw))
    raw2["train"].update(batch_size=2, grad_accum_steps=2, out_dir=str(tmp_path / "accum"))
    lmlab.train(raw2)
    a, b = _weights(run), _weights(tmp_path / "accum")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tiny_config, precision):
    _, raw, run = tiny_config(train={"precision": precision, "max_steps": 20})
    lmlab.train(raw)
    rows = [r for r in _metrics(run) if "loss" in r]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all(v.dtype == torch.float32 for v in _weights(run).values())


def test_label_smoothing_raises_the_training_loss(tiny_config, tmp_path):
    """Once predictions are confident, the smoothed target's mass on rare tokens costs a lot."""
    _, raw, run = tiny_config(train={"max_steps": 40})
    lmlab.train(raw)
    raw["train"].update(label_smoothing=0.3, out_dir=str(tmp_path / "ls"))
    lmlab.train(raw)
    plain = [r["loss"] for r in _metrics(run) if "loss" in r]
    smooth = [r["loss"] for r in _metrics(tmp_path / "ls") if "loss" in r]
    assert smooth[-1] > plain[-1] + 0.3


def _wait_for_snapshot(proc: subprocess.Popen, run: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (run / "checkpoints" / "prev").is_dir():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["crash", "interrupt", "crash-mixture"])
def test_interrupted_run_resumes_bit_for_bit(tiny_config, run_cli, tmp_path, how, corpus_dir):
    """A run killed (SIGKILL) or interrupted (SIGINT) and resumed ends with identical weights;
    also with two sources, adaptive weights and a token cache built by 2 workers."""
    data = {}
    if how == "crash-mixture":
        md = tmp_path / "md"
        md.mkdir()
        (md / "notes.md").write_text("\n\n".join(f"Note {i}: the garden light is on." * 20 for i in range(40)))
        data = {"sources": [{"type": "text", "path": str(corpus_dir)}, {"type": "text", "path": str(md)}],
                "mix_strategy": "weighted", "source_weights": [1.0, 2.0], "adaptive": True,
                "adaptive_interval_tokens": 500, "token_cache": True, "num_workers": 2}
    path, raw, run = tiny_config(data=data, train={"max_steps": 300, "save_interval": 5, "eval_interval": 100,
                                                   "log_interval": 10})
    ref = run_cli("train", "--config", str(path), "--set", f"train.out_dir={tmp_path / 'ref'}")
    assert ref.returncode == 0, ref.stderr
    if how == "crash-mixture":  # the weights really moved during the run
        weights = [r["source_weights"] for r in _metrics(tmp_path / "ref") if "source_weights" in r]
        assert weights[0] != weights[-1]
    assert ref.returncode == 0, ref.stderr

    proc = subprocess.Popen([sys.executable, "-m", "lmlab", "train", "--config", str(path)],
                            env=run_cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_snapshot(proc, run)
    proc.send_signal(signal.SIGINT if how == "interrupt" else signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    stopped_at = json.loads((run / "checkpoints/current/meta.json").read_text())["step"]
    assert 0 < stopped_at < 300 and not (run / "metrics.json").exists()
    if how == "interrupt":
        assert proc.returncode == 130 and f"interrupted at step {stopped_at}" in err
        assert "lmlab train --resume" in err

    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ref_losses = [(r["step"], r["loss"]) for r in _metrics(tmp_path / "ref") if "loss" in r]
    assert [(r["step"], r["loss"]) for r in _metrics(run) if "loss" in r] == ref_losses


def test_resume_from_prev_when_current_is_corrupt(tiny_config, run_cli):
    path, raw, run = tiny_config()
    assert run_cli("train", "--config", str(path)).returncode == 0
    w = run / "checkpoints/current/model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    out = run_cli("train", "--resume", str(run), "--set", "train.max_steps=14")
    assert out.returncode == 0, out.stderr
    assert "warning: checkpoint" in out.stderr and "falling back" in out.stderr
    assert json.loads((run / "checkpoints/current/meta.json").read_text())["step"] == 14


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_ddp_two_processes_match_one_process(tiny_config, run_cli, tmp_path):
    """torchrun x2 (gloo, CPU) at batch 2 == one process at batch 2 x 2 accumulation steps."""
    path, raw, run = tiny_config(train={"batch_size": 2, "max_steps": 8, "log_interval": 1})
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    ddp = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config", str(path),
         "--set", f"train.out_dir={tmp_path / 'ddp'}"],
        env=run_cli.env, capture_output=True, text=True, timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_cli("train", "--config", str(path), "--set", f"train.out_dir={tmp_path / 'one'}",
                     "--set", "train.grad_accum_steps=2")
    assert single.returncode == 0, single.stderr
    loss = lambda run: [r["loss"] for r in _metrics(run) if "loss" in r]  # noqa: E731
    assert len(loss(tmp_path / "ddp")) == 8
    torch.testing.assert_close(torch.tensor(loss(tmp_path / "ddp")), torch.tensor(loss(tmp_path / "one")),
                               atol=1e-5, rtol=1e-5)
    a, b = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    # Rank 0 alone wrote the run dir: one line per logged step, not two.
    assert [r["step"] for r in _metrics(tmp_path / "ddp") if "loss" in r] == list(range(1, 9))


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler (cc/gcc) for Inductor")
def test_grad_checkpoint_trains_the_same_weights(tiny_config, tmp_path):
    _, raw, run = tiny_config(train={"max_steps": 4}, model={"dropout": 0.1})
    lmlab.train(raw)
    raw["train"].update(grad_checkpoint=True, out_dir=str(tmp_path / "ckpt"))
    lmlab.train(raw)
    a, b = _weights(run), _weights(tmp_path / "ckpt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_grad_checkpoint_is_refused_up_front_for_a_family_without_it(tiny_config, monkeypatch):
    from lmlab.models.transformer import Transformer

    monkeypatch.setattr(Transformer, "supports_grad_checkpointing", False)
    _, raw, run = tiny_config(train={"grad_checkpoint": True})
    with pytest.raises(LmlabError, match="train.grad_checkpoint: the transformer family does not support"):
        lmlab.train(raw)
    assert not run.exists()  # refused before anything was written


def test_compile_matches_eager(tiny_config, tmp_path):
    _, raw, run = tiny_config(train={"max_steps": 4})
    lmlab.train(raw)
    raw["train"].update(compile=True, out_dir=str(tmp_path / "compiled"))
    lmlab.train(raw)
    a, b = _weights(run), _weights(tmp_path / "compiled")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3)


def test_rng_state_is_saved_per_rank_and_reseeded_for_another_world(recwarn):
    from lmlab.training.distributed import DistInfo
    from lmlab.training.state import restore_rng as _restore_rng
    from lmlab.training.state import rng_state as _rng_state

    one = DistInfo(0, 1, 0, torch.device("cpu"))
    torch.manual_seed(3)
    saved = _rng_state(one)
    assert saved["torch"].shape[0] == 1
    expected = torch.rand(4)
    torch.manual_seed(99)
    _restore_rng(saved, one, seed=0, step=10)
    assert torch.equal(torch.rand(4), expected)
    two = DistInfo(1, 2, 1, torch.device("cpu"))
    with pytest.warns(UserWarning, match="saved by 1 processes, this run has 2"):
        _restore_rng(saved, two, seed=0, step=10)
    assert not torch.equal(torch.rand(4), expected)


def test_rank_one_restores_its_own_rng_row():
    """Resuming a 2-process run: rank 1 reads row 1 of the stacked states (a view at an offset;
    set_rng_state on the view itself crashed rank 1)."""
    from lmlab.training.distributed import DistInfo
    from lmlab.training.state import restore_rng

    torch.manual_seed(1)
    first = torch.get_rng_state()
    torch.manual_seed(2)
    second = torch.get_rng_state()
    expected = torch.rand(4)
    saved = {"torch": torch.stack([first, second])}
    torch.manual_seed(99)
    restore_rng(saved, DistInfo(1, 2, 1, torch.device("cpu")), seed=0, step=10)
    assert torch.equal(torch.rand(4), expected)

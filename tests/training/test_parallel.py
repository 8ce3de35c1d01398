"""Data parallelism on CPU/gloo: FSDP2 and ZeRO against one process, sharded (DCP) snapshots that
resume at another world size and bit-exactly after a crash, and the one-line refusals.

Equivalence tolerances: FSDP reduce-scatters fp32 gradients (mean over ranks) where one process
sums two accumulation steps, so the two differ only by float summation order: losses and
weights agree to 1e-5 absolute / 1e-4 relative after 8 AdamW steps (the DDP test's bound).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmlab
from lmlab import rundir
from lmlab.errors import LmlabError

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
_has_torchrun = pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")


def needs_torchrun(test):
    """A multi-process test: skipped without torchrun, and slow (make test-fast leaves it out)."""
    return pytest.mark.slow(_has_torchrun(test))

FAMILIES = {
    "transformer": {"family": "transformer", "preset": "tiny", "block_size": 32},
    "apelr": {"family": "apelr", "preset": "tiny", "block_size": 32},
    "psann": {"family": "psann", "preset": "tiny", "block_size": 32},
}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / "current" / "model.safetensors")


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def _close(a: Path, b: Path, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    torch.testing.assert_close(torch.tensor(_losses(a)), torch.tensor(_losses(b)), atol=atol, rtol=rtol)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=rtol, msg=k)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s descendants, then ``pid`` (a crash of every process of the job)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for child in children:
        _kill_tree(child)
    os.kill(pid, signal.SIGKILL)


def _torchrun(run_cli, *args: str, n: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run([TORCHRUN, "--standalone", f"--nproc_per_node={n}", "-m", "lmlab", *args],
                          env=run_cli.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@needs_torchrun
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fsdp_two_processes_match_one_process(family, tiny_config, run_cli, tmp_path):
    """torchrun x2 under FSDP at batch 2 == one process at batch 2 x 2 accumulation steps; the
    snapshot's consolidated weights load on one process (sample, lmlab.load)."""
    path, raw, _ = tiny_config(model=FAMILIES[family], train={"batch_size": 2, "max_steps": 8, "log_interval": 1,
                                                              "save_interval": 4, "eval_interval": 4})
    _torchrun(run_cli, "train", "--config", str(path), "--set", f"train.out_dir={tmp_path / 'fsdp'}",
              "--set", "train.parallel=fsdp")
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "one"), "train.grad_accum_steps": 2})
    _close(tmp_path / "fsdp", tmp_path / "one")
    snap = tmp_path / "fsdp" / "checkpoints" / "current"
    meta = json.loads((snap / "meta.json").read_text())
    assert {"dcp/.metadata", "dcp/__0_0.distcp", "dcp/__1_0.distcp", "model.safetensors"} <= set(meta["sha256"])
    assert "optimizer" not in torch.load(snap / "trainer.pt", weights_only=True)  # it is in the shards
    assert (tmp_path / "fsdp" / "samples.txt").read_text().startswith("--- sample 1 ---")
    text = lmlab.load(tmp_path / "fsdp").generate("The ", max_new_tokens=8, seed=0)
    assert text.startswith("The ")


@needs_torchrun
def test_zero_optimizer_matches_plain_ddp(tiny_config, run_cli, tmp_path):
    """ZeroRedundancyOptimizer shards AdamW's state; the steps are the same as DDP's."""
    path, raw, _ = tiny_config(train={"batch_size": 2, "max_steps": 8, "log_interval": 1, "save_interval": 4})
    _torchrun(run_cli, "train", "--config", str(path), "--set", f"train.out_dir={tmp_path / 'ddp'}")
    _torchrun(run_cli, "train", "--config", str(path), "--set", f"train.out_dir={tmp_path / 'zero'}",
              "--set", "train.distributed.zero_optimizer=true")
    _close(tmp_path / "ddp", tmp_path / "zero", atol=1e-6, rtol=1e-6)
    # The consolidated optimizer state is a plain AdamW state: the run continues on one process.
    state = torch.load(tmp_path / "zero" / "checkpoints/current/trainer.pt", weights_only=True)
    assert len(state["optimizer"]["state"]) == len(_weights(tmp_path / "zero"))
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "zero"), "train.max_steps": 10,
                        "train.grad_accum_steps": 2, "train.distributed.zero_optimizer": True})
    assert json.loads((tmp_path / "zero" / "checkpoints/current/meta.json").read_text())["step"] == 10


@needs_torchrun
def test_fsdp_snapshot_resumes_at_another_world_size(tiny_config, run_cli, tmp_path):
    """An FSDP run saved at world 2 continues at world 1, and one saved at world 1 continues at
    world 2 (the same global batch through grad_accum_steps); both end where a run at one world
    size throughout ends (DCP reshards the model and the AdamW state)."""
    path, raw, _ = tiny_config(train={"batch_size": 2, "max_steps": 4, "log_interval": 1, "save_interval": 4,
                                      "parallel": "fsdp"})

    def leg(world: int, run: Path, steps: int) -> None:
        if world == 2:
            args = ["--config", str(path), "--set", f"train.out_dir={run}"] if steps == 4 else ["--resume", str(run)]
            _torchrun(run_cli, "train", *args, "--set", f"train.max_steps={steps}", "--set", "train.grad_accum_steps=1")
        else:
            lmlab.train(raw, **{"train.out_dir": str(run), "train.max_steps": steps, "train.grad_accum_steps": 2})

    for first, then in ((1, 1), (2, 1), (1, 2)):  # (1, 1) is the reference
        run = tmp_path / f"{first}-{then}"
        leg(first, run, 4)  # every schedule ends at step 4 and is then extended to 8, alike
        leg(then, run, 8)
    _close(tmp_path / "1-1", tmp_path / "2-1")
    _close(tmp_path / "1-1", tmp_path / "1-2")


@needs_torchrun
def test_fsdp_crash_and_resume_is_bit_identical(tiny_config, run_cli, tmp_path):
    """torchrun x2 under FSDP, SIGKILLed after a few snapshots and resumed, ends with the same
    weights and losses, bit for bit, as an uninterrupted FSDP run."""
    path, _, run = tiny_config(model={"dropout": 0.1}, train={
        "batch_size": 2, "max_steps": 32, "save_interval": 4, "eval_interval": 16, "log_interval": 4,
        "parallel": "fsdp"})
    _torchrun(run_cli, "train", "--config", str(path), "--set", f"train.out_dir={tmp_path / 'ref'}")
    proc = subprocess.Popen([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config",
                             str(path)], env=run_cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoints" / "prev2").is_dir():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    _kill_tree(proc.pid)  # the workers run in sessions of their own: kill them first, then torchrun
    proc.wait()
    # the newest whole snapshot, what --resume reads: a kill inside the snapshot rotation can
    # leave prev1 newest and no current
    stopped = rundir.latest_snapshot(run).meta["step"]
    assert 0 < stopped < 32
    _torchrun(run_cli, "train", "--resume", str(run))
    a, b = _weights(tmp_path / "ref"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run) == _losses(tmp_path / "ref")


def test_fsdp_on_one_process_matches_no_parallelism_and_resumes_exactly(tiny_config, monkeypatch, tmp_path):
    """FSDP at world size 1 (a one-process group) trains as plain training does; interrupted and
    resumed from its DCP snapshot, it ends bit-identical to an uninterrupted FSDP run."""
    import lmlab.training.trainer as trainer

    _, raw, run = tiny_config(model={"dropout": 0.1}, train={"max_steps": 12, "save_interval": 3})
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "plain")})
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "fsdp"), "train.parallel": "fsdp"})
    _close(tmp_path / "plain", tmp_path / "fsdp", atol=1e-6, rtol=1e-6)

    class StopAfter(trainer.Interrupt):  # "Ctrl-C" during step 5
        @property
        def hit(self):
            return trainer_steps[0] >= 5

        @hit.setter
        def hit(self, value):
            pass

    trainer_steps = [0]
    real_step = trainer.Trainer.train_step

    def counting(self):
        out = real_step(self)
        trainer_steps[0] = self.step
        return out

    with monkeypatch.context() as m:
        m.setattr(trainer, "Interrupt", StopAfter)
        m.setattr(trainer.Trainer, "train_step", counting)
        with pytest.raises(KeyboardInterrupt, match="interrupted at step 5"):
            lmlab.train(raw, **{"train.parallel": "fsdp"})
    lmlab.train(raw, **{"train.parallel": "fsdp"})
    a, b = _weights(tmp_path / "fsdp"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run) == _losses(tmp_path / "fsdp")


def test_weights_only_snapshots_resume_with_a_fresh_optimizer(tiny_config, capsys):
    _, raw, run = tiny_config(train={"save_optimizer_state": False})
    lmlab.train(raw, **{"train.max_steps": 6})
    assert "a resume will not be exact" in capsys.readouterr().out
    state = torch.load(run / "checkpoints/current/trainer.pt", weights_only=True)
    assert "optimizer" not in state and state["step"] == 6
    with pytest.warns(UserWarning, match="no optimizer state .* resuming at step 6 with a fresh optimizer"):
        lmlab.train(raw)
    assert json.loads((run / "checkpoints/current/meta.json").read_text())["step"] == 12


def test_fsdp_is_refused_for_the_abstractinator_before_anything_is_written(tiny_config):
    _, raw, run = tiny_config(model={"family": "abstractinator", "preset": "tiny"}, tokenizer={"type": "byte"},
                              train={"parallel": "fsdp"})
    with pytest.raises(LmlabError, match="the abstractinator family cannot train sharded: .*parallel: ddp"):
        lmlab.train(raw)
    assert not run.exists()


@pytest.mark.parametrize("key, value, needle", [
    ("train.parallel", "ddp", "needs a distributed launch"),
    ("train.distributed.backend", "nccl", "backend = nccl needs CUDA"),
    ("train.fsdp.cpu_offload", True, "on a CPU device"),
    ("train.fused_adamw", "sometimes", "fused_adamw"),
    ("train.matmul_precision", "low", "matmul_precision"),
    ("train.compile", {"enabled": True, "mode": "max"}, "the section takes only enabled"),
])
def test_parallel_and_gpu_knob_mistakes_are_one_line(tiny_config, key, value, needle):
    """Each is an LmlabError (the CLI prints it as one line, exit 2) before anything is written."""
    _, raw, run = tiny_config()
    if key in ("train.fsdp.cpu_offload", "train.distributed.backend"):  # both matter once there is a group
        raw["train"]["parallel"] = "fsdp"
    with pytest.raises(LmlabError) as e:
        lmlab.train(raw, **{key: value})
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not run.exists()


def test_gpu_knobs_apply_for_the_run_and_are_put_back(tiny_config, monkeypatch):
    import lmlab.training.trainer as trainer

    seen = {}
    real_fit = trainer.Trainer.fit

    def spy(self):
        seen["precision"] = torch.get_float32_matmul_precision()
        seen["fused"] = self.optimizer.defaults["fused"]
        return real_fit(self)

    monkeypatch.setattr(trainer.Trainer, "fit", spy)
    before = torch.get_float32_matmul_precision()
    _, raw, _ = tiny_config(train={"matmul_precision": "medium", "fused_adamw": False, "compile": {"enabled": False},
                                   "max_steps": 2})
    lmlab.train(raw)
    assert seen == {"precision": "medium", "fused": False}
    assert torch.get_float32_matmul_precision() == before


def test_compile_accepts_seed_000s_section():
    from lmlab.configure import load_config

    assert load_config(raw={"train": {"compile": {"enabled": True}}}).train.compile is True
    assert load_config(raw={"train": {"compile": {"enabled": False}}}).train.compile is False


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_fsdp_mixed_precision_policy_trains(tiny_config, precision):
    """FSDP gathers weights in the autocast dtype (fp16 with the sharded loss scaler); the saved
    weights stay fp32."""
    _, raw, run = tiny_config(train={"precision": precision, "max_steps": 20, "parallel": "fsdp"})
    lmlab.train(raw)
    losses = _losses(run)
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(v.dtype == torch.float32 for v in _weights(run).values())


def test_sharded_and_unsharded_snapshots_cross_over_where_they_can(tiny_config, tmp_path):
    """A DCP snapshot continues without FSDP (DCP reads the shards on one process); a snapshot
    without shards is refused under FSDP in one line and left as it was."""
    _, raw, run = tiny_config(train={"max_steps": 4, "save_interval": 4})
    lmlab.train(raw, **{"train.parallel": "fsdp"})
    lmlab.train(raw, **{"train.parallel": "none", "train.max_steps": 8})
    assert "dcp/.metadata" not in json.loads((run / "checkpoints/current/meta.json").read_text())["sha256"]
    before = (run / "checkpoints/current/model.safetensors").read_bytes()
    with pytest.raises(LmlabError, match="saved without parallel: fsdp.*continue it with parallel: none or ddp"):
        lmlab.train(raw, **{"train.parallel": "fsdp", "train.max_steps": 12})
    assert (run / "checkpoints/current/model.safetensors").read_bytes() == before

"""train.optimizer: muon: torch.optim.Muon on the family's hidden matrices, AdamW on the rest;
every family's grouping, bit-exact resume, grad accumulation, DDP and FSDP against one process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmlab
from lmlab.configure import validate_config
from lmlab.errors import ConfigError, LmlabError
from lmlab.registry import FAMILIES, build_model
from lmlab.training.optim import MuonAdamW, build_optimizer

TINY = {"transformer": {}, "apelr": {}, "psann": {"base": "waveresnet"}, "abstractinator": {}}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_groups_its_parameters(family):
    """Muon takes 2-D hidden weights only; embeddings, the head, norms, biases, conv kernels,
    codebooks, planner transitions and sine parameters go to AdamW; each parameter once."""
    tok = {"tokenizer": {"type": "byte"}} if family == "abstractinator" else {}
    cfg = validate_config({"model": {"family": family, "preset": "tiny", "vocab_size": 260, **TINY[family]},
                           "train": {"optimizer": "muon"}, **tok})
    model = build_model(cfg.model)
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    muon = [p for g in opt.muon.param_groups for p in g["params"]]
    adamw = [p for g in opt.adamw.param_groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(muon) + len(adamw) == len(trainable) and {id(p) for p in muon + adamw} == {id(p) for p in trainable}
    assert muon and all(p.ndim == 2 for p in muon)
    names = {id(p): n for n, p in model.named_parameters()}
    for p in muon:
        name = names[id(p)]
        assert "embed" not in name and "wte" not in name and "lm_head" not in name and "norm" not in name, name
    embeddings = [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    assert all(id(e) not in {id(p) for p in muon} for e in embeddings)


def test_muon_resumes_bit_exactly_with_accumulation(tiny_config, tmp_path):
    path, raw, _ = tiny_config(train={"optimizer": "muon", "max_steps": 6, "save_interval": 3, "eval_interval": 3,
                                      "grad_accum_steps": 2, "batch_size": 2})
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "whole")})
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "cut"), "train.max_steps": 3})
    state = torch.load(tmp_path / "cut" / "checkpoints/current/trainer.pt", weights_only=True)
    assert set(state["optimizer"]) == {"muon", "adamw"} and state["optimizer"]["muon"]["state"]
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "cut")})  # resumes at step 3
    a = load_file(tmp_path / "whole" / "checkpoints/current/model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints/current/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # and it is not AdamW: the same run with adamw ends elsewhere
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "adamw"), "train.optimizer": "adamw"})
    c = load_file(tmp_path / "adamw" / "checkpoints/current/model.safetensors")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_muon_lr_scales_its_groups_with_the_schedule(tiny_config, tmp_path):
    _, raw, _ = tiny_config(train={"optimizer": "muon", "muon_lr": 0.02, "lr": 1e-3, "min_lr": 1e-4, "max_steps": 2})
    cfg = lmlab.configure.load_config(raw=raw, notes=lambda _: None)
    opt = build_optimizer(build_model(cfg.model.model_copy(update={"vocab_size": 50})), cfg.train,
                          torch.device("cpu"))
    assert [g.get("lr_scale", 1.0) for g in opt.param_groups] == [20.0, 1.0, 1.0]


def test_muon_refusals_are_one_line(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="optimizer: muon with distributed.zero_optimizer"):
        lmlab.configure.load_config(raw={"train": {"optimizer": "muon", "distributed": {"zero_optimizer": True}}})
    # an AdamW run resumed as muon: its optimizer state does not fit
    _, raw, run = tiny_config(train={"max_steps": 2})
    lmlab.train(raw)
    with pytest.raises(LmlabError, match="optimizer state is AdamW's"):
        lmlab.train(raw, **{"train.optimizer": "muon", "train.max_steps": 4})


TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_muon_under_torchrun_matches_one_process(parallel, tiny_config, run_cli, tmp_path):
    """torchrun x2 (DDP, or FSDP: sharded matrices) at batch 2 == one process at batch 2 x 2
    accumulation steps, with Muon."""
    path, raw, _ = tiny_config(train={"optimizer": "muon", "batch_size": 2, "max_steps": 6, "log_interval": 1,
                                      "save_interval": 3})
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config",
                           str(path), "--set", f"train.out_dir={tmp_path / 'ddp'}",
                           "--set", f"train.parallel={parallel}"],
                          env=run_cli.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "one"), "train.grad_accum_steps": 2})
    a = load_file(tmp_path / "ddp" / "checkpoints/current/model.safetensors")
    b = load_file(tmp_path / "one" / "checkpoints/current/model.safetensors")
    # FSDP's reduce-scatter sums the two halves in another order than accumulation does; Muon's
    # bf16 Newton-Schulz turns those 1e-7 differences into bf16 roundings of the update, so the
    # weights agree to ~1e-3 (the losses, which a wrong shard would move by far more, to 1e-4).
    # The strict check of the sharded step is the world-1 test below (equal to 1e-6).
    atol = 1e-5 if parallel == "ddp" else 2e-3
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=1e-4, msg=k)
    losses = [[json.loads(line)["loss"] for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()
               if "loss" in json.loads(line)] for r in ("ddp", "one")]
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), atol=0, rtol=1e-4)
    assert json.loads((tmp_path / "ddp" / "metrics.json").read_text())["world"] == 2


def test_muon_under_fsdp_on_one_process_matches_plain_and_resumes_exactly(tiny_config, tmp_path):
    """FSDP at world 1 (DTensor matrices, momentum in the DCP shards) steps as plain Muon does, and
    a resume from an older snapshot ends bit-identical to the uninterrupted run."""
    _, raw, run = tiny_config(train={"optimizer": "muon", "max_steps": 9, "save_interval": 3, "log_interval": 1})
    lmlab.train(raw, **{"train.out_dir": str(tmp_path / "plain")})
    lmlab.train(raw, **{"train.parallel": "fsdp"})
    a, b = (load_file(r / "checkpoints/current/model.safetensors") for r in (tmp_path / "plain", run))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)
    again = tmp_path / "again"
    shutil.copytree(run, again)
    shutil.rmtree(again / "checkpoints" / "current")  # the step-9 snapshot: resume from step 6
    lmlab.train(raw, **{"train.parallel": "fsdp", "train.out_dir": str(again)})
    c = load_file(again / "checkpoints/current/model.safetensors")
    assert json.loads((again / "checkpoints/current/meta.json").read_text())["step"] == 9
    assert all(torch.equal(b[k], c[k]) for k in b)

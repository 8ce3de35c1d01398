"""train.part_lr / part_warmup: a family's parts (LanguageModel.param_parts) train at their own
multiple of the lr and warm up over their own steps; every parameter in exactly one group; a part
the family lacks, or a resume that regroups the optimizer, is one line."""

from __future__ import annotations

import json

import pytest
import torch

import lmlab
from lmlab.config import TrainConfig
from lmlab.configure import load_config, validate_config
from lmlab.errors import ConfigError, LmlabError
from lmlab.registry import build_model
from lmlab.training.optim import build_optimizer, lr_at

ABS = {"family": "abstractinator", "preset": "tiny", "vocab_size": 257}


def _abstractinator(**train):
    cfg = validate_config({"tokenizer": {"type": "byte"}, "model": ABS, "train": train})
    return cfg, build_model(cfg.model)


def test_a_part_has_its_own_multiple_and_warmup():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, part_lr={"top": 3.0}, part_warmup={"top": 40})
    for step in range(100):
        assert lr_at(step, cfg, 100, "entropy") == lr_at(step, cfg, 100)  # not named: the run's curve
    own = TrainConfig(lr=3e-3, min_lr=3e-4, warmup_steps=40)
    assert [lr_at(s, cfg, 100, "top") for s in range(100)] == pytest.approx([lr_at(s, own, 100) for s in range(100)])


def test_every_parameter_is_in_one_group_of_its_part():
    cfg, model = _abstractinator(part_lr={"top": 2.0, "expander": 0.5})
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    grouped = [p for g in opt.param_groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) and {id(p) for p in grouped} == {id(p) for p in trainable}
    parts, names = model.param_parts(), {id(p): n for n, p in model.named_parameters()}
    assert set(parts.values()) == {"encoder", "entropy", "expander", "top"}
    for g in opt.param_groups:
        assert {parts[names[id(p)]] for p in g["params"]} == {g["part"]}
        assert g["weight_decay"] == (cfg.train.weight_decay if g["params"][0].dim() >= 2 else 0.0)
    assert all(names[id(p)].startswith("top.") for g in opt.param_groups if g["part"] == "top" for p in g["params"])
    # without part settings: the two groups as ever (old snapshots' optimizer states fit)
    plain = build_optimizer(model, _abstractinator()[0].train, torch.device("cpu"))
    assert [len(g["params"]) for g in plain.param_groups] == [sum(p.dim() >= 2 for p in trainable),
                                                               sum(p.dim() < 2 for p in trainable)]


def test_a_part_the_family_lacks_is_one_line(tiny_config):
    cfg, model = _abstractinator(part_lr={"tops": 2.0})
    with pytest.raises(LmlabError, match=r"train.part_lr: AbstractinatorPyramid has no part tops; its parts: "
                                         r"encoder, entropy, expander, top"):
        build_optimizer(model, cfg.train, torch.device("cpu"))
    _, raw, _ = tiny_config(train={"part_warmup": {"top": 5}, "max_steps": 2})
    with pytest.raises(LmlabError, match=r"train.part_warmup: \w+ has no part top; it declares none"):
        lmlab.train(raw)
    with pytest.raises(ConfigError, match="part_lr / part_warmup with optimizer: muon"):
        load_config(raw={"train": {"optimizer": "muon", "part_lr": {"top": 2.0}}}, notes=lambda _: None)
    with pytest.raises(ConfigError, match="train.part_lr.top"):
        load_config(raw={"train": {"part_lr": {"top": 0}}}, notes=lambda _: None)


def test_a_run_steps_each_part_at_its_lr_and_resumes_only_with_the_same_parts(corpus_dir, tmp_path):
    raw = {"data": {"sources": [{"type": "text", "path": str(corpus_dir)}]}, "tokenizer": {"type": "byte"},
           "model": {**ABS, "block_size": 32},
           "train": {"out_dir": str(tmp_path / "run"), "max_steps": 4, "num_threads": 1, "batch_size": 2, "lr": 1e-3, "min_lr": 1e-4,
                     "warmup_steps": 1, "part_lr": {"top": 4.0}, "part_warmup": {"entropy": 3}, "log_interval": 1,
                     "eval_interval": 2, "eval_batches": 1, "save_interval": 2, "progress": False},
           "sample": {"max_new_tokens": 2, "prompts": []}}
    lmlab.train(raw)
    t = load_config(raw=raw, notes=lambda _: None).train
    state = torch.load(tmp_path / "run" / "checkpoints/current/trainer.pt", weights_only=True)["optimizer"]
    got = {g["part"]: g["lr"] for g in state["param_groups"]}  # the lr of the last step taken (step 3)
    assert got == pytest.approx({p: lr_at(3, t, 4, p) for p in ("encoder", "entropy", "expander", "top")})
    assert got["top"] == pytest.approx(4 * got["encoder"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows if "lr" in r] == pytest.approx([lr_at(s, t, 4) for s in range(4)])
    with pytest.raises(LmlabError, match=r"per-part learning rates for \['entropy', 'top'\] but the config sets "
                                         r"them for \['top'\]"):
        lmlab.train({**raw, "train": {**raw["train"], "part_warmup": {}}}, **{"train.max_steps": 6})
    lmlab.train(raw, **{"train.max_steps": 6, "train.part_lr.top": 2.0})  # a new value for the same part resumes

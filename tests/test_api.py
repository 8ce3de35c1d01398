"""Python API: lmlab.train with every override form, lmlab.load(...).generate / generate_batch."""

from __future__ import annotations

import json

import pytest
import torch

import lmlab
from lmlab.api import overrides_to_dict
from lmlab.configure import load_config
from lmlab.errors import LmlabError


def test_override_forms_merge_into_sections():
    assert overrides_to_dict({"train.lr": 1.0, "model__n_layer": 3, "sample": {"seed": 4}}) == {
        "train": {"lr": 1.0}, "model": {"n_layer": 3}, "sample": {"seed": 4}}


@pytest.fixture(scope="module")
def api_run(corpus_dir, tmp_path_factory, make_raw):
    raw = make_raw(corpus_dir, tmp_path_factory.mktemp("api") / "run")
    raw["train"]["max_steps"] = 4
    # Each override form, on top of a dict config.
    return lmlab.train(raw, **{"train.max_steps": 20}, model__dropout=0.0, sample={"max_new_tokens": 8})


def test_train_applies_overrides_and_returns_run_dir(api_run):
    assert json.loads((api_run / "metrics.json").read_text())["steps"] == 20
    cfg = load_config(api_run / "config.yaml")
    assert cfg.sample.max_new_tokens == 8 and cfg.model.dropout == 0.0


def test_train_from_path_and_runconfig(api_run, tmp_path):
    cfg = load_config(api_run / "config.yaml", [f"train.out_dir={tmp_path / 'b'}", "train.max_steps=2"])
    assert lmlab.train(cfg) == tmp_path / "b"
    run = lmlab.train(api_run / "config.yaml", **{"train.out_dir": str(tmp_path / "c"), "train.max_steps": 2})
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2


def test_load_generate(api_run):
    lm = lmlab.load(api_run)
    out = lm.generate("The ", max_new_tokens=10, seed=1, stop_on_eos=False)
    # 10 new ids; ids like EOS decode to nothing, so count characters as an upper bound only.
    assert out.startswith("The ") and len("The ") < len(out) <= len("The ") + 10
    assert out == lm.generate("The ", max_new_tokens=10, seed=1, stop_on_eos=False)
    batch = lm.generate_batch(["The ", "A", "def f"], greedy=True, max_new_tokens=6)
    alone = [lm.generate(p, greedy=True, max_new_tokens=6) for p in ["The ", "A", "def f"]]
    assert batch == alone
    lp = lm.log_probs("The end")
    assert lp.shape == (7,) and bool((lp <= 0).all())
    ids = torch.tensor([[lm.tokenizer.eos_id, *lm.tokenizer.encode("The end")]])
    assert torch.allclose(lp, lm.model.log_probs(ids)[0])


def test_load_errors(api_run, tmp_path):
    with pytest.raises(LmlabError, match="no checkpoint found"):
        lmlab.load(tmp_path)
    with pytest.raises(LmlabError, match="top_k"):
        lmlab.load(api_run).generate("The ", top_k=0)

"""Integer knobs (issue 28): the int64 and seed types every schema uses, what the integer class of
the catalogue accepts (tests/reliability/class_integers.py, whose refused pairs are catalogue
rows), and the memory estimate that refuses what would not fit, very deep and narrow included."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

import lmlab
from lmlab.config import INT64_MAX, DecodeSettings, ModelConfig, RunConfig
from lmlab.configure import build_model_config, load_config
from lmlab.errors import ConfigError, LmlabError
from lmlab.registry import FAMILIES, build_model

CLASS = runpy.run_path(str(Path(__file__).parent / "reliability" / "class_integers.py"))
KNOBS = CLASS["knobs"]()


def _validators(field) -> set[str]:
    """Names of the after-validators on ``field``: its own metadata (``x: Int = Field(...)``) and
    its annotation's int members (``Int | None``)."""
    metadata = list(field.metadata)
    for arg in CLASS["_int_args"](field.annotation):
        metadata += list(getattr(arg, "__metadata__", ()))
    return {m.func.__name__ for m in metadata if callable(getattr(m, "func", None))}


def _every_int_field():
    sections = [(f"{name}.", field.annotation) for name, field in RunConfig.model_fields.items() if name != "model"]
    sections += [(f"model<{family}>.", cls) for family, (cls, _) in FAMILIES.items()]
    for prefix, cls in sections:
        yield from CLASS["int_fields"](cls, prefix)


def test_every_integer_field_of_every_schema_refuses_what_int64_cannot_hold():
    """A plain ``int`` field would take 2**70 and overflow in torch later: every one is Int or Seed."""
    fields = list(_every_int_field())
    assert len(fields) > 80  # the walk reaches the nested sections and every family
    plain = [key for key, field in fields if not _validators(field) & {"_int64", "_seed"}]
    assert not plain, plain


@pytest.mark.parametrize("value", [2**70, -(2**70), 2**63])
def test_values_past_int64_are_refused_in_one_line(value):
    for section, key in [("train", "max_steps"), ("data", "max_train_tokens"), ("sample", "top_k")]:
        with pytest.raises(ConfigError, match=rf"^config: {section}\.{key} = {value}: .*(64-bit|greater than)") as e:
            load_config(raw={section: {key: value}})
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.n_layer"):
        build_model_config({"n_layer": value})


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_seeds_go_from_0_to_2_63_minus_1(seed):
    with pytest.raises(ConfigError, match=r"train\.seed = .*a seed goes from 0 to 2\*\*63 - 1"):
        load_config(raw={"train": {"seed": seed}})
    with pytest.raises(ConfigError, match=r"sample\.seed"):
        load_config(raw={"sample": {"seed": seed}})


def test_the_largest_seed_works_everywhere_a_seed_goes(corpus_dir, make_raw, tmp_path):
    """torch.manual_seed(seed + rank), the RNG restore's seed + 1000 x step + rank, numpy's
    SeedSequence of the data order, and decoding's torch.Generator: none overflows at 2**63 - 1."""
    from lmlab.data.mixing import MixtureSampler

    torch.manual_seed(INT64_MAX + 7)
    torch.manual_seed(INT64_MAX + 1000 * 10**9 + 7)
    sampler = MixtureSampler([np.arange(500, dtype=np.uint16)], ["a"], 8, 2, 1, seed=INT64_MAX)
    assert len(sampler.plan(0)[0]) == 2
    model = build_model(build_model_config({"preset": "tiny", "vocab_size": 32}))
    from lmlab.generate.decode import generate_ids

    out = generate_ids(model, [[1, 2]], DecodeSettings(seed=INT64_MAX, max_new_tokens=3, stop_on_eos=False), 0)
    assert len(out[0]) == 3


# ------------------------------------------------------------------------- the accepted pairs


def _accepted() -> set[tuple[str, str]]:
    pairs = {(k.name, kind) for k in KNOBS for kind in CLASS["KINDS"] if CLASS["outcome"](k, kind) == "accepted"}
    pairs |= {(f"sample {flag}", kind) for flag, (_, kinds) in CLASS["SAMPLE_FLAGS"].items()
              for kind, needle in kinds.items() if needle is None}
    return pairs


def test_the_accepted_pairs_listed_in_the_class_file_are_exactly_those_its_rules_give():
    doc = CLASS["__doc__"]
    listed = set(re.findall(r"^ {4}(\S+(?: --\S+)?), (zero|negative|huge|int64): \S", doc, flags=re.M))
    assert listed == _accepted()
    # every knob got a decision for every kind (outcome raises for an undecided one)
    assert len(KNOBS) * len(CLASS["KINDS"]) == sum(1 for k in KNOBS for kind in CLASS["KINDS"]
                                                   if CLASS["outcome"](k, kind))


def _raw_for(knob, value: int, corpus: Path, tmp: Path, make_raw) -> tuple[dict, list[str]]:
    raw = make_raw(corpus, tmp / "run")
    sets = [*CLASS["FAMILY_SETS"][knob.family], *CLASS["KNOB_SETS"].get(knob.key, ())]
    argv = CLASS["_set"](knob.key, value)
    return raw, [*sets, argv[1].replace("{file}", str(tmp / "doc.pdf"))]


@pytest.mark.parametrize("knob", [k for k in KNOBS if CLASS["outcome"](k, "huge") == "accepted"
                                  or CLASS["outcome"](k, "zero") == "accepted"], ids=lambda k: k.name)
def test_accepted_zero_and_huge_values_validate(knob, corpus_dir, make_raw, tmp_path):
    """The accepted values are real settings: the config validates with them (and the model
    section builds its family's config) without an error."""
    for kind in ("zero", "huge"):
        if CLASS["outcome"](knob, kind) != "accepted":
            continue
        raw, sets = _raw_for(knob, CLASS["KINDS"][kind], corpus_dir, tmp_path, make_raw)
        cfg = load_config(raw=raw, overrides=sets, notes=lambda _: None)
        assert cfg.model.family == knob.family
        cfg.model.size_estimate(128)  # a huge accepted knob keeps the estimate arithmetic


def test_a_huge_budget_or_warmup_keeps_the_schedule_finite():
    """max_steps, max_tokens and warmup_steps at 10**12 are budgets: the lr schedule stays a number."""
    import math

    from lmlab.training.optim import lr_at

    huge = CLASS["KINDS"]["huge"]
    for schedule in ("cosine", "wsd"):
        t = load_config(raw={"train": {"max_steps": huge, "warmup_steps": huge, "schedule": schedule}}).train
        assert all(math.isfinite(lr_at(step, t, huge)) and lr_at(step, t, huge) > 0 for step in (0, huge // 2, huge - 1))


def test_accepted_huge_decoding_knobs_decode():
    """top_k, no_repeat_ngram_size, seed and planner_rerank at 10**12 decode (capped at the
    vocabulary and the history), on a model with the planner's heads."""
    from lmlab.generate.decode import generate_ids

    cfg = build_model_config({"preset": "tiny", "vocab_size": 32, "auxiliary": {
        "enable_policy": True, "enable_value": True, "enable_dynamics": True}})
    model = build_model(cfg)
    huge = CLASS["KINDS"]["huge"]
    for extra in ({}, {"planner_rerank": huge}):
        settings = DecodeSettings(top_k=huge, no_repeat_ngram_size=huge, seed=huge, max_new_tokens=4,
                                  stop_on_eos=False, **extra)
        assert len(generate_ids(model, [[1, 2, 3]], settings, 0)[0]) == 4


# ---------------------------------------------------------------------- the memory estimate


def _fits_in(monkeypatch, gib: float) -> None:
    from lmlab.training import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: (int(gib * 2**30), "of RAM available"))


def test_a_deep_narrow_model_is_refused_from_the_estimate_with_the_figure(tiny_config, monkeypatch):
    """Issue 28: model.n_layer=100000 model.d_model=8 was accepted and still building after 2
    minutes (weights and activations ~8 GiB); the per-layer bookkeeping (~15 GiB) sinks it."""
    from lmlab.registry import get_family

    built = []
    monkeypatch.setattr(get_family("transformer")[1], "__init__", lambda *a, **kw: built.append(1))
    _fits_in(monkeypatch, 21.0)
    _, raw, run = tiny_config()
    with pytest.raises(LmlabError, match=r"cannot train here: .* per-layer bookkeeping ~1[0-9]\.\d GiB\), and this "
                                         r"machine has 21\.0 GiB .* the largest term is model\.n_layer = 100000 "
                                         r"\(at its default 4: ~0\.0 GiB\)"):
        lmlab.train(raw, **{"model.n_layer": 100000, "model.d_model": 8})
    assert not built and not run.exists()


def test_the_largest_term_names_nested_and_unset_keys(tiny_config, monkeypatch):
    _fits_in(monkeypatch, 1.0)
    _, raw, _ = tiny_config(model={"family": "abstractinator", "preset": "tiny"}, tokenizer={"type": "byte"})
    with pytest.raises(LmlabError, match=r"largest term is model\.levels\[0\]\.c_vq_d_c = 1000000 \(unset: "):
        lmlab.train(raw, **{"model.levels": [{"c_vq_d_c": 10**6}]})


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_gives_its_overhead_and_a_sane_figure_when_very_deep_or_very_wide(family):
    """The tiny preset needs well under 1 GiB at 4 x 64 tokens; a million layers, or a width of a
    million, needs over half a TiB (whatever the machine, refused): per-layer bookkeeping included."""
    from lmlab.training.memory import BYTES_PER_PARAM

    cls = FAMILIES[family][0]
    assert cls.overhead_bytes is not ModelConfig.overhead_bytes
    deep = ({"levels": [{"compressor_layers": 10**6}]} if family == "abstractinator" else {"n_layer": 10**6})
    for extra, low, high in [({}, 0, 2**30), (deep, 2**39, None), ({"d_model": 2**20, "n_head": 2}, 2**39, None)]:
        cfg = build_model_config({"family": family, "preset": "tiny", "vocab_size": 260, **extra})
        params, activations = cfg.size_estimate(4 * 64)
        need = params * BYTES_PER_PARAM + activations + cfg.overhead_bytes()
        assert need > low and (high is None or need < high), (extra, need)
        assert cfg.overhead_bytes() > 0


def test_psann_dilation_without_the_big_power():
    for growth, cap in [(1, 16), (2, 16), (3, 1000), (10**12, 10**12), (2, INT64_MAX)]:
        cfg = build_model_config({"family": "psann", "preset": "tiny", "base": "waveresnet",
                                  "conv_dilation_growth": growth, "conv_max_dilation": cap})
        assert [cfg.dilation(i) for i in range(80)] == [min(growth**i, cap) for i in range(80)]
    deep = build_model_config({"family": "psann", "preset": "tiny", "base": "waveresnet", "n_layer": 10**12})
    assert deep.size_estimate(64)[1] > 2**50  # the capped layers are counted at once, not one by one


def test_an_abstractinator_eos_outside_the_vocabulary_is_refused_when_the_vocabulary_is_known():
    cfg = build_model_config({"family": "abstractinator", "preset": "tiny", "eos_id": 300})
    with pytest.raises(ConfigError, match=r"model\.eos_id = 300: not an id of the 257-id vocabulary"):
        cfg.vocab_size = 257  # what the trainer does once the tokenizer is built
    ok = build_model_config({"family": "abstractinator", "preset": "tiny", "eos_id": 256})
    ok.vocab_size = 257
    assert ok.eos == 256


def test_every_knob_named_in_the_tables_exists():
    """A renamed or removed field leaves no stale decision behind."""
    names = {k.name for k in KNOBS}
    assert set(CLASS["HUGE"]) <= names and CLASS["ZERO"] <= names


def test_bounds_past_the_schemas_one_line_each(tmp_path):
    """Integers that reach a schema from elsewhere: a seed-001 preset, a compare spec's seeds, an
    apelr forecast's length."""
    from lmlab.compare.spec import load_spec
    from lmlab.compat.seed001 import read_preset
    from lmlab.models.apelr.config import ApelrConfig

    preset = tmp_path / "p.json"
    preset.write_text(json.dumps({"model": {"hidden_size": 8, "num_layers": 1, "num_heads": 1, "seq_length": 8},
                                  "train": {"per_gpu_batch_size": 1, "seed": 2**70},
                                  "data": {"num_workers": 1000000}}))
    with pytest.raises(LmlabError, match="seed") as e:
        read_preset(preset)
    assert "\n" not in str(e.value)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nseeds: [1, -3]\narms: {a: {model: {family: transformer}}}\n")
    with pytest.raises(LmlabError, match="seeds") as e:
        load_spec(spec)
    model = build_model(ApelrConfig(vocab_size=16, n_layer=1, n_head=1, d_model=8, block_size=32))
    with pytest.raises(ValueError, match="lookahead_steps must be 0..64 chunks, got 100000"):
        model.set_generation_options(lookahead_steps=100_000)
    model.set_generation_options(lookahead_steps=64)


def test_a_task_s_generation_kwargs_are_checked_in_one_line(tiny_config):
    from lmlab.eval.scoring import Scorer

    _, raw, run = tiny_config(train={"max_steps": 1})
    lmlab.train(raw)
    lm = lmlab.load(run)
    scorer = Scorer(lm.model, lm.tokenizer)
    with pytest.raises(LmlabError, match="max_new_tokens") as e:
        scorer.generate_until([("The ", {"until": ["."], "max_gen_toks": 10**9})])
    assert "\n" not in str(e.value)

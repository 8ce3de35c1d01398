"""The seed dialects (lmlab/compat): every config example in the seeds loads, translated key by
key with a note each, and trains a few steps at a tiny size where it trains; what no table knows
still fails, every bad key at once, a moved key saying where it lives."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from lmlab import compat
from lmlab.cli import main as cli
from lmlab.config import load_config
from lmlab.errors import ConfigError

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"

# ------------------------------------------------------------------ the seeds' examples, verbatim

# Seed 000, "Large-Scale Training".
SEED000_LARGE = """
data:
  source: fineweb_edu
  streaming: true
  token_cache: true
  token_cache_dir: runs/my_run/token_cache
  reuse_token_cache: true
  max_train_examples: 2000000
  max_val_examples: 50000
  max_train_tokens: 500000000
  max_val_tokens: 20000000
  tokenizer_fit_max_examples: 100000
  tokenizer_fit_max_chars: 20000000

train:
  precision: bf16
  batch_size: auto
  adaptive_batch:
    enabled: true
    probe_batch_size: 2
    min_batch_size: 1
    max_batch_size: 64
    safety_factor: 0.9
    reprobe_interval_steps: 500
"""

# Seed 000, "Optional distributed knobs".
SEED000_DISTRIBUTED = """
train:
  distributed:
    backend: nccl
    zero_optimizer: true  # shards AdamW optimizer states across ranks
  save_optimizer_state: false  # avoids huge checkpoints; enable for exact resume
"""

# Seed 000, "Important knobs" 1-36 in the seed's spelling (the list names keys, not one file).
SEED000_KNOBS = """
model:
  family: apelr
  num_plan_states: 4
  chunk_size: 8
  planner_context_scale: 0.5
  planner_self_bias: 2.0
  version: v2_planner_required
  lookahead_horizon: 2
  lookahead_feedback_scale: 0.25
  async_planner: true
  token_filtering: true
tokenizer: {type: bpe, vocab_size: 512}
data:
  source: tinystories
  streaming: false
  token_cache: false
  max_train_tokens: 100000
  max_val_tokens: 20000
  tokenizer_fit_max_examples: 200
  tokenizer_fit_max_chars: 100000
  reuse_token_cache: true
train:
  entropy_reg_weight: 0.01
  usage_balance_weight: 0.2
  chunk_bow_weight: 0.05
  chunk_bow_warmup_steps: 40
  plan_mi_weight: 0.02
  chunk_post_kl_weight: 0.01
  save_interval: 100
  resume_from: null
  precision: fp32
  grad_accum_steps: 2
  loss_weights: {future_contrastive: 0.1, plan_js_div: 0.05, boundary_entropy: 0.01, usage_balance: 0.1}
  adaptive_batch: {enabled: false, probe_batch_size: 2, reprobe_interval_steps: 0}
  num_workers: 2
  prefetch_factor: 4
  persistent_workers: true
  fused_adamw: true
  allow_tf32: true
  matmul_precision: high
  compile: {enabled: false}
  eval_planner_diagnostics: false
  final_eval_planner_diagnostics: true
"""

# Seed 001, "Presets": the example preset (qa_plus_wiki).
SEED001_PRESET = """{
  "name": "qa_plus_wiki",
  "model": {"hidden_size":256, "num_layers":3, "num_heads":4, "seq_length":256},
  "train": {"per_gpu_batch_size":128, "accumulation_steps":4, "eval_tokens":2000000},
  "data": {
    "sources": [
      {"type":"hf","dataset":"sentence-transformers/natural-questions","split":"train","fields":["question","answer"],"format":"Q: {question}\\nA: {answer}"},
      "wikipedia"
    ],
    "mix_strategy": "round_robin",
    "min_text_length": 50
  }
}"""

# Seed 001, "Tier 1 Auxiliary Modules": the auxiliary section, in a preset.
SEED001_AUXILIARY = {
    "enable_policy": True, "enable_value": True, "enable_dynamics": True, "enable_span_contrastive": True,
    "policy_kl_weight": 0.05, "value_weight": 0.05, "dynamics_weight": 0.05, "span_contrastive_weight": 0.05,
    "span_mask_fraction": 0.15, "span_contrastive_temperature": 0.07, "span_l2_normalize": True,
    "enable_adaptive_sources": True, "adaptive_interval_tokens": 5000000, "adaptive_min_weight": 0.5,
    "adaptive_max_weight": 3.0, "adaptive_smoothing": 0.9,
}

# Seed 004, "Example Minimal YAML (for CLI)".
SEED002_YAML = """
# examples/lm/configs/waveresnet_small.yaml
model:
  base: waveresnet
  d_model: 512
  n_layers: 8
  n_heads: 8
  d_mlp: 2048
  vocab_size: 32000
  rope: true
  sine_params:
    amp_init: 1.0
    freq_init: 1.0
    damp_init: 0.01
    trainable: true

data:
  sources:
    - path: data/sample_texts.txt
  tokenizer: auto
  max_length: 1024
  pack_sequences: true
  val_split: 0.01
  seed: 1337

train:
  epochs: 1
  batch_tokens: 131072
  lr: 0.0002
  warmup_steps: 2000
  weight_decay: 0.01
  amp: bf16
  grad_clip: 1.0
  grad_accum_steps: 1
  ddp: auto
  checkpoint_dir: runs/lm/wrn_small
  log_interval_steps: 50
  save_interval_steps: 500
"""

# Seed 002, "Configuration": the CLI YAML's other values (tokenizer simple, positional encodings).
SEED002_KEYS = """
model: {base: respsann, d_model: 64, n_layers: 2, n_heads: 2, positional_encoding: alibi}
data: {sources: [{path: data/sample_texts.txt}], tokenizer: simple, max_length: 64, val_split: 0.2}
train: {epochs: 1, batch_tokens: 512, amp: fp32, ddp: "off", checkpoint_dir: runs/lm/respsann,
        log_interval_steps: 1, save_interval_steps: 2, label_smoothing: 0.0}
"""

# Seed 003, "Two-Stage Workflow".
SEED003_STAGE1 = """
exp_config = {
    # no top transformer during pretraining
    'top_transformer_config': None,
    'top_lm_loss_weight': 0.0,
    'save_base_components_path': './stage1_base.pt',
}
"""
SEED003_STAGE2 = """
exp_config = {
    'top_transformer_config': {...},
    'top_lm_loss_weight': 1.0,
}
"""
# Seed 003, "Training": the keys its README names, in one experiments/*.py.
SEED003_TRAINING = """
exp_config = {
    'num_epochs': 2,
    'max_steps': 3,
    'checkpoint_dir': './checkpoints',
    'checkpoint_interval': 2,
    'resume_from_checkpoint': None,
    'project_name': 'TemporalAutoencodedLanguageModelling',
    'mlflow_batch_interval': 50,
}
"""

EXAMPLES = {
    "seed000-large-scale": (SEED000_LARGE, ".yaml", {
        "data.sources": [{"type": "named", "name": "fineweb_edu", "split": None}],
        "data.max_val_examples": 50000, "tokenizer.fit_max_examples": 100000,
        "tokenizer.fit_max_chars": 20000000, "train.batch_size": "auto"}),
    "seed000-distributed": (SEED000_DISTRIBUTED, ".yaml", {
        "train.distributed.zero_optimizer": True, "train.save_optimizer_state": False}),
    "seed000-knobs": (SEED000_KNOBS, ".yaml", {
        "model.entropy_reg_weight": 0.01, "model.usage_balance_weight": 0.2, "model.chunk_bow_weight": 0.05,
        "model.chunk_bow_warmup_steps": 40, "model.plan_mi_weight": 0.02, "model.chunk_post_kl_weight": 0.01,
        "model.loss_weights.future_contrastive": 0.1, "data.num_workers": 2, "train.compile": False,
        "train.matmul_precision": "high"}),
    "seed001-preset": (SEED001_PRESET, ".json", {
        "model.d_model": 256, "model.n_layer": 3, "train.batch_size": 128, "train.grad_accum_steps": 4,
        "train.max_tokens": 100_000_000, "train.out_dir": "runs/qa_plus_wiki"}),
    "seed002-waveresnet-small": (SEED002_YAML, ".yaml", {
        "model.family": "psann", "model.base": "waveresnet", "model.n_layer": 8, "model.n_head": 8,
        "model.d_ff": 2048, "model.pos_encoding": "rope", "model.block_size": 1024,
        "tokenizer.type": "auto", "tokenizer.vocab_size": 32000, "data.val_fraction": 0.01,
        "data.sources": [{"type": "text", "path": "data/sample_texts.txt", "glob": ["**/*.txt", "**/*.md"]}],
        "train.seed": 1337, "train.batch_size": 128, "train.precision": "bf16", "train.parallel": "auto",
        "train.out_dir": "runs/lm/wrn_small", "train.log_interval": 50, "train.save_interval": 500}),
    "seed002-keys": (SEED002_KEYS, ".yaml", {
        "model.family": "psann", "model.base": "respsann", "model.pos_encoding": "alibi",
        "tokenizer.type": "char", "train.parallel": "none", "train.batch_size": 8}),
    "seed003-stage1": (SEED003_STAGE1, ".py", {
        "model.family": "abstractinator", "tokenizer.type": "byte", "model.top_transformer_config": None,
        "model.top_lm_loss_weight": 0.0, "model.save_base_components_path": "./stage1_base.pt"}),
    "seed003-stage2": (SEED003_STAGE2, ".py", {
        "model.family": "abstractinator", "model.top_lm_loss_weight": 1.0,
        "model.top_transformer_config.n_layer": 4}),
    "seed003-training": (SEED003_TRAINING, ".py", {
        "train.epochs": 2, "train.max_steps": 3, "train.out_dir": "./checkpoints", "train.save_interval": 2,
        "train.mlflow.experiment": "TemporalAutoencodedLanguageModelling", "train.mlflow.batch_interval": 50}),
}


ALREADY_LMLAB = {"seed000-distributed"}  # lmlab took seed 000's spelling of these keys as its own


def _write(tmp_path: Path, name: str) -> Path:
    text, suffix, _ = EXAMPLES[name]
    path = tmp_path / f"{name}{suffix}"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _dotted(cfg, key: str):
    node = cfg.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_seed_example_loads_with_a_note_per_key(name, tmp_path):
    path = _write(tmp_path, name)
    notes: list[str] = []
    cfg = load_config(path, notes=notes.append)
    for key, want in EXAMPLES[name][2].items():
        assert _dotted(cfg, key) == want, (key, _dotted(cfg, key), notes)
    assert notes or name in ALREADY_LMLAB, "a seed file says what it translated"
    assert all(line.startswith("seed 0") for line in notes), notes


def test_notes_name_the_seed_the_key_and_where_it_went(tmp_path):
    notes: list[str] = []
    load_config(_write(tmp_path, "seed000-knobs"), notes=notes.append)
    assert "seed 000 `train.plan_mi_weight` -> `model.plan_mi_weight`" in notes
    assert "seed 000 `train.num_workers` -> `data.num_workers`" in notes
    assert any(n.startswith("seed 000 `train.prefetch_factor` -> ignored: ") for n in notes)
    # one note per translated key: nothing translated twice
    assert len(notes) == len(set(notes))


def test_every_config_block_of_the_seeds_is_an_example_here():
    """The examples above are the seeds' own: each YAML/JSON config block and exp_config dict in
    ../shared/seeds matches one of them (so a seed block added later fails here until it is)."""
    if not SEEDS.is_dir():
        pytest.skip(f"{SEEDS} is absent (the seeds sit beside the checkout)")
    ours = [textwrap.dedent(text) for text, _, _ in EXAMPLES.values()]
    ours_norm = {" ".join(t.split()) for t in ours}
    blocks = []
    for path in sorted(SEEDS.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S):
            body = re.sub(r"^> ?", "", body, flags=re.M)
            if lang == "yaml" or (lang == "json" and '"model"' in body) or "exp_config = {" in body:
                blocks.append((path.name, body))
    assert len(blocks) >= 6, blocks
    for name, body in blocks:
        assert " ".join(body.split()) in ours_norm, f"{name}: a config block with no example here:\n{body}"


# ---------------------------------------------------------------------------- training for real


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, corpus_dir):
    """Run in an empty folder holding the seed 002 corpus at data/sample_texts.txt."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    text = "\n\n".join(p.read_text() for p in sorted(corpus_dir.rglob("*.txt"))[:12])
    (tmp_path / "data" / "sample_texts.txt").write_text(text, encoding="utf-8")
    return tmp_path


TINY = ["train.progress=false", "train.eval_batches=1", "train.eval_interval=2", "sample.max_new_tokens=4"]


def _train(path: Path, *sets: str) -> int:
    argv = ["train", "--config", str(path)]
    for s in (*TINY, *sets):
        argv += ["--set", s]
    return cli(argv)


def test_seed002_yaml_trains_at_a_tiny_size(in_tmp):
    path = _write(in_tmp, "seed002-waveresnet-small")
    assert _train(path, "model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.d_mlp=64",
                  "model.block_size=32", "tokenizer.vocab_size=300", "train.precision=fp32", "train.epochs=null",
                  "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=1") == 0
    run = in_tmp / "runs" / "lm" / "wrn_small"
    assert (run / "checkpoints" / "current").is_dir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["family"] == "psann" and saved["model"]["base"] == "waveresnet"


def test_seed002_keys_train_with_their_own_batch_tokens(in_tmp):
    """Nothing overridden but the size: seed 002's batch_tokens, epochs and char tokenizer as written."""
    path = _write(in_tmp, "seed002-keys")
    assert _train(path) == 0
    m = json.loads((in_tmp / "runs" / "lm" / "respsann" / "metrics.json").read_text())
    assert m["vocab_size"] < 120  # the char ("simple") tokenizer


def test_seed000_knobs_train(in_tmp, corpus_dir):
    path = _write(in_tmp, "seed000-knobs")
    assert _train(path, f"data.sources=[{{type: text, path: {corpus_dir}}}]", "model.preset=tiny",
                  "model.n_layer=1", "model.block_size=32", "model.chunk_size=8", "tokenizer.vocab_size=300",
                  "train.max_steps=2", "train.batch_size=2", "train.out_dir=runs/apelr", "train.warmup_steps=1",
                  "train.allow_tf32=false") == 0
    cfg = load_config(in_tmp / "runs" / "apelr" / "config.yaml")
    assert cfg.model.plan_mi_weight == 0.02 and cfg.data.num_workers == 2


def test_seed003_two_stages_train_as_written(in_tmp):
    """Stage 1 (no top model) saves its base; stage 2's `{...}` top model loads it with
    --load_base_from and trains on the frozen levels."""
    tiny = ["model.preset=tiny", "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=1"]
    stage1 = _write(in_tmp, "seed003-stage1")
    assert _train(stage1, *tiny, "train.out_dir=runs/stage1") == 0
    assert (in_tmp / "stage1_base.pt").is_file()
    stage2 = _write(in_tmp, "seed003-stage2")
    argv = ["train", "--config", str(stage2), "--load_base_from", "./stage1_base.pt"]
    for s in (*TINY, *tiny, "train.out_dir=runs/stage2"):
        argv += ["--set", s]
    assert cli(argv) == 0
    cfg = load_config(in_tmp / "runs" / "stage2" / "config.yaml")
    assert cfg.model.load_base_from == "./stage1_base.pt" and cfg.model.top_transformer_config is not None


def test_seed003_max_steps_caps_num_epochs(in_tmp):
    path = _write(in_tmp, "seed003-training")
    assert _train(path, "model.preset=tiny", "train.batch_size=2", "train.warmup_steps=1") == 0
    m = json.loads((in_tmp / "checkpoints" / "metrics.json").read_text())
    assert m["steps"] == 3  # two epochs of the pydocs corpus are far more than 3 steps


def test_seed003_resume_from_checkpoint_continues_that_run(in_tmp):
    path = _write(in_tmp, "seed003-training")
    tiny = ["model.preset=tiny", "train.batch_size=2", "train.warmup_steps=1"]
    assert _train(path, *tiny, "train.max_steps=2") == 0
    text = path.read_text().replace("'resume_from_checkpoint': None", "'resume_from_checkpoint': './checkpoints/checkpoints/current/model.safetensors'")
    text = text.replace("'checkpoint_dir': './checkpoints',", "")
    path.write_text(text)
    notes: list[str] = []
    cfg = load_config(path, notes=notes.append)
    assert Path(cfg.train.out_dir).resolve() == (in_tmp / "checkpoints").resolve(), notes


# ------------------------------------------------------------------------------------- errors


def test_a_moved_key_says_where_it_lives():
    with pytest.raises(ConfigError, match=r"model.num_plan_states = 4: unknown key \(it is model.num_plan_states of the apelr family\)"):
        load_config(raw={"model": {"family": "transformer", "num_plan_states": 4}})
    with pytest.raises(ConfigError, match=r"train.val_fraction = 0.1: unknown key \(it is data.val_fraction\)"):
        load_config(raw={"train": {"val_fraction": 0.1}})


def test_every_bad_key_at_once_in_one_line():
    with pytest.raises(ConfigError) as e:
        load_config(raw={"train": {"plan_mi_weightt": 1, "foo": 2, "lr": 1e-3},
                         "data": {"streamng": True}, "model": {"family": "apelr", "lr": 3}})
    line = str(e.value)
    assert "\n" not in line and "4 unknown keys" in line
    assert "train.plan_mi_weightt (did you mean model.plan_mi_weight?)" in line
    assert "model.lr (it is train.lr)" in line and "train.foo" in line and "data.streamng" in line


def test_no_misleading_hints():
    """The issue's three: a distant close match is no hint (the table or a home says it instead)."""
    with pytest.raises(ConfigError) as e:
        load_config(raw={"sample": {"num_workers": 2, "chunk_bow_warmup_steps": 3, "matmul_precision": "high"}})
    line = str(e.value)
    assert "num_threads" not in line and "'warmup_steps'" not in line and "'precision'" not in line
    assert "sample.num_workers (it is data.num_workers)" in line
    assert "sample.matmul_precision (it is train.matmul_precision)" in line


def test_a_key_no_table_knows_still_fails(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model: {base: waveresnet, n_layers: 2, wobble: 3}\n")
    with pytest.raises(ConfigError, match=r"model.wobble = 3: unknown key"):
        load_config(p)


def test_a_dialect_key_and_its_lmlab_key_clash():
    with pytest.raises(ConfigError, match=r"seed 000 `train.plan_mi_weight`: `model.plan_mi_weight` is set too"):
        load_config(raw={"model": {"family": "apelr", "plan_mi_weight": 0.1}, "train": {"plan_mi_weight": 0.2}})
    cfg = load_config(raw={"model": {"family": "apelr", "plan_mi_weight": 0.1}, "train": {"plan_mi_weight": 0.1}})
    assert cfg.model.plan_mi_weight == 0.1  # the same value twice is no clash


def test_refused_spellings_say_what_to_do(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("data: {pack_sequences: false}\nmodel: {rope: false}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    line = str(e.value)
    assert "seed 002 `data.pack_sequences`: false: lmlab packs" in line
    assert "seed 002 `model.rope`: False: without rope, say which positions" in line


def test_python_config_is_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    p = tmp_path / "exp.py"
    p.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
                 "exp_config = {'learning_rate': 5e-4, 'batch_size': 4}\n")
    cfg = load_config(p, notes=lambda _: None)
    assert not marker.exists()
    assert (cfg.train.lr, cfg.train.batch_size, cfg.model.family) == (5e-4, 4, "abstractinator")


def test_python_config_names_every_value_it_cannot_read(tmp_path):
    p = tmp_path / "exp.py"
    p.write_text("import os\nDEVICE = 'cuda'\nexp_config = {\n  'device': DEVICE,\n  'batch_size': os.cpu_count(),\n"
                 "  'learning_rate': 1e-3,\n}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    line = str(e.value)
    assert "2 value(s) of exp_config are not literals" in line
    assert "'device' (line 4: DEVICE)" in line and "'batch_size' (line 5: os.cpu_count())" in line
    p.write_text("config = {}\n")
    with pytest.raises(ConfigError, match="no `exp_config = {...}`"):
        load_config(p)


def test_seed001_corpus_names():
    cfg = load_config(raw={"data": {"sources": ["c4", {"type": "named", "name": "c4"}]}}, notes=lambda _: None)
    assert [s.name for s in cfg.data.sources] == ["c4_en", "c4_en"]


def test_family_alias():
    cfg = load_config(raw={"model": {"family": "waveresnet", "preset": "tiny"}})
    assert (cfg.model.family, cfg.model.base) == ("psann", "waveresnet")
    with pytest.raises(ConfigError, match="contradicts"):
        load_config(raw={"model": {"family": "waveresnet", "base": "respsann"}})


def test_an_old_run_dirs_saved_keys_still_load():
    """Run dirs saved before the table held these keys wrote them as null: they load as before."""
    raw = {"data": {"tokenizer_fit_max_examples": None, "tokenizer_fit_max_chars": None},
           "tokenizer": {"fit_max_examples": 123}, "train": {"num_epochs": None, "max_steps": 7}}
    notes: list[str] = []
    cfg = load_config(raw=raw, notes=notes.append)
    assert (cfg.tokenizer.fit_max_examples, cfg.train.max_steps, cfg.train.epochs) == (123, 7, None)
    assert notes == []


# ------------------------------------------------------------------------------- config command


def test_config_convert_prints_yaml_that_loads_the_same(tmp_path, capsys):
    for name in ("seed002-waveresnet-small", "seed003-stage1", "seed000-knobs"):
        src = _write(tmp_path, name)
        assert cli(["config", "convert", str(src)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"# {src} in lmlab's spelling") and "# seed 0" in out
        converted = tmp_path / f"{name}.converted.yaml"
        converted.write_text(out)
        notes: list[str] = []
        assert load_config(converted, notes=notes.append).to_dict() == \
            load_config(src, notes=lambda _: None).to_dict()
        assert notes == []  # already lmlab's spelling


def test_config_show_a_run_and_a_file(tmp_path, capsys, tiny_config):
    path, raw, run = tiny_config(train={"max_steps": 2})
    assert cli(["train", "--config", str(path)]) == 0
    capsys.readouterr()
    for target in (run, run / "checkpoints" / "current", run / "checkpoints" / "current" / "meta.json"):
        assert cli(["config", "show", str(target)]) == 0
        shown = yaml.safe_load(capsys.readouterr().out)
        assert shown["train"]["max_steps"] == 2 and shown["model"]["n_layer"] == 2
    assert cli(["config", "show", str(path), "--set", "train.lr=0.5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 0.5


def test_tables_are_data_every_rule_is_well_formed():
    for table in compat.tables():
        for rule in (*table.keys.values(), *table.in_dialect.values()):
            kinds = [rule.to is not None, rule.ignore is not None, rule.refuse is not None]
            assert sum(kinds) == 1, rule
            assert rule.transform is None or rule.transform in compat.TRANSFORMS, rule


# ------------------------------------------------------------------------ the seeds' command lines


@pytest.fixture(scope="module")
def apelr_run(tmp_path_factory, make_raw, corpus_dir):
    """A tiny APEL-R v2 run, as seed 000's quick start trains one."""
    run = tmp_path_factory.mktemp("seedcmd") / "tinystories_smoke"
    raw = make_raw(corpus_dir, run, model={"family": "apelr", "preset": "tiny", "block_size": 96},
                   train={"max_steps": 4, "eval_interval": 4, "save_interval": 4})
    path = run.parent / "tinystories_smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli(["train", "--config", str(path)]) == 0  # python -m apelr.train --config configs/...
    return run


SEED000_SAMPLE_COMMANDS = [
    # python -m apelr.sample --checkpoint runs/tinystories_smoke/checkpoint.pt --prompt "Once upon a time"
    ["--prompt", "Once upon a time"],
    # "Sampling Options" 1-9
    ["--prompt", "The ", "--temperature", "0.8", "--top-k", "20", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--lookahead-steps", "2", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--force-state", "1", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--freeze-planner", "--planner-temperature", "0.7", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--lookahead-feedback-scale", "0.1", "--no-async-planner", "--max-new-tokens", "8"],
]


@pytest.mark.parametrize("flags", SEED000_SAMPLE_COMMANDS, ids=lambda f: " ".join(f[2:]) or "quick-start")
def test_seed000_sample_commands(apelr_run, flags, capsys):
    # seed 000's checkpoint path: a file inside the run dir (lmlab reads the run dir's newest snapshot)
    assert cli(["sample", "--checkpoint", str(apelr_run / "checkpoint.pt"), *flags]) == 0
    assert "--- sample 1 ---" in capsys.readouterr().out


def test_seed000_eval_command(apelr_run, tmp_path, capsys):
    """python -m apelr.eval_standard --checkpoints RUN/checkpoint.pt --tasks wikitext2,... --max-examples N
    --max-input-len 96 --output runs/eval_compare.json"""
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not (data / "eval").is_dir():
        pytest.skip(f"shared eval data not found at {data} (see ../shared/data/MANIFEST.md)")
    out = tmp_path / "eval_compare.json"
    tasks = "wikitext2,lambada_openai,hellaswag,arc_easy,arc_challenge,winogrande_xl,openbookqa,boolq"
    assert cli(["eval", "--checkpoints", str(apelr_run / "checkpoint.pt"), "--tasks", tasks, "--max-examples", "2",
                "--max-input-len", "96", "--output", str(out), "--data-dir", str(data)]) == 0
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["name"] == "tinystories_smoke" and len(run["tasks"]) == 8
    assert "wikitext2" in json.loads((apelr_run / "eval_results.json").read_text())["tasks"]


def test_seed003_resume_flag(in_tmp):
    """python train.py --config experiments/exp_config.py --resume_from_checkpoint <path>"""
    path = _write(in_tmp, "seed003-training")
    tiny = ["model.preset=tiny", "train.batch_size=2", "train.warmup_steps=1"]
    assert _train(path, *tiny, "train.max_steps=2") == 0
    argv = ["train", "--resume_from_checkpoint", str(in_tmp / "checkpoints" / "checkpoints" / "current"),
            "--set", "train.max_steps=3"]
    assert cli(argv) == 0
    assert json.loads((in_tmp / "checkpoints" / "metrics.json").read_text())["steps"] == 3


def test_a_run_dir_saved_with_the_old_fit_spelling_resumes(tiny_config, reseal):
    """Before the tables, data.tokenizer_fit_max_chars sat in the schema and won over
    tokenizer.fit_max_chars; a run dir saved then (config.yaml and meta.json) still resumes."""
    import lmlab
    from lmlab import rundir

    _, raw, run = tiny_config(train={"max_steps": 2})
    lmlab.train(raw)
    cfg_file, snap = rundir.config_path(run), run / "checkpoints" / "current"
    saved = yaml.safe_load(cfg_file.read_text())
    meta = json.loads((snap / "meta.json").read_text())
    for conf in (saved, meta["config"]):  # as an older lmlab wrote them
        conf["data"].update(tokenizer_fit_max_chars=40, tokenizer_fit_max_examples=None)
        conf["train"]["num_epochs"] = None
    cfg_file.write_text(yaml.safe_dump(saved))
    (snap / "meta.json").write_text(json.dumps(meta))
    reseal(snap)
    assert load_config(cfg_file, notes=lambda _: None).tokenizer.fit_max_chars == 40
    assert cli(["train", "--resume", str(run), "--set", "train.max_steps=3"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3

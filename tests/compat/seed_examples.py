"""The seeds' config examples, verbatim (data for tests/compat; loaded with runpy, as the tests
run with --import-mode=importlib), and ``write(tmp_path, name)`` to put one in a file."""

from __future__ import annotations

import textwrap
from pathlib import Path

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
        "train.mlflow.experiment": "TemporalAutoencodedLanguageModelling", "train.mlflow.batch_interval": 50,
        # project_name: MLflow under ./mlruns/<project_name>, as the seed logs
        "train.trackers": ["jsonl", "mlflow"],
        "train.mlflow.tracking_uri": "sqlite:///mlruns/TemporalAutoencodedLanguageModelling/mlflow.db"}),
}


ALREADY_LMLAB = {"seed000-distributed"}  # lmlab took seed 000's spelling of these keys as its own



def write(tmp_path: Path, name: str) -> Path:
    """Example ``name`` as a file of its own format in ``tmp_path``."""
    text, suffix, _ = EXAMPLES[name]
    path = tmp_path / f"{name}{suffix}"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path

"""Seed 001's JSON presets as a dialect: their strict schema and the lmlab run config each stands for.

The continuous package (``lmlab/continuous``) finds, lists and reads preset files and hands
the dict here; ``read_seed_file`` does the same for a preset given as ``--config``.

A preset has ``model``, ``train`` and ``data`` sections in the seed's shape, plus optional
``auxiliary``, ``tokenizer`` and ``sample`` sections. Every section is strict: an unknown key or a
wrong type is a one-line error naming the file, the key and what is allowed. The mapping
(docs/continuous.md has the table):

- model: ``hidden_size`` -> d_model, ``num_layers`` -> n_layer, ``num_heads`` -> n_head,
  ``seq_length`` -> block_size and train.seq_len; ``family`` / ``preset`` / ``options`` pass on
  to the family's own (strict) config.
- train: ``per_gpu_batch_size`` -> batch_size, ``accumulation_steps`` -> grad_accum_steps,
  ``eval_tokens`` -> eval_batches, ``*_interval_tokens`` -> step intervals; ``train_tokens`` is
  read and overridden by the fixed target of every run.
- data: sources and mixing as in lmlab's data section; ``mix_strategy: adaptive`` (or
  ``auxiliary.enable_adaptive_sources``) is lmlab's ``data.adaptive`` on round-robin / weighted turns.
- auxiliary: the heads (``model.auxiliary``) and the adaptive-source knobs (``data.adaptive_*``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lmlab.config import DEFAULT_FAMILY, AuxiliaryConfig, SampleConfig, TokenizerConfig
from lmlab.errors import ConfigError
from lmlab.safeload import load_file
from lmlab.strict import Strict, validate_strict
from lmlab.train_config import MAX_WORKERS, Int, Seed

TARGET_TOKENS = 100_000_000
"""Every run of ``main.py`` trains this many tokens (seed 001: fixed, whatever a preset says)."""

class PresetModel(Strict):
    family: str = DEFAULT_FAMILY
    preset: str | None = None
    """A family preset to start from (its fields are overridden by the ones below)."""
    hidden_size: Int = Field(ge=1)
    num_layers: Int = Field(ge=1)
    num_heads: Int = Field(ge=1)
    seq_length: Int = Field(ge=2)
    dropout: float = Field(0.0, ge=0, lt=1)
    options: dict[str, Any] = Field(default_factory=dict)
    """Further fields of the family's config (e.g. ``pos_encoding``), validated by it."""


class PresetTrain(Strict):
    per_gpu_batch_size: Int = Field(ge=1)
    accumulation_steps: Int = Field(1, ge=1)
    eval_tokens: Int = Field(2_000_000, ge=1)
    """Validation tokens scored at every periodic and the final eval (all sources together)."""
    train_tokens: Int | None = Field(None, ge=1)
    """Accepted for the seed's presets and ignored: every run trains ``TARGET_TOKENS``."""
    eval_interval_tokens: Int = Field(5_000_000, ge=1)
    save_interval_tokens: Int = Field(5_000_000, ge=1)
    log_interval_steps: Int = Field(1, ge=1)
    lr: float = Field(6e-4, gt=0)
    min_lr: float = Field(6e-5, ge=0)
    warmup_steps: Int = Field(200, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 autocast on a GPU that supports it (TF32 matmuls on), else fp32."""
    compile: bool = False
    seed: Seed = 1337
    out_dir: str = "runs/main"
    """Where the one model lives (``checkpoints/lm_current`` inside it)."""
    auxiliary: dict[str, Any] | None = None
    """The ``auxiliary`` section may also sit here (the seed's presets vary); not both places."""


class PresetData(Strict):
    sources: list[Any] = Field(min_length=1)
    mix_strategy: Literal["round_robin", "sequential", "weighted", "adaptive"] = "round_robin"
    source_weights: list[float] | None = None
    min_text_length: Int = Field(0, ge=0)
    val_fraction: float = Field(0.01, gt=0, lt=1)
    max_train_tokens: Int | None = Field(None, ge=1)
    """Read at most this many training tokens from the sources (streams are otherwise endless)."""
    max_val_tokens: Int | None = Field(2_000_000, ge=1)
    token_cache: bool = True
    num_workers: Int = Field(0, ge=0, le=MAX_WORKERS)


class PresetAuxiliary(AuxiliaryConfig):
    enable_adaptive_sources: bool = False
    adaptive_interval_tokens: Int = Field(5_000_000, ge=1)
    adaptive_min_weight: float = Field(0.5, gt=0)
    adaptive_max_weight: float = Field(3.0, gt=0)
    adaptive_smoothing: float = Field(0.9, ge=0, lt=1)


class Preset(Strict):
    name: str | None = None
    description: str = ""
    model: PresetModel
    train: PresetTrain
    data: PresetData
    auxiliary: PresetAuxiliary = Field(default_factory=PresetAuxiliary)
    tokenizer: TokenizerConfig = Field(default_factory=lambda: TokenizerConfig(type="bpe", vocab_size=8192))
    sample: SampleConfig = Field(default_factory=lambda: SampleConfig(
        prompts=["The ", "Q: What is the capital of France?\nA:"], max_new_tokens=80, temperature=0.8,
        top_k=None, top_p=0.9, no_repeat_ngram_size=3))
    """Decoding of the samples printed after each run: top-p nucleus sampling with n-gram
    repetition blocking, as in the seed."""

    @model_validator(mode="before")
    @classmethod
    def _auxiliary_in_train(cls, raw: Any) -> Any:
        """``train.auxiliary`` is the same section as a top-level ``auxiliary``."""
        if isinstance(raw, dict) and isinstance(raw.get("train"), dict) and "auxiliary" in raw["train"]:
            if "auxiliary" in raw:
                raise ValueError("auxiliary is given twice (top level and train.auxiliary); keep one")
            raw = {**raw, "train": {k: v for k, v in raw["train"].items() if k != "auxiliary"},
                   "auxiliary": raw["train"]["auxiliary"]}
        return raw


def read_preset(path: Path) -> Preset:
    """Read and validate one preset file through the one safe reader (``safeload.load_file``: a
    repeated key, deep nesting, an empty file or bytes that are not UTF-8 are one line naming the
    file), then the schema."""
    return validate_preset(load_file(path, "preset", "a JSON preset, e.g. configs/presets/00_best_general.json"),
                           str(path))


def validate_preset(raw: Any, source: str) -> Preset:
    """A preset's parsed JSON, validated (one-line errors naming ``source`` and the key)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a preset must be a JSON object with model, train and data sections")
    return validate_strict(Preset, raw, source)


def to_run_config(preset: Preset, name: str, target_tokens: int = TARGET_TOKENS, world: int = 1,
                  cuda_bf16: bool = False) -> dict[str, Any]:
    """The lmlab run config (a raw dict for ``validate_config``) preset ``name`` stands for, for
    ``world`` processes (the token intervals become step intervals)."""
    m, t, d, a = preset.model, preset.train, preset.data, preset.auxiliary
    tokens_per_step = t.per_gpu_batch_size * m.seq_length * t.accumulation_steps * world
    heads = a.model_dump(include=set(AuxiliaryConfig.model_fields))
    model = {"family": m.family, **({"preset": m.preset} if m.preset else {}), **m.options,
             "d_model": m.hidden_size, "n_layer": m.num_layers, "n_head": m.num_heads,
             "block_size": m.seq_length, "dropout": m.dropout,
             "auxiliary": heads if AuxiliaryConfig(**heads).any_enabled else None}
    adaptive = d.mix_strategy == "adaptive" or a.enable_adaptive_sources
    mix = d.mix_strategy if d.mix_strategy != "adaptive" else ("weighted" if d.source_weights else "round_robin")
    if adaptive and mix == "sequential":
        raise ConfigError("data.mix_strategy = 'sequential' with auxiliary.enable_adaptive_sources: adaptive "
                          "reweighting needs round_robin or weighted turns; change one of them")
    precision = t.precision if t.precision != "auto" else ("bf16" if cuda_bf16 else "fp32")
    out_dir = Path(t.out_dir)
    return {
        "data": {
            "sources": d.sources, "mix_strategy": mix, "source_weights": d.source_weights,
            "min_text_length": d.min_text_length, "val_fraction": d.val_fraction,
            "max_train_tokens": d.max_train_tokens, "max_val_tokens": d.max_val_tokens,
            "token_cache": d.token_cache, "num_workers": d.num_workers,
            # One cache per preset, rebuilt when its data changes (a preset is edited in place).
            "token_cache_dir": str(out_dir / "token_cache" / name), "reuse_token_cache": False,
            "adaptive": adaptive, "adaptive_interval_tokens": a.adaptive_interval_tokens,
            "adaptive_smoothing": a.adaptive_smoothing, "adaptive_min_weight": a.adaptive_min_weight,
            "adaptive_max_weight": a.adaptive_max_weight,
        },
        "tokenizer": preset.tokenizer.model_dump(),
        "model": model,
        "train": {
            "out_dir": str(out_dir), "seed": t.seed, "batch_size": t.per_gpu_batch_size,
            "grad_accum_steps": t.accumulation_steps, "seq_len": m.seq_length, "max_tokens": target_tokens,
            "lr": t.lr, "min_lr": t.min_lr, "warmup_steps": t.warmup_steps, "weight_decay": t.weight_decay,
            "grad_clip": t.grad_clip, "precision": precision, "compile": t.compile,
            "log_interval": t.log_interval_steps,
            "eval_interval": max(1, round(t.eval_interval_tokens / tokens_per_step)),
            "save_interval": max(1, round(t.save_interval_tokens / tokens_per_step)),
            "eval_batches": max(1, math.ceil(t.eval_tokens / (t.per_gpu_batch_size * m.seq_length))),
        },
        "sample": preset.sample.model_dump(),
    }

"""Typed, strict run config shared by every command.

A run config has four sections: ``data``, ``tokenizer``, ``model`` (validated by the family's own
config class, see ``registry.py``), ``train`` and ``sample``. Files are YAML or JSON; overrides come
from the command line as ``--set section.key=value`` (the value parses as YAML). Any unknown key,
wrong type or bad value raises :class:`ConfigError` with one line naming the source, the key, the
value and what is allowed.
"""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from lmlab.errors import ConfigError
from lmlab.strict import Strict, check_keys, format_validation_error

# ----------------------------------------------------------------------------------------- data


class BuiltinSource(Strict):
    """A corpus that ships with lmlab (read at run time, never stored in the repo)."""

    type: Literal["builtin"] = "builtin"
    name: Literal["pydocs"] = "pydocs"


class Formatted(Strict):
    """How a record becomes text: one ``text_field``, or several ``fields`` put into ``format``.

    ``{fields: [question, answer], format: "Q: {question}\nA: {answer}"}`` formats Q/A records.
    """

    text_field: str = "text"
    fields: list[str] | None = None
    format: str | None = None

    @model_validator(mode="after")
    def _fields_and_format(self) -> Formatted:
        if (self.fields is None) != (self.format is None):
            raise ValueError("fields and format go together: give both (or neither, to use text_field)")
        if self.format is not None:
            import string

            used = {name for _, name, _, _ in string.Formatter().parse(self.format) if name}
            missing = sorted(used - set(self.fields))
            if missing:
                raise ValueError(f"format uses {missing} which are not in fields {self.fields}")
        return self


class TextSource(Strict):
    """A text file, or a folder searched recursively with glob patterns (one document per file)."""

    type: Literal["text"] = "text"
    path: str
    glob: list[str] = Field(default_factory=lambda: ["**/*.txt", "**/*.md"])


class JsonlSource(Formatted):
    """A .jsonl file or folder of them; each line is an object that gives one document."""

    type: Literal["jsonl"] = "jsonl"
    path: str
    glob: list[str] = Field(default_factory=lambda: ["**/*.jsonl"])


class CsvSource(Formatted):
    """A .csv file or folder of them (header row); each row gives one document."""

    type: Literal["csv"] = "csv"
    path: str
    glob: list[str] = Field(default_factory=lambda: ["**/*.csv"])
    delimiter: str = Field(",", min_length=1, max_length=1)


class PdfSource(Strict):
    """A .pdf file or folder (recursive); text via pypdf, cut into ~chunk_chars-character documents."""

    type: Literal["pdf"] = "pdf"
    path: str
    glob: list[str] = Field(default_factory=lambda: ["**/*.pdf"])
    chunk_chars: int = Field(4000, ge=200)
    """Target document size; cuts fall at paragraph or sentence boundaries (3k-5k for 4000)."""


class HFSource(Formatted):
    """A Hugging Face dataset streamed with ``datasets.load_dataset(..., streaming=True)``.

    ``dataset`` is a hub id (``owner/name``) or a local builder (``json``, ``text``, ``csv``,
    ``parquet``) with ``data_files``.
    """

    type: Literal["hf"] = "hf"
    dataset: str
    name: str | None = None
    """The dataset's config name (``load_dataset(dataset, name)``)."""
    split: str = "train"
    data_files: str | list[str] | None = None
    revision: str | None = None


class NamedSource(Strict):
    """A corpus from lmlab's table of named corpora (see ``lmlab/data/corpora.py``)."""

    type: Literal["named"] = "named"
    name: str
    split: str | None = None
    """Override the table's train split (the val split always comes from held-out documents)."""


Source = Annotated[
    BuiltinSource | TextSource | JsonlSource | CsvSource | PdfSource | HFSource | NamedSource,
    Field(discriminator="type"),
]


class DataConfig(Strict):
    sources: list[Source] = Field(default_factory=lambda: [BuiltinSource()], min_length=1)
    """Each item is a source mapping, or a bare name: ``pydocs`` or a named corpus (``tinystories``)."""
    val_fraction: float = Field(0.05, gt=0.0, lt=1.0)
    """Share of documents held out for validation (split by document, deterministic)."""
    min_text_length: int = Field(0, ge=0)
    """Documents shorter than this many characters (after stripping) are dropped."""

    mix_strategy: Literal["round_robin", "sequential", "weighted"] = "round_robin"
    """How training batches draw from the sources: equal turns, one after another, or by weight."""
    source_weights: list[float] | None = None
    """One positive weight per source (``weighted``; the starting weights with ``adaptive``)."""
    adaptive: bool = False
    """Move the weights toward sources with higher recent loss (not with ``sequential``)."""
    adaptive_interval_tokens: int = Field(5_000_000, ge=1)
    adaptive_smoothing: float = Field(0.9, ge=0, lt=1)
    adaptive_min_weight: float = Field(0.5, gt=0)
    adaptive_max_weight: float = Field(3.0, gt=0)

    token_cache: bool = False
    """Tokenize once into on-disk memmap files (``.bin`` + ``index.json``) that training reads."""
    token_cache_dir: str | None = None
    """Where the cache lives (default: ``<train.out_dir>/token_cache``)."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes per rank that build token-cache shards in parallel (0: in the
    main process). The cache has ranks x max(1, num_workers) shards, each a disjoint share."""
    reuse_token_cache: bool = True
    """Reuse a cache built with the same tokenizer and sources; a mismatch is refused."""
    max_train_tokens: int | None = Field(None, ge=1)
    max_val_tokens: int | None = Field(None, ge=1)
    max_train_examples: int | None = Field(None, ge=1)
    """Stop reading after this many training documents (all sources together)."""
    tokenizer_fit_max_examples: int | None = Field(None, ge=1)
    """Seed-000 spelling of ``tokenizer.fit_max_examples``; when set, it is used instead."""
    tokenizer_fit_max_chars: int | None = Field(None, ge=1)
    """Seed-000 spelling of ``tokenizer.fit_max_chars``; when set, it is used instead."""

    @model_validator(mode="before")
    @classmethod
    def _bare_names(cls, raw: Any) -> Any:
        """``sources: [pydocs, tinystories]`` -> the mappings they stand for."""
        if isinstance(raw, dict) and isinstance(raw.get("sources"), list):
            raw = dict(raw)
            raw["sources"] = [_bare_source(s) for s in raw["sources"]]
        return raw

    @model_validator(mode="after")
    def _check_mixing(self) -> DataConfig:
        n = len(self.sources)
        if self.source_weights is not None:
            if len(self.source_weights) != n:
                raise ValueError(f"source_weights has {len(self.source_weights)} entries for {n} sources")
            if any(w <= 0 for w in self.source_weights):
                raise ValueError(f"source_weights must all be positive, got {self.source_weights}")
        elif self.mix_strategy == "weighted":
            raise ValueError("mix_strategy weighted needs source_weights (one per source)")
        if self.adaptive and self.mix_strategy == "sequential":
            raise ValueError("adaptive reweighting needs round_robin or weighted mixing, not sequential")
        if self.adaptive_min_weight > self.adaptive_max_weight:
            raise ValueError("adaptive_min_weight must not exceed adaptive_max_weight")
        return self


def _bare_source(item: Any) -> Any:
    if not isinstance(item, str):
        return item
    return {"type": "builtin", "name": item} if item == "pydocs" else {"type": "named", "name": item}


# ------------------------------------------------------------------------------------ tokenizer


class TokenizerConfig(Strict):
    type: Literal["auto", "byte", "char", "bpe", "sentencepiece"] = "auto"
    """``auto`` resolves sentencepiece -> bpe (HF tokenizers) -> char by what imports."""
    vocab_size: int = Field(2048, ge=16)
    """Target vocabulary for bpe/sentencepiece (byte and char ignore it)."""
    sp_model_type: Literal["bpe", "unigram"] = "bpe"
    fit_max_examples: int | None = Field(20_000, ge=1)
    """At most this many documents are used to fit the tokenizer (None: all)."""
    fit_max_chars: int | None = Field(4_000_000, ge=1)
    """At most this many characters are used to fit the tokenizer (None: all)."""
    model_path: str | None = None
    """A prebuilt tokenizer to load instead of fitting (a tokenizer dir saved by lmlab)."""


# ---------------------------------------------------------------------------------------- model


class AuxiliaryConfig(Strict):
    """Auxiliary planning heads (seed 001; ``lmlab/models/heads``), all off by default. Each
    enabled head adds ``weight * loss`` to the LM loss. Any family that exposes hidden states
    (transformer, psann, apelr) can train with them."""

    enable_policy: bool = False
    enable_value: bool = False
    enable_dynamics: bool = False
    enable_span_contrastive: bool = False
    policy_kl_weight: float = Field(0.05, ge=0)
    value_weight: float = Field(0.05, ge=0)
    dynamics_weight: float = Field(0.05, ge=0)
    span_contrastive_weight: float = Field(0.05, ge=0)
    policy_positions: int | None = Field(32, ge=1)
    """Random positions per row where the policy head is fitted (None: every position)."""
    value_span: int = Field(8, ge=1)
    """The value head predicts the mean NLL of the next ``value_span`` targets."""
    dynamics_rollout_steps: int = Field(1, ge=1, le=8)
    """Latent rollout length of the dynamics loss (2-3 for multi-step consistency)."""
    span_mask_fraction: float = Field(0.15, gt=0, lt=1)
    span_contrastive_temperature: float = Field(0.07, gt=0)
    span_l2_normalize: bool = True

    @property
    def any_enabled(self) -> bool:
        return self.enable_policy or self.enable_value or self.enable_dynamics or self.enable_span_contrastive


class ModelConfig(Strict):
    """Base of every family's config. Families subclass it and add their fields and presets."""

    family: str = "transformer"
    preset: str | None = None
    vocab_size: int | None = Field(None, ge=2)
    """Filled from the tokenizer when the model is built; set it only to check it."""
    block_size: int = Field(128, ge=2)
    """Context length in the family's units (tokens, or bytes for byte-level families)."""
    auxiliary: AuxiliaryConfig | None = None
    """Auxiliary planning heads trained with the LM (None: none)."""

    presets: typing.ClassVar[dict[str, dict[str, Any]]] = {}
    required_tokenizer: typing.ClassVar[str | None] = None
    """A family that reads one unit only (the abstractinator: bytes) refuses other tokenizers."""

    @classmethod
    def upgrade_checkpoint_config(cls, model: dict[str, Any]) -> dict[str, Any]:
        """A saved ``model`` section in the current schema (families whose fields changed
        meaning override it, e.g. apelr: no ``version`` means v1)."""
        return model


# ---------------------------------------------------------------------------------------- train


BUDGET_KEYS = ("max_steps", "max_tokens", "epochs")


class DistributedConfig(Strict):
    """Process-group knobs (seed 000's ``train.distributed``)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """``auto``: nccl on CUDA, gloo on CPU."""
    zero_optimizer: bool = False
    """Shard the AdamW state over the ranks (``ZeroRedundancyOptimizer``; ``parallel: ddp``)."""


class FsdpConfig(Strict):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) options, used with ``parallel: fsdp``."""

    cpu_offload: bool = False
    """Keep the sharded parameters, gradients and optimizer state in CPU memory (CUDA only)."""
    reshard_after_forward: bool = True
    """Free each block's gathered weights after its forward (less memory, one more all-gather)."""


class AdaptiveBatchConfig(Strict):
    """``batch_size: auto``: the micro-batch is the largest that fits in the GPU's memory (seed 000).

    The optimizer step always takes ``max_batch_size x grad_accum_steps`` sequences per process,
    as if ``batch_size`` were ``max_batch_size``: the probe picks a micro-batch that divides that
    and accumulates the rest, so the micro-batch never changes the math.
    """

    enabled: bool = True
    probe_batch_size: int = Field(2, ge=1)
    """The first micro-batch tried; the search doubles from there."""
    min_batch_size: int = Field(1, ge=1)
    max_batch_size: int = Field(64, ge=1)
    safety_factor: float = Field(0.9, gt=0, le=1)
    """Use at most this share of the device's memory at the probed peak."""
    reprobe_interval_steps: int = Field(0, ge=0)
    """Probe again every this many steps (0: only at the start)."""

    @model_validator(mode="after")
    def _range(self) -> AdaptiveBatchConfig:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError(f"min_batch_size ({self.min_batch_size}) exceeds max_batch_size ({self.max_batch_size})")
        return self


class TrainConfig(Strict):
    out_dir: str = "runs/default"
    seed: int = 1337
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    num_threads: int | None = Field(None, ge=1)
    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = 16
    """Sequences per micro-batch per process; the global batch is this x grad_accum x world.
    ``auto``: probe the GPU's memory for the micro-batch (``adaptive_batch``)."""
    adaptive_batch: AdaptiveBatchConfig = Field(default_factory=AdaptiveBatchConfig)
    grad_accum_steps: int = Field(1, ge=1)
    seq_len: int | None = Field(None, ge=1)
    """Training and eval window length in tokens; None: ``model.block_size`` (it may not exceed it)."""
    max_steps: int | None = Field(1000, ge=1)
    """Training budget: one of max_steps, max_tokens (global tokens) or epochs over the train split."""
    max_tokens: int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    num_epochs: float | None = Field(None, gt=0)
    """Seed-003 spelling of ``epochs`` (the abstractinator's ``exp_config['num_epochs']``)."""
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    """Max global grad norm; 0 disables clipping."""
    on_nonfinite: Literal["stop", "skip_step"] = "stop"
    """A non-finite loss or gradient norm (all ranks agree): ``stop`` with one line naming the step
    and the last good snapshot (nothing non-finite is saved); ``skip_step`` drops that optimizer
    step and stops after ``max_nonfinite_steps`` consecutive ones."""
    max_nonfinite_steps: int = Field(10, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    """``torch.compile`` the model (seed 000 spells it ``{enabled: true}``)."""
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    """Data parallelism (``lmlab/training/parallel.py``): ``auto`` is ddp under torchrun, none
    otherwise; ``fsdp`` shards parameters, gradients and optimizer state per block (FSDP2)."""
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    save_optimizer_state: bool = True
    """false: snapshots keep weights, step and data position but not the optimizer state
    (smaller), so a resume continues with a fresh optimizer and is not bit-exact."""
    allow_tf32: bool = False
    """TF32 matmuls and convolutions on Ampere/Hopper GPUs (faster, ~1e-3 relative error)."""
    matmul_precision: Literal["highest", "high", "medium"] | None = None
    """``torch.set_float32_matmul_precision`` for the run (None: leave PyTorch's setting)."""
    fused_adamw: Literal["auto"] | bool = "auto"
    """The fused AdamW kernel: ``auto`` uses it where PyTorch has it (CUDA, CPU)."""
    grad_checkpoint: bool = False
    """Recompute each block's activations in backward (less memory, ~1/3 more compute)."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    log_interval: int = Field(10, ge=1)
    eval_interval: int = Field(200, ge=1)
    eval_batches: int = Field(20, ge=1)
    save_interval: int = Field(200, ge=1)
    progress: bool = True
    eval_planner_diagnostics: bool = False
    """Planner families (apelr): add the planner diagnostics to planner_eval.json at every eval."""
    final_eval_planner_diagnostics: bool = True
    """Planner families: write the final planner diagnostics to planner_eval.json."""

    @model_validator(mode="before")
    @classmethod
    def _compile_section(cls, raw: Any) -> Any:
        """Seed 000's ``compile: {enabled: true}`` -> ``compile: true``."""
        if isinstance(raw, dict) and isinstance(raw.get("compile"), dict):
            section = raw["compile"]
            unknown = sorted(set(section) - {"enabled"})
            if unknown:
                raise ValueError(f"compile: unknown key(s) {unknown}; the section takes only enabled (true/false)")
            raw = {**raw, "compile": section.get("enabled", True)}
        return raw

    @model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        if self.num_epochs is not None:
            if self.epochs is not None and self.epochs != self.num_epochs:
                raise ValueError(f"num_epochs ({self.num_epochs}) and epochs ({self.epochs}) name one budget; "
                                 "set only one")
            object.__setattr__(self, "epochs", self.num_epochs)
            self.model_fields_set.add("epochs")
        # Setting max_tokens or epochs replaces the default max_steps.
        if "max_steps" not in self.model_fields_set and (self.max_tokens or self.epochs):
            object.__setattr__(self, "max_steps", None)
        set_ = [k for k in BUDGET_KEYS if getattr(self, k) is not None]
        if len(set_) > 1:
            raise ValueError(f"set only one of max_steps, max_tokens, epochs (got {', '.join(set_)})")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.allow_tf32 and self.matmul_precision == "highest":
            raise ValueError("allow_tf32: true and matmul_precision: highest contradict each other; drop one")
        return self

    @property
    def batch_target(self) -> int:
        """Sequences per micro-batch slot: ``batch_size``, or with ``auto`` the adaptive maximum
        (the micro-batch the probe may split into smaller ones)."""
        return self.adaptive_batch.max_batch_size if self.batch_size == "auto" else self.batch_size


# --------------------------------------------------------------------------------------- sample


class DecodeSettings(Strict):
    """How to decode: the knobs of the shared decoding loop (``lmlab.generate``)."""

    max_new_tokens: int = Field(200, ge=1)
    temperature: float = Field(0.8, ge=0)
    """0 means greedy."""
    top_k: int | None = Field(50, ge=1)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    no_repeat_ngram_size: int = Field(0, ge=0)
    seed: int = 0
    stop_on_eos: bool = True
    planner_rerank: int = Field(0, ge=0)
    """Planner-guided decoding (``lmlab/generate/planner.py``): candidates per committed token,
    re-scored by latent rollouts of the auxiliary heads (0: off)."""
    planner_depth: int = Field(2, ge=1, le=16)
    """Latent rollout steps per candidate (more than 1 needs the policy head)."""
    planner_value_weight: float = Field(1.0, ge=0)
    """Weight of the value head's predicted future NLL against the candidate's LM log-prob."""


class SampleConfig(DecodeSettings):
    """Decoding defaults: used for the samples printed after training and by ``lmlab sample``."""

    prompts: list[str] = Field(default_factory=lambda: ["The "])


# ------------------------------------------------------------------------------------ the whole


class RunConfig(Strict):
    checked_apart: typing.ClassVar[set[str]] = {"model"}  # by the family's class (build_model_config)

    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    """Validated by the family's own config class (see ``build_model_config``)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every section, the model section with its family's fields."""
        return {name: getattr(self, name).model_dump(mode="json") for name in type(self).model_fields}


# ------------------------------------------------------------------------------------- loading


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a YAML or JSON config file into a dict (an empty file is an empty config)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (give a .yaml or .json path, e.g. configs/smoke.yaml)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e.__class__.__name__}: {e}); save it as UTF-8 text") from None
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"{p}: cannot parse config: {first}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a config must be a mapping of sections, got {type(raw).__name__}")
    return raw


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value parses as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=3e-4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):
        parsed = float(parsed)  # YAML 1.1 reads "3e-4" as a string; users mean a number
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``section.key=value`` in a copy of ``raw`` (intermediate mappings are created).

    Overriding one training budget (``train.max_steps``, ``max_tokens`` or ``epochs``) replaces
    the budget of the file, so ``--set train.max_steps=50`` works on a config that set max_tokens.
    """
    out = json.loads(json.dumps(raw))
    parsed = [parse_override(item) for item in overrides]
    budget_keys = (*BUDGET_KEYS, "num_epochs")
    budget = {keys[1] for keys, _ in parsed if len(keys) == 2 and keys[0] == "train" and keys[1] in budget_keys}
    if budget and isinstance(out.get("train"), dict):
        for key in budget_keys:
            if key not in budget and key in out["train"]:
                out["train"][key] = None
    for keys, value in parsed:
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        node[keys[-1]] = value
    return out


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    raw: dict[str, Any] | None = None,
) -> RunConfig:
    """Load and validate a run config from a file and/or a dict, then apply ``--set`` overrides."""
    base: dict[str, Any] = {}
    source = "config"
    if path is not None:
        base = read_config_file(path)
        source = str(path)
    if raw is not None:
        base = deep_merge(base, raw)
    merged = apply_overrides(base, overrides or [])
    override_keys = [parse_override(o)[0] for o in (overrides or [])]
    return validate_config(merged, source, override_keys)


def validate_config(
    raw: dict[str, Any], source: str = "config", override_keys: list[list[str]] | None = None
) -> RunConfig:
    """Validate a raw dict into a :class:`RunConfig`, resolving the model family and preset."""

    def where(loc: list[str | int]) -> str:
        keys = [str(x) for x in loc]
        for ok in override_keys or []:
            if keys[: len(ok)] == ok or ok[: len(keys)] == keys:
                return f"--set {'.'.join(ok)}"
        return source

    raw = dict(raw)
    model_raw = raw.pop("model", {}) or {}
    if not isinstance(model_raw, dict):
        raise ConfigError(f"{where(['model'])}: model: expected a mapping, got {model_raw!r}")
    check_keys(RunConfig, raw, [], where)
    model_cfg = build_model_config(model_raw, where)
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, raw, [], where)) from None
    # Assign after validation so the family subclass (not the base) is kept.
    object.__setattr__(cfg, "model", model_cfg)
    need = model_cfg.required_tokenizer
    if need is not None and cfg.tokenizer.type != need:
        raise ConfigError(f"{where(['tokenizer', 'type'])}: tokenizer.type = {cfg.tokenizer.type!r}: the "
                          f"{model_cfg.family} family reads {need}s; set tokenizer.type: {need}")
    if cfg.train.seq_len is not None and cfg.train.seq_len > model_cfg.block_size:
        raise ConfigError(f"{where(['train', 'seq_len'])}: train.seq_len = {cfg.train.seq_len} exceeds "
                          f"model.block_size = {model_cfg.block_size}; lower it or raise block_size")
    return cfg


def build_model_config(model_raw: dict[str, Any], where=lambda loc: "config") -> ModelConfig:
    """Validate a ``model`` section with its family's config class, applying the preset first."""
    from lmlab.registry import FAMILIES, get_family

    family = model_raw.get("family", "transformer")
    try:
        cls, _ = get_family(family)
    except ConfigError as e:
        raise ConfigError(f"{where(['model', 'family'])}: model.family = {family!r}: {e}") from None
    preset = model_raw.get("preset")
    merged = dict(model_raw)
    if preset is not None:
        if preset not in cls.presets:
            allowed = ", ".join(sorted(cls.presets)) or "none"
            raise ConfigError(
                f"{where(['model', 'preset'])}: model.preset = {preset!r}: unknown preset for family "
                f"{family!r}; allowed: {allowed}"
            )
        merged = {**cls.presets[preset], **model_raw}
    check_keys(cls, merged, ["model"], where)
    try:
        cfg = cls.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, merged, ["model"], where)) from None
    model_cls = get_family(family)[1]
    if cfg.auxiliary is not None and cfg.auxiliary.any_enabled and not model_cls.exposes_hidden:
        usable = ", ".join(sorted(n for n, (_, m) in FAMILIES.items() if m.exposes_hidden))
        raise ConfigError(f"{where(['model', 'auxiliary'])}: model.auxiliary: the {family} family does not expose "
                          f"hidden states, so auxiliary heads cannot train on it; use one of: {usable}")
    return cfg


def deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def save_config(cfg: RunConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run actually used)."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")

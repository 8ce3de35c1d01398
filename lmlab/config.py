"""The run config's schema: typed, strict sections shared by every command.

A run config has five sections: ``data``, ``tokenizer``, ``model`` (validated by the family's own
config class, which subclasses :class:`ModelConfig`), ``train`` (``train_config.py``) and
``sample``. This module is the bottom of lmlab's layers: it imports only ``strict`` and
``errors``, so every family's config can subclass it. Reading files, ``--set`` overrides, seed
dialects and the family lookup live above the registry, in ``configure.py``.
"""

from __future__ import annotations

import string
import typing
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from lmlab.strict import Strict
from lmlab.train_config import (  # noqa: F401  (re-exported: the train section lives there)
    BUDGET_KEYS,
    INT64_MAX,
    MAX_CONTEXT,
    MAX_WORKERS,
    AdaptiveBatchConfig,
    DistributedConfig,
    FsdpConfig,
    Int,
    Seed,
    TrainConfig,
)

DEFAULT_FAMILY = "transformer"
"""The family of a model section that names none: the baseline every experiment is measured against."""


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
    chunk_chars: Int = Field(4000, ge=200)
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
    min_text_length: Int = Field(0, ge=0)
    """Documents shorter than this many characters (after stripping) are dropped."""

    mix_strategy: Literal["round_robin", "sequential", "weighted"] = "round_robin"
    """How training batches draw from the sources: equal turns, one after another, or by weight."""
    source_weights: list[float] | None = None
    """One positive weight per source (``weighted``; the starting weights with ``adaptive``)."""
    adaptive: bool = False
    """Move the weights toward sources with higher recent loss (not with ``sequential``)."""
    adaptive_interval_tokens: Int = Field(5_000_000, ge=1)
    adaptive_smoothing: float = Field(0.9, ge=0, lt=1)
    adaptive_min_weight: float = Field(0.5, gt=0)
    adaptive_max_weight: float = Field(3.0, gt=0)

    token_cache: bool = False
    """Tokenize once into on-disk memmap files (``.bin`` + ``index.json``) that training reads."""
    token_cache_dir: str | None = None
    """Where the cache lives (default: ``<train.out_dir>/token_cache``)."""
    num_workers: Int = Field(0, ge=0, le=MAX_WORKERS)
    """DataLoader worker processes per rank that build token-cache shards in parallel (0: in the
    main process). A cache is built in ranks x max(1, num_workers) shards, each a disjoint share,
    and read at any world size (``lmlab prepare`` builds one in one process)."""
    reuse_token_cache: bool = True
    """Reuse a cache built with the same tokenizer and sources (whatever its shard count); a
    mismatch is refused (false: rebuilt). Reuse trusts the source settings, not the files' text,
    and so does a fresh run's reuse of a tokenizer fitted before (``RUN/tokenizer_fit.json``):
    after editing a corpus in place, delete the cache and that file."""
    max_train_tokens: Int | None = Field(None, ge=1)
    max_val_tokens: Int | None = Field(None, ge=1)
    max_train_examples: Int | None = Field(None, ge=1)
    """Stop reading after this many training documents (all sources together)."""
    max_val_examples: Int | None = Field(None, ge=1)
    """Score at most this many held-out documents (all sources together); the rest of the
    held-out documents are still never trained on."""

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
    type: Literal["auto", "byte", "char", "bpe", "sentencepiece", "hf"] = "auto"
    """``auto`` resolves sentencepiece -> bpe (HF tokenizers) -> char by what imports. ``hf`` is a
    Hugging Face model's own ``tokenizer.json`` (read from ``model_path``, never fitted)."""
    vocab_size: Int = Field(2048, ge=16, le=MAX_CONTEXT)
    """Target vocabulary for bpe/sentencepiece (byte and char ignore it)."""
    sp_model_type: Literal["bpe", "unigram"] = "bpe"
    fit_max_examples: Int | None = Field(20_000, ge=1)
    """At most this many documents are used to fit the tokenizer (None: all)."""
    fit_max_chars: Int | None = Field(4_000_000, ge=1)
    """At most this many characters are used to fit the tokenizer (None: all)."""
    model_path: str | None = None
    """A prebuilt tokenizer to load instead of fitting: a tokenizer dir saved by lmlab, an HF model
    or tokenizer folder (``tokenizer.json``), a SentencePiece ``.model`` or a ``tokenizer.json``."""


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
    policy_positions: Int | None = Field(32, ge=1)
    """Random positions per row where the policy head is fitted (None: every position)."""
    value_span: Int = Field(8, ge=1)
    """The value head predicts the mean NLL of the next ``value_span`` targets."""
    dynamics_rollout_steps: Int = Field(1, ge=1, le=8)
    """Latent rollout length of the dynamics loss (2-3 for multi-step consistency)."""
    span_mask_fraction: float = Field(0.15, gt=0, lt=1)
    span_contrastive_temperature: float = Field(0.07, gt=0)
    span_l2_normalize: bool = True

    @property
    def any_enabled(self) -> bool:
        return self.enable_policy or self.enable_value or self.enable_dynamics or self.enable_span_contrastive


LAYER_OVERHEAD = 160 * 1024
"""Bytes of host memory one transformer-like layer costs a training step beyond its weights and
activations: measured on torch 2.13 (CPU, d_model 8, 32-128 tokens) at ~110 KiB (transformer,
apelr), ~140 KiB (psann), ~150 KiB (an abstractinator level's layer) and ~200 KiB (waveresnet's
three branches); a 100,000-layer model needs ~16 GiB of it however narrow."""


class ModelConfig(Strict):
    """Base of every family's config. Families subclass it and add their fields and presets."""

    family: str = DEFAULT_FAMILY
    preset: str | None = None
    vocab_size: Int | None = Field(None, ge=2, le=MAX_CONTEXT)
    """Filled from the tokenizer when the model is built; set it only to check it."""
    block_size: Int = Field(128, ge=2, le=MAX_CONTEXT)
    """Context length in the family's units (tokens, or bytes for byte-level families)."""
    auxiliary: AuxiliaryConfig | None = None
    """Auxiliary planning heads trained with the LM (None: none)."""

    presets: typing.ClassVar[dict[str, dict[str, Any]]] = {}
    aliases: typing.ClassVar[dict[str, dict[str, Any]]] = {}
    """Other names users give this family, each with the fields it implies (psann:
    ``waveresnet`` -> ``{base: waveresnet}``): ``model.family``, ``LM(base=...)`` and the
    seeds' ``model.base`` accept them."""
    train_flags: typing.ClassVar[dict[str, dict[str, Any]]] = {}
    """``lmlab train`` flags that set a field of this family: field -> ``flags`` (the spellings),
    ``help``, ``metavar``, ``path`` (True: the value must exist)."""
    required_tokenizer: typing.ClassVar[str | None] = None
    """A family that reads one unit only (the abstractinator: bytes) refuses other tokenizers."""
    path_fields: typing.ClassVar[dict[str, str]] = {}
    """Fields that name a path, each with the role it is checked for before training starts
    (``fsio.check_path``): ``need_any`` / ``need_dir`` (read, must exist), ``out_file`` /
    ``out_dir`` (written). Train flags with ``path`` are checked as ``need_any`` already."""

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """(parameters, fp32 activation bytes a training step keeps for backward over a
        micro-batch of ``tokens`` tokens), from the config alone, so a size that cannot fit is
        refused before the model is built (``training/memory.py``). Every family gives its
        formula (the schema cannot build a model: it sits below the registry)."""
        raise NotImplementedError(f"the {self.family} family's config class gives no size_estimate; "
                                  "override ModelConfig.size_estimate with its parameter formula")

    def overhead_bytes(self) -> int:
        """Host bytes a training step costs per layer whatever the widths (the modules' Python
        objects, autograd's graph of each op): what a 100,000-layer model of width 8 runs out of,
        its weights and activations being small (``training/memory.py``). Every family gives its
        count of layers times ``LAYER_OVERHEAD``."""
        raise NotImplementedError(f"the {self.family} family's config class gives no overhead_bytes; "
                                  "override ModelConfig.overhead_bytes with its layers x LAYER_OVERHEAD")

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward) for MFU: 6 x parameters by default
        (Kaplan et al. 2020); families with attention add its term (``training/telemetry.py``)."""
        return 6.0 * self.size_estimate(1)[0]

    @classmethod
    def upgrade_checkpoint_config(cls, model: dict[str, Any]) -> dict[str, Any]:
        """A saved ``model`` section in the current schema (families whose fields changed
        meaning override it, e.g. apelr: no ``version`` means v1)."""
        return model


# --------------------------------------------------------------------------------------- sample


MAX_NEW_TOKENS = 1_000_000
"""A million tokens per prompt: the decoding loop keeps every row's history, so 10**12 would run
for ever and grow without bound (the samples printed after training would never come)."""


class DecodeSettings(Strict):
    """How to decode: the knobs of the shared decoding loop (``lmlab.generate``)."""

    max_new_tokens: Int = Field(200, ge=1, le=MAX_NEW_TOKENS)
    temperature: float = Field(0.8, ge=0)
    """0 means greedy."""
    top_k: Int | None = Field(50, ge=1)
    top_p: float = Field(1.0, gt=0, le=1)
    repetition_penalty: float = Field(1.0, gt=0)
    no_repeat_ngram_size: Int = Field(0, ge=0)
    seed: Seed = 0
    stop_on_eos: bool = True
    planner_rerank: Int = Field(0, ge=0)
    """Planner-guided decoding (``lmlab/generate/planner.py``): candidates per committed token,
    re-scored by latent rollouts of the auxiliary heads (0: off)."""
    planner_depth: Int = Field(2, ge=1, le=16)
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

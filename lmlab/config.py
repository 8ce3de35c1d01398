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
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from lmlab.errors import ConfigError
from lmlab.strict import (
    Strict,
    UnknownKey,
    check_keys,
    format_validation_error,
    key_homes,
    unknown_keys_error,
)
from lmlab.train_config import (  # noqa: F401  (re-exported: the train section lives there)
    BUDGET_KEYS,
    AdaptiveBatchConfig,
    DistributedConfig,
    FsdpConfig,
    TrainConfig,
)

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
    max_val_examples: int | None = Field(None, ge=1)
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
    aliases: typing.ClassVar[dict[str, dict[str, Any]]] = {}
    """Other names users give this family, each with the fields it implies (psann:
    ``waveresnet`` -> ``{base: waveresnet}``): ``model.family``, ``LM(base=...)`` and the
    seeds' ``model.base`` accept them."""
    train_flags: typing.ClassVar[dict[str, dict[str, Any]]] = {}
    """``lmlab train`` flags that set a field of this family: field -> ``flags`` (the spellings),
    ``help``, ``metavar``, ``path`` (True: the value must exist)."""
    required_tokenizer: typing.ClassVar[str | None] = None
    """A family that reads one unit only (the abstractinator: bytes) refuses other tokenizers."""

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """(parameters, fp32 activation bytes a training step keeps for backward over a
        micro-batch of ``tokens`` tokens), estimated before the model is built, so a size that
        cannot fit is refused at once (``training/memory.py``). Families override it with a
        formula; this default builds the model on the meta device (exact parameters, no memory)
        and leaves activations out."""
        import torch

        from lmlab.registry import build_model

        with torch.device("meta"):
            return sum(p.numel() for p in build_model(self).parameters()), 0

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
    if p.is_dir():
        raise ConfigError(f"config {p} is a folder; give a .yaml or .json file, e.g. configs/smoke.yaml")
    if p.exists() and not p.is_file():  # a FIFO nobody writes would block forever
        raise ConfigError(f"config {p} is not a regular file (a pipe, socket or device); save the config to a file")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (give a .yaml or .json path, e.g. configs/smoke.yaml)")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read config ({e.__class__.__name__}: {e}); save it as UTF-8 text") from None
    try:
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: line {e.lineno}, column {e.colno}: cannot parse config: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(x for x in (getattr(e, "problem", None), getattr(e, "context", None)) if x) or \
            str(e).strip().splitlines()[0]
        raise ConfigError(f"{p}: {at}cannot parse config: {what}") from None
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
    budget_keys = (*BUDGET_KEYS, "num_epochs")  # num_epochs: seed 003's epochs (lmlab/compat)
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
    notes: Callable[[str], None] | None = None,
) -> RunConfig:
    """Load and validate a run config from a file and/or a dict, then apply ``--set`` overrides.

    A file or key in a seed's dialect is translated first (``lmlab/compat``); ``notes`` receives
    one line per translated key (default: printed to stderr as ``note: ...``)."""
    from lmlab import compat

    say = notes or _note
    base, source = {}, "config"
    if path is not None:
        file_raw, seed = read_any_config(path)
        source = str(path)
        if seed == "001":
            say(f"seed 001 preset {path}: the run config main.py makes of it (train.max_tokens "
                f"{file_raw['train']['max_tokens']:,}), trained in {file_raw['train']['out_dir']}")
        # The file is translated on its own first, so an override in lmlab's spelling replaces
        # the file's dialect key instead of clashing with it.
        done = compat.translate(file_raw, source, seed)
        for line in done.notes:
            say(line)
        base = done.raw
    if raw is not None:
        done = compat.translate(raw, source)
        for line in done.notes:
            say(line)
        base = deep_merge(base, done.raw)
    merged = apply_overrides(base, overrides or [])
    override_keys = [parse_override(o)[0] for o in (overrides or [])]
    # An override in a seed's spelling replaces the key it stands for (the file is lmlab's by now).
    done = compat.translate(merged, source, winning={".".join(k) for k in override_keys})
    for line in done.notes:
        say(line)
    return validate_config(done.raw, source, override_keys, translated=True)


def read_any_config(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """(raw config, seed dialect or None) of a YAML/JSON config or a seed's own file format
    (seed 003's ``experiments/*.py``, read without running it)."""
    from lmlab import compat

    p = Path(path)
    if p.suffix in (".py", ".json") and p.is_file():
        found = compat.read_seed_file(p)
        if found is not None:
            return found
    return read_config_file(p), None


def _note(line: str) -> None:
    print(f"note: {line}", file=sys.stderr)


def validate_config(
    raw: dict[str, Any], source: str = "config", override_keys: list[list[str]] | None = None,
    translated: bool = False,
) -> RunConfig:
    """Validate a raw dict into a :class:`RunConfig`, resolving the model family and preset.
    Seed spellings are translated first, silently (``load_config`` prints its notes); a saved
    config of an older run dir reads the same way."""
    if not translated:
        from lmlab import compat

        raw = compat.translate(raw, source).raw

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
    # Every unknown key of every section at once, each saying where it lives if it does.
    found: list[UnknownKey] = []
    elsewhere = _homes(model_raw.get("family", "transformer"))
    check_keys(RunConfig, raw, [], where, found, elsewhere)
    model_cfg = build_model_config(model_raw, where, found, elsewhere)
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


def _homes(family: Any) -> dict[str, str]:
    """Field name -> dotted place in a run config whose model is ``family`` (for "it is ..." hints)."""
    from lmlab.registry import FAMILIES

    sections: dict[str, type] = {name: f.annotation for name, f in RunConfig.model_fields.items() if name != "model"}
    sections["model"] = FAMILIES[family][0] if isinstance(family, str) and family in FAMILIES else ModelConfig
    homes = key_homes(sections)
    for name, (cls, _) in FAMILIES.items():  # another family's field: say which family has it
        for field in cls.model_fields:
            if field not in sections["model"].model_fields:
                homes.setdefault(field, f"model.{field} of the {name} family")
    return homes


def build_model_config(model_raw: dict[str, Any], where=lambda loc: "config", found: list[UnknownKey] | None = None,
                       elsewhere=None) -> ModelConfig:
    """Validate a ``model`` section with its family's config class, applying the preset first.
    Unknown keys are raised together with those already in ``found`` (the other sections')."""
    from lmlab.registry import FAMILIES, get_family, resolve_family

    found = [] if found is None else found
    family = model_raw.get("family", "transformer")
    try:
        family, implied = resolve_family(family)
    except ConfigError as e:
        raise ConfigError(f"{where(['model', 'family'])}: model.family = {family!r}: {e}") from None
    cls, _ = get_family(family)
    for key, value in implied.items():  # an alias (psann's waveresnet) sets its fields
        if model_raw.get(key, value) != value:
            raise ConfigError(f"{where(['model', key])}: model.{key} = {model_raw[key]!r} contradicts "
                              f"model.family = {model_raw['family']!r}; drop one")
    model_raw = {**model_raw, **implied, "family": family}
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
    check_keys(cls, merged, ["model"], where, found, elsewhere or _homes(family))
    if found:
        raise unknown_keys_error(found)
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

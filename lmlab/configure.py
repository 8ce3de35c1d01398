"""Loading a run config: files, ``--set`` overrides, seed dialects, the family's own schema.

This layer sits above the registry and ``compat``: a file in a seed's dialect is translated
(dicts to dicts) first, then every section is validated by the schema (``config.py``), the model
section by its family's config class after the preset's values are applied. Any unknown key,
wrong type or bad value raises :class:`ConfigError` with one line naming the source, the key,
the value and what is allowed. Overrides come from the command line as ``--set
section.key=value`` (the value parses as YAML).
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError

from lmlab import compat, rundir
from lmlab.config import BUDGET_KEYS, DEFAULT_FAMILY, ModelConfig, RunConfig, TrainConfig
from lmlab.errors import ConfigError, LmlabError
from lmlab.eval.tasks import resolve_tasks
from lmlab.init_from import read_source, upgrade_saved
from lmlab.registry import FAMILIES, build_model, get_family, resolve_family
from lmlab.safeload import FILE_EXAMPLE, load_file, safe_yaml
from lmlab.strict import (
    UnknownKey,
    check_keys,
    format_validation_error,
    key_homes,
    unknown_keys_error,
)


def read_config_file(path: str | Path, what: str = "config", example: str = FILE_EXAMPLE) -> dict[str, Any]:
    """Parse a YAML or JSON config (or another mapping: ``what`` names it) into a dict, through
    the one safe reader (``safeload.load_file``: a duplicate key, deep nesting, an alias bomb, an
    empty file or bytes that are not UTF-8 are one line naming the file)."""
    p = Path(path)
    raw = load_file(p, what, example)
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: a {what} must be a mapping of sections, got {type(raw).__name__}")
    return raw


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value parses as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set train.lr=3e-4")
    try:  # a repeated key, deep nesting or an alias bomb is refused; what YAML cannot parse is text
        parsed = safe_yaml(value, f"--set {key.strip()}") if value.strip() else ""
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
    saved: bool = False,
) -> RunConfig:
    """Load and validate a run config from a file and/or a dict, then apply ``--set`` overrides.

    A file or key in a seed's dialect is translated first (``lmlab/compat``); ``notes`` receives
    one line per translated key (default: printed to stderr as ``note: ...``). ``saved``: the
    file is a run dir's own config.yaml, upgraded as its snapshots' configs are, so a run made
    before a key existed continues as it trained."""
    say = notes or _note
    base, source = {}, "config"
    if path is not None:
        file_raw, seed = read_any_config(path)
        if saved:
            file_raw = upgrade_saved(file_raw)
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
    return validate_config(resolve_init_from(done.raw), source, override_keys, translated=True)


def resolve_init_from(raw: dict[str, Any]) -> dict[str, Any]:
    """A config with ``train.init_from`` takes its model and tokenizer sections from those weights.

    The model section the config gives is read as changes to the checkpoint's: one that changes
    the shape of a weight (``d_model``, ``n_layer``, ``vocab_size``; a shorter learned context) is
    refused naming the key, one that does not (``dropout``, a longer ``block_size``, auxiliary
    heads) is kept. Any tokenizer key that differs from the checkpoint's is refused: the tokenizer
    comes with the weights. Once the run has a snapshot of its own, its sections come from there
    (the run continues, whether or not ``init_from`` is still there).
    """
    train = raw.get("train")
    source = train.get("init_from") if isinstance(train, dict) else None
    if source is None:
        return raw
    out_dir = train.get("out_dir", TrainConfig.model_fields["out_dir"].default)
    started = isinstance(out_dir, str) and rundir.has_checkpoint(out_dir)
    origin = read_source(out_dir if started else source)
    where = f"train.init_from {source}" + (f" (continued in {out_dir})" if started else "")
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        return raw  # validation says what is wrong with it
    theirs = origin.model.get("family", DEFAULT_FAMILY)
    asked = model.get("family", theirs)
    with contextlib.suppress(ConfigError):  # an unknown family: validation names it
        asked = resolve_family(asked)[0]
    if asked != theirs:
        raise ConfigError(f"model.family = {model['family']!r}: {where} holds a {theirs} model; drop "
                          "model.family (the model config comes with the weights)")
    if model.get("preset", origin.model.get("preset")) != origin.model.get("preset"):
        raise ConfigError(f"model.preset = {model['preset']!r}: {where} brings its own model config; drop "
                          "model.preset (keys that keep the weights' shapes, e.g. model.dropout, may stay)")
    changes = {k: v for k, v in model.items() if k not in ("family", "preset") and origin.model.get(k) != v}
    _check_shapes(origin.model, changes, where)
    # a run that has started keeps the sections it saved (its config.yaml has them: --resume)
    tokenizer = origin.saved_tokenizer if started and origin.saved_tokenizer is not None else origin.tokenizer
    for key, value in (raw.get("tokenizer") or {}).items():
        same = (value is None or tokenizer.get(key) is not None and
                Path(str(value)).resolve() == Path(str(tokenizer[key])).resolve()
                if key == "model_path" else tokenizer.get(key) == value)
        if not same:
            raise ConfigError(f"tokenizer.{key} = {value!r}: {where} brings its own tokenizer "
                              f"({tokenizer.get('type')}, in {tokenizer.get('model_path')}), the one its "
                              "embeddings were trained with; drop the tokenizer section")
    return {**raw, "model": {**origin.model, **changes}, "tokenizer": tokenizer}


def _check_shapes(base: dict[str, Any], changes: dict[str, Any], where: str) -> None:
    """Refuse the first key of ``changes`` that reshapes, adds or drops a weight (models built on
    the meta device: no memory, no init)."""
    if not changes:
        return
    def shapes(section: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            model = build_model(build_model_config(section))
        return {k: tuple(v.shape) for k, v in model.state_dict().items()}

    before = shapes(base)
    for key, value in changes.items():
        # a longer context extends the positions (resume.warm_model); auxiliary heads are new
        # weights on top of the model's, trained from their init
        grows = key == "block_size" and isinstance(value, int) and value > int(base.get("block_size", 0))
        after = shapes({**base, key: value})
        differ = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if differ and not grows and key != "auxiliary":
            raise ConfigError(f"model.{key} = {value!r}: {where} has model.{key} = {base.get(key)!r}, and the "
                              f"change reshapes its weights ({', '.join(differ[:3])}"
                              f"{', ...' if len(differ) > 3 else ''}); drop it (the model config comes with "
                              "the weights)")


def read_any_config(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """(raw config, seed dialect or None) of a YAML/JSON config or a seed's own file format
    (seed 003's ``experiments/*.py``, read without running it)."""
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
    elsewhere = _homes(model_raw.get("family", DEFAULT_FAMILY))
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
    if cfg.train.eval_tasks:  # the names lmlab eval --tasks takes, refused before anything runs
        try:
            resolve_tasks(cfg.train.eval_tasks)
        except LmlabError as e:
            raise ConfigError(f"{where(['train', 'eval_tasks'])}: train.eval_tasks = {cfg.train.eval_tasks!r}: "
                              f"{str(e).removeprefix('--tasks: ')}") from None
    return cfg


def _homes(family: Any) -> dict[str, str]:
    """Field name -> dotted place in a run config whose model is ``family`` (for "it is ..." hints)."""
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
    found = [] if found is None else found
    family = model_raw.get("family", DEFAULT_FAMILY)
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

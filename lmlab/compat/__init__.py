"""The seed dialects: configs written for the systems in the seeds, translated into lmlab's.

Each seed has a table here (``seedNNN.yaml``: data, read once; ``seed000.yaml`` says how a table
reads). :func:`translate` walks a raw config and, wherever a key is not lmlab's and a table knows
it, rewrites it into lmlab's spelling and records one note per key ("seed 000
`train.entropy_reg_weight` -> `model.entropy_reg_weight`"). What no table knows is left alone, so
the strict schema still refuses it (``config.validate_config`` lists every such key at once).
:func:`read_seed_file` reads what is not YAML/JSON: seed 003's ``experiments/*.py`` (the
``exp_config`` dict literal, never executed) and seed 001's JSON presets.
"""

from __future__ import annotations

import copy
import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmlab import rundir
from lmlab.compat.files import read_python_dict, read_seed_file  # noqa: F401  (re-exported)
from lmlab.compat.paths import MISSING, split_path
from lmlab.compat.paths import find as find_paths
from lmlab.compat.paths import get as get_path
from lmlab.compat.paths import set_ as set_path
from lmlab.compat.tables import (  # noqa: F401  (re-exported)
    PLACEHOLDER,
    Rule,
    Table,
    misplaced_rules,
    table,
    tables,
    unwrap,
)
from lmlab.config import DEFAULT_FAMILY, ModelConfig, RunConfig
from lmlab.errors import ConfigError
from lmlab.registry import FAMILIES, family_aliases, resolve_family
from lmlab.strict import model_class_of


@dataclass
class Translation:
    """A translated raw config, a note per translated key, and the seeds it spoke."""

    raw: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)


@dataclass
class _Ctx:
    source: str
    raw: dict[str, Any]
    notes: list[str]
    errors: list[str]
    matched: set[str]
    deferred: list[tuple[Rule, Any]] = field(default_factory=list)
    winning: set[str] = field(default_factory=set)
    stage: str | None = None
    """The seed's two-stage workflow: ``stage1`` / ``stage2`` when the config is one of them."""

    def note(self, rule: Rule, text: str) -> None:
        self.notes.append(f"seed {rule.seed} `{rule.key}` -> {text}")

    def error(self, rule: Rule, text: str) -> None:
        self.errors.append(f"seed {rule.seed} `{rule.key}`: {text}")


def translate(raw: dict[str, Any], source: str = "config", seed: str | None = None,
              winning: set[str] | frozenset[str] = frozenset()) -> Translation:
    """``raw`` (a config in any seed's dialect, or lmlab's) in lmlab's spelling. ``seed``: the
    file's dialect when its format says it (seed 003's ``.py``): its defaults apply. Every key a
    table refuses, and every clash (a dialect key and its lmlab key both set, to different
    values), is reported at once in one :class:`ConfigError`; a dialect key named in
    ``winning`` (a ``--set`` override) replaces its lmlab key instead."""
    ctx = _Ctx(source, copy.deepcopy(raw), [], [], set(), winning=set(winning))
    if seed is not None:
        for key, value in table(seed).defaults.items():
            if get_path(ctx.raw, key) is MISSING:
                set_path(ctx.raw, key, value)
        ctx.matched.add(seed)
    rules = {k: r for t in tables() for k, r in t.keys.items()}
    for _ in range(4):  # a moved key may meet a rule at its new place (seed 003's top model keys)
        before = len(ctx.notes) + len(ctx.errors)
        _walk(ctx, ctx.raw, [], rules, lmlab_keys_only=False)
        if len(ctx.notes) + len(ctx.errors) == before:
            break
    dialect = {k: r for t in tables() if t.seed in ctx.matched for k, r in t.in_dialect.items()}
    if dialect:
        _walk(ctx, ctx.raw, [], dialect, lmlab_keys_only=True)
    for t in tables():  # a known key of a seed's family at the wrong level: say where it lives
        if t.family is not None and _family(ctx.raw) == t.family:
            _walk(ctx, ctx.raw, [], misplaced_rules(t.seed), lmlab_keys_only=False)
    for rule, value in ctx.deferred:
        TRANSFORMS[rule.transform](ctx, rule, value)
    _rename_values(ctx)
    if not ctx.errors:
        _default_run_dir(ctx)
    if ctx.errors:
        raise ConfigError(f"{source}: {'; '.join(ctx.errors)}")
    return Translation(ctx.raw, ctx.notes, sorted(ctx.matched))


def _walk(ctx: _Ctx, node: Any, loc: list[str], rules: dict[str, Rule], lmlab_keys_only: bool) -> None:
    """Apply ``rules`` below ``node`` (``loc`` its pattern path; list items are ``[*]``)."""
    if isinstance(node, list):
        for i in range(len(node)):
            path = _pattern([*loc, "[*]"])
            rule = rules.get(path)
            if rule is not None and (not rule.if_mapping or isinstance(node[i], dict)):
                _apply(ctx, rule, node, i, node[i])
            _walk(ctx, node[i], [*loc, "[*]"], rules, lmlab_keys_only)
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        if key not in node:
            continue
        path = _pattern([*loc, str(key)])
        rule = rules.get(path)
        if rule is not None:
            known = _is_lmlab_key(ctx.raw, [*loc, str(key)])
            applies = rule.if_mapping and isinstance(node[key], dict) or (known if lmlab_keys_only else not known)
            if applies:
                value = node.pop(key)
                _apply(ctx, rule, None, None, value)
                continue
        _walk(ctx, node[key], [*loc, str(key)], rules, lmlab_keys_only)


def _apply(ctx: _Ctx, rule: Rule, items: list | None, index: int | None, value: Any) -> None:
    if items is None:  # a list item counts only if it changes (below)
        ctx.matched.add(rule.seed)
    if rule.refuse is not None:
        ctx.error(rule, rule.refuse)
    elif rule.ignore is not None:
        ctx.note(rule, f"ignored: {rule.ignore}")
    elif rule.transform is not None:
        if rule.transform in DEFERRED:
            ctx.deferred.append((rule, value))
        elif items is not None:  # a list item rewritten in place
            new = TRANSFORMS[rule.transform](ctx, rule, value)
            if new != value:
                ctx.matched.add(rule.seed)
                items[index] = new
                ctx.note(rule, f"`{rule.to.replace('[*]', f'[{index}]')}` = {_short(new)}")
        else:
            out = TRANSFORMS[rule.transform](ctx, rule, value)
            if out is not None:
                _move(ctx, rule, rule.to, out)
    else:
        if rule.values is not None and _hashable(value) and value in rule.values:
            value = rule.values[value]
        _move(ctx, rule, rule.to, value)


def _move(ctx: _Ctx, rule: Rule, to: str, value: Any, note: str = "") -> None:
    """Put ``value`` at ``to`` unless a different value is there already (then it is a clash)."""
    have = get_path(ctx.raw, to)
    if value is None and have is not MISSING:
        return  # an unset dialect key under a set lmlab key (older run dirs saved both)
    if (rule.wins or rule.key in ctx.winning) and have is not MISSING and have != value:
        note = f"{note} (replacing {_short(have)})"
        have = MISSING
    if have is not MISSING and have is not None and have != value:
        if isinstance(have, dict) and isinstance(value, dict):
            value = {**value, **{k: v for k, v in have.items() if k not in value}}
            clash = {k for k in have.keys() & value.keys() if have[k] != value[k]}
            if not clash:
                set_path(ctx.raw, to, value)
                ctx.note(rule, f"`{to}`{note}")
                return
        ctx.error(rule, f"`{to}` is set too ({_short(have)} vs {_short(value)}); keep one of them")
        return
    set_path(ctx.raw, to, value)
    if value is not None:
        ctx.note(rule, f"`{to}`{note}")


def _rename_values(ctx: _Ctx) -> None:
    """The ``values`` tables: dialect values of keys lmlab has too (``tokenizer.type: simple``)."""
    for t in tables():
        for pattern, mapping in t.values.items():
            for parent, key, path in find_paths(ctx.raw, pattern):
                value = parent[key]
                if _hashable(value) and value in mapping:
                    parent[key] = mapping[value]
                    ctx.matched.add(t.seed)
                    ctx.notes.append(f"seed {t.seed} `{path}: {value}` -> `{path}: {mapping[value]}`")


# ------------------------------------------------------------------------------------ transforms


def _as_list(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    return value if isinstance(value, list) or value is None else [value]


def _enabled(ctx: _Ctx, rule: Rule, value: dict[str, Any]) -> Any:
    unknown = sorted(set(value) - {"enabled"})
    if unknown:
        ctx.error(rule, f"unknown key(s) {unknown}; the section takes only enabled (true/false)")
        return None
    return bool(value.get("enabled", True))


def _run_dir(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    """A checkpoint path -> the lmlab run dir that holds it (lmlab resumes a run in its own dir)."""
    if value is None:
        return None
    path = Path(str(value))
    if path.is_dir() and rundir.has_checkpoint(path):
        return str(path)
    above = rundir.enclosing_run_dir(path)
    if above is None:
        ctx.error(rule, f"{value}: no lmlab run dir there or above it; lmlab resumes a run from its "
                        "train.out_dir: set train.out_dir to the run dir to continue")
        return None
    return str(Path(os.path.relpath(above)) if not path.is_absolute() else above)


def _resume_from(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    """Seed 000's ``train.resume_from``: beside a ``train.out_dir`` that is another folder it
    starts a new run there from those weights (``train.init_from``: a fresh optimizer, schedule
    and data position); alone, or naming the out_dir's own run, it continues that run in place."""
    if value is None:
        return None
    out = get_path(ctx.raw, "train.out_dir")
    if out in (MISSING, None):
        return _run_dir(ctx, rule, value)
    path = Path(str(value))
    run = path if path.is_dir() and rundir.has_checkpoint(path) else rundir.enclosing_run_dir(path)
    if run is not None and Path(os.path.abspath(run)) == Path(os.path.abspath(str(out))):
        return str(out)  # the out_dir's own run: continue it
    _move(ctx, rule, "train.init_from", str(value),
          note=f" (a new run in train.out_dir {out} from those weights: a fresh optimizer, schedule and data "
               "position; to continue that run instead, set train.out_dir to its run dir)")
    return None


_SUFFIX_TYPES = {".jsonl": "jsonl", ".json": "jsonl", ".pdf": "pdf", ".csv": "csv"}


def source_for_path(path: str | Path) -> dict[str, Any]:
    """The data source reading a file or folder, its type from the suffix (``.jsonl``, ``.csv``,
    ``.pdf``; else text): how seed 002 names a source, and ``lmlab.TextData`` a path."""
    return {"type": _SUFFIX_TYPES.get(Path(str(path)).suffix.lower(), "text"), "path": str(path)}


def _source_type(ctx: _Ctx, rule: Rule, item: dict[str, Any]) -> dict[str, Any]:
    """``{path: x.txt}`` -> ``{type: text, path: x.txt}`` (the type from the suffix)."""
    if "type" in item or "path" not in item:
        return item
    return {**source_for_path(item["path"]), **item}


def _family_alias(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    """``model.base: waveresnet`` (no family) -> the family that declares that alias."""
    aliases = family_aliases()
    if value not in aliases:
        ctx.error(rule, f"{value!r} is not a base lmlab knows; use one of {', '.join(sorted(aliases))}")
        return None
    family, fields = aliases[value]
    model = ctx.raw.setdefault("model", {})
    if model.get("family") not in (None, family):
        ctx.error(rule, f"base {value!r} is the {family} family but model.family is {model['family']!r}")
        return None
    model.update(fields)
    return family


def _rope(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    if value is True:
        return "rope"
    ctx.error(rule, f"{value!r}: without rope, say which positions: model.pos_encoding: alibi, "
                    "sinusoidal or learned")
    return None


def _always_packed(ctx: _Ctx, rule: Rule, value: Any) -> None:
    if value is False:
        ctx.error(rule, "false: lmlab packs documents into one EOS-separated stream (windows may cross "
                        "documents); drop the key")
    else:
        ctx.note(rule, "nothing to set: lmlab always packs documents into one EOS-separated stream")


def _tokens_to_sequences(ctx: _Ctx, rule: Rule, value: Any) -> None:
    """``batch_tokens`` -> ``batch_size`` sequences per micro-batch per process, for the run's
    window, accumulation steps and world size (run after every key moved: it needs them all)."""
    if not isinstance(value, int) or value < 1:
        ctx.error(rule, f"{value!r}: expected a positive number of tokens")
        return
    train = ctx.raw.setdefault("train", {})
    window = train.get("seq_len") or _block_size(ctx.raw)
    accum = train.get("grad_accum_steps") or 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    size = max(1, value // (window * accum * world))
    if value % (window * accum * world):
        ctx.note(rule, f"`train.batch_size` = {size} ({value} tokens / ({window} tokens x {accum} accumulation "
                       f"x {world} processes), rounded down)")
    else:
        ctx.note(rule, f"`train.batch_size` = {size} ({value} tokens / ({window} x {accum} x {world}))")
    if "batch_size" in train and train["batch_size"] != size:
        ctx.error(rule, f"`train.batch_size` is set too ({train['batch_size']} vs {size}); keep one of them")
        return
    train["batch_size"] = size


def _block_size(raw: dict[str, Any]) -> int:
    """The model's context as lmlab will resolve it: the model section, its preset, the family default."""
    model = raw.get("model") or {}
    if isinstance(model.get("block_size"), int):
        return model["block_size"]
    cls = FAMILIES.get(model.get("family", DEFAULT_FAMILY), FAMILIES[DEFAULT_FAMILY])[0]
    preset = cls.presets.get(model.get("preset"), {})
    return int(preset.get("block_size", cls.model_fields["block_size"].default))


def _hf_dataset(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    return {"type": "hf", "dataset": value}


def _mlflow_project(ctx: _Ctx, rule: Rule, value: Any) -> None:
    """Seed 003 logs to MLflow under ``./mlruns/<project_name>`` when ``project_name`` is set:
    the experiment, ``mlflow`` in ``train.trackers`` (unless the config lists its trackers) and
    a store there (unless it names one). The store is a sqlite database in that folder: MLflow 3
    refuses a plain folder store (``MLFLOW_ALLOW_FILE_STORE``)."""
    train = ctx.raw.get("train")
    train = {} if train is None else train
    if value is None or not isinstance(train, dict) or not isinstance(train.get("mlflow", {}), dict):
        _move(ctx, rule, rule.to, value)  # nothing to turn on (or a section the schema refuses)
        return None
    said = []
    trackers = train.get("trackers")
    if trackers is None:
        train["trackers"] = ["jsonl", "mlflow"]
        said.append("MLflow on (`train.trackers` = [jsonl, mlflow]; pip install 'lmlab[track]')")
    elif not (isinstance(trackers, list) and "mlflow" in trackers):
        said.append(f"`train.trackers` = {_short(trackers)} is kept: add mlflow to it for the seed's MLflow logging")
    store = train.setdefault("mlflow", {})
    if store.get("tracking_uri") is None:
        uri = store["tracking_uri"] = f"sqlite:///mlruns/{value}/mlflow.db"
        said.append(f"`train.mlflow.tracking_uri` = {uri} (./mlruns/{value} in the folder lmlab trains from; "
                    f"read it with mlflow ui --backend-store-uri {uri})")
    else:
        said.append(f"`train.mlflow.tracking_uri` = {store['tracking_uri']} is kept")
    ctx.raw["train"] = train
    _move(ctx, rule, rule.to, value, note=", " + ", ".join(said))
    return None


def _cosine_only(ctx: _Ctx, rule: Rule, value: Any) -> None:
    if value in ("cosine", "cosine_with_min_lr"):
        ctx.note(rule, "nothing to set: lmlab's schedule is linear warmup then cosine to train.min_lr")
    else:
        ctx.error(rule, f"{value!r}: lmlab's schedule is linear warmup then cosine to train.min_lr; drop the key "
                        "(or write cosine_with_min_lr)")


def _placeholder(ctx: _Ctx, rule: Rule, value: Any) -> Any:
    """The seed's stage-2 example writes ``{...}``: the default top model."""
    if value == PLACEHOLDER:
        ctx.stage = "stage2"
        _move(ctx, rule, rule.to, {}, note=" = {} (the `{...}` placeholder: the default top model)")
        return None
    if value is None:
        ctx.stage = "stage1"
        set_path(ctx.raw, rule.to, None)
        ctx.note(rule, f"`{rule.to}` = null (no top model: stage 1)")
        return None
    return value


def _misplaced(ctx: _Ctx, rule: Rule, value: Any) -> None:
    """A key of the family's schema (or a seed spelling of one) at a level where it is not:
    where it lives (``rule.to``: its places, " or " between), with the value written there."""
    homes = (rule.to or "").split(" or ")
    if len(homes) > 1:
        ctx.error(rule, f"not a key here: it is {rule.to}; write it under one of them")
        return
    parts = split_path(homes[0])
    inner: Any = value
    for part in reversed(parts[2:]):  # model.levels[*].entropy.threshold -> levels: [{entropy: {threshold: v}}]
        inner = [inner] if part == "*" else {part: inner}
    shown = yaml.safe_dump(inner, default_flow_style=True, width=10**6).strip().removesuffix("\n...")
    each = " (one per level)" if "*" in parts else ""
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    ctx.error(rule, f"not a key here: it is {homes[0]}{each}; write {parts[0]}.{parts[1]}: {shown}")


TRANSFORMS: dict[str, Callable[[_Ctx, Rule, Any], Any]] = {
    "as_list": _as_list, "enabled": _enabled, "run_dir": _run_dir, "resume_from": _resume_from,
    "source_type": _source_type,
    "family_alias": _family_alias, "rope": _rope, "always_packed": _always_packed,
    "tokens_to_sequences": _tokens_to_sequences, "hf_dataset": _hf_dataset, "mlflow_project": _mlflow_project,
    "cosine_only": _cosine_only, "placeholder": _placeholder, "misplaced": _misplaced,
}
DEFERRED = {"tokens_to_sequences"}


# ----------------------------------------------------------------- where a key lives, a run dir


def _family(raw: dict[str, Any]) -> str | None:
    model = raw.get("model")
    family = model.get("family", DEFAULT_FAMILY) if isinstance(model, dict) else DEFAULT_FAMILY
    try:
        return resolve_family(family)[0] if isinstance(family, str) else None
    except ConfigError:
        return None


_CONFIG_SUFFIXES = {".py", ".yaml", ".yml", ".json"}


def _default_run_dir(ctx: _Ctx) -> None:
    """A config file in a seed's dialect that names no run dir trains in its own: ``runs/<file
    stem>``, and the seed 003 two-stage workflow's stage after it (``runs/exp_config-stage1``,
    ``-stage2``), so neither stage nor ``make train`` (``runs/default``) lands in another's."""
    path = Path(ctx.source)
    if not ctx.matched or path.suffix.lower() not in _CONFIG_SUFFIXES or \
            get_path(ctx.raw, "train.out_dir") not in (MISSING, None):
        return
    stage = ctx.stage
    if get_path(ctx.raw, "model.top_transformer_config") is None:  # present and null: no top model
        stage = "stage1"
    elif get_path(ctx.raw, "model.load_base_from") not in (MISSING, None):
        stage = "stage2"
    name = path.stem
    if stage is not None and stage not in re.sub(r"[^a-z0-9]", "", name.lower()):
        name = f"{name}-{stage}"
    set_path(ctx.raw, "train.out_dir", f"runs/{name}")
    ctx.notes.append(f"seed {', '.join(sorted(ctx.matched))} {path.name} names no run dir (train.out_dir): it "
                     f"trains in its own, runs/{name}; set train.out_dir to choose another")


# ------------------------------------------------------------------------------------- internals


def _pattern(loc: list[str]) -> str:
    return ".".join(loc).replace(".[*]", "[*]")


def _is_lmlab_key(raw: dict[str, Any], loc: list[str]) -> bool:
    """Whether ``loc`` (``[*]`` for list items) names a key of lmlab's schema, the model section
    read by ``raw``'s family."""
    if not loc or loc[0] not in RunConfig.model_fields:
        return False
    ann: Any = RunConfig.model_fields[loc[0]].annotation
    if loc[0] == "model":
        family = (raw.get("model") or {}).get("family", DEFAULT_FAMILY)
        try:
            family = resolve_family(family)[0] if isinstance(family, str) else family
        except ConfigError:
            pass
        ann = FAMILIES[family][0] if isinstance(family, str) and family in FAMILIES else ModelConfig
    return _descend(ann, raw.get(loc[0]), loc[1:])


def _descend(ann: Any, node: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    ann = unwrap(ann)
    part, rest = parts[0], parts[1:]
    if part == "[*]":
        if typing.get_origin(ann) is not list:
            return False
        item = node[0] if isinstance(node, list) and node else None
        return _descend(typing.get_args(ann)[0], item, rest)
    if typing.get_origin(ann) is dict:
        return True  # a free-form mapping takes any key
    cls = model_class_of(ann, node if isinstance(node, dict) else {})
    if cls is None or part not in cls.model_fields:
        return False
    return _descend(cls.model_fields[part].annotation, node.get(part) if isinstance(node, dict) else None, rest)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."

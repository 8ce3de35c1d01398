"""The seed tables (``seedNNN.yaml`` beside this file: data, read once) as typed records, and
the rules made from them and the seed's family schema that say where a misplaced key lives."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lmlab.config import RunConfig
from lmlab.registry import FAMILIES

TABLES_DIR = Path(__file__).parent
PLACEHOLDER = "..."
"""What ``read_python_dict`` makes of a ``{...}`` / ``...`` value (the seed's "fill this in")."""


@dataclass(frozen=True)
class Rule:
    """One table entry: where the value goes (``to``) and how (``values``, ``transform``), or
    that it is ignored / refused with a reason."""

    seed: str
    key: str
    to: str | None = None
    values: dict[Any, Any] | None = None
    transform: str | None = None
    ignore: str | None = None
    refuse: str | None = None
    if_mapping: bool = False
    wins: bool = False
    """The dialect value replaces a value already at ``to`` instead of clashing with it."""


@dataclass(frozen=True)
class Table:
    seed: str
    system: str
    keys: dict[str, Rule]
    in_dialect: dict[str, Rule]
    values: dict[str, dict[Any, Any]]
    defaults: dict[str, Any]
    python_dict: str | None

    @property
    def family(self) -> str | None:
        """The model family the seed's system is (its ``model.family`` default), if it is one."""
        return self.defaults.get("model.family")


@cache
def tables() -> tuple[Table, ...]:
    """Every seed table, in seed order."""
    out = []
    for path in sorted(TABLES_DIR.glob("seed*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        seed = str(raw["seed"])

        def rules(section: dict[str, Any] | None, seed: str = seed) -> dict[str, Rule]:
            return {k: Rule(seed, k, to=v) if isinstance(v, str) else Rule(seed, k, **v)
                    for k, v in (section or {}).items()}

        out.append(Table(seed, raw["system"], rules(raw.get("keys")), rules(raw.get("in_dialect")),
                         raw.get("values") or {}, raw.get("defaults") or {}, raw.get("python_dict")))
    return tuple(out)


def table(seed: str) -> Table:
    return next(t for t in tables() if t.seed == seed)


# ------------------------------------------------------------------- where a key of a seed lives


@cache
def misplaced_rules(seed: str) -> dict[str, Rule]:
    """Rules for every known key of ``seed``'s family at a level where it is not (``w_entropy_ce``
    at the top of seed 003's ``exp_config`` -> ``model.levels[*].w_entropy_ce``), made from the
    family's schema and the table's dotted keys. Keys of a section or of the model itself are
    left out: the schema's own check already says where those live. A table rule wins."""
    t = table(seed)
    cls = FAMILIES[t.family][0] if t.family in FAMILIES else None
    if cls is None:
        return {}
    fields: list[tuple[str, str]] = []  # (leaf, where it lives)
    containers: dict[str, set[str]] = {"": set(RunConfig.model_fields)}  # path -> the keys it takes
    _schema_fields(cls, "model", fields, containers)
    located = {name for f in RunConfig.model_fields.values() for name in _fields_of(f.annotation)}
    located |= set(cls.model_fields)
    for key, rule in t.keys.items():  # the seed's own spelling of a nested key (top model's num_layers)
        if "." in key and rule.to is not None and rule.refuse is None:
            fields.append((key.rsplit(".", 1)[-1], rule.to))
    homes: dict[str, list[str]] = {}
    for leaf, home in fields:
        if leaf not in located and home not in homes.setdefault(leaf, []):
            homes[leaf].append(home)
    taken = {k for tt in tables() for k in tt.keys}
    out: dict[str, Rule] = {}
    for container, keys in containers.items():
        for leaf, places in homes.items():
            pattern = f"{container}.{leaf}" if container else leaf
            if leaf not in keys and pattern not in taken:
                out[pattern] = Rule(seed, pattern, to=" or ".join(places), transform="misplaced")
    return out


def _schema_fields(cls: type[BaseModel], path: str, fields: list[tuple[str, str]],
                   containers: dict[str, set[str]]) -> None:
    """Every field below ``cls`` (at ``path``) as (name, dotted place); every mapping's keys."""
    containers[path] = set(cls.model_fields)
    for name, f in cls.model_fields.items():
        fields.append((name, f"{path}.{name}"))
        ann = unwrap(f.annotation)
        if typing.get_origin(ann) is list:
            item = unwrap(typing.get_args(ann)[0])
            if isinstance(item, type) and issubclass(item, BaseModel):
                _schema_fields(item, f"{path}.{name}[*]", fields, containers)
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            _schema_fields(ann, f"{path}.{name}", fields, containers)


def _fields_of(ann: Any) -> set[str]:
    ann = unwrap(ann)
    return set(ann.model_fields) if isinstance(ann, type) and issubclass(ann, BaseModel) else set()


def unwrap(ann: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` -> ``X`` (other unions stay: ``model_class_of`` picks by tag)."""
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) != 1:
                return ann
            ann = args[0]
        else:
            return ann

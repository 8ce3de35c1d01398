"""The seed tables (``seedNNN.yaml`` beside this file: data, read once) as typed records."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

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


# ----------------------------------------------------------------------------------- translation

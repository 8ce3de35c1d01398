"""Dotted paths into a raw config dict (``train.lr``, ``data.sources[0].path``,
``data.sources[*].text_field`` for every item): get, set and find, for the seed tables."""

from __future__ import annotations

import re
from typing import Any

MISSING = object()
"""What :func:`get` returns where a path names nothing."""

_INDEX = re.compile(r"^(.*)\[(\d+|\*)\]$")


def split_path(dotted: str) -> list[str | int]:
    out: list[str | int] = []
    for part in dotted.split("."):
        m = _INDEX.match(part)
        if m:
            out += [m.group(1), int(m.group(2)) if m.group(2) != "*" else "*"]
        else:
            out.append(part)
    return out


def get(raw: Any, dotted: str) -> Any:
    node = raw
    for part in split_path(dotted):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                return MISSING
            node = node[part]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return MISSING
    return node


def set_(raw: dict[str, Any], dotted: str, value: Any) -> None:
    parts = split_path(dotted)
    node: Any = raw
    for part, nxt in zip(parts, parts[1:]):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            node = node[part]
        else:
            empty: Any = [] if isinstance(nxt, int) else {}
            if not isinstance(node.get(part), (dict, list)):
                node[part] = empty
            node = node[part]
    last = parts[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append({})
    node[last] = value


def find(raw: Any, pattern: str) -> list[tuple[Any, Any, str]]:
    """(parent, key, concrete path) of every place ``pattern`` (``[*]`` for any item) names."""
    found: list[tuple[Any, Any, str]] = [(None, None, "")]
    nodes: list[tuple[Any, str]] = [(raw, "")]
    for part in split_path(pattern):
        found, nxt = [], []
        for node, path in nodes:
            if part == "*" and isinstance(node, list):
                for i, item in enumerate(node):
                    found.append((node, i, f"{path}[{i}]"))
                    nxt.append((item, f"{path}[{i}]"))
            elif isinstance(node, dict) and part in node:
                p = f"{path}.{part}" if path else str(part)
                found.append((node, part, p))
                nxt.append((node[part], p))
        nodes = nxt
    return found

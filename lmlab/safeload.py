"""The one safe reader of every config, spec and preset file and of ``--set`` values
(``load_file``, ``safe_yaml``, ``safe_json``): a key given twice, nesting deeper than
``MAX_DEPTH``, YAML aliases that expand past ``MAX_VALUES`` values or into themselves, an empty
file and text that is not UTF-8 are each one line naming the file (and the line). What the
parsed values mean is the schemas' (``strict.py``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from lmlab.errors import ConfigError, LmlabError
from lmlab.fsio import check_input

MAX_DEPTH = 100
"""Deepest nesting of mappings and lists in a config, spec, preset or ``--set`` value: Python's
own recursion gives out near 300 levels of YAML (a traceback), and no real config nears 100."""
MAX_VALUES = 100_000
"""Most values a YAML document may hold once its aliases are expanded: a few hundred bytes of
nested aliases (a "billion laughs") stand for billions, which every walk over a config takes."""
FILE_EXAMPLE = "a .yaml or .json file, e.g. configs/smoke.yaml"


def duplicate_key(source: str, line: int, key: Any, first: int) -> str:
    """The one line for a key given twice in one mapping (YAML, JSON or a Python dict literal)."""
    return f"{source}: line {line}: duplicate key {key!r} (first at line {first}); keep one of them"


def too_deep(source: str, line: int) -> str:
    """The one line for nesting beyond ``MAX_DEPTH``."""
    return (f"{source}: line {line}: nested deeper than {MAX_DEPTH} levels of mappings and lists; "
            "flatten it (no config needs that depth)")


def read_text(path: str | Path, what: str = "config", example: str = FILE_EXAMPLE) -> str:
    """The UTF-8 text of a regular file; a path ``fsio.check_input`` refuses (missing, a folder, a
    pipe, a symlink loop, under a file), bytes that are not UTF-8 and an empty file are each a
    one-line :class:`ConfigError` naming the file."""
    try:  # the one path check every input gets (a FIFO nobody writes would block forever)
        p = check_input(path, f"{what} file", "file", f"give {example}", must_exist=True)
    except LmlabError as e:
        raise ConfigError(str(e)) from None
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what} ({e.__class__.__name__}: {e})") from None
    try:
        text = data.decode("utf-8-sig")  # a BOM is UTF-8 too (editors on Windows write one)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(f"{p}: cannot read {what}: not UTF-8 text (byte 0x{data[e.start]:02x} at line {line}, "
                          f"column {column}); save it as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{p}: the {what} file is empty; write the {what} in it")
    return text


def load_file(path: str | Path, what: str = "config", example: str = FILE_EXAMPLE) -> Any:
    """A YAML or JSON file (``.json`` is JSON) parsed safely: ``read_text``'s errors, then a
    syntax error, a duplicate key, nesting beyond ``MAX_DEPTH``, an alias bomb or a document
    that holds nothing, each one line naming the file and the line."""
    p = Path(path)
    text = read_text(p, what, example)
    try:
        data = safe_json(text, str(p)) if p.suffix == ".json" else safe_yaml(text, str(p))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: line {e.lineno}, column {e.colno}: cannot parse {what}: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        why = " ".join(x for x in (getattr(e, "problem", None), getattr(e, "context", None)) if x) or \
            str(e).strip().splitlines()[0]
        raise ConfigError(f"{p}: {at}cannot parse {what}: {why}") from None
    if data is None:
        raise ConfigError(f"{p}: the {what} file is empty (only comments or null); write the {what} in it")
    return data


def safe_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load`` that refuses a duplicate key, nesting beyond ``MAX_DEPTH`` and aliases
    that expand past ``MAX_VALUES`` values or into themselves (:class:`ConfigError` naming
    ``source``); a syntax error stays a ``yaml.YAMLError`` (``--set`` reads it as a string)."""
    loader = _SafeLoader(text, source)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")}


class _SafeLoader(yaml.SafeLoader):
    """SafeLoader checking each document as it is composed, before anything is constructed."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        nested = int(self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent))
        self.depth += nested
        try:
            if self.depth > MAX_DEPTH:  # refused before the composer's recursion gives out
                raise ConfigError(too_deep(self.source, self.peek_event().start_mark.line + 1))
            return super().compose_node(parent, index)
        finally:
            self.depth -= nested

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        # Only the keys written here: ones a merge (<<: *base) brings in may be overridden.
        node = super().compose_mapping_node(anchor)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self._key(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(duplicate_key(self.source, line, key_node.value, seen[key]))
            seen[key] = line
        return node

    def _key(self, node: yaml.Node) -> Any:
        """A key as the mapping will hold it (``1`` and ``0x1`` are one key; a key that is a
        collection is never equal to another). Plain scalars only, through their constructor
        alone: ``construct_object`` would leave its state half set if it failed here."""
        if not isinstance(node, yaml.ScalarNode):
            return object()
        if node.tag in _PLAIN_TAGS:
            try:
                return self.yaml_constructors[node.tag](self, node)
            except (yaml.YAMLError, ValueError):
                pass
        return (node.tag, node.value)

    def compose_document(self) -> yaml.Node:
        node = super().compose_document()
        _measure(node, self.source)
        return node


def _measure(root: yaml.Node, source: str) -> None:
    """Walk a composed document as the tree its aliases stand for (memoized, so a bomb costs
    what its text does) and refuse one over ``MAX_VALUES`` values or ``MAX_DEPTH`` deep, or
    an alias inside the collection it names."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            kids = [part for pair in node.value for part in pair]
        else:
            kids = node.value if isinstance(node, yaml.SequenceNode) else []
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = int(not isinstance(node, yaml.ScalarNode)) + max((depth[id(k)] for k in kids), default=0)
            if size[key] > MAX_VALUES:
                raise ConfigError(f"{source}: its aliases expand to more than {MAX_VALUES:,} values (an alias "
                                  "bomb); write the values out instead of nesting aliases")
            if depth[key] > MAX_DEPTH:
                raise ConfigError(too_deep(source, node.start_mark.line + 1))
        elif key in open_:  # met again inside itself: only an alias can do that
            raise ConfigError(f"{source}: line {node.start_mark.line + 1}: an alias is used inside the collection "
                              "it names (a recursive structure); write the values out")
        elif key not in size:
            open_.add(key)
            stack.append((node, True))
            stack.extend((k, False) for k in kids)


_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[][{},:]', re.S)


def safe_json(text: str, source: str) -> Any:
    """``json.loads`` that refuses a key given twice in one object and nesting beyond
    ``MAX_DEPTH`` (:class:`ConfigError` naming ``source`` and the line; json itself keeps the
    last of two keys and fails with a RecursionError near 1,000 levels). A syntax error stays a
    ``json.JSONDecodeError``."""
    frames: list[dict[str, int] | None] = []  # per open object its keys' offsets; None for a list
    prev = ""
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in ("{", "["):
            frames.append({} if tok == "{" else None)
            if len(frames) > MAX_DEPTH:
                raise ConfigError(too_deep(source, _line(text, m.start())))
        elif tok in ("}", "]"):
            if frames:
                frames.pop()
        elif tok.startswith('"') and prev in ("{", ",") and frames and frames[-1] is not None:
            try:
                key = json.loads(tok)  # "\u0061" and "a" are one key
            except ValueError:
                key = tok
            keys = frames[-1]
            if key in keys:
                raise ConfigError(duplicate_key(source, _line(text, m.start()), key, _line(text, keys[key])))
            keys[key] = m.start()
        prev = tok
    return json.loads(text)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1

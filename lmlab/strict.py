"""Strict config schemas: the pydantic base every config section subclasses, and the checks
that turn a bad key or value into one line naming the source, the key, the value and what is
allowed (run configs in ``config.py``, continuous-trainer presets in ``continuous/presets.py``).

Also the one safe reader of every config, spec and preset file and of ``--set`` values
(``load_file``, ``safe_yaml``, ``safe_json``): a key given twice, nesting deeper than
``MAX_DEPTH``, YAML aliases that expand past ``MAX_VALUES`` values or into themselves, an empty
file and text that is not UTF-8 are each one line naming the file (and the line)."""

from __future__ import annotations

import difflib
import json
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from lmlab.errors import ConfigError, LmlabError
from lmlab.fsio import check_input


class Strict(BaseModel):
    """Base for every config section: unknown keys fail, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def validate_strict(cls: type[BaseModel], raw: dict[str, Any], source: str) -> Any:
    """``cls.model_validate(raw)`` with every unknown key and the first bad value as one-line
    :class:`ConfigError` naming ``source``."""
    where: Callable[[list], str] = lambda loc: source  # noqa: E731
    check_keys(cls, raw, [], where)
    try:
        return cls.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, raw, [], where)) from None


class UnknownKey(typing.NamedTuple):
    """One key no schema knows: where it came from, its dotted path, its value and a hint."""

    where: str
    path: str
    value: Any
    hint: str
    allowed: list[str]


def unknown_keys_error(found: list[UnknownKey]) -> ConfigError:
    """Every unknown key in one line: one key with what its place allows, several each with its hint."""
    if len(found) == 1:
        k = found[0]
        return ConfigError(f"{k.where}: {k.path} = {k.value!r}: unknown key{k.hint}; allowed: {', '.join(k.allowed)}")
    parts = [f"{k.path}{k.hint}" for k in found]
    wheres = list(dict.fromkeys(k.where for k in found))
    if len(wheres) > 1:
        parts = [f"{k.where}: {p}" for k, p in zip(found, parts)]
    head = f"{wheres[0]}: " if len(wheres) == 1 else ""
    return ConfigError(f"{head}{len(found)} unknown keys: {'; '.join(parts)}")


def model_class_of(annotation: Any, value: Any) -> type[BaseModel] | None:
    """The config class that validates ``value`` under ``annotation`` (following unions by tag)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return model_class_of(typing.get_args(annotation)[0], value)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            cls = model_class_of(arg, value)
            if cls is None:
                continue
            tag = cls.model_fields.get("type")
            if tag is None or not isinstance(value, dict) or value.get("type") == tag.default:
                return cls
    return None


def check_keys(cls: type[BaseModel], raw: Any, loc: list[str | int], where,
               found: list[UnknownKey] | None = None, elsewhere: dict[str, str] | None = None) -> None:
    """Reject unknown keys anywhere below ``cls``. ``where(loc)`` names the source of a location
    (a file, or the ``--set`` that gave it); keys a class lists in its ``checked_apart`` are left
    to their own validation. With ``found``, unknown keys are appended to it instead of raised, so
    a caller reports them all at once. A hint says where a key lives when ``elsewhere`` (field
    name -> dotted place, see ``key_homes``) has it (``"model.plan_mi_weight"``), else the closest
    valid key here, else the closest key elsewhere, if it is close."""
    collect = found if found is not None else []
    fields = cls.model_fields
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key not in fields:
                path = _dotted([*loc, key])
                homes = elsewhere or {}
                # A strict cutoff: a distant "did you mean" (num_workers -> num_threads) misleads.
                close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.75)
                far = difflib.get_close_matches(str(key), list(homes), n=1, cutoff=0.85)
                if homes.get(key, path) != path:
                    hint = f" (it is {homes[key]})"
                elif close:
                    hint = f" (did you mean {close[0]!r}?)"
                elif far and homes[far[0]] != _dotted([*loc, far[0]]):
                    hint = f" (did you mean {homes[far[0]]}?)"
                else:
                    hint = ""
                collect.append(UnknownKey(where([*loc, key]), path, value, hint, list(fields)))
                continue
            ann = fields[key].annotation
            if typing.get_origin(ann) is list and isinstance(value, list):
                (item_ann,) = typing.get_args(ann)
                for i, item in enumerate(value):
                    sub = model_class_of(item_ann, item)
                    if sub is not None:
                        check_keys(sub, item, [*loc, key, i], where, collect, elsewhere)
            else:
                sub = model_class_of(ann, value)
                if sub is not None and key not in getattr(cls, "checked_apart", ()):
                    check_keys(sub, value, [*loc, key], where, collect, elsewhere)
    if found is None and collect:
        raise unknown_keys_error(collect)


def key_homes(sections: dict[str, type[BaseModel]]) -> dict[str, str]:
    """Field name -> its dotted place, for every field of every section (not their subsections:
    ``tokenizer.backend`` is not ``train.distributed.backend``): what ``check_keys``'s
    ``elsewhere`` hint looks up. A name found in two sections is left out."""
    seen: dict[str, list[str]] = {}
    for prefix, cls in sections.items():
        for name in cls.model_fields:
            seen.setdefault(name, []).append(f"{prefix}.{name}")
    return {name: places[0] for name, places in seen.items() if len(places) == 1}


def format_validation_error(
    e: ValidationError, raw: dict[str, Any], prefix: list[str | int], where
) -> str:
    """One line for the first error: source, dotted key, offending value, what is allowed."""
    err = e.errors()[0]
    loc: list[str | int] = []
    node: Any = raw
    for part in err["loc"]:
        # Discriminated unions add the tag (e.g. "text") to the location; it is not a key.
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        loc.append(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    full = [*prefix, *loc]
    path = _dotted(full)
    value = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")
    shown = f" = {value!r}" if not isinstance(value, dict) else ""
    return f"{where(full)}: {path or 'config'}{shown}: {msg}"


def _dotted(loc: list[str | int]) -> str:
    """["data", "sources", 0, "path"] -> "data.sources[0].path"."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _has(node: dict | list, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


# ---------------------------------------------------------------- reading config files safely

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

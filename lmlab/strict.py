"""Strict config schemas: the pydantic base every config section subclasses, and the checks
that turn a bad key or value into one line naming the source, the key, the value and what is
allowed (run configs in ``config.py``, continuous-trainer presets in ``continuous/presets.py``).
The files they are read from are read by ``safeload.py``."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from lmlab.errors import ConfigError


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

"""Strict config schemas: the pydantic base every config section subclasses, and the checks
that turn a bad key or value into one line naming the source, the key, the value and what is
allowed (run configs in ``config.py``, continuous-trainer presets in ``continuous/presets.py``)."""

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


def _model_class_of(annotation: Any, value: Any) -> type[BaseModel] | None:
    """The config class that validates ``value`` under ``annotation`` (following unions by tag)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _model_class_of(typing.get_args(annotation)[0], value)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            cls = _model_class_of(arg, value)
            if cls is None:
                continue
            tag = cls.model_fields.get("type")
            if tag is None or not isinstance(value, dict) or value.get("type") == tag.default:
                return cls
    return None


def check_keys(cls: type[BaseModel], raw: Any, loc: list[str | int], where) -> None:
    """Reject unknown keys anywhere below ``cls``, suggesting the closest valid key. ``where(loc)``
    names the source of a location (a file, or the ``--set`` that gave it); keys a class lists in
    its ``checked_apart`` are left to their own validation."""
    if not isinstance(raw, dict):
        return
    fields = cls.model_fields
    for key, value in raw.items():
        if key not in fields:
            path = _dotted([*loc, key])
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where([*loc, key])}: {path} = {value!r}: unknown key{hint}; "
                f"allowed: {', '.join(fields)}"
            )
        ann = fields[key].annotation
        if typing.get_origin(ann) is list and isinstance(value, list):
            (item_ann,) = typing.get_args(ann)
            for i, item in enumerate(value):
                sub = _model_class_of(item_ann, item)
                if sub is not None:
                    check_keys(sub, item, [*loc, key, i], where)
        else:
            sub = _model_class_of(ann, value)
            if sub is not None and key not in getattr(cls, "checked_apart", ()):
                check_keys(sub, value, [*loc, key], where)


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

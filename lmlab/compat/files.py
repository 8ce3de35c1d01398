"""Seed files that are not YAML/JSON run configs: seed 003's ``experiments/*.py`` (the
``exp_config`` dict literal, read with ``ast.literal_eval`` and never run) and seed 001's JSON
presets given as ``--config``."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from lmlab.compat.seed001 import to_run_config, validate_preset
from lmlab.compat.tables import PLACEHOLDER, table
from lmlab.errors import ConfigError
from lmlab.safeload import MAX_DEPTH, duplicate_key, load_file, read_text, too_deep


def read_seed_file(path: Path) -> tuple[dict[str, Any], str | None] | None:
    """(raw config, seed) for a file in a seed's own format, or None for a YAML/JSON lmlab-shaped
    file (read by ``config.read_config_file``). Seed 003's ``.py``: its ``exp_config`` literal;
    seed 001's JSON preset (``model.hidden_size``): the run config ``main.py`` makes of it, in
    ``runs/<preset name>`` (``main.py`` keeps its own model in ``runs/main``)."""
    if path.suffix == ".py":
        return read_python_dict(path, table("003").python_dict), "003"
    if path.suffix == ".json":
        raw = load_file(path)  # the one safe reader: its errors are the config's
        if isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "hidden_size" in raw["model"]:
            preset = validate_preset(raw, str(path))
            out = to_run_config(preset, path.stem)
            out["train"]["out_dir"] = f"runs/{preset.name or path.stem}"
            out["data"].pop("token_cache_dir", None)
            out["data"]["reuse_token_cache"] = True
            return out, "001"
    return None


def read_python_dict(path: Path, name: str) -> dict[str, Any]:
    """The dict literal assigned to ``name`` in a Python file, read with ``ast.literal_eval``:
    the file is never run. A value that is not a literal (``DEVICE``, ``os.cpu_count()``) is an
    error naming every such key."""
    text = read_text(path, "config", f"a Python file with {name} = {{...}}, e.g. experiments/exp.py")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:  # also Python's own limit: "too many nested parentheses"
        raise ConfigError(f"{path}: line {e.lineno}: not valid Python ({e.msg})") from None
    except (RecursionError, MemoryError):  # nesting without brackets (- - - ... 1) beyond the parser
        raise ConfigError(f"{path}: nested too deeply for Python to parse; flatten it") from None
    node = None
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else \
            [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            node = stmt.value
    if node is None:
        raise ConfigError(f"{path}: no `{name} = {{...}}` in the file; lmlab reads the {name} dict literal")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        keys: list[Any] = [ast.Constant(kw.arg) for kw in node.keywords]
        values = [kw.value for kw in node.keywords]
    elif isinstance(node, ast.Dict):
        keys, values = list(node.keys), list(node.values)
    else:
        raise ConfigError(f"{path}: line {node.lineno}: {name} is not a dict literal; write {name} = {{'key': value, ...}}")
    _check_literal(node, str(path))
    out, bad = {}, []
    for k, v in zip(keys, values):
        try:
            key = ast.literal_eval(k) if k is not None else None
            value = ast.literal_eval(v)
            # The seed's `{...}` (a set holding Ellipsis) is a placeholder: kept as "..." (JSON-safe).
            out[key] = PLACEHOLDER if value is Ellipsis or value == {Ellipsis} else value
        except ValueError:
            label = ast.unparse(k) if k is not None else "**"
            bad.append(f"{label} (line {v.lineno}: {ast.unparse(v)})")
    if bad:
        raise ConfigError(f"{path}: {len(bad)} value(s) of {name} are not literals, and lmlab reads the file "
                          f"without running it: {'; '.join(bad)}; write the values themselves (e.g. 'cuda', 4)")
    return out


_NESTING = (ast.Dict, ast.List, ast.Tuple, ast.Set)


def _check_literal(node: ast.expr, source: str) -> None:
    """Refuse a key written twice in any dict literal of ``node`` (``ast.literal_eval`` keeps the
    last, silently) and nesting beyond ``MAX_DEPTH``, naming the line. ``dict(a=1, a=2)`` is
    already a SyntaxError. A literal has no aliases, so it cannot hold more than its text."""
    stack: list[tuple[ast.AST, int]] = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        depth += isinstance(item, _NESTING)
        if depth > MAX_DEPTH:
            raise ConfigError(too_deep(source, getattr(item, "lineno", node.lineno)))
        if isinstance(item, ast.Dict):
            seen: dict[Any, int] = {}
            for k in item.keys:
                if k is None:  # a **spread: not a literal, named by the literal check
                    continue
                try:
                    key = ast.literal_eval(k)
                    hash(key)
                except (ValueError, TypeError, SyntaxError):
                    continue  # not a literal key: the literal check names it
                if key in seen:
                    raise ConfigError(duplicate_key(source, k.lineno, key, seen[key]))
                seen[key] = k.lineno
        stack.extend((child, depth) for child in ast.iter_child_nodes(item))

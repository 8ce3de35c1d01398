"""Seed files that are not YAML/JSON run configs: seed 003's ``experiments/*.py`` (the
``exp_config`` dict literal, read with ``ast.literal_eval`` and never run) and seed 001's JSON
presets given as ``--config``."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from lmlab.compat.seed001 import to_run_config, validate_preset
from lmlab.compat.tables import PLACEHOLDER, table
from lmlab.errors import ConfigError


def read_seed_file(path: Path) -> tuple[dict[str, Any], str | None] | None:
    """(raw config, seed) for a file in a seed's own format, or None for a YAML/JSON lmlab-shaped
    file (read by ``config.read_config_file``). Seed 003's ``.py``: its ``exp_config`` literal;
    seed 001's JSON preset (``model.hidden_size``): the run config ``main.py`` makes of it, in
    ``runs/<preset name>`` (``main.py`` keeps its own model in ``runs/main``)."""
    if path.suffix == ".py":
        return read_python_dict(path, table("003").python_dict), "003"
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None  # read_config_file says what is wrong
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
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config ({e.__class__.__name__}: {e})") from None
    except SyntaxError as e:
        raise ConfigError(f"{path}: line {e.lineno}: not valid Python ({e.msg})") from None
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

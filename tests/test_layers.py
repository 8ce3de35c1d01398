"""The shape of the package, read from its source with ``ast`` (tests/layers.py): no import cycle
(imports inside functions count), every import goes down the layers of docs/architecture.md, no
module over 500 lines, no function over 80, and an import inside a function only where it
defers a heavy optional package, saying so. bench/ and tests/ are exempt."""

from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("lmlab_layers", Path(__file__).with_name("layers.py"))
layers = importlib.util.module_from_spec(_spec)
sys.modules["lmlab_layers"] = layers  # dataclasses look their module up
_spec.loader.exec_module(layers)


@pytest.fixture(scope="module")
def graph() -> layers.Graph:
    return layers.build_graph()


def test_no_import_cycles(graph):
    assert layers.cycles(graph) == []


def test_every_import_goes_down_the_layers(graph):
    assert [f"{i.source}:{i.line} -> {i.target}" for i in layers.upward_imports(graph)] == []


def test_no_module_over_500_lines(graph):
    assert layers.long_modules(graph) == {}


def test_no_function_over_80_lines(graph):
    assert layers.long_functions(graph) == {}


def test_no_lmlab_import_inside_a_function(graph):
    """An lmlab module is never imported inside a function: such imports only dodged cycles."""
    assert [f"{i.source}:{i.line} -> {i.target}" for i in layers.function_imports(graph)] == []


def test_the_schema_imports_only_the_ground(graph):
    """The config classes (run sections and every family's model config) sit at the bottom:
    they import only strict, errors and other schema modules."""
    schema = {m for m in graph.modules if layers.LAYERS[layers.layer_of(m)][0] == "schema"}
    assert {"lmlab.config", "lmlab.train_config", "lmlab.models.transformer.config"} <= schema
    allowed = schema | {"lmlab.errors", "lmlab.strict"}
    bad = [f"{i.source} -> {i.target}" for i in graph.imports if i.source in schema and i.target not in allowed]
    assert bad == []


def test_storage_and_models_never_reach_up(graph):
    """rundir is storage (no registry, no compat, no config loading), and no model reads a run dir."""
    low = {"lmlab.errors", "lmlab.strict", "lmlab.fsio", "lmlab.integrity"}
    assert {i.target for i in graph.imports if i.source == "lmlab.rundir"} <= low
    models = [m for m in graph.modules if m.startswith("lmlab.models")]
    assert [i for i in graph.imports if i.source in models and i.target in ("lmlab.rundir", "lmlab.runs")] == []


def test_every_import_inside_a_function_says_why(graph):
    """Any import inside a function (lmlab's never; a third-party one only to defer a heavy or
    optional package) carries a ``# deferred:`` comment on its line or the line above."""
    unmarked = []
    for name, path in graph.modules.items():
        text = path.read_text()
        lines = text.splitlines()
        for node, in_function in layers._walk(ast.parse(text), False):
            context = " ".join(lines[max(0, node.lineno - 2): node.lineno])
            if in_function and layers.DEFER_MARK not in context:
                unmarked.append(f"{name}:{node.lineno}")
    assert unmarked == []


def _tree(tmp_path: Path, files: dict[str, str]) -> layers.Graph:
    root = tmp_path / "lmlab"
    for name, body in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(body))
    return layers.build_graph(root)


def test_the_checks_find_what_they_look_for(tmp_path):
    """The analysis itself, on a made-up package: a cycle through an import inside a function,
    a long function, a deferred optional import and a relative import."""
    g = _tree(tmp_path, {
        "__init__.py": "",
        "a.py": "from lmlab import b\n",
        "b.py": "def f():\n    from lmlab.a import x\n" + "    y = 1\n" * 85,
        "c.py": "from . import a\n\ndef g():\n    # deferred: optional\n    import mlflow\n",
    })
    assert layers.cycles(g) == [["lmlab.a", "lmlab.b"]]
    inside = layers.function_imports(g)
    assert [(i.source, i.target) for i in inside] == [("lmlab.b", "lmlab.a")]
    assert layers.long_functions(g) == {"lmlab.b:f": 87}
    assert ("lmlab.c", "lmlab.a") in {(i.source, i.target) for i in g.imports}

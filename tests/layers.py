"""The import graph of `lmlab/`, read with `ast` (imports inside functions count too).

Used by tests/test_layers.py and runnable on its own for the figures:
`python tests/layers.py` prints the cycles, the imports inside functions, and the modules and
functions over their limits.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "lmlab"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# The comment that allows an import inside a function: it defers a heavy optional dependency.
DEFER_MARK = "# deferred:"


@dataclass
class Import:
    """One `import` of an lmlab module: where it is and whether it sits inside a function."""

    source: str
    target: str
    line: int
    in_function: bool
    deferred: bool  # carries the DEFER_MARK comment on its line or the line above


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    imports: list[Import] = field(default_factory=list)

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            if imp.target != imp.source:
                out[imp.source].add(imp.target)
        return out


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(graph_modules: dict[str, Path], module: str, names: list[str]) -> list[str]:
    """`from module import a, b`: each name that is a submodule is its own target."""
    targets = []
    for name in names:
        sub = f"{module}.{name}"
        if sub in graph_modules:
            targets.append(sub)
        elif module in graph_modules:
            targets.append(module)
    return targets or ([module] if module in graph_modules else [])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool):
    """Yield (import node, in_function), skipping `if TYPE_CHECKING:` blocks (never run)."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield from _walk(other, in_function)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, in_function
        inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from _walk(child, inside)


def build_graph(root: Path = ROOT) -> Graph:
    graph = Graph()
    for path in sorted(root.rglob("*.py")):
        graph.modules[module_name(path, root)] = path
    for name, path in graph.modules.items():
        text = path.read_text()
        lines = text.splitlines()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node, in_function in _walk(ast.parse(text), False):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name in graph.modules]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                if not base.startswith("lmlab"):
                    continue
                targets = _resolve(graph.modules, base, [a.name for a in node.names])
            context = " ".join(lines[max(0, node.lineno - 2): node.lineno])
            for target in dict.fromkeys(targets):
                graph.imports.append(Import(name, target, node.lineno, in_function,
                                            DEFER_MARK in context))
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    edges = graph.edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def long_modules(graph: Graph, limit: int = MAX_MODULE_LINES) -> dict[str, int]:
    sizes = {name: len(path.read_text().splitlines()) for name, path in graph.modules.items()}
    return {name: n for name, n in sorted(sizes.items()) if n > limit}


def long_functions(graph: Graph, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """`module:qualname` -> lines, for every function (methods and nested ones too) over limit."""
    out: dict[str, int] = {}

    def visit(module: str, node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qual = f"{prefix}{child.name}"
                n = child.end_lineno - child.lineno + 1
                if not isinstance(child, ast.ClassDef) and n > limit:
                    out[f"{module}:{qual}"] = n
                visit(module, child, qual + ".")
            else:
                visit(module, child, prefix)

    for name, path in graph.modules.items():
        visit(name, ast.parse(path.read_text()), "")
    return dict(sorted(out.items()))


def function_imports(graph: Graph) -> list[Import]:
    return [imp for imp in graph.imports if imp.in_function]


# The layers, bottom first (docs/architecture.md draws them). A module may import its own layer
# and those below; the first pattern a module name matches gives its layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("ground", ("lmlab.errors", "lmlab.strict", "lmlab.fsio", "lmlab.safeload", "lmlab.console")),
    ("schema", ("lmlab.config", "lmlab.train_config", "lmlab.models.*.config", "lmlab.models.*.config_*")),
    ("storage", ("lmlab.integrity", "lmlab.rundir")),
    ("parts", ("lmlab.models", "lmlab.models.*", "lmlab.tokenizers", "lmlab.tokenizers.*", "lmlab.data",
               "lmlab.data.*", "lmlab.generate", "lmlab.generate.*", "lmlab.devices",
               "lmlab.interop.hf_config",  # HF config.json -> model sections: plain dicts
               # the eval tasks and their Scorer use only parts: configure checks train.eval_tasks
               "lmlab.eval.tasks", "lmlab.eval.tasks.*", "lmlab.eval.scoring", "lmlab.eval.metrics")),
    ("registry", ("lmlab.registry",)),
    ("dialects", ("lmlab.compat", "lmlab.compat.*")),
    ("configure", ("lmlab.configure", "lmlab.runs", "lmlab.init_from")),
    ("engine", ("lmlab.training", "lmlab.training.*", "lmlab.eval", "lmlab.eval.*", "lmlab.report",
                "lmlab.report.*", "lmlab.interop", "lmlab.interop.*")),
    ("tools", ("lmlab.compare", "lmlab.compare.*")),
    ("ways in", ("lmlab.api", "lmlab.highlevel", "lmlab.continuous", "lmlab.continuous.*")),
    ("entry", ("lmlab.doctor", "lmlab.cli_args", "lmlab.cli", "lmlab.__main__", "lmlab")),
]


def layer_of(module: str) -> int:
    for rank, (_, patterns) in enumerate(LAYERS):
        for pattern in patterns:
            if pattern == module or ("*" in pattern and fnmatch.fnmatchcase(module, pattern)):
                return rank
    raise KeyError(f"{module} is in no layer: add it to tests/layers.py LAYERS")


def upward_imports(graph: Graph) -> list[Import]:
    """Imports of a module in a higher layer than the importer's."""
    return [imp for imp in graph.imports if layer_of(imp.target) > layer_of(imp.source)]


def main() -> None:
    graph = build_graph()
    found = cycles(graph)
    inside = function_imports(graph)
    print(f"{len(graph.modules)} modules, {len(graph.imports)} lmlab imports, "
          f"{len(inside)} inside functions ({sum(not i.deferred for i in inside)} without "
          f"'{DEFER_MARK}')")
    print(f"{len(found)} import cycles")
    for component in found:
        print(f"  {len(component)}: {' '.join(component)}")
    modules = long_modules(graph)
    print(f"{len(modules)} modules over {MAX_MODULE_LINES} lines: {modules}")
    functions = long_functions(graph)
    print(f"{len(functions)} functions over {MAX_FUNCTION_LINES} lines: {functions}")
    up = upward_imports(graph)
    print(f"{len(up)} imports of a higher layer")
    for imp in up:
        print(f"  {imp.source}:{imp.line} ({LAYERS[layer_of(imp.source)][0]}) -> {imp.target} "
              f"({LAYERS[layer_of(imp.target)][0]})")
    if "-v" in sys.argv:
        for imp in inside:
            print(f"  {imp.source}:{imp.line} -> {imp.target}{'' if imp.deferred else '  (no mark)'}")


if __name__ == "__main__":
    main()

"""Built-in corpus ``pydocs``: English prose from the local Python install.

Two parts, both read at run time (nothing is stored in the repo):

* the documentation topics shipped with CPython (``pydoc_data.topics``), one document each;
* the docstrings of the standard library's public modules, parsed with :mod:`ast` (never
  imported), one document per module.

The order and content are deterministic for a given Python install.
"""

from __future__ import annotations

import ast
import itertools
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from lmlab.config import BuiltinSource
from lmlab.data.documents import Document, Shard

SOURCE = "builtin:pydocs"

# Folders never walked: third-party packages and test suites.
_SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
# Top-level packages skipped: generated codecs, deprecated or bundled tools, GUI apps and demos
# (little prose, and parsing them would push the build time past ~2 s).
_SKIP_TOP = {
    "encodings",
    "idlelib",
    "distutils",
    "lib2to3",
    "pydoc_data",
    "ensurepip",
    "turtledemo",
}

MAX_MODULE_CHARS = 40_000
"""Docstrings of one module beyond this many characters are dropped (keeps the corpus ~2 MB)."""


def read_pydocs(source: BuiltinSource, label: str, index: int, strict_utf8: bool, shard: Shard) -> Iterator[Document]:
    """The builtin corpus's reader: documents k, k + n, ... of ``iter_pydocs`` for shard (k, n)."""
    k, n = shard
    return itertools.islice(iter_pydocs(), k, None, n)


def iter_pydocs() -> Iterator[Document]:
    """Yield the pydoc topics (sorted by name), then the stdlib module docstrings (sorted by path)."""
    yield from _iter_topics()
    yield from _iter_stdlib()


def _iter_topics() -> Iterator[Document]:
    try:
        # deferred: some minimal Python builds do not ship pydoc_data (1 MB of text)
        from pydoc_data.topics import topics
    except ImportError:  # some minimal Python builds do not ship pydoc_data
        return
    for name in sorted(topics):
        yield Document(SOURCE, f"topics/{name}", topics[name].strip() + "\n")


def _iter_stdlib() -> Iterator[Document]:
    root = Path(sysconfig.get_paths()["stdlib"])
    for rel in _stdlib_files(root):
        path = root / rel
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        text = module_text(tree, module_name(rel))
        if text:
            yield Document(SOURCE, f"stdlib/{rel.as_posix()}", text)


def _stdlib_files(root: Path) -> list[Path]:
    """Relative paths of the stdlib's kept ``*.py`` files, sorted; skipped folders are not walked."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        top = folder == str(root)
        dirs[:] = [d for d in dirs if d not in _SKIP_PARTS and not (top and d in _SKIP_TOP)]
        for f in files:
            rel = Path(folder, f).relative_to(root)
            if f.endswith(".py") and not _skipped(rel):
                found.append(rel)
    return sorted(found)


def _skipped(rel: Path) -> bool:
    """True for private top-level modules, test packages and modules, and skipped packages."""
    parts = rel.parts
    if parts[0].startswith("_") or parts[0] in _SKIP_TOP:
        return True
    if any(p in _SKIP_PARTS for p in parts[:-1]):
        return True
    return rel.name.startswith("test_") or rel.name == "__main__.py"


def module_name(rel: Path) -> str:
    """``json/decoder.py`` -> ``json.decoder``; ``json/__init__.py`` -> ``json``."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def module_text(tree: ast.Module, name: str, max_chars: int = MAX_MODULE_CHARS) -> str:
    """The module's docstrings, each under a header line, joined with blank lines ('' if none)."""
    blocks: list[str] = []
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        blocks.append(f"module {name}\n\n{doc}")
    _collect(tree.body, "", blocks)
    out: list[str] = []
    size = 0
    for block in blocks:
        if out and size + len(block) > max_chars:
            break
        out.append(block)
        size += len(block) + 2
    return "\n\n".join(out) + "\n" if out else ""


def _collect(body: list[ast.stmt], prefix: str, blocks: list[str]) -> None:
    """Append ``header\\ndocstring`` for every documented class/function in ``body``, in order."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            header = f"class {prefix}{node.name}"
            if node.bases:
                header += "(" + ", ".join(_base_name(b) for b in node.bases) + ")"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            kind = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
            header = f"{kind} {prefix}{node.name}({_arg_names(node.args)})"
        else:
            continue
        doc = ast.get_docstring(node, clean=True)
        if doc:
            blocks.append(f"{header}\n{doc}")
        if isinstance(node, ast.ClassDef):
            _collect(node.body, f"{prefix}{node.name}.", blocks)


def _arg_names(args: ast.arguments) -> str:
    """``a, b=..., *args, c, **kw`` (defaults elided: cheap, and enough to read naturally)."""
    positional = [*args.posonlyargs, *args.args]
    n_plain = len(positional) - len(args.defaults)
    out = [a.arg if i < n_plain else f"{a.arg}=..." for i, a in enumerate(positional)]
    if args.posonlyargs:
        out.insert(len(args.posonlyargs), "/")
    if args.vararg:
        out.append(f"*{args.vararg.arg}")
    elif args.kwonlyargs:
        out.append("*")
    for a, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        out.append(a.arg if default is None else f"{a.arg}=...")
    if args.kwarg:
        out.append(f"**{args.kwarg.arg}")
    return ", ".join(out)


def _base_name(node: ast.expr) -> str:
    """``Base`` or ``pkg.Base`` for a simple base class expression, else ``...``."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_base_name(node.value)}.{node.attr}"
    return "..."

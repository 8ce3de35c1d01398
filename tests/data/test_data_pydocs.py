"""The built-in ``pydocs`` corpus: deterministic, ~2 MB of prose, no test modules."""

from __future__ import annotations

import ast

import pytest

from lmlab.data.documents import Document
from lmlab.data.pydocs import iter_pydocs, module_text


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return list(iter_pydocs())


def test_deterministic(docs: list[Document]) -> None:
    assert list(iter_pydocs()) == docs


def test_size_and_unique_names(docs: list[Document]) -> None:
    total = sum(len(d.text) for d in docs)
    assert 1_000_000 < total < 4_000_000
    assert len(docs) > 200
    names = [d.name for d in docs]
    assert len(set(names)) == len(names)
    assert all(d.source == "builtin:pydocs" and d.text.strip() for d in docs)


def test_known_text(docs: list[Document]) -> None:
    by_name = {d.name: d for d in docs}
    assert "assert" in by_name["topics/assert"].text
    json_doc = by_name["stdlib/json/__init__.py"].text
    assert json_doc.startswith("module json\n\nJSON (JavaScript Object Notation)")
    assert "def dumps(obj, *, skipkeys=..." in json_doc


def test_no_tests_or_private_modules(docs: list[Document]) -> None:
    for d in docs:
        if not d.name.startswith("stdlib/"):
            assert d.name.startswith("topics/")
            continue
        parts = d.name.split("/")[1:]
        assert not {"test", "tests", "idle_test", "site-packages", "idlelib"} & set(parts), d.name
        assert not parts[0].startswith("_"), d.name
        assert not parts[-1].startswith("test_"), d.name


def test_module_text_headers_and_order() -> None:
    src = '''"""Mod doc."""
class A(Base):
    """A doc."""
    def m(self, x, *a, k=1, **kw):
        """M doc."""
def undocumented(): pass
async def f(p, /, q=2):
    """F doc."""
'''
    text = module_text(ast.parse(src), "pkg.mod")
    assert text == (
        "module pkg.mod\n\nMod doc.\n\nclass A(Base)\nA doc.\n\n"
        "def A.m(self, x, *a, k=..., **kw)\nM doc.\n\nasync def f(p, /, q=...)\nF doc.\n"
    )
    assert module_text(ast.parse("x = 1"), "empty") == ""

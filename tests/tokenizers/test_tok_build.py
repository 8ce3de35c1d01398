"""build_tokenizer / load_tokenizer / resolve_backend: fallbacks, fit bounds and errors."""

from __future__ import annotations

import sys

import pytest

from lmlab.config import TokenizerConfig
from lmlab.errors import LmlabError
from lmlab.tokenizers import build_tokenizer, load_tokenizer, resolve_backend

SMALL = ["the quick brown fox jumps over the lazy dog\n" * 3, "pack my box with five dozen jugs"]


def _hide(monkeypatch, *modules: str) -> None:
    """Make ``import module`` fail as if the package were not installed."""
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_auto_prefers_sentencepiece():
    assert resolve_backend("auto") == "sentencepiece"


def test_auto_falls_back_to_bpe_then_char(monkeypatch):
    _hide(monkeypatch, "sentencepiece")
    assert resolve_backend("auto") == "bpe"
    assert build_tokenizer(TokenizerConfig(type="auto", vocab_size=300), SMALL).backend == "bpe"
    _hide(monkeypatch, "tokenizers")
    assert resolve_backend("auto") == "char"
    assert build_tokenizer(TokenizerConfig(type="auto"), SMALL).backend == "char"


@pytest.mark.parametrize("backend", ["byte", "char", "bpe", "sentencepiece"])
def test_explicit_backend_is_kept(backend):
    assert resolve_backend(backend) == backend


def test_explicit_missing_library_names_pip(monkeypatch):
    _hide(monkeypatch, "sentencepiece", "tokenizers")
    with pytest.raises(LmlabError, match=r"pip install 'lmlab\[sentencepiece\]'"):
        resolve_backend("sentencepiece")
    with pytest.raises(LmlabError, match="pip install tokenizers"):
        build_tokenizer(TokenizerConfig(type="bpe"), SMALL)
    assert resolve_backend("char") == "char" and resolve_backend("byte") == "byte"


def _guarded(texts, limit):
    """Yield ``texts`` but fail the test if more than ``limit`` are pulled."""
    for i, t in enumerate(texts):
        if i >= limit:
            raise AssertionError(f"iterator consumed past item {limit}")
        yield t


def test_fit_max_chars_truncates_and_stops():
    texts = ["abcdef", "ghijklmnop", "qrstuvwxyz"]
    cfg = TokenizerConfig(type="char", fit_max_chars=10, fit_max_examples=None)
    tok = build_tokenizer(cfg, _guarded(texts, 2))
    assert tok.chars == list("abcdefghij")


def test_fit_max_examples_stops():
    texts = ["ab", "cd", "ef"]
    cfg = TokenizerConfig(type="char", fit_max_examples=2, fit_max_chars=None)
    assert build_tokenizer(cfg, _guarded(texts, 2)).chars == list("abcd")


@pytest.mark.parametrize("backend", ["bpe", "sentencepiece"])
def test_fit_bounds_for_trained_backends(backend):
    unseen = "zzzzzzzz zzzz zzzzz zzzz zz zzz " * 20
    texts = SMALL + [unseen]
    cfg = TokenizerConfig(type=backend, vocab_size=400, fit_max_examples=2)
    tok = build_tokenizer(cfg, _guarded(texts, 2))
    # a merge for "zz" exists only if the third text was used
    assert len(tok.encode("zzzzzzzz")) == 8
    cfg = TokenizerConfig(type=backend, vocab_size=400, fit_max_chars=len(SMALL[0]))
    tok = build_tokenizer(cfg, _guarded(texts, 1))
    assert len(tok.encode("zzzzzzzz")) == 8
    assert len(tok.encode(SMALL[0])) < len(SMALL[0]) / 2


@pytest.mark.parametrize("backend", ["char", "bpe", "sentencepiece"])
@pytest.mark.parametrize("texts", [[], ["", ""]])
def test_empty_corpus(backend, texts):
    with pytest.raises(LmlabError, match="cannot fit a tokenizer on an empty corpus"):
        build_tokenizer(TokenizerConfig(type=backend), iter(texts))


def test_byte_needs_no_data():
    assert build_tokenizer(TokenizerConfig(type="byte"), []).vocab_size == 257


@pytest.mark.parametrize(
    "backend,model_type", [("bpe", "bpe"), ("sentencepiece", "bpe"), ("sentencepiece", "unigram")]
)
def test_tiny_corpus_with_big_or_small_vocab(backend, model_type):
    for vocab_size in (16, 50_000):
        cfg = TokenizerConfig(type=backend, vocab_size=vocab_size, sp_model_type=model_type)
        tok = build_tokenizer(cfg, SMALL)
        assert 0 < tok.vocab_size < 2000
        assert tok.decode(tok.encode("fox ünïcode\n")) == "fox ünïcode\n"


def test_missing_model_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(LmlabError) as e:
        build_tokenizer(TokenizerConfig(model_path=str(missing)), SMALL)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmlabError, match="tokenizer_meta.json"):
        load_tokenizer(tmp_path / "empty")


def test_load_unknown_backend(tmp_path):
    (tmp_path / "tokenizer_meta.json").write_text('{"backend": "wordpiece"}')
    with pytest.raises(LmlabError, match="wordpiece"):
        load_tokenizer(tmp_path)

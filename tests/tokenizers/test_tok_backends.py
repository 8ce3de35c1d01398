"""Every tokenizer backend through the common interface."""

from __future__ import annotations

import importlib
import inspect
import json
import random

import numpy as np
import pytest

from lmlab.config import TokenizerConfig
from lmlab.errors import LmlabError
from lmlab.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    build_tokenizer,
    load_tokenizer,
)

ROUND_TRIP = [
    "Hello, world!",
    "  two leading spaces\n\tand a tab\n",
    "def f(x):\n    return x * 2  # comment\n\n\nclass A:\n    pass\n",
    "emoji 🎉🚀 and CJK 中文字符, accents é ß ø",
    "\n\nstarts with newlines and ends with spaces   ",
    "digits 1234567890 3.14159 and   runs    of     spaces",
    "windows\r\nline endings\r\n",
    " ",
    "\n",
    "",
]
UNSEEN = "unseen: 🦜 Ω ж ก"  # characters the corpus never has (exercises byte fallback)


def _corpus() -> list[str]:
    """A few hundred KB of Python docstrings plus the round-trip texts."""
    docs = []
    for name in [
        "json",
        "os",
        "re",
        "collections",
        "argparse",
        "pathlib",
        "functools",
        "itertools",
        "inspect",
        "logging",
        "textwrap",
        "string",
        "dataclasses",
        "subprocess",
    ]:
        mod = importlib.import_module(name)
        docs.append(inspect.getdoc(mod) or "")
        for _, obj in inspect.getmembers(mod):
            doc = inspect.getdoc(obj)
            if doc:
                docs.append(doc)
    rng = random.Random(0)
    words = "the a model token byte train loss data of in to".split()
    docs += [" ".join(rng.choices(words, k=50)) + f" {i}" for i in range(500)]
    return [d for d in docs if UNSEEN[-1] not in d] + ROUND_TRIP


CORPUS = _corpus()
BACKENDS = ["byte", "char", "bpe", "sentencepiece"]


@pytest.fixture(scope="module", params=BACKENDS + ["sentencepiece-unigram"])
def tok(request) -> Tokenizer:
    backend = request.param
    sp_type = "unigram" if backend.endswith("unigram") else "bpe"
    cfg = TokenizerConfig(type=backend.split("-")[0], vocab_size=1024, sp_model_type=sp_type)
    t = build_tokenizer(cfg, CORPUS)
    assert t.backend == cfg.type
    return t


def test_corpus_is_big_enough():
    assert sum(map(len, CORPUS)) > 200_000


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(tok: Tokenizer, text: str):
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.eos_id not in ids  # eos is never added
    assert tok.decode(ids) == text


def test_round_trip_corpus_and_unseen(tok: Tokenizer):
    for text in CORPUS[:50] + ([UNSEEN] if tok.backend != "char" else []):
        assert tok.decode(tok.encode(text)) == text


def test_compresses(tok: Tokenizer):
    text = CORPUS[0]
    n = len(tok.encode(text))
    if tok.backend in ("bpe", "sentencepiece"):
        assert n < 0.7 * len(text)
    else:
        assert n == len(text.encode() if tok.backend == "byte" else text)


def test_decode_drops_eos(tok: Tokenizer):
    ids = tok.encode("ab") + [tok.eos_id] + tok.encode("cd")
    assert tok.decode(ids) == "abcd"


def test_encode_batch_matches_encode(tok: Tokenizer):
    texts = ROUND_TRIP + CORPUS[:20]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_special_ids(tok: Tokenizer):
    special = tok.special_ids
    assert special["eos"] == tok.eos_id
    assert len(set(special.values())) == len(special)
    assert all(0 <= i < tok.vocab_size for i in special.values())


def test_token_byte_lengths(tok: Tokenizer):
    lengths = tok.token_byte_lengths()
    assert lengths.shape == (tok.vocab_size,) and lengths.dtype == np.int64
    assert all(lengths[i] == 0 for i in tok.special_ids.values())
    texts = ROUND_TRIP + CORPUS[:50] + ([UNSEEN] if tok.backend != "char" else [])
    for text in texts:
        assert int(lengths[tok.encode(text)].sum()) == len(text.encode("utf-8")), text


def test_save_load(tok: Tokenizer, tmp_path):
    tok.save(tmp_path / "tok")
    native = {
        "byte": [],
        "char": ["vocab.json"],
        "bpe": ["tokenizer.json"],
        "sentencepiece": ["tokenizer.model"],
    }[tok.backend]
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == sorted(
        native + ["tokenizer_meta.json"]
    )
    meta = json.loads((tmp_path / "tok" / "tokenizer_meta.json").read_text())
    assert meta["backend"] == tok.backend and meta["vocab_size"] == tok.vocab_size
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is type(tok)
    assert loaded.vocab_size == tok.vocab_size and loaded.special_ids == tok.special_ids
    texts = ROUND_TRIP + CORPUS[:30] + [UNSEEN]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert np.array_equal(loaded.token_byte_lengths(), tok.token_byte_lengths())
    # also through build_tokenizer(model_path=...)
    again = build_tokenizer(TokenizerConfig(type="char", model_path=str(tmp_path / "tok")), [])
    assert again.backend == tok.backend and again.encode(CORPUS[0]) == tok.encode(CORPUS[0])


def test_strict(tok: Tokenizer):
    if tok.backend == "char":
        with pytest.raises(LmlabError) as e:
            tok.encode("hi é🦜", strict=True)
        assert "\n" not in str(e.value)
        assert "'🦜' (U+1F99C)" in str(e.value) and "'é'" not in str(e.value)  # é was seen
        assert tok.encode("🦜") == [tok.unk_id]
    else:
        assert tok.encode(UNSEEN, strict=True) == tok.encode(UNSEEN)


# ------------------------------------------------------------------------------------ byte


def test_byte_ids():
    t = ByteTokenizer()
    assert t.vocab_size == 257 and t.eos_id == 256
    assert t.encode("aé") == [97, 0xC3, 0xA9]


def test_byte_arbitrary_bytes_round_trip():
    t = ByteTokenizer()
    rng = random.Random(1)
    for n in (0, 1, 7, 1000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert t.decode_bytes(t.encode_bytes(data)) == data
        text = data.decode("utf-8", "surrogateescape")  # as read from a non-UTF-8 file
        ids = t.encode(text)
        assert ids == list(data)
        assert t.decode(ids) == text
        assert t.decode_bytes(ids + [t.eos_id]) == data


# ------------------------------------------------------------------------------------ char


def test_char_ids_and_error_lists_every_char():
    t = CharTokenizer.fit(["cab", "b"])
    assert t.eos_id == 0 and t.unk_id == 1 and t.vocab_size == 5
    assert t.encode("abc") == [2, 3, 4]
    with pytest.raises(LmlabError) as e:
        t.encode("aéxßé", strict=True)
    msg = str(e.value)
    assert msg == (
        "prompt has characters the char tokenizer never saw: 'x' (U+0078), 'ß' (U+00DF), 'é' (U+00E9)"
    )
    assert t.encode("aéb") == [2, 1, 3]


@pytest.mark.parametrize("text", ["<|endoftext|> is text here", "a <|endoftext|>b"])
def test_special_token_text_is_plain_text(tok: Tokenizer, text: str):
    """The literal separator string in a document must not turn into the EOS id."""
    ids = tok.encode(text)
    assert tok.eos_id not in ids
    assert tok.decode(ids) == text

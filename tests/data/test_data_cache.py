"""Token cache: same arrays in memory and on disk, split rules, budgets, dtypes, reuse and crashes."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from lmlab.data.batches import encode_documents
from lmlab.data.cache import build_token_arrays, cache_status, open_token_cache
from lmlab.data.documents import Document
from lmlab.data.sources import doc_hash_fraction, split_documents
from lmlab.errors import LmlabError
from lmlab.tokenizers import ByteTokenizer

WORDS = "the cat sat on a mat while dogs ran far away from home and birds sang".split()


def make_docs(source: str, n: int, seed: int = 0) -> list[Document]:
    """``n`` documents of 20-120 words; every 7th one is blank (skipped by the cache)."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) if i % 7 != 3 else "  \n"
        docs.append(Document(source, f"doc{i}", text))
    return docs


def interleave(*sources: list[Document]) -> list[Document]:
    """The round-robin reading order of several sources (blank documents left out)."""
    out = []
    for k in range(max(map(len, sources))):
        out += [s[k] for s in sources if k < len(s) and s[k].text.strip()]
    return out


def expected_split(docs: list[Document], vf: float) -> tuple[list[Document], list[Document]]:
    """(train, val) in the order the cache writes them, for ``docs`` in reading order.

    Same sets as ``split_documents``. While val is empty, the train document with the smallest
    fraction so far is held back: it is written when a smaller one replaces it, or when the first
    val document is read (mirrored for val while train is empty).
    """
    frac = {d: doc_hash_fraction(d) for d in docs}
    side = [frac[d] < vf for d in docs]
    if all(side) or not any(side):
        return split_documents(docs, vf)
    out: dict[bool, list[Document]] = {False: [], True: []}
    held, seen = None, {False: False, True: False}
    for d, v in zip(docs, side):
        seen[v] = True
        if held is not None and (frac[held] < vf) != v:
            out[not v].append(held)
            held = None
        if not seen[not v]:
            if held is None:
                held = d
                continue
            if (frac[d] < frac[held]) != v:
                held, d = d, held
        out[v].append(d)
    return out[False], out[True]


def named(lo: float, hi: float, taken: set[str]) -> Document:
    """A document whose hash fraction lies in [lo, hi)."""
    for k in range(100_000):
        doc = Document("s", f"x{k}", f"text of x{k}")
        if doc.name not in taken and lo <= doc_hash_fraction(doc) < hi:
            taken.add(doc.name)
            return doc
    raise AssertionError("no such document")


def per_source(docs: list[Document], source: str, tok) -> np.ndarray:
    return encode_documents([d.text for d in docs if d.source == source], tok)


class BigVocab(ByteTokenizer):
    """Byte ids shifted to 60000+, so ids need uint32."""

    backend = "fake"
    eos_id = 69_999

    @property
    def vocab_size(self) -> int:
        return 70_000

    def encode(self, text: str, strict: bool = False) -> list[int]:
        return [b + 60_000 for b in text.encode("utf-8")]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) - 60_000 for i in ids if int(i) != self.eos_id).decode("utf-8", "replace")


TOK = ByteTokenizer()
A, B = make_docs("a", 60, seed=1), make_docs("b", 25, seed=2)


def test_arrays_equal_encode_documents_of_the_split_in_memory_and_on_disk(tmp_path):
    vf = 0.2
    train, val = expected_split(interleave(A, B), vf)
    mem = build_token_arrays([("a", A), ("b", B)], TOK, val_fraction=vf, batch_chars=2000)
    disk = build_token_arrays([("a", A), ("b", B)], TOK, val_fraction=vf, batch_chars=50,
                              out_dir=tmp_path / "cache")
    assert mem.names == disk.names == ["a", "b"]
    for i, name in enumerate("ab"):
        assert np.array_equal(mem.train[i], per_source(train, name, TOK))
        assert np.array_equal(mem.val[i], per_source(val, name, TOK))
        assert np.array_equal(disk.train[i], mem.train[i]) and np.array_equal(disk.val[i], mem.val[i])
        assert isinstance(disk.train[i], np.memmap) and disk.train[i].dtype == np.uint16
    assert mem.stats == disk.stats
    s = mem.stats["sources"][1]
    assert s["train_docs"] == sum(d.source == "b" for d in train)
    assert s["val_bytes"] == sum(len(d.text.encode()) for d in val if d.source == "b")
    assert mem.stats["totals"]["train_tokens"] == sum(len(t) for t in mem.train)
    assert mem.stats["skipped"]["blank_docs"] == sum(not d.text.strip() for d in A + B)


def test_held_back_document_order():
    taken: set[str] = set()
    t1, t2, t3, t4 = (named(lo, lo + 0.05, taken) for lo in (0.8, 0.5, 0.9, 0.3))
    v1, t5, v2 = named(0.0, 0.05, taken), named(0.6, 0.7, taken), named(0.0, 0.05, taken)
    docs = [t1, t2, t3, t4, v1, t5, v2]
    arrays = build_token_arrays([("s", docs)], TOK, val_fraction=0.1, batch_chars=10)
    # t2 is held until t4 (smaller) replaces it; t4 is held until the first val document
    want = [t1, t3, t2, t4, t5]
    assert expected_split(docs, 0.1) == (want, [v1, v2])
    assert np.array_equal(arrays.train[0], encode_documents([d.text for d in want], TOK))
    assert np.array_equal(arrays.val[0], encode_documents([v1.text, v2.text], TOK))


@pytest.mark.parametrize("side", ["all_train", "all_val"])
def test_both_sides_non_empty_when_the_hash_puts_everything_on_one(side):
    docs = [Document("s", f"d{i}", f"text number {i}") for i in range(5)]
    frac = [doc_hash_fraction(d) for d in docs]
    vf = min(frac) / 2 if side == "all_train" else (max(frac) + 1) / 2
    arrays = build_token_arrays([("s", docs)], TOK, val_fraction=vf)
    train, val = split_documents(docs, vf)
    assert np.array_equal(arrays.train[0], encode_documents([d.text for d in train], TOK))
    assert np.array_equal(arrays.val[0], encode_documents([d.text for d in val], TOK))
    assert len(val) == (1 if side == "all_train" else 4)


def test_one_document_is_an_error():
    with pytest.raises(LmlabError, match="1 document.*add text"):
        build_token_arrays([("s", [Document("s", "x", "hello")])], TOK, val_fraction=0.1)
    with pytest.raises(LmlabError, match="empty"):
        build_token_arrays([("s", [Document("s", "x", "  ")])], TOK, val_fraction=0.1)


def test_round_robin_truncates_fairly_and_exactly():
    big, small = make_docs("big", 300, seed=3), make_docs("small", 60, seed=4)
    full = build_token_arrays([("big", big), ("small", small)], TOK, val_fraction=0.2)
    budget = 5000  # well under the small source's train tokens
    assert budget < len(full.train[1])
    cut = build_token_arrays([("big", big), ("small", small)], TOK, val_fraction=0.2,
                             max_train_tokens=budget, batch_chars=3000)
    n = [len(t) for t in cut.train]
    assert sum(n) == budget == cut.stats["totals"]["train_tokens"]
    assert 0.4 < n[1] / budget < 0.6  # documents of equal expected length, taken in turn
    for got, ref in zip(cut.train, full.train):  # each array is a prefix of the unlimited one
        assert np.array_equal(got, ref[: len(got)])
    assert cut.stats["skipped"]["docs_after_train_budget"] >= 0


def test_max_val_tokens_and_max_train_examples():
    arrays = build_token_arrays([("a", A), ("b", B)], TOK, val_fraction=0.3, max_val_tokens=500)
    assert sum(len(v) for v in arrays.val) == 500
    assert arrays.stats["skipped"]["val_docs_over_budget"] > 0
    train, _ = expected_split(interleave(A, B), 0.3)
    assert np.array_equal(arrays.train[0], per_source(train, "a", TOK))  # train unaffected

    arrays = build_token_arrays([("a", A), ("b", B)], TOK, val_fraction=0.3, max_train_examples=10)
    in_val = [doc_hash_fraction(d) < 0.3 for d in interleave(A, B)]
    last_read = [i for i, v in enumerate(in_val) if not v][9]  # reading stops at the 10th train doc
    n_val = sum(in_val[: last_read + 1])
    # with no val document read by then, the held-back train document becomes the val one
    assert arrays.stats["totals"]["train_docs"] == (10 if n_val else 9)
    assert arrays.stats["totals"]["val_docs"] == max(n_val, 1)
    arrays = build_token_arrays([("a", A), ("b", B)], TOK, val_fraction=0.3, max_train_examples=30)
    in_val = [doc_hash_fraction(d) < 0.3 for d in interleave(A, B)]
    last_read = [i for i, v in enumerate(in_val) if not v][29]
    assert sum(in_val[: last_read + 1]) > 0
    assert arrays.stats["totals"]["train_docs"] == 30
    assert arrays.stats["totals"]["val_docs"] == sum(in_val[: last_read + 1])


def test_uint32_for_vocab_over_65536(tmp_path):
    tok = BigVocab()
    mem = build_token_arrays([("a", A)], tok, val_fraction=0.2)
    disk = build_token_arrays([("a", A)], tok, val_fraction=0.2, out_dir=tmp_path / "c")
    train, _ = expected_split(interleave(A), 0.2)
    assert mem.train[0].dtype == disk.train[0].dtype == np.uint32
    assert np.array_equal(mem.train[0], disk.train[0])
    assert np.array_equal(mem.train[0], encode_documents([d.text for d in train], tok))
    assert json.loads((tmp_path / "c" / "index.json").read_text())["dtype"] == "uint32"


FP = {"tokenizer": {"type": "byte", "sha256": "abc"}, "sources": ["a", "b"], "val_fraction": 0.2}


@pytest.fixture
def cache(tmp_path):
    out = tmp_path / "cache"
    built = build_token_arrays([("a", A), ("b", B[:1])], TOK, val_fraction=0.2, out_dir=out, fingerprint=FP)
    return out, built


def test_reuse_with_the_same_fingerprint_and_refuse_another(cache):
    out, built = cache
    assert cache_status(out, dict(FP)) is None
    opened = open_token_cache(out, json.loads(json.dumps(FP)))
    assert opened.names == ["a", "b"] and opened.stats == built.stats
    for x, y in zip(opened.train + opened.val, built.train + built.val):
        assert np.array_equal(x, y)
    assert len(opened.val[1]) == 0 and not isinstance(opened.val[1], np.memmap)  # empty file
    other = {**FP, "tokenizer": {"type": "byte", "sha256": "def"}}
    with pytest.raises(LmlabError, match=r'tokenizer\.sha256 is "abc" there, "def" now.*reuse_token_cache: false'):
        open_token_cache(out, other)
    assert "tokenizer.sha256" in cache_status(out, other)
    assert "no token cache" in cache_status(out.parent / "nowhere", FP)


def test_truncated_or_corrupt_cache_is_refused(cache):
    out, _ = cache
    data = (out / "train_0.bin").read_bytes()
    (out / "train_0.bin").write_bytes(data[:-2])
    with pytest.raises(LmlabError, match="train_0.bin.*truncated"):
        open_token_cache(out, FP)
    (out / "index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(LmlabError, match="corrupt"):
        open_token_cache(out, FP)


def failing(docs: list[Document], after: int) -> Iterator[Document]:
    yield from docs[:after]
    raise RuntimeError("disk on fire")


def test_interrupted_build_leaves_no_cache_and_keeps_an_older_one(cache, tmp_path):
    out, built = cache
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_token_arrays([("a", failing(A, 40))], TOK, val_fraction=0.2, out_dir=out,
                           fingerprint={"new": 1}, batch_chars=100)
    old = open_token_cache(out, FP)  # the older cache is intact
    assert np.array_equal(old.train[0], built.train[0])
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        build_token_arrays([("a", failing(A, 40))], TOK, val_fraction=0.2, out_dir=fresh, batch_chars=100)
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no temp dirs left behind

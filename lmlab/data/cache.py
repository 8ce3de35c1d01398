"""Token cache: stream documents from several sources into one token array per source and split.

:func:`build_token_arrays` reads the sources round-robin by document (one document from each live
source in turn, so a token budget truncates every source fairly), splits them into train and val
by document hash, tokenizes them in batches of about ``batch_chars`` characters and appends each
document's ids followed by the EOS id (the layout of
:func:`~lmlab.data.batches.encode_documents`) to an in-memory or on-disk writer. At most one batch
of documents is in memory, plus one held-back document.

**Split.** A document goes to val when ``doc_hash_fraction(doc) < val_fraction``. To guarantee two
non-empty sides in bounded memory, while no document has been assigned to val yet the train
document with the smallest hash fraction so far is held back: it is written to train (a little
later than its reading position) when a smaller one replaces it or when the first val document
is read, and goes to val at the end if none ever is. Symmetrically, while train is still empty
the val document with the largest fraction is held back. The two sides hold the same documents
as :func:`~lmlab.data.sources.split_documents`; if the limits stop reading before any val
document was read, the held-back train document becomes the val one.

**Budgets** (over all sources together). ``max_val_tokens``: val stops at exactly that many tokens
(the last document is cut, without its EOS); later val documents are dropped. ``max_train_tokens``:
reading stops once train holds exactly that many tokens; the last document is cut and gets no
EOS, so each array is a prefix of what an unlimited build writes. ``max_train_examples``: reading
stops after that many train documents.

**On disk** (``out_dir``): ``train_{i}.bin`` / ``val_{i}.bin`` hold raw little-endian uint16
(vocab <= 65536) or uint32 ids, next to ``index.json``. They are written into a temp dir beside
``out_dir``, fsynced, and renamed into place, so a crash never leaves a half cache that looks
whole. :func:`open_token_cache` reopens them as read-only memmaps after checking the version, the
caller's fingerprint and every file's size.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.data.documents import Document
from lmlab.data.sources import doc_hash_fraction
from lmlab.errors import LmlabError
from lmlab.fsio import fsync_dir

CACHE_VERSION = 1
INDEX_FILE = "index.json"
SPLITS = ("train", "val")
COUNTS = ("train_docs", "val_docs", "train_tokens", "val_tokens", "train_bytes", "val_bytes")


@dataclass
class TokenArrays:
    """What training reads: one 1-D token array per source and split (np.memmap or np.ndarray)."""

    names: list[str]
    """Source labels, in source order."""
    train: list[np.ndarray]
    val: list[np.ndarray]
    stats: dict[str, Any]
    """``sources`` (per source: documents, tokens and UTF-8 bytes per split), ``totals``, ``skipped``."""


# ------------------------------------------------------------------------------------ writers


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits, else uint32 (as ``encode_documents`` chooses)."""
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class _MemoryWriter:
    """Collects chunks per (source, split) and concatenates them at the end."""

    def __init__(self, n_sources: int, dtype: np.dtype):
        self.dtype = dtype
        self.chunks: dict[str, list[list[np.ndarray]]] = {s: [[] for _ in range(n_sources)] for s in SPLITS}

    def write(self, split: str, source: int, ids: np.ndarray) -> None:
        self.chunks[split][source].append(ids)

    def finish(self, index: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        train, val = (
            [np.concatenate(c) if c else np.zeros(0, self.dtype) for c in self.chunks[s]] for s in SPLITS
        )
        return train, val

    def abort(self) -> None:
        self.chunks.clear()


class _DiskWriter:
    """Appends raw ids to ``{split}_{i}.bin`` in a temp dir, then swaps it in for ``out_dir``."""

    def __init__(self, out_dir: Path, n_sources: int, dtype: np.dtype):
        self.out_dir, self.dtype = out_dir, dtype
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):  # left by a crash mid-build
            shutil.rmtree(stale, ignore_errors=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        self.files = {s: [open(self.tmp / f"{s}_{i}.bin", "wb") for i in range(n_sources)] for s in SPLITS}

    def write(self, split: str, source: int, ids: np.ndarray) -> None:
        self.files[split][source].write(ids.tobytes())

    def _close(self, sync: bool) -> None:
        for f in (f for fs in self.files.values() for f in fs):
            if not f.closed:
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
                f.close()

    def finish(self, index: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        self._close(sync=True)
        index_path = self.tmp / INDEX_FILE
        with open(index_path, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.tmp)
        # Move an older cache aside, then rename the new one in: at every instant out_dir is
        # either absent, the old whole cache or the new whole cache.
        old = None
        if self.out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out_dir.name}.tmp-old-", dir=self.out_dir.parent))
            os.replace(self.out_dir, old / "cache")
        os.replace(self.tmp, self.out_dir)
        fsync_dir(self.out_dir.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return _open_arrays(self.out_dir, index)

    def abort(self) -> None:
        self._close(sync=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------ builder


def interleave(streams: list[tuple[str, Iterable[Document]]]) -> Iterator[tuple[int, Document]]:
    """(source index, document): one document from each live source in turn."""
    live = [(i, iter(docs)) for i, (_, docs) in enumerate(streams)]
    while live:
        still = []
        for i, it in live:
            doc = next(it, None)
            if doc is not None:
                still.append((i, it))
                yield i, doc
        live = still


def _utf8_len(text: str) -> int:
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class _Pending:
    source: int
    split: str
    doc: Document
    fraction: float


class _Builder:
    """The state of one build: split assignment, the held-back document, batches and budgets."""

    def __init__(self, names: list[str], tokenizer, writer, val_fraction: float,
                 max_train_tokens: int | None, max_val_tokens: int | None,
                 max_train_examples: int | None, batch_chars: int, balance_split: bool = True,
                 max_val_examples: int | None = None):
        self.tok, self.writer, self.val_fraction = tokenizer, writer, val_fraction
        self.balance_split = balance_split
        self.dtype = writer.dtype
        self.eos = np.array([tokenizer.eos_id], dtype=self.dtype)
        self.limit = {"train": max_train_tokens, "val": max_val_tokens}
        self.max_train_examples, self.batch_chars = max_train_examples, batch_chars
        self.max_val_examples = max_val_examples
        self.n_val_kept = 0
        self.per_source = [dict.fromkeys(COUNTS, 0) for _ in names]
        self.tokens = {"train": 0, "val": 0}
        self.skipped = {"blank_docs": 0, "val_docs_over_budget": 0, "docs_after_train_budget": 0,
                        "val_docs_over_limit": 0}
        self.seen = {"train": False, "val": False}
        self.n_docs = self.n_train_assigned = 0
        self.held: _Pending | None = None
        self.pending: list[_Pending] = []
        self.pending_chars = 0
        self.train_full = False

    @property
    def done(self) -> bool:
        """True once reading must stop (train token budget or train document limit reached)."""
        lim = self.max_train_examples
        return self.train_full or (lim is not None and self.n_train_assigned >= lim)

    def add(self, source: int, doc: Document) -> None:
        """Assign ``doc`` to a split, hold it back or queue it; flush a full batch."""
        if not doc.text.strip():
            self.skipped["blank_docs"] += 1
            return
        self.n_docs += 1
        f = doc_hash_fraction(doc)
        split = "val" if f < self.val_fraction else "train"
        if split == "val" and self.max_val_examples is not None:
            if self.n_val_kept >= self.max_val_examples:
                self.skipped["val_docs_over_limit"] += 1  # held out, not scored: never trained on
                return
            self.n_val_kept += 1
        other = "val" if split == "train" else "train"
        self.n_train_assigned += split == "train"
        self.seen[split] = True
        item = _Pending(source, split, doc, f)
        if self.held is not None and self.held.split != split:
            self._queue(self.held)  # the other side is non-empty now: no need to hold it any longer
            self.held = None
        if self.balance_split and not self.seen[other]:
            # Hold the document that would move across if the other side stays empty:
            # the smallest fraction among train documents, the largest among val ones.
            if self.held is None:
                self.held = item
                return
            if (f < self.held.fraction) == (split == "train"):
                item, self.held = self.held, item
        self._queue(item)

    def _queue(self, item: _Pending) -> None:
        self.pending.append(item)
        self.pending_chars += len(item.doc.text)
        if self.pending_chars >= self.batch_chars:
            self.flush()

    def flush(self) -> None:
        """Tokenize the pending batch and write it, in reading order, within the budgets."""
        batch, self.pending, self.pending_chars = self.pending, [], 0
        if not batch:
            return
        if self.train_full:
            self.skipped["docs_after_train_budget"] += len(batch)
            return
        all_ids = self.tok.encode_batch([p.doc.text for p in batch])
        for k, (item, ids) in enumerate(zip(batch, all_ids, strict=True)):
            self._write(item, ids)
            if self.train_full:
                self.skipped["docs_after_train_budget"] += len(batch) - k - 1
                return

    def _write(self, item: _Pending, ids: list[int]) -> None:
        split, limit = item.split, self.limit[item.split]
        room = None if limit is None else limit - self.tokens[split]
        if room is not None and room <= 0:
            self.skipped["val_docs_over_budget"] += 1  # only val: a full train stops the build
            return
        arr = np.concatenate([np.asarray(ids, dtype=self.dtype), self.eos])
        n_bytes = None
        if room is not None and len(arr) >= room:
            if len(arr) > room:
                arr = arr[:room]  # cut mid-document: no EOS, the array stays a prefix
                n_bytes = _utf8_len(self.tok.decode(arr.tolist()))
            self.train_full |= split == "train"
        self.writer.write(split, item.source, arr)
        self.tokens[split] += len(arr)
        counts = self.per_source[item.source]
        counts[f"{split}_docs"] += 1
        counts[f"{split}_tokens"] += len(arr)
        counts[f"{split}_bytes"] += _utf8_len(item.doc.text) if n_bytes is None else n_bytes

    def finish(self) -> None:
        """Flush the last batch and move the held-back document to the side that is still empty."""
        if not self.balance_split:  # one shard of many: an empty or one-sided share is fine
            self.flush()
            return
        if self.n_docs == 0:
            raise LmlabError("the corpus is empty: data.sources gave no text; add files with text")
        if self.n_docs == 1:
            stopped = " before the train limits stopped reading" if self.done else ""
            raise LmlabError(
                f"the corpus has 1 document{stopped}, too few to split into train and val; "
                "add text to data.sources (or raise data.max_train_examples)"
            )
        self.flush()
        if self.held is not None:  # written even after a full train: it was read before the cut
            item, self.held = self.held, None
            item.split = "val" if item.split == "train" else "train"  # the other side is empty
            self._write(item, self.tok.encode_batch([item.doc.text])[0])

    def stats(self, names: list[str]) -> dict[str, Any]:
        sources = [{"name": n, **c} for n, c in zip(names, self.per_source, strict=True)]
        totals = {k: sum(c[k] for c in self.per_source) for k in COUNTS}
        return {"sources": sources, "totals": totals, "skipped": dict(self.skipped)}


def build_token_arrays(
    streams: list[tuple[str, Iterable[Document]]],
    tokenizer,
    *,
    val_fraction: float,
    max_train_tokens: int | None = None,
    max_val_tokens: int | None = None,
    max_train_examples: int | None = None,
    max_val_examples: int | None = None,
    out_dir: str | Path | None = None,
    fingerprint: dict[str, Any] | None = None,
    batch_chars: int = 1 << 20,
    balance_split: bool = True,
) -> TokenArrays:
    """Tokenize ``streams`` (label, documents) into train/val arrays per source (see module doc).

    With ``out_dir`` the arrays are written there as a cache (replacing any older one only once
    the new one is whole) and returned as read-only memmaps; else they are built in memory.
    ``fingerprint`` is stored in ``index.json`` for :func:`open_token_cache` to compare; it should
    cover everything the arrays depend on (tokenizer, sources, val_fraction, budgets).
    ``balance_split=False`` (one shard of a sharded build) keeps the plain hash split, with no
    held-back document and no minimum number of documents: the caller checks the merged totals.
    ``val_fraction=0`` holds nothing out (run configs require more; ``lmlab.TextData`` allows it).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise LmlabError(f"data.val_fraction: {val_fraction} must be between 0 and 1, e.g. 0.05")
    if val_fraction == 0:  # nothing held out (lmlab.TextData's val_split=0): no side to balance
        balance_split = False
    names = [name for name, _ in streams]
    dtype = token_dtype(tokenizer.vocab_size)
    writer: _MemoryWriter | _DiskWriter = (
        _MemoryWriter(len(names), dtype) if out_dir is None else _DiskWriter(Path(out_dir), len(names), dtype)
    )
    b = _Builder(names, tokenizer, writer, val_fraction, max_train_tokens, max_val_tokens,
                 max_train_examples, batch_chars, balance_split, max_val_examples)
    try:
        for source, doc in interleave(streams):
            b.add(source, doc)
            if b.done:
                break
        b.finish()
        stats = b.stats(names)
        index = {
            "version": CACHE_VERSION,
            "dtype": dtype.name,
            "vocab_size": tokenizer.vocab_size,
            "eos_id": tokenizer.eos_id,
            "tokenizer": getattr(tokenizer, "backend", ""),
            "fingerprint": _normalise(fingerprint or {}),
            "build": {"val_fraction": val_fraction, "max_train_tokens": max_train_tokens,
                      "max_val_tokens": max_val_tokens, "max_train_examples": max_train_examples,
                      "max_val_examples": max_val_examples},
            "sources": [{**s, "files": {sp: f"{sp}_{i}.bin" for sp in SPLITS}}
                        for i, s in enumerate(stats["sources"])],
            "totals": stats["totals"],
            "skipped": stats["skipped"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        train, val = writer.finish(index)
    except BaseException:
        writer.abort()
        raise
    return TokenArrays(names, train, val, stats)


# ------------------------------------------------------------------------------------- reading


def _normalise(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(obj, sort_keys=True))


def _first_difference(a: Any, b: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, value in a, value in b) of the first place where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return sub, a.get(key, "<missing>"), b.get(key, "<missing>")
            found = _first_difference(a[key], b[key], sub)
            if found:
                return found
        return None
    return None if a == b else (path or "<fingerprint>", a, b)


def _short(value: Any, n: int = 80) -> str:
    text = value if value == "<missing>" else json.dumps(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def _read_index(cache_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The validated index of a reusable cache; raises LmlabError saying why it is not one."""
    path = cache_dir / INDEX_FILE
    rebuild = f"delete {cache_dir} to rebuild it"
    if not path.is_file():
        what = "no such directory" if not cache_dir.is_dir() else f"no {INDEX_FILE} in it"
        raise LmlabError(f"no token cache at {cache_dir} ({what})")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        version, sources, dtype = index["version"], index["sources"], np.dtype(index["dtype"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LmlabError(f"token cache {path} is corrupt ({type(e).__name__}: {e}); {rebuild}") from None
    if version != CACHE_VERSION:
        raise LmlabError(
            f"token cache {cache_dir} has format version {version}, this lmlab reads {CACHE_VERSION}; "
            f"delete {cache_dir} or set data.reuse_token_cache: false"
        )
    diff = _first_difference(index.get("fingerprint"), _normalise(fingerprint))
    if diff:
        key, old, new = diff
        raise LmlabError(
            f"token cache {cache_dir} was built for other settings: {key} is {_short(old)} there, "
            f"{_short(new)} now; delete {cache_dir} or set data.reuse_token_cache: false"
        )
    for s in sources:
        for split in SPLITS:
            f = cache_dir / s["files"][split]
            want = int(s[f"{split}_tokens"]) * dtype.itemsize
            size = f.stat().st_size if f.is_file() else None
            if size != want:
                got = "missing" if size is None else f"{size} bytes"
                raise LmlabError(
                    f"token cache file {f} is {got}, expected {want} bytes (truncated or corrupt); {rebuild}"
                )
    return index


def _open_arrays(cache_dir: Path, index: dict[str, Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read-only memmaps of the cache's files (an empty ndarray for an empty file)."""
    dtype = np.dtype(index["dtype"])

    def one(name: str) -> np.ndarray:
        path = cache_dir / name
        if path.stat().st_size == 0:
            return np.zeros(0, dtype)  # np.memmap refuses empty files
        return np.memmap(path, dtype=dtype, mode="r")

    train, val = ([one(s["files"][sp]) for s in index["sources"]] for sp in SPLITS)
    return train, val


def open_token_cache(cache_dir: str | Path, fingerprint: dict[str, Any]) -> TokenArrays:
    """Reopen a cache written by :func:`build_token_arrays` as memmaps, if it matches ``fingerprint``.

    Raises LmlabError for a missing or corrupt index, another format version, a fingerprint
    mismatch (naming the first differing key) or a file whose size does not match the index.
    """
    d = Path(cache_dir)
    index = _read_index(d, fingerprint)
    train, val = _open_arrays(d, index)
    sources = [{k: v for k, v in s.items() if k != "files"} for s in index["sources"]]
    stats = {"sources": sources, "totals": index.get("totals", {}), "skipped": index.get("skipped", {})}
    return TokenArrays([s["name"] for s in sources], train, val, stats)


def cache_status(cache_dir: str | Path, fingerprint: dict[str, Any]) -> str | None:
    """None if the cache at ``cache_dir`` can be reused with ``fingerprint``, else a one-line reason."""
    try:
        _read_index(Path(cache_dir), fingerprint)
    except LmlabError as e:
        return str(e)
    return None

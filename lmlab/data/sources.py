"""Read the corpus named in ``data.sources`` into documents, and split them into train and val.

A :class:`Document` is the unit of the train/val split: a built-in topic or module, a text file
(or an ~8,000-character piece of a big one), one line of a ``.jsonl`` file, one row of a ``.csv``
file, a ~4,000-character piece of a PDF or one record of a Hugging Face dataset. Every problem
with the user's files raises :class:`~lmlab.errors.LmlabError` with one line saying what, where
and how to fix it.

:func:`open_sources` opens every source eagerly, skips (with a warning) the ones that cannot be
read or give no text, and fails only when none is left.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from lmlab.config import (
    BuiltinSource,
    CsvSource,
    DataConfig,
    HFSource,
    JsonlSource,
    NamedSource,
    PdfSource,
    Source,
    TextSource,
)
from lmlab.data.corpora import read_named
from lmlab.data.documents import MAX_DOC_CHARS, Document, Reader, Shard  # noqa: F401  (Document: re-exported)
from lmlab.data.files import read_csv, read_jsonl, read_text
from lmlab.data.hf import BUILDERS, read_hf
from lmlab.data.pdf import read_pdf
from lmlab.data.pydocs import read_pydocs
from lmlab.errors import LmlabError
from lmlab.fsio import check_input


@dataclass
class OpenSource:
    """A source of ``data.sources`` that opened and has text (see :func:`open_sources`)."""

    index: int
    """Its position in ``data.sources``."""
    label: str
    """e.g. ``data.sources[1] hf:owner/name``."""
    documents: Iterator[Document]
    """Its documents, blank ones and those under ``min_text_length`` already dropped."""


# ------------------------------------------------------------------------------------- reading


READERS: dict[type, Reader] = {
    BuiltinSource: read_pydocs,
    TextSource: read_text,
    JsonlSource: read_jsonl,
    CsvSource: read_csv,
    PdfSource: read_pdf,
    HFSource: read_hf,
    NamedSource: read_named,
}
"""Each source type's reader; a new source type is a config class, a reader and a row here."""


def iter_documents(
    source: Source, strict_utf8: bool = True, index: int = 0, shard: Shard = (0, 1)
) -> Iterator[Document]:
    """Yield the documents of one source; ``index`` is its position in ``data.sources``.

    With ``strict_utf8`` a file that is not UTF-8 is an error; otherwise undecodable bytes are
    kept as lone surrogates (``errors="surrogateescape"``) so the exact bytes can be recovered.
    ``shard=(k, n)`` keeps the documents at positions k, k + n, k + 2n, ... of the stream, so
    the n shards are disjoint and together give exactly the documents of the unsharded stream.
    Records that are not in the shard (jsonl lines, csv rows, hf records) are skipped before
    being formatted; text and pdf sources with at least n files are sharded by whole files
    instead (file i to shard i mod n), so that each file is read and parsed once.
    """
    k, n = shard
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    reader = READERS.get(type(source))
    if reader is None:
        raise LmlabError(f"data.sources[{index}]: unknown source type {type(source).__name__}")
    if isinstance(source, HFSource) and source.dataset in BUILDERS:  # else data_files are in a dataset's repo
        _check_data_files(source.data_files, index)
    yield from reader(source, source_label(source), index, strict_utf8, shard)


def _check_data_files(files: str | list[str] | None, index: int) -> None:
    """An hf source's ``data_files`` that name one local path (no glob, no URL) are checked like
    any path to read before ``datasets`` sees them (a pipe would block it; a loop reads as missing)."""
    for name in [files] if isinstance(files, str) else files or []:
        if "://" not in name and not any(c in name for c in "*?["):
            check_input(name, f"data.sources[{index}].data_files", "any", "give a data file, a folder or a glob",
                        must_exist=True)


def source_label(source: Source) -> str:
    """Short stable name of a source, e.g. ``text:/data/notes`` or ``hf:owner/name:config``.

    It is the ``source`` of every :class:`Document` the source gives (so it feeds the split).
    """
    if isinstance(source, BuiltinSource):
        return f"builtin:{source.name}"
    if isinstance(source, NamedSource):
        return f"named:{source.name}"
    if isinstance(source, HFSource):
        label = f"hf:{source.dataset}" + (f":{source.name}" if source.name else "")
        if source.data_files is not None:
            files = source.data_files
            label += f"[{files if isinstance(files, str) else ','.join(files)}]"
        return label
    return f"{source.type}:{source.path}"


def open_sources(
    cfg: DataConfig, strict_utf8: bool = True, shard: Shard = (0, 1)
) -> list[OpenSource]:
    """Open every source of ``cfg.sources``, in config order, and return those that give text.

    Each source is read up to its first kept document, so a missing path, a dataset that cannot
    be loaded, a missing optional package or a folder with no matching files shows up here. Such
    a source, and one with no kept document, is skipped with a warning; when no source is left
    this raises :class:`LmlabError` listing every source and why. Errors later in a stream
    (e.g. bad JSON on line 500) still raise while reading.
    """
    opened: list[OpenSource] = []
    failed: list[str] = []
    all_empty = True
    for i, source in enumerate(cfg.sources):
        label = f"data.sources[{i}] {source_label(source)}"
        docs = _kept(iter_documents(source, strict_utf8, i, shard), cfg.min_text_length)
        try:
            first = next(docs, None)
        except LmlabError as e:
            failed.append(f"{label}: {_reason(e)}")
            all_empty = False
            continue
        if first is None:
            failed.append(f"{label}: {_no_text(cfg.min_text_length)}")
            continue
        opened.append(OpenSource(i, label, itertools.chain([first], docs)))
    if not opened:
        details = "; ".join(failed)
        if all_empty:
            raise LmlabError(
                f"the corpus is empty: data.sources gave no text ({details}); "
                "add files with text or point data.sources at another corpus"
            )
        raise LmlabError(f"no data source could be read: {details}")
    for failure in failed:
        warnings.warn(f"skipping {failure}", stacklevel=2)
    return opened


def source_streams(
    cfg: DataConfig, indices: list[int], strict_utf8: bool = True, shard: Shard = (0, 1)
) -> list[tuple[str, Iterator[Document]]]:
    """(label, kept documents) of the sources at ``indices`` (those ``open_sources`` opened).

    No failure policy here: which sources are readable is decided once, unsharded, so every
    shard streams the same sources and an empty share of one is just empty.
    """
    return [
        (f"data.sources[{i}] {source_label(cfg.sources[i])}",
         _kept(iter_documents(cfg.sources[i], strict_utf8, i, shard), cfg.min_text_length))
        for i in indices
    ]


def load_documents(cfg: DataConfig, strict_utf8: bool = True) -> list[Document]:
    """All kept documents of the readable sources, in config order (see :func:`open_sources`)."""
    return [doc for src in open_sources(cfg, strict_utf8) for doc in src.documents]


def _kept(docs: Iterator[Document], min_length: int) -> Iterator[Document]:
    """The documents whose stripped text has at least ``min_length`` (and 1) characters."""
    need = max(min_length, 1)
    return (doc for doc in docs if len(doc.text.strip()) >= need)


def _no_text(min_length: int) -> str:
    if min_length > 1:
        return f"no text (every document blank or shorter than data.min_text_length={min_length})"
    return "no text (no documents, or all blank)"


_OWN_PREFIX = re.compile(r"^data\.sources\[\d+\](\.\w+)?: ")


def _reason(error: LmlabError) -> str:
    """The error's message without a leading ``data.sources[i]: `` (the label says it)."""
    return _OWN_PREFIX.sub("", str(error), count=1)


def split_documents(
    docs: list[Document], val_fraction: float
) -> tuple[list[Document], list[Document]]:
    """Split by document into (train, val), deterministically and stably by name.

    A document goes to val when the hash of its source and name, as a fraction in [0, 1), is below
    ``val_fraction``, so adding or removing other documents never moves it. Both sides are
    non-empty (one document is moved if needed); corpus order is kept within each side.
    """
    if not 0.0 < val_fraction < 1.0:
        raise LmlabError(f"data.val_fraction: {val_fraction} must be between 0 and 1, e.g. 0.05")
    if len(docs) < 2:
        raise LmlabError(
            f"the corpus has {len(docs)} document, too few to split into train and val; "
            f"add text to data.sources (at least 2 files, or a file over {MAX_DOC_CHARS} characters)"
        )
    fractions = [doc_hash_fraction(d) for d in docs]
    in_val = [f < val_fraction for f in fractions]
    if not any(in_val):
        in_val[min(range(len(docs)), key=fractions.__getitem__)] = True
    elif all(in_val):
        in_val[max(range(len(docs)), key=fractions.__getitem__)] = False
    train = [d for d, v in zip(docs, in_val, strict=True) if not v]
    val = [d for d, v in zip(docs, in_val, strict=True) if v]
    return train, val


def doc_hash_fraction(doc: Document) -> float:
    """A stable number in [0, 1) from the document's source type and name (sha256, not ``hash``).

    Only the type (``text``, ``hf``, ...) of the source label enters, not its path: names are
    relative to the source, so the train/val split stays the same when a corpus folder moves
    (another machine, another checkout) and runs on identical data stay comparable.
    """
    key = f"{doc.source.split(':', 1)[0]}\x00{doc.name}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2.0**64

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

import codecs
import csv
import hashlib
import itertools
import json
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import (
    BuiltinSource,
    CsvSource,
    DataConfig,
    Formatted,
    HFSource,
    JsonlSource,
    NamedSource,
    PdfSource,
    Source,
    TextSource,
)
from lmlab.errors import LmlabError

MAX_DOC_CHARS = 8_000
"""Text files longer than this are cut into several documents (at blank lines when possible)."""


@dataclass(frozen=True)
class Document:
    """One document of the corpus."""

    source: str
    """Where it comes from, e.g. ``builtin:pydocs`` or ``text:/path/to/dir``."""
    name: str
    """Stable id, unique within the source, e.g. ``topics/assert`` or ``notes/a.md#3``."""
    text: str


Shard = tuple[int, int]
"""(k, n): keep the documents whose position in a source's stream is k modulo n."""


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
    label = source_label(source)
    if isinstance(source, BuiltinSource):
        from lmlab.data.pydocs import iter_pydocs

        yield from itertools.islice(iter_pydocs(), k, None, n)
    elif isinstance(source, TextSource):
        yield from _by_file_or_document(
            lambda files: _text_documents(source, label, index, strict_utf8, files), source, index, shard)
    elif isinstance(source, JsonlSource):
        yield from _jsonl_documents(source, label, index, strict_utf8, shard)
    elif isinstance(source, CsvSource):
        yield from _csv_documents(source, label, index, strict_utf8, shard)
    elif isinstance(source, PdfSource):
        from lmlab.data.pdf import iter_pdf_documents

        yield from _by_file_or_document(
            lambda files: iter_pdf_documents(source, label, index, files if n > 1 else None),
            source, index, shard)
    elif isinstance(source, HFSource):
        from lmlab.data.hf import iter_hf_documents

        yield from iter_hf_documents(source, label, index, shard)
    elif isinstance(source, NamedSource):
        from lmlab.data.corpora import resolve_named
        from lmlab.data.hf import iter_hf_documents

        yield from iter_hf_documents(resolve_named(source, index), label, index, shard)
    else:
        raise LmlabError(f"data.sources[{index}]: unknown source type {type(source).__name__}")


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


# ------------------------------------------------------------------------------------ formats


def format_record(record: Mapping[str, Any], spec: Formatted, where: str, index: int) -> str:
    """The text of one record: ``record[text_field]``, or ``format`` filled with ``fields``.

    ``where`` names the record in errors (``file.jsonl:12``, ``dataset 'x' record 5``). With
    ``text_field`` the value must be a string; ``fields`` values are converted with ``str()``.
    A missing field (or a ``None`` one) is an error that lists the fields the record has.
    """
    fields = [spec.text_field] if spec.fields is None else spec.fields
    fix = (
        f"set text_field in data.sources[{index}]"
        if spec.fields is None
        else f"fix fields and format in data.sources[{index}]"
    )
    for field in fields:
        if record.get(field) is None:
            present = ", ".join(str(k) for k, v in record.items() if k is not None and v is not None)
            raise LmlabError(f"{where}: no field {field!r} (fields: {present or 'none'}); {fix}")
    if spec.format is None:
        value = record[spec.text_field]
        if not isinstance(value, str):
            raise LmlabError(
                f"{where}: field {spec.text_field!r} is {type(value).__name__}, not a string; "
                f"{fix} to a field holding text"
            )
        return value
    return spec.format.format(**{f: str(record[f]) for f in fields})


def _by_file_or_document(
    make: Callable[[list[tuple[Path, str]]], Iterator[Document]], source: TextSource | PdfSource,
    index: int, shard: Shard,
) -> Iterator[Document]:
    """Shard a file-based source: by whole files (file i to shard i mod n) when it has at least
    n files, so each file is read by one shard only; else by document position."""
    k, n = shard
    files = find_files(source.path, source.glob, index)
    if n > 1 and len(files) >= n:
        yield from make(files[k::n])
    else:
        yield from itertools.islice(make(files), k, None, n)


def _text_documents(
    source: TextSource, label: str, index: int, strict_utf8: bool, files: list[tuple[Path, str]]
) -> Iterator[Document]:
    """One document per file (or per ~8,000-character piece of a big file), read in blocks."""
    for path, rel in files:
        chunks = _stream_chunks(path, index, strict_utf8)
        first = next(chunks)
        second = next(chunks, None)
        if second is None:
            yield Document(label, rel, first)
            continue
        for k, chunk in enumerate(itertools.chain([first, second], chunks)):
            yield Document(label, f"{rel}#{k}", chunk)


def _jsonl_documents(
    source: JsonlSource, label: str, index: int, strict_utf8: bool, shard: Shard
) -> Iterator[Document]:
    """One document per non-blank line; lines outside the shard are not parsed."""
    k, n = shard
    position = 0
    for path, rel in find_files(source.path, source.glob, index):
        for lineno, line in _lines(path, index, strict_utf8):
            if not line.strip():
                continue
            position += 1
            if (position - 1) % n != k:
                continue
            where = f"{path}:{lineno}"
            value = format_record(_jsonl_object(line, where, source.text_field), source, where, index)
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise LmlabError(
                    f"{where}: field {source.text_field!r} holds {value[e.start]!r}, an escaped lone "
                    "surrogate that is not valid Unicode text; fix or drop that line"
                ) from None
            yield Document(label, f"{rel}:{lineno}", value)


def _jsonl_object(line: str, where: str, field: str) -> dict[str, Any]:
    """One line of a .jsonl file parsed as a JSON object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise LmlabError(
            f"{where}: invalid JSON ({e.msg} at column {e.colno}); "
            "each line of a .jsonl file must be one JSON object"
        ) from None
    if not isinstance(obj, dict):
        raise LmlabError(
            f"{where}: expected a JSON object, got {type(obj).__name__}; "
            f'each line must look like {{"{field}": "..."}}'
        )
    return obj


_CSV_FIELD_LIMIT = 2**31 - 1
"""Raised from csv's default of 131,072 characters: a document can be a long field."""


def _csv_documents(
    source: CsvSource, label: str, index: int, strict_utf8: bool, shard: Shard
) -> Iterator[Document]:
    """One document per row after the header, streamed; rows outside the shard are not formatted."""
    k, n = shard
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    errors = "strict" if strict_utf8 else "surrogateescape"
    position = 0
    for path, rel in find_files(source.path, source.glob, index):
        line = 0
        try:
            with path.open(encoding="utf-8", errors=errors, newline="") as f:
                reader = csv.DictReader(f, delimiter=source.delimiter)
                if not reader.fieldnames:
                    raise LmlabError(
                        f"{path}: empty, no header row; the first line of a .csv file names its columns"
                    )
                for row in reader:
                    line = reader.line_num
                    position += 1
                    if (position - 1) % n != k:
                        continue
                    where = f"{path}:{line}"
                    yield Document(label, f"{rel}:{line}", format_record(row, source, where, index))
        except UnicodeDecodeError:
            raise LmlabError(
                f"data.sources[{index}]: {path} is not UTF-8 (after line {line}); "
                "convert it to UTF-8 or use tokenizer.type: byte"
            ) from None
        except csv.Error as e:
            raise LmlabError(f"{path}:{line + 1}: bad CSV row ({e}); check quoting and delimiter") from None
        except OSError as e:
            raise LmlabError(
                f"data.sources[{index}]: cannot read {path} ({e.strerror or type(e).__name__}); "
                "check that it is a readable file"
            ) from None


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


# --------------------------------------------------------------------------------------- text


def chunk_text(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Cut ``text`` into pieces of at most ``max_chars`` characters; ``"".join`` restores it.

    Cuts go after a blank line when one lies in the second half of the window, else after a
    newline anywhere past its first quarter, else at ``max_chars`` exactly.
    """
    chunks: list[str] = []
    pos = 0
    while len(text) - pos > max_chars:
        window = text[pos : pos + max_chars]
        end = max_chars
        for sep, start in (("\n\n", max_chars // 2), ("\n", max_chars // 4)):
            cut = window.rfind(sep, start)
            if cut != -1:
                end = cut + len(sep)
                break
        chunks.append(text[pos : pos + end])
        pos += end
    chunks.append(text[pos:])
    return chunks


def find_files(path_str: str, patterns: list[str], index: int) -> list[tuple[Path, str]]:
    """(path, name) of the files of a source: the file itself, or the folder's glob matches."""
    path = Path(path_str).expanduser()
    if not path.exists():
        raise LmlabError(
            f"data.sources[{index}].path: no such file or folder: {path_str!r} "
            "(paths are relative to the working directory)"
        )
    if not path.is_dir():
        if not path.is_file():  # a FIFO, socket or device: reading it could block forever
            raise LmlabError(f"data.sources[{index}].path: {path_str!r} is not a regular file (a pipe, socket or "
                             "device); a source is read more than once: write it to a file and point there")
        return [(path, path.name)]
    found: dict[str, Path] = {}
    for pattern in patterns:
        for match in path.glob(pattern):
            if match.is_file():
                found.setdefault(match.relative_to(path).as_posix(), match)
    if not found:
        raise LmlabError(
            f"data.sources[{index}]: folder {path_str!r} has no files matching glob {patterns}; "
            f"add files or set data.sources[{index}].glob"
        )
    return [(found[rel], rel) for rel in sorted(found)]


def _decoded_blocks(path: Path, index: int, strict_utf8: bool, block: int = 1 << 20) -> Iterator[str]:
    """The file decoded as UTF-8 (strictly, or with surrogateescape), ``block`` bytes at a time."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict" if strict_utf8 else "surrogateescape")
    offset = 0
    try:
        with open(path, "rb") as f:
            while True:
                data = f.read(block)
                pending = len(decoder.getstate()[0])  # bytes of a character cut by the last block
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    raise LmlabError(
                        f"data.sources[{index}]: {path} is not UTF-8 (invalid byte 0x{e.object[e.start]:02x} "
                        f"at offset {offset - pending + e.start}); convert it to UTF-8 or use tokenizer.type: byte"
                    ) from None
                offset += len(data)
                if text:
                    yield text
                if not data:
                    return
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise LmlabError(
            f"data.sources[{index}]: cannot read {path} ({reason}); check that it is a readable file"
        ) from None


def _stream_chunks(path: Path, index: int, strict_utf8: bool, max_chars: int = MAX_DOC_CHARS) -> Iterator[str]:
    """``chunk_text`` of the whole file, in bounded memory: cuts only look ``max_chars`` ahead,
    so cutting a buffer that holds more than that gives the same pieces as cutting the file."""
    buf = ""
    for piece in _decoded_blocks(path, index, strict_utf8):
        buf += piece
        if len(buf) > 2 * max_chars:
            *done, buf = chunk_text(buf, max_chars)
            yield from done
    yield from chunk_text(buf, max_chars)


def _lines(path: Path, index: int, strict_utf8: bool) -> Iterator[tuple[int, str]]:
    """(line number, line) of the file, as ``text.split("\\n")`` would give, read in blocks."""
    buf, lineno = "", 0
    for piece in _decoded_blocks(path, index, strict_utf8):
        *lines, buf = (buf + piece).split("\n")
        for line in lines:
            lineno += 1
            yield lineno, line
    yield lineno + 1, buf

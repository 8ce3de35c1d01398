"""What every reader shares: the :class:`Document`, record formatting, finding a source's files
and reading them as UTF-8 in bounded memory. The readers (``files``, ``pdf``, ``hf``,
``pydocs``, ``corpora``) import this module; ``sources`` finds a reader through its table.
"""

from __future__ import annotations

import codecs
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.config import Formatted, PdfSource, TextSource
from lmlab.errors import LmlabError
from lmlab.fsio import check_input

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

Reader = Callable[[Any, str, int, bool, Shard], Iterator[Document]]
"""``reader(source config, label, index in data.sources, strict_utf8, shard)`` -> its documents."""


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


def by_file_or_document(
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
    # Empty, a symlink loop, under a file, a pipe (a source is read more than once): one line each.
    path = check_input(os.path.expanduser(path_str), f"data.sources[{index}].path", "any",
                       "give a file or a folder of them (a pipe's output: write it to a file first)")
    if not path.exists():
        raise LmlabError(
            f"data.sources[{index}].path: no such file or folder: {path_str!r} "
            "(paths are relative to the working directory)"
        )
    if not path.is_dir():
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


def decoded_blocks(path: Path, index: int, strict_utf8: bool, block: int = 1 << 20) -> Iterator[str]:
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


def stream_chunks(path: Path, index: int, strict_utf8: bool, max_chars: int = MAX_DOC_CHARS) -> Iterator[str]:
    """``chunk_text`` of the whole file, in bounded memory: cuts only look ``max_chars`` ahead,
    so cutting a buffer that holds more than that gives the same pieces as cutting the file."""
    buf = ""
    for piece in decoded_blocks(path, index, strict_utf8):
        buf += piece
        if len(buf) > 2 * max_chars:
            *done, buf = chunk_text(buf, max_chars)
            yield from done
    yield from chunk_text(buf, max_chars)


def read_lines(path: Path, index: int, strict_utf8: bool) -> Iterator[tuple[int, str]]:
    """(line number, line) of the file, as ``text.split("\\n")`` would give, read in blocks."""
    buf, lineno = "", 0
    for piece in decoded_blocks(path, index, strict_utf8):
        *lines, buf = (buf + piece).split("\n")
        for line in lines:
            lineno += 1
            yield lineno, line
    yield lineno + 1, buf

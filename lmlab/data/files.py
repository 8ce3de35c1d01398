"""Readers of local files: text (one document per file or per ~8,000-character piece), jsonl (one
per line) and csv (one per row). Every problem with a file is one :class:`LmlabError` line
saying what, where and how to fix it.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmlab.config import CsvSource, JsonlSource, TextSource
from lmlab.data.documents import (
    Document,
    Shard,
    by_file_or_document,
    find_files,
    format_record,
    read_lines,
    stream_chunks,
)
from lmlab.errors import LmlabError


def read_text(source: TextSource, label: str, index: int, strict_utf8: bool, shard: Shard) -> Iterator[Document]:
    """A text source's documents (sharded by whole files when there are enough)."""
    return by_file_or_document(
        lambda files: _text_documents(source, label, index, strict_utf8, files), source, index, shard)


def _text_documents(
    source: TextSource, label: str, index: int, strict_utf8: bool, files: list[tuple[Path, str]]
) -> Iterator[Document]:
    """One document per file (or per ~8,000-character piece of a big file), read in blocks."""
    for path, rel in files:
        chunks = stream_chunks(path, index, strict_utf8)
        first = next(chunks)
        second = next(chunks, None)
        if second is None:
            yield Document(label, rel, first)
            continue
        for k, chunk in enumerate(itertools.chain([first, second], chunks)):
            yield Document(label, f"{rel}#{k}", chunk)


def read_jsonl(
    source: JsonlSource, label: str, index: int, strict_utf8: bool, shard: Shard
) -> Iterator[Document]:
    """One document per non-blank line; lines outside the shard are not parsed."""
    k, n = shard
    position = 0
    for path, rel in find_files(source.path, source.glob, index):
        for lineno, line in read_lines(path, index, strict_utf8):
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


def read_csv(
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

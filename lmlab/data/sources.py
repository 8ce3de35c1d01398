"""Read the corpus named in ``data.sources`` into documents, and split them into train and val.

A :class:`Document` is the unit of the train/val split: a built-in topic or module, a text file
(or an ~8,000-character piece of a big one) or one line of a ``.jsonl`` file. Every problem with
the user's files raises :class:`~lmlab.errors.LmlabError` with one line saying what, where and how
to fix it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmlab.config import BuiltinSource, DataConfig, JsonlSource, Source, TextSource
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


# ------------------------------------------------------------------------------------- reading


def iter_documents(source: Source, strict_utf8: bool = True, index: int = 0) -> Iterator[Document]:
    """Yield the documents of one source; ``index`` is its position in ``data.sources``.

    With ``strict_utf8`` a file that is not UTF-8 is an error; otherwise undecodable bytes are
    kept as lone surrogates (``errors="surrogateescape"``) so the exact bytes can be recovered.
    """
    if isinstance(source, BuiltinSource):
        from lmlab.data.pydocs import iter_pydocs

        yield from iter_pydocs()
    elif isinstance(source, TextSource):
        label = f"text:{source.path}"
        for path, rel in _find_files(source.path, source.glob, index):
            chunks = chunk_text(_read_text(path, index, strict_utf8))
            for k, chunk in enumerate(chunks):
                yield Document(label, f"{rel}#{k}" if len(chunks) > 1 else rel, chunk)
    elif isinstance(source, JsonlSource):
        label = f"jsonl:{source.path}"
        for path, rel in _find_files(source.path, source.glob, index):
            text = _read_text(path, index, strict_utf8)
            for lineno, line in _jsonl_texts(text, path, source.text_field, index):
                yield Document(label, f"{rel}:{lineno}", line)
    else:
        raise LmlabError(f"data.sources[{index}]: unknown source type {type(source).__name__}")


def load_documents(cfg: DataConfig, strict_utf8: bool = True) -> list[Document]:
    """All non-blank documents of ``cfg.sources``, in config order; an empty corpus is an error."""
    docs: list[Document] = []
    seen: list[str] = []
    for i, source in enumerate(cfg.sources):
        n_all = 0
        for doc in iter_documents(source, strict_utf8=strict_utf8, index=i):
            n_all += 1
            if doc.text.strip():
                docs.append(doc)
        seen.append(f"data.sources[{i}] {_describe(source)}: {n_all} documents")
    if not docs:
        raise LmlabError(
            f"the corpus is empty: data.sources gave no text ({'; '.join(seen)}, all blank); "
            "add files with text or point data.sources at another corpus"
        )
    return docs


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
    """A stable number in [0, 1) from the document's source and name (sha256, not ``hash``)."""
    key = f"{doc.source}\x00{doc.name}".encode("utf-8", "surrogatepass")
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


def _describe(source: Source) -> str:
    if isinstance(source, BuiltinSource):
        return f"builtin {source.name}"
    return f"{source.type} {source.path!r}"


def _find_files(path_str: str, patterns: list[str], index: int) -> list[tuple[Path, str]]:
    """(path, name) of the files of a source: the file itself, or the folder's glob matches."""
    path = Path(path_str).expanduser()
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


def _read_text(path: Path, index: int, strict_utf8: bool) -> str:
    """The file decoded as UTF-8 (strictly, or with surrogateescape)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise LmlabError(
            f"data.sources[{index}]: cannot read {path} ({reason}); check that it is a readable file"
        ) from None
    if not strict_utf8:
        return raw.decode("utf-8", errors="surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmlabError(
            f"data.sources[{index}]: {path} is not UTF-8 (invalid byte 0x{raw[e.start]:02x} at "
            f"offset {e.start}); convert it to UTF-8 or use tokenizer.type: byte"
        ) from None


def _jsonl_texts(text: str, path: Path, field: str, index: int) -> Iterator[tuple[int, str]]:
    """(line number, ``obj[field]``) for each non-blank line of a .jsonl file's text."""
    fix = f"set text_field in data.sources[{index}]"
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
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
        if field not in obj:
            fields = ", ".join(map(str, obj)) or "none"
            raise LmlabError(f"{where}: no field {field!r} (fields: {fields}); {fix}")
        value = obj[field]
        if not isinstance(value, str):
            raise LmlabError(
                f"{where}: field {field!r} is {type(value).__name__}, not a string; "
                f"{fix} to a field holding text"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise LmlabError(
                f"{where}: field {field!r} holds {value[e.start]!r}, an escaped lone surrogate that is "
                "not valid Unicode text; fix or drop that line"
            ) from None
        yield lineno, value

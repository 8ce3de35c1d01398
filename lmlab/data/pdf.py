"""PDF sources: the text of each page (pypdf), tidied into paragraphs, cut into ~chunk_chars pieces.

pypdf gives one line per printed line and no blank lines, so paragraphs are rebuilt: a line much
shorter than the page's full lines (or a blank one) ends a paragraph, the other lines are joined
with spaces (a word hyphenated across lines is rejoined). Each file's text is then cut into
documents of 0.75-1.25 x ``chunk_chars`` characters, at the paragraph break nearest the target,
else the sentence end, else the space, else exactly at the target.

Encrypted (no empty password), corrupt (pypdf fails) and image-only (no text) files are skipped
with a warning each, and a summary warning at the end of the source.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from lmlab.config import PdfSource
from lmlab.data.documents import Document, Shard, by_file_or_document, find_files
from lmlab.errors import LmlabError

SKIP_KINDS = ("encrypted", "corrupt", "image-only")

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi",
                            "\ufb04": "ffl", "\ufb05": "st", "\ufb06": "st"})
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u00ad]")  # keeps \t and \n; drops soft hyphens
_PARAGRAPH = re.compile(r"\n{2,}")
_SENTENCE = re.compile(r"[.?!][\"')\]]* +")
_SPACE = re.compile(r"\s+")


class _Skip(Exception):
    """A PDF that is skipped: ``kind`` is one of SKIP_KINDS, the message says why."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def import_pypdf() -> ModuleType:
    """The pypdf module, or an LmlabError saying how to install it."""
    try:
        # deferred: pypdf is optional (the data extra)
        import pypdf
    except ImportError:
        raise LmlabError("pdf sources need pypdf: pip install 'lmlab[data]'") from None
    return pypdf


def read_pdf(source: PdfSource, label: str, index: int, strict_utf8: bool, shard: Shard) -> Iterator[Document]:
    """A pdf source's documents (sharded by whole files when there are enough)."""
    n = shard[1]
    return by_file_or_document(
        lambda files: iter_pdf_documents(source, label, index, files if n > 1 else None), source, index, shard)


def iter_pdf_documents(
    source: PdfSource, label: str, index: int, files: list[tuple[Path, str]] | None = None
) -> Iterator[Document]:
    """The documents of a PDF source: ``<file>#<k>`` for the k-th piece of each readable file.

    ``files`` restricts it to some of the source's files (a shard); then a share with no
    readable PDF is not an error (the whole source was checked when it was opened).
    """
    pypdf = import_pypdf()
    skipped: Counter[str] = Counter()
    read = 0
    whole = files is None
    for path, rel in find_files(source.path, source.glob, index) if whole else files:
        try:
            text = read_pdf_text(pypdf, path)
        except _Skip as skip:
            skipped[skip.kind] += 1
            warnings.warn(f"pdf source {source.path!r}: skipping {path}: {skip}", stacklevel=2)
            continue
        read += 1
        for k, chunk in enumerate(chunk_paragraphs(text, source.chunk_chars)):
            yield Document(label, f"{rel}#{k}", chunk)
    if skipped:
        counts = ", ".join(f"{skipped[kind]} {kind}" for kind in SKIP_KINDS if skipped[kind])
        summary = f"pdf source {source.path!r}: {read} files read, skipped {counts}"
        if not read and whole:
            raise LmlabError(f"data.sources[{index}]: no readable PDF ({summary})")
        warnings.warn(summary, stacklevel=2)


def read_pdf_text(pypdf: ModuleType, path: Path) -> str:
    """The file's text, pages tidied by :func:`tidy_page` and joined by blank lines.

    Raises ``_Skip`` for an encrypted, corrupt or image-only file.
    """
    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception as e:  # e.g. AES without the cryptography package
                raise _Skip("encrypted", f"encrypted and cannot be opened ({_first_line(e)})") from None
            if not opened:
                raise _Skip("encrypted", "encrypted, needs a password")
        pages = [page.extract_text() or "" for page in reader.pages]
    except _Skip:
        raise
    except Exception as e:  # pypdf raises many types on damaged files
        raise _Skip("corrupt", f"corrupt, pypdf cannot read it ({_first_line(e)})") from None
    text = "\n\n".join(p for p in (tidy_page(page) for page in pages) if p)
    if not text:
        raise _Skip("image-only", "no extractable text (scanned or image-only pages?)")
    return text


def tidy_page(text: str) -> str:
    """One page of pypdf text -> paragraphs (single spaces) separated by blank lines."""
    text = _CONTROL.sub("", text.translate(_LIGATURES).replace("\r\n", "\n").replace("\r", "\n"))
    lines = [" ".join(line.split()) for line in text.split("\n")]
    lengths = sorted(len(line) for line in lines if line)
    if not lengths:
        return ""
    full = lengths[int(0.9 * (len(lengths) - 1))]  # the length of a typical full line
    paragraphs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line:
            current.append(line)
        if current and (not line or len(line) < 0.7 * full):
            paragraphs.append(_join_lines(current))
            current = []
    if current:
        paragraphs.append(_join_lines(current))
    return "\n\n".join(paragraphs)


def _join_lines(lines: list[str]) -> str:
    """Lines of one paragraph joined by spaces; ``exam-`` + ``ple`` becomes ``example``."""
    out = lines[0]
    for line in lines[1:]:
        if len(out) > 1 and out[-1] == "-" and out[-2].isalpha() and line[:1].islower():
            out = out[:-1] + line
        else:
            out += " " + line
    return out


def chunk_paragraphs(text: str, size: int) -> list[str]:
    """Cut ``text`` into stripped pieces of 0.75-1.25 x ``size`` characters (the last may be shorter).

    Each cut is the paragraph break nearest ``size`` within that range, else the nearest sentence
    end (``. ``, ``? ``, ``! ``), else the nearest space, else exactly ``size``.
    """
    low, high = int(size * 0.75), int(size * 1.25)
    chunks: list[str] = []
    pos = 0
    while len(text) - pos > high:
        cut = _best_cut(text, pos + low, pos + high, pos + size)
        chunks.append(text[pos:cut].strip())
        pos = cut
    chunks.append(text[pos:].strip())
    return [c for c in chunks if c]


def _best_cut(text: str, low: int, high: int, target: int) -> int:
    window = text[low:high]
    for boundary in (_PARAGRAPH, _SENTENCE, _SPACE):
        ends = [low + m.end() for m in boundary.finditer(window)]
        if ends:
            return min(ends, key=lambda end: abs(end - target))
    return target


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__

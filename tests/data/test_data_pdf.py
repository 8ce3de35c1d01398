"""PDF sources: text extraction, paragraph tidying, chunk sizes and boundaries, skipped files."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import pytest

from lmlab.config import DataConfig, PdfSource
from lmlab.data.documents import Document
from lmlab.data.pdf import chunk_paragraphs, import_pypdf, read_pdf_text, tidy_page
from lmlab.data.sources import iter_documents, open_sources
from lmlab.errors import LmlabError

SHARED_PDF = Path(__file__).resolve().parents[3] / "shared" / "data" / "pdf"
needs_shared = pytest.mark.skipif(
    not SHARED_PDF.is_dir(), reason=f"shared test data not found at {SHARED_PDF} (sample PDFs)"
)


def text_pdf(path: Path, paragraphs: list[str]) -> Path:
    """A one-page PDF whose text layer holds each paragraph on its own line (Helvetica)."""
    lines = " ".join(f"({p}) Tj T*" for p in paragraphs)
    stream = f"BT /F1 10 Tf 14 TL 40 800 Td {lines} ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def bad_pdfs(folder: Path) -> None:
    """A corrupt, an encrypted and a blank (image-only) PDF in ``folder``."""
    from pypdf import PdfWriter

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.pdf").write_bytes(bytes(range(256)) * 8)
    locked = PdfWriter()
    locked.add_blank_page(width=200, height=200)
    locked.encrypt("pw")
    locked.write(folder / "locked.pdf")
    blank = PdfWriter()
    blank.add_blank_page(width=200, height=200)
    (folder / "sub").mkdir()
    blank.write(folder / "sub" / "blank.pdf")


# -------------------------------------------------------------------------------- the text


def test_tidy_page_rebuilds_paragraphs() -> None:
    page = (
        "A Heading\n"
        "This is a long line of a paragraph that pypdf broke at the\n"
        "printed line end, and this line continues it with an exam-\n"
        "ple of a hyphenated word, all   in one    paragraph.\n"
        "Short last line.\n"
        "\n"
        "Next paragraph starts here and is long enough to count as a full\n"
        "line of text.\x00 \ufb01ne\n"
    )
    assert tidy_page(page).split("\n\n") == [
        "A Heading",
        "This is a long line of a paragraph that pypdf broke at the printed line end, and this line "
        "continues it with an example of a hyphenated word, all in one paragraph. Short last line.",
        "Next paragraph starts here and is long enough to count as a full line of text. fine",
    ]
    assert tidy_page(" \n\n ") == ""


def test_chunks_prefer_paragraphs_then_sentences_then_hard_cuts() -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * (10 + 7 * (i % 6)) + "end." for i in range(150)]
    chunks = chunk_paragraphs("\n\n".join(paragraphs), 1000)
    assert all(750 <= len(c) <= 1250 for c in chunks[:-1]) and len(chunks) > 10
    assert all(c.startswith("Paragraph ") and c.endswith("end.") for c in chunks)
    sentences = " ".join(f"Sentence {i} is here, with some words to pad it out." for i in range(200))
    chunks = chunk_paragraphs(sentences, 1000)
    assert all(c.endswith(".") and c.startswith("Sentence ") for c in chunks)
    assert " ".join(chunks) == sentences
    assert chunk_paragraphs("x" * 2600, 1000) == ["x" * 1000, "x" * 1000, "x" * 600]
    assert chunk_paragraphs("short", 1000) == ["short"]


# ------------------------------------------------------------------------------ real files


@pytest.fixture(scope="module")
def shared_docs() -> list[Document]:
    if not SHARED_PDF.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_PDF} (sample PDFs)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the three sample PDFs all have text: no skip warnings
        return list(iter_documents(PdfSource(path=str(SHARED_PDF))))


@needs_shared
def test_shared_pdfs_chunk_sizes_and_names(shared_docs: list[Document]) -> None:
    files = {d.name.split("#")[0] for d in shared_docs}
    assert files == {"cs336_spring2025_assignment1_basics.pdf", "dmca.pdf", "i1040nr.pdf"}
    assert len({d.name for d in shared_docs}) == len(shared_docs) > 60
    sizes = [len(d.text) for d in shared_docs]
    assert max(sizes) <= 4000 * 1.5
    assert sum(2000 <= s <= 5000 for s in sizes) >= 0.9 * len(sizes)
    assert all(d.text == d.text.strip() and "\n\n\n" not in d.text for d in shared_docs)
    assert "Digital Millennium Copyright Act" in " ".join(d.text for d in shared_docs)


@needs_shared
def test_shared_pdf_cuts_fall_on_boundaries() -> None:
    text = read_pdf_text(import_pypdf(), SHARED_PDF / "dmca.pdf")
    assert len(text) > 30_000 and "\n\n" in text
    chunks = chunk_paragraphs(text, 4000)
    pos = 0
    for chunk in chunks[:-1]:
        pos = text.index(chunk, pos) + len(chunk)
        assert text[pos:].startswith("\n\n") or re.search(r"[.?!][\"')\]]*$", chunk), chunk[-80:]


@needs_shared
def test_shared_pdfs_shard_by_document(shared_docs: list[Document]) -> None:
    src = PdfSource(path=str(SHARED_PDF / "dmca.pdf"))
    full = list(iter_documents(src))
    assert [d for k in range(3) for d in iter_documents(src, shard=(k, 3))] != full  # interleaved
    for k in range(3):
        assert list(iter_documents(src, shard=(k, 3))) == full[k::3]


def test_shared_pdf_folder_shards_by_whole_file(shared_docs: list[Document]) -> None:
    """3 PDFs over 2 shards: each file parsed by one shard only, together all documents once."""
    src = PdfSource(path=str(SHARED_PDF))
    parts = [list(iter_documents(src, shard=(k, 2))) for k in range(2)]
    files = [{d.name.split("#")[0] for d in part} for part in parts]
    assert files[0].isdisjoint(files[1]) and len(files[0] | files[1]) == 3
    assert sorted(d.name for part in parts for d in part) == sorted(d.name for d in shared_docs)


def test_a_shard_of_only_bad_pdfs_is_empty_not_an_error(tmp_path: Path) -> None:
    bad_pdfs(tmp_path / "docs")  # corrupt.pdf, locked.pdf, blank.pdf
    text_pdf(tmp_path / "docs" / "good.pdf", ["Hello."])
    parts = []
    with pytest.warns(UserWarning):
        for k in range(4):
            parts.append(list(iter_documents(PdfSource(path=str(tmp_path / "docs")), shard=(k, 4))))
    assert [d.name for part in parts for d in part] == ["good.pdf#0"]


# ---------------------------------------------------------------------------- skipped files


def test_bad_pdfs_are_skipped_with_warnings(tmp_path: Path) -> None:
    bad_pdfs(tmp_path / "docs")
    text_pdf(tmp_path / "docs" / "good.pdf", ["Hello from a generated PDF.", "A second line of text."])
    with pytest.warns(UserWarning) as caught:
        docs = list(iter_documents(PdfSource(path=str(tmp_path / "docs"))))
    assert [d.name for d in docs] == ["good.pdf#0"]
    assert "Hello from a generated PDF." in docs[0].text
    messages = [str(w.message) for w in caught]
    assert any("corrupt.pdf" in m and "corrupt" in m for m in messages)
    assert any("locked.pdf" in m and "encrypted" in m for m in messages)
    assert any("blank.pdf" in m and "no extractable text" in m for m in messages)
    assert messages[-1] == (
        f"pdf source {str(tmp_path / 'docs')!r}: 1 files read, skipped 1 encrypted, 1 corrupt, 1 image-only"
    )


def test_only_bad_pdfs_is_an_error_and_a_skipped_source(tmp_path: Path) -> None:
    bad_pdfs(tmp_path / "bad")
    with pytest.warns(UserWarning), pytest.raises(LmlabError, match="no readable PDF.*0 files read"):
        list(iter_documents(PdfSource(path=str(tmp_path / "bad")), index=2))
    good = text_pdf(tmp_path / "good.pdf", ["Some text."])
    cfg = DataConfig(sources=[PdfSource(path=str(tmp_path / "bad")), PdfSource(path=str(good))])
    with pytest.warns(UserWarning) as caught:
        (opened,) = open_sources(cfg)
    assert re.match(r"skipping data.sources\[0\] pdf:.*: no readable PDF", str(caught[-1].message))
    assert opened.index == 1 and [d.text for d in opened.documents] == ["Some text."]


def test_missing_pypdf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = text_pdf(tmp_path / "good.pdf", ["Some text."])
    monkeypatch.setitem(sys.modules, "pypdf", None)
    with pytest.raises(LmlabError, match=r"pdf sources need pypdf: pip install 'lmlab\[data\]'"):
        list(iter_documents(PdfSource(path=str(good))))
    with pytest.raises(LmlabError, match="no data source could be read: .*need pypdf"):
        open_sources(DataConfig(sources=[PdfSource(path=str(good))]))

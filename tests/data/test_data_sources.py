"""Reading text/jsonl sources into documents, their errors, and the train/val split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmlab.config import DataConfig, JsonlSource, TextSource
from lmlab.data.sources import (
    Document,
    chunk_text,
    iter_documents,
    load_documents,
    split_documents,
)
from lmlab.errors import LmlabError


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ text


def test_text_file_read_whatever_suffix(tmp_path: Path) -> None:
    f = _write(tmp_path / "notes.log", "hello\nworld\n")
    docs = list(iter_documents(TextSource(path=str(f))))
    assert docs == [Document(f"text:{f}", "notes.log", "hello\nworld\n")]


def test_text_folder_glob_recursive_sorted(tmp_path: Path) -> None:
    _write(tmp_path / "b.txt", "B")
    _write(tmp_path / "a.md", "A")
    _write(tmp_path / "sub" / "deep" / "c.txt", "C")
    _write(tmp_path / "skip.py", "no")
    (tmp_path / "dir.txt").mkdir()  # a folder matching the glob is not a document
    docs = list(iter_documents(TextSource(path=str(tmp_path))))
    assert [d.name for d in docs] == ["a.md", "b.txt", "sub/deep/c.txt"]
    assert [d.text for d in docs] == ["A", "B", "C"]
    # overlapping patterns do not duplicate files
    src = TextSource(path=str(tmp_path), glob=["**/*.txt", "sub/**/*.txt", "*.py"])
    assert [d.name for d in iter_documents(src)] == ["b.txt", "skip.py", "sub/deep/c.txt"]


def test_big_file_chunked_at_paragraphs(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i}. " + "word " * (50 + i % 40) for i in range(400)]
    text = "\n\n".join(paragraphs) + "\n"
    f = _write(tmp_path / "big.txt", text)
    docs = list(iter_documents(TextSource(path=str(f))))
    assert len(docs) > 5
    assert [d.name for d in docs] == [f"big.txt#{k}" for k in range(len(docs))]
    assert "".join(d.text for d in docs) == text
    assert all(len(d.text) <= 8000 for d in docs)
    assert all(d.text.endswith("\n\n") and d.text[:-2].strip() for d in docs[:-1])
    assert all(d.text.startswith("Paragraph ") for d in docs)


def test_chunk_falls_back_to_lines_then_hard_cuts() -> None:
    lines = "\n".join("x" * 70 for _ in range(500))
    chunks = chunk_text(lines, max_chars=1000)
    assert "".join(chunks) == lines
    assert all(c.endswith("\n") and len(c) <= 1000 for c in chunks[:-1])
    blob = "y" * 2500
    assert chunk_text(blob, max_chars=1000) == ["y" * 1000, "y" * 1000, "y" * 500]
    assert chunk_text("short") == ["short"]


def test_non_utf8_strict_and_surrogateescape(tmp_path: Path) -> None:
    raw = "héllo ".encode() + b"\xff\xfe bytes \x80" + "ok ✓\n".encode()
    f = _write(tmp_path / "bin.txt", raw)
    with pytest.raises(LmlabError) as e:
        list(iter_documents(TextSource(path=str(f)), index=2))
    msg = str(e.value)
    assert "data.sources[2]" in msg and "bin.txt" in msg and "0xff" in msg
    assert "offset 7" in msg and "tokenizer.type: byte" in msg
    (doc,) = iter_documents(TextSource(path=str(f)), strict_utf8=False)
    assert doc.text.encode("utf-8", "surrogateescape") == raw


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(
        LmlabError, match=r"data.sources\[3\].path: no such file or folder: '.*nope'"
    ):
        list(iter_documents(TextSource(path=str(tmp_path / "nope")), index=3))
    _write(tmp_path / "x.csv", "a,b")
    with pytest.raises(LmlabError) as e:
        list(iter_documents(TextSource(path=str(tmp_path), glob=["**/*.txt"])))
    assert str(tmp_path) in str(e.value) and "**/*.txt" in str(e.value) and "glob" in str(e.value)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _write(tmp_path / "secret.txt", "x")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", deny)
    with pytest.raises(
        LmlabError, match=r"data.sources\[1\]: cannot read .*secret.txt \(Permission denied\)"
    ):
        list(iter_documents(TextSource(path=str(f)), index=1))


# ----------------------------------------------------------------------------------- jsonl


def test_jsonl_field_extraction(tmp_path: Path) -> None:
    rows = [{"body": "first", "id": 1}, {"body": "second ✓", "id": 2}]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    _write(tmp_path / "d" / "a.jsonl", lines[0] + "\n\n" + lines[1] + "\n")
    _write(tmp_path / "d" / "ignored.txt", "no")
    docs = list(iter_documents(JsonlSource(path=str(tmp_path / "d"), text_field="body")))
    assert [(d.name, d.text) for d in docs] == [("a.jsonl:1", "first"), ("a.jsonl:3", "second ✓")]
    assert all(d.source == f"jsonl:{tmp_path / 'd'}" for d in docs)


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ('{"text": "ok"}\n{"text": oops}\n', ["bad.jsonl:2:", "invalid JSON"]),
        (
            '{"text": "ok"}\n\n{"body": "x", "id": 3}\n',
            [
                "bad.jsonl:3:",
                "no field 'text'",
                "fields: body, id",
                "text_field",
                "data.sources[4]",
            ],
        ),
        ('{"text": 5}\n', ["bad.jsonl:1:", "'text'", "int", "string"]),
        ('["text"]\n', ["bad.jsonl:1:", "JSON object", "list"]),
        ('{"text": "ok"}\n{"text": "bad \\ud800"}\n', ["bad.jsonl:2:", "lone surrogate"]),
    ],
)
def test_jsonl_errors(tmp_path: Path, content: str, needles: list[str]) -> None:
    f = _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(LmlabError) as e:
        list(iter_documents(JsonlSource(path=str(f)), index=4))
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg


# ------------------------------------------------------------------------------ load/split


def test_load_documents_concatenates_and_drops_blank(tmp_path: Path) -> None:
    _write(tmp_path / "t" / "a.txt", "alpha")
    _write(tmp_path / "t" / "blank.txt", "  \n\n ")
    j = _write(tmp_path / "x.jsonl", '{"text": "beta"}\n{"text": "   "}\n')
    cfg = DataConfig(sources=[TextSource(path=str(tmp_path / "t")), JsonlSource(path=str(j))])
    assert [d.text for d in load_documents(cfg)] == ["alpha", "beta"]


def test_empty_corpus(tmp_path: Path) -> None:
    _write(tmp_path / "empty.txt", "")
    _write(tmp_path / "space.md", " \n")
    cfg = DataConfig(sources=[TextSource(path=str(tmp_path))])
    with pytest.raises(LmlabError, match="the corpus is empty: data.sources gave no text"):
        load_documents(cfg)


def _docs(n: int, prefix: str = "doc") -> list[Document]:
    return [Document("text:/corpus", f"{prefix}{i}.txt", f"text {i}") for i in range(n)]


def test_split_deterministic_share_and_order() -> None:
    docs = _docs(4000)
    train, val = split_documents(docs, 0.1)
    assert (train, val) == split_documents(list(docs), 0.1)
    assert len(train) + len(val) == len(docs) and not set(train) & set(val)
    assert 0.08 < len(val) / len(docs) < 0.12
    order = {d.name: i for i, d in enumerate(docs)}
    for side in (train, val):
        idx = [order[d.name] for d in side]
        assert idx == sorted(idx)


def test_split_stable_when_docs_appended() -> None:
    docs = _docs(500)
    train, val = split_documents(docs, 0.2)
    train2, val2 = split_documents(docs + _docs(300, prefix="other"), 0.2)
    assert [d for d in train2 if d in set(docs)] == train
    assert [d for d in val2 if d in set(docs)] == val


def test_split_small_corpora_non_empty() -> None:
    for n in (2, 3, 5):
        for frac in (0.001, 0.5, 0.999):
            train, val = split_documents(_docs(n), frac)
            assert train and val and len(train) + len(val) == n
    with pytest.raises(LmlabError, match="add text"):
        split_documents(_docs(1), 0.1)

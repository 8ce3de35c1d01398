"""Reading text/jsonl/csv sources into documents, their errors, sharding, opening every source
with its failure policy, and the train/val split."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest

from lmlab.config import CsvSource, DataConfig, JsonlSource, TextSource
from lmlab.data.documents import Document, chunk_text, find_files
from lmlab.data.sources import iter_documents, load_documents, open_sources, split_documents
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

    real_open = open

    def deny(file, *args, **kwargs):
        if str(file).endswith("secret.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
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


def _assert_one_line_error(source, index: int, needles: list[str]) -> None:
    """Reading ``source`` fails with a one-line LmlabError containing every needle."""
    with pytest.raises(LmlabError) as e:
        list(iter_documents(source, index=index))
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg


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
    _assert_one_line_error(JsonlSource(path=str(f)), 4, needles)


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


# ------------------------------------------------------------------------------ formatting


def test_jsonl_fields_and_format(tmp_path: Path) -> None:
    f = _write(tmp_path / "qa.jsonl", '{"q": "Why?", "a": 42}\n{"q": "How?", "a": "so"}\n')
    src = JsonlSource(path=str(f), fields=["q", "a"], format="Q: {q}\nA: {a}")
    assert [d.text for d in iter_documents(src)] == ["Q: Why?\nA: 42", "Q: How?\nA: so"]
    _write(tmp_path / "qa.jsonl", '{"q": "Why?", "a": 1}\n{"q": "How?", "answer": "so"}\n')
    with pytest.raises(LmlabError) as e:
        list(iter_documents(src, index=1))
    msg = str(e.value)
    assert "qa.jsonl:2:" in msg and "no field 'a'" in msg and "fields: q, answer" in msg
    assert "data.sources[1]" in msg


# ------------------------------------------------------------------------------------- csv


def test_csv_rows_folder_delimiter_and_format(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "b.csv", 'text,id\n"multi\nline, quoted",1\nsecond,2\n')
    _write(tmp_path / "d" / "sub" / "a.csv", "text,id\nfirst,0\n")
    _write(tmp_path / "d" / "skip.txt", "no")
    docs = list(iter_documents(CsvSource(path=str(tmp_path / "d"))))
    assert [(d.name, d.text) for d in docs] == [
        ("b.csv:3", "multi\nline, quoted"),
        ("b.csv:4", "second"),
        ("sub/a.csv:2", "first"),
    ]
    f = _write(tmp_path / "qa.tsv", "question\tanswer\nWhy?\tBecause.\n")
    src = CsvSource(path=str(f), delimiter="\t", fields=["question", "answer"], format="Q: {question} A: {answer}")
    assert [d.text for d in iter_documents(src)] == ["Q: Why? A: Because."]


def test_csv_streams_without_reading_the_whole_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _write(tmp_path / "big.csv", "text\n" + "".join(f"row {i}\n" for i in range(1000)))

    def whole(self: Path, *a: object, **k: object) -> bytes:
        raise AssertionError("the csv reader must stream, not read the file whole")

    monkeypatch.setattr(Path, "read_bytes", whole)
    monkeypatch.setattr(Path, "read_text", whole)
    docs = iter_documents(CsvSource(path=str(f)))
    assert next(docs).text == "row 0"
    assert sum(1 for _ in docs) == 999


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ("", ["bad.csv", "no header row"]),
        ("body,id\nx,1\n", ["bad.csv:2:", "no field 'text'", "fields: body, id", "data.sources[2]"]),
        ("text,id\nok,1\n", None),
        ("id,text\n1\n", ["bad.csv:2:", "no field 'text'", "fields: id"]),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, needles: list[str] | None) -> None:
    f = _write(tmp_path / "bad.csv", content)
    if needles is None:
        assert [d.text for d in iter_documents(CsvSource(path=str(f)))] == ["ok"]
        return
    _assert_one_line_error(CsvSource(path=str(f)), 2, needles)


def test_csv_not_utf8(tmp_path: Path) -> None:
    f = _write(tmp_path / "latin.csv", b"text\n" + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(LmlabError, match="latin.csv is not UTF-8"):
        list(iter_documents(CsvSource(path=str(f))))
    (doc,) = iter_documents(CsvSource(path=str(f)), strict_utf8=False)
    assert doc.text.encode("utf-8", "surrogateescape") == "caf\xe9".encode("latin-1")


# ---------------------------------------------------------------------------------- shards


def _mixed_sources(tmp_path: Path) -> list:
    big = "\n\n".join(f"Paragraph {i}. " + "word " * 80 for i in range(120))
    _write(tmp_path / "t" / "big.txt", big)
    for i in range(5):
        _write(tmp_path / "t" / f"small{i}.txt", f"small {i}")
    _write(tmp_path / "j.jsonl", "".join(json.dumps({"text": f"line {i}"}) + "\n\n" for i in range(11)))
    _write(tmp_path / "c.csv", "text\n" + "".join(f"row {i}\n" for i in range(13)))
    return [
        TextSource(path=str(tmp_path / "t")),
        JsonlSource(path=str(tmp_path / "j.jsonl")),
        CsvSource(path=str(tmp_path / "c.csv")),
    ]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_partition_the_stream_by_document_index(tmp_path: Path, n: int) -> None:
    for source in _mixed_sources(tmp_path):
        full = list(iter_documents(source))
        assert len({d.name for d in full}) == len(full) > 5  # names unique per source
        shards = [list(iter_documents(source, shard=(k, n))) for k in range(n)]
        by_file = isinstance(source, TextSource) and n > 1
        files = find_files(source.path, source.glob, 0) if by_file else []
        for k, part in enumerate(shards):
            if by_file and len(files) >= n:  # whole files: file i goes to shard i mod n
                assert {d.name.split("#")[0] for d in part} == {rel for _, rel in files[k::n]}
            else:
                assert part == full[k::n]
        assert sorted(d.name for part in shards for d in part) == sorted(d.name for d in full)


def test_shard_skips_records_before_parsing(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.jsonl", '{"text": "a"}\nnot json\n{"text": "c"}\n')
    assert [d.text for d in iter_documents(JsonlSource(path=str(f)), shard=(0, 2))] == ["a", "c"]
    with pytest.raises(LmlabError, match="x.jsonl:2: invalid JSON"):
        list(iter_documents(JsonlSource(path=str(f)), shard=(1, 2)))
    with pytest.raises(ValueError, match="shard"):
        list(iter_documents(JsonlSource(path=str(f)), shard=(2, 2)))


# ---------------------------------------------------------------------------- open_sources


def test_open_sources_skips_a_missing_source_with_a_warning(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.txt", "some text")
    cfg = DataConfig(sources=[TextSource(path=str(tmp_path / "nope")), TextSource(path=str(good))])
    with pytest.warns(UserWarning) as caught:
        opened = open_sources(cfg)
    assert [(o.index, o.label) for o in opened] == [(1, f"data.sources[1] text:{good}")]
    assert [d.text for d in opened[0].documents] == ["some text"]
    (w,) = caught
    assert str(w.message).startswith(f"skipping data.sources[0] text:{tmp_path / 'nope'}: no such file or folder")
    with pytest.warns(UserWarning, match="skipping data.sources.0."):
        assert [d.text for d in load_documents(cfg)] == ["some text"]


def test_open_sources_all_failing_is_one_error(tmp_path: Path) -> None:
    _write(tmp_path / "x.csv", "a,b")
    cfg = DataConfig(
        sources=[TextSource(path=str(tmp_path / "nope")), TextSource(path=str(tmp_path), glob=["*.md"])]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings when everything fails: one error says it all
        with pytest.raises(LmlabError) as e:
            open_sources(cfg)
    msg = str(e.value)
    assert msg.startswith("no data source could be read: data.sources[0] text:")
    assert "no such file or folder" in msg and "; data.sources[1] text:" in msg and "*.md" in msg
    assert "\n" not in msg
    with pytest.raises(LmlabError, match="no data source could be read"):
        load_documents(DataConfig(sources=[TextSource(path=str(tmp_path / "nope"))]))


def test_open_sources_min_text_length_and_empty_source(tmp_path: Path) -> None:
    _write(tmp_path / "t" / "short.txt", "  tiny  ")
    _write(tmp_path / "t" / "long.txt", "long enough text")
    blank = _write(tmp_path / "blank.jsonl", '{"text": "  "}\n{"text": "abc"}\n')
    cfg = DataConfig(
        sources=[TextSource(path=str(tmp_path / "t")), JsonlSource(path=str(blank))], min_text_length=5
    )
    with pytest.warns(UserWarning, match=r"skipping data.sources\[1\] jsonl:.*min_text_length=5"):
        opened = open_sources(cfg)
    assert [d.text for o in opened for d in o.documents] == ["long enough text"]
    cfg.min_text_length = 4  # "tiny" has 4 characters after stripping: kept
    with pytest.warns(UserWarning, match="min_text_length=4"):
        assert [d.text for d in load_documents(cfg)] == ["long enough text", "  tiny  "]


def test_open_sources_later_errors_still_raise(tmp_path: Path) -> None:
    f = _write(tmp_path / "x.jsonl", '{"text": "fine"}\n{"text": "also"}\n{oops\n')
    (opened,) = open_sources(DataConfig(sources=[JsonlSource(path=str(f))]))
    assert next(opened.documents).text == "fine"
    with pytest.raises(LmlabError, match="x.jsonl:3: invalid JSON"):
        list(opened.documents)


def test_open_sources_shard(tmp_path: Path) -> None:
    sources = _mixed_sources(tmp_path)
    cfg = DataConfig(sources=sources)
    full = load_documents(cfg)
    parts = [[d for o in open_sources(cfg, shard=(k, 2)) for d in o.documents] for k in range(2)]
    assert sorted(map(repr, parts[0] + parts[1])) == sorted(map(repr, full))
    assert not set(parts[0]) & set(parts[1])


def test_big_files_stream_in_blocks_with_the_same_pieces_and_exact_offsets(tmp_path: Path) -> None:
    """A 2.5 MB file (multi-byte characters across the 1 MB block edges) gives exactly the
    pieces of chunk_text on the whole text; a bad byte past the first block is located exactly."""
    rng = random.Random(0)
    paras = ["".join(rng.choice("abcé✓ \n") for _ in range(rng.randint(50, 3000))) for _ in range(1200)]
    text = "\n\n".join(paras)
    f = tmp_path / "big.txt"
    f.write_text(text, encoding="utf-8")
    assert f.stat().st_size > 2_000_000
    docs = list(iter_documents(TextSource(path=str(f))))
    assert [d.text for d in docs] == chunk_text(text)
    assert docs[0].name == "big.txt#0"
    raw = bytearray(f.read_bytes())
    at = 1_500_001
    while raw[at] >= 0x80:  # put the bad byte at a character boundary
        at += 1
    raw[at] = 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(LmlabError, match=f"invalid byte 0xff at offset {at}\\)"):
        list(iter_documents(TextSource(path=str(f))))


def test_jsonl_lines_across_blocks(tmp_path: Path) -> None:
    f = tmp_path / "many.jsonl"
    f.write_text("".join(json.dumps({"text": f"record {i} " + "é" * 300}) + "\n" for i in range(5000)))
    docs = list(iter_documents(JsonlSource(path=str(f))))
    assert len(docs) == 5000 and docs[-1].text.startswith("record 4999 ") and docs[-1].name == "many.jsonl:5000"


def test_split_does_not_depend_on_where_the_corpus_lives(tmp_path: Path) -> None:
    for root in ("a", "b/c"):
        for i in range(30):
            _write(tmp_path / root / f"doc{i}.txt", f"document {i}")
    split = {}
    for root in ("a", "b/c"):
        docs = list(iter_documents(TextSource(path=str(tmp_path / root))))
        split[root] = [d.name for d in split_documents(docs, 0.3)[1]]
    assert split["a"] == split["b/c"] and split["a"]

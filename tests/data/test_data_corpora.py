"""Named corpora: the table, its errors, and a named source read end to end from a local mirror."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from lmlab.config import DataConfig, NamedSource  # noqa: E402
from lmlab.data import corpora  # noqa: E402
from lmlab.data.corpora import CORPORA, Corpus, corpora_table_markdown, resolve_named  # noqa: E402
from lmlab.data.sources import iter_documents, load_documents, open_sources  # noqa: E402
from lmlab.errors import LmlabError  # noqa: E402

NAMES = {
    "tinystories", "wikitext2", "wikitext103", "fineweb_edu", "fineweb", "c4_en", "wiki40b_en",
    "cc_news", "openwebtext", "wikipedia", "bookcorpus", "pile_subset", "common_crawl",
}
TINYSTORIES = Path(__file__).resolve().parents[3] / "shared" / "data" / "tinystories"


def test_table_is_complete_and_well_formed() -> None:
    assert set(CORPORA) == NAMES
    for name, c in CORPORA.items():
        assert c.split and c.text_field and c.note, name
        assert c.hub_id is None or "/" in c.hub_id, name  # hub ids, not local builders
        assert c.data_files is None, name
    assert CORPORA["common_crawl"].hub_id is None
    table = corpora_table_markdown()
    assert table.count("\n") == 2 + len(CORPORA)
    assert "| `wikitext2` | `Salesforce/wikitext` | `wikitext-2-raw-v1` | train | text |" in table


def test_resolve_to_hf_source() -> None:
    src = resolve_named(NamedSource(name="wikitext103", split="validation"))
    assert (src.dataset, src.name, src.split, src.text_field) == (
        "Salesforce/wikitext", "wikitext-103-raw-v1", "validation", "text"
    )


def test_unknown_name_lists_names_and_closest() -> None:
    with pytest.raises(LmlabError) as e:
        resolve_named(NamedSource(name="tinystory"), index=2)
    msg = str(e.value)
    assert "data.sources[2]: unknown named corpus 'tinystory'" in msg and "did you mean 'tinystories'" in msg
    assert all(name in msg for name in NAMES)


def test_entry_without_hub_dataset() -> None:
    with pytest.raises(LmlabError) as e:
        list(iter_documents(NamedSource(name="common_crawl")))
    msg = str(e.value)
    assert "named corpus 'common_crawl' has no script-free dataset on the hub" in msg
    assert "c4_en" in msg and "instead" in msg


def test_named_source_end_to_end_from_a_local_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets", reason="named corpora need the datasets package")
    mirror = tmp_path / "stories.txt"
    mirror.write_text("Once upon a time.\n\nThe end.\nAnother story.\n", encoding="utf-8")
    monkeypatch.setitem(
        CORPORA, "tinystories",
        Corpus(hub_id="text", config=None, split="train", text_field="text", note="", data_files=str(mirror)),
    )
    cfg = DataConfig(sources=["tinystories", "common_crawl"])  # bare names become named sources
    with pytest.warns(UserWarning, match=r"skipping data.sources\[1\] named:common_crawl: named corpus"):
        (opened,) = open_sources(cfg)
    assert opened.label == "data.sources[0] named:tinystories"
    docs = list(opened.documents)
    assert [(d.source, d.name, d.text) for d in docs] == [
        ("named:tinystories", "train:0:0", "Once upon a time."),
        ("named:tinystories", "train:0:2", "The end."),
        ("named:tinystories", "train:0:3", "Another story."),
    ]
    assert [d.name for d in iter_documents(NamedSource(name="tinystories"), shard=(1, 2))] == ["train:0:1", "train:0:3"]


def test_named_source_reads_the_shared_tinystories_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets", reason="named corpora need the datasets package")
    path = TINYSTORIES / "TinyStories-train-first2MiB.txt"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    monkeypatch.setitem(corpora.CORPORA, "tinystories", Corpus("text", None, "train", "text", "", str(path)))
    docs = load_documents(DataConfig(sources=["tinystories"], min_text_length=20))
    assert len(docs) > 5000 and all(len(d.text.strip()) >= 20 for d in docs)
    assert not any("<|endoftext|>" in d.text for d in docs)

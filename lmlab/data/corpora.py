"""Named corpora: ``sources: [tinystories]`` streams a known Hugging Face dataset.

:data:`CORPORA` is the one table of names; every entry is a script-free (parquet, json or text
files) dataset that ``datasets.load_dataset(hub_id, config, split=..., streaming=True)`` reads,
or ``hub_id=None`` where no such copy is known (the note says what to use instead). Hub ids were
checked against the hub's file listings where noted; see each ``note``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass

from lmlab.config import HFSource, NamedSource
from lmlab.data.documents import Document, Shard
from lmlab.data.hf import iter_hf_documents
from lmlab.errors import LmlabError


@dataclass(frozen=True)
class Corpus:
    """Where a named corpus lives on the hub and which field holds its text."""

    hub_id: str | None
    """``owner/name`` on the hub, or a local builder (``text``, ``json``, ``parquet``); None: none known."""
    config: str | None
    """The dataset config (``load_dataset(hub_id, config)``)."""
    split: str
    text_field: str
    note: str
    data_files: str | None = None
    """Files for a local builder hub_id (a local mirror, e.g. ``Corpus("text", None, "train",
    "text", "", data_files="/data/tinystories/*.txt")``); None for hub datasets."""


CORPORA: dict[str, Corpus] = {
    "tinystories": Corpus(
        "roneneldan/TinyStories", None, "train", "text",
        "~2.1M short stories by GPT-3.5/4 in simple English; parquet",
    ),
    "wikitext2": Corpus(
        "Salesforce/wikitext", "wikitext-2-raw-v1", "train", "text",
        "one record per line of the articles (headings and blank lines included); parquet",
    ),
    "wikitext103": Corpus(
        "Salesforce/wikitext", "wikitext-103-raw-v1", "train", "text",
        "one record per line of the articles, like wikitext2; parquet",
    ),
    "fineweb_edu": Corpus(
        "HuggingFaceFW/fineweb-edu", "sample-10BT", "train", "text",
        "educational web pages, the 10B-token sample; parquet",
    ),
    "fineweb": Corpus(
        "HuggingFaceFW/fineweb", "sample-10BT", "train", "text",
        "filtered Common Crawl web pages, the 10B-token sample; parquet",
    ),
    "c4_en": Corpus(
        "allenai/c4", "en", "train", "text",
        "Colossal Clean Crawled Corpus, English; json.gz files",
    ),
    "wiki40b_en": Corpus(
        "google/wiki40b", "en", "train", "text",
        "cleaned English Wikipedia with _START_ARTICLE_/_START_PARAGRAPH_ markers; parquet "
        "(script replaced by data files, checked)",
    ),
    "cc_news": Corpus(
        "vblagoje/cc_news", "plain_text", "train", "text",
        "~708k English news articles; parquet (converted from a script, checked)",
    ),
    "openwebtext": Corpus(
        None, None, "train", "text",
        "Skylion007/openwebtext is a loading script (checked); only unofficial parquet subsets "
        "exist (e.g. Elriggs/openwebtext-100k): use an hf source, or fineweb",
    ),
    "wikipedia": Corpus(
        "wikimedia/wikipedia", "20231101.en", "train", "text",
        "English Wikipedia dump of 2023-11-01, one article per record; parquet",
    ),
    "bookcorpus": Corpus(
        "rojagtap/bookcorpus", None, "train", "text",
        "unofficial re-upload of books_large_p1/p2.txt, one sentence per record (plain text, "
        "checked); bookcorpus/bookcorpus itself is a loading script",
    ),
    "pile_subset": Corpus(
        "NeelNanda/pile-10k", None, "train", "text",
        "first 10k documents of the Pile; parquet (checked); bigger: monology/pile-uncopyrighted "
        "(jsonl.zst) as an hf source",
    ),
    "common_crawl": Corpus(
        None, None, "train", "text",
        "raw Common Crawl has no single script-free hub dataset",
    ),
}

_INSTEAD = {
    "openwebtext": "fineweb or an hf source such as Elriggs/openwebtext-100k",
    "common_crawl": "c4_en or fineweb (both filtered Common Crawl)",
}


def resolve_named(source: NamedSource, index: int = 0) -> HFSource:
    """The hf source a named corpus stands for (``source.split`` overrides the table's split)."""
    corpus = CORPORA.get(source.name)
    if corpus is None:
        close = difflib.get_close_matches(source.name, CORPORA, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise LmlabError(
            f"data.sources[{index}]: unknown named corpus {source.name!r}; {hint}"
            f"valid names: {', '.join(sorted(CORPORA))}"
        )
    if corpus.hub_id is None:
        instead = _INSTEAD.get(source.name, "an hf source with a script-free dataset")
        raise LmlabError(
            f"data.sources[{index}]: named corpus {source.name!r} has no script-free dataset on the "
            f"hub ({corpus.note}); use {instead} instead"
        )
    return HFSource(
        dataset=corpus.hub_id,
        name=corpus.config,
        split=source.split or corpus.split,
        data_files=corpus.data_files,
        text_field=corpus.text_field,
    )


def corpora_table_markdown() -> str:
    """The table of named corpora as markdown (name, hub id, config, split, text field, note)."""
    rows = ["| name | hub id | config | split | text field | note |", "|---|---|---|---|---|---|"]
    for name, c in CORPORA.items():
        hub = f"`{c.hub_id}`" if c.hub_id else "none"
        config = f"`{c.config}`" if c.config else ""
        rows.append(f"| `{name}` | {hub} | {config} | {c.split} | {c.text_field} | {c.note} |")
    return "\n".join(rows) + "\n"


def read_named(source: NamedSource, label: str, index: int, strict_utf8: bool, shard: Shard) -> Iterator[Document]:
    """A named corpus's documents: those of the hf source it stands for."""
    return iter_hf_documents(resolve_named(source, index), label, index, shard)

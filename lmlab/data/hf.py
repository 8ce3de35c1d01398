"""Hugging Face dataset sources, streamed with ``datasets.load_dataset(..., streaming=True)``.

A streamed dataset is read file shard by file shard (``ds.shard(n_shards, i)``), and record j of
file shard i becomes the document named ``<split>:<i>:<j>``, its text made by
:func:`~lmlab.data.sources.format_record`. Names do not depend on how the stream is sharded,
so the train/val split is the same for any number of ranks and workers. ``shard=(k, n)`` takes
whole file shards k, k + n, ... when the dataset has at least n of them (each file is streamed
by one shard only), else every n-th record of the whole stream, skipped before formatting.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

from lmlab.config import HFSource
from lmlab.data.documents import Document, Shard, format_record
from lmlab.errors import LmlabError


def import_datasets() -> ModuleType:
    """The datasets module, or an LmlabError saying how to install it."""
    try:
        # deferred: datasets is optional (the data extra) and slow to import
        import datasets
    except ImportError:
        raise LmlabError("hf sources need the datasets package: pip install 'lmlab[data]'") from None
    return datasets


def read_hf(source: HFSource, label: str, index: int, strict_utf8: bool, shard: Shard) -> Iterator[Document]:
    """An hf source's documents (records outside the shard are skipped before formatting)."""
    return iter_hf_documents(source, label, index, shard)


def iter_hf_documents(
    source: HFSource, label: str, index: int, shard: tuple[int, int] = (0, 1)
) -> Iterator[Document]:
    """The documents of one streamed dataset split that fall in ``shard`` (see the module doc)."""
    k, n = shard
    ds = open_dataset(source, index)
    n_files = max(1, int(getattr(ds, "n_shards", 1) or 1))
    by_file = n > 1 and n_files >= n
    position = 0  # record number in the whole stream, for record-wise sharding
    for f in range(k, n_files, n) if by_file else range(n_files):
        part = ds.shard(num_shards=n_files, index=f) if n_files > 1 else ds
        for j, record in enumerate(_records(part, source, index, f)):
            position += 1
            if not by_file and (position - 1) % n != k:
                continue
            where = f"dataset {source.dataset!r} split {source.split!r} file shard {f} record {j}"
            yield Document(label, f"{source.split}:{f}:{j}", format_record(record, source, where, index))


def _records(part: Any, source: HFSource, index: int, f: int) -> Iterator[dict[str, Any]]:
    """The records of one file shard, read errors as one-line LmlabErrors."""
    records = iter(part)
    j = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as e:  # datasets and its readers raise many types
            raise LmlabError(
                f"data.sources[{index}]: dataset {source.dataset!r}: cannot read file shard {f} record {j} "
                f"({_first_line(e)})"
            ) from None
        j += 1
        yield record


def open_dataset(source: HFSource, index: int) -> Any:
    """``load_dataset(..., streaming=True)`` for the source, its failures as one-line LmlabErrors."""
    datasets = import_datasets()
    try:
        return datasets.load_dataset(
            source.dataset,
            source.name,
            split=source.split,
            data_files=source.data_files,
            revision=source.revision,
            streaming=True,
        )
    except Exception as e:  # not found, offline, script-based, bad config or split...
        raise LmlabError(
            f"data.sources[{index}]: cannot load dataset {source.dataset!r}"
            f"{f' config {source.name!r}' if source.name else ''} split {source.split!r}: "
            f"{_first_line(e)}"
        ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__

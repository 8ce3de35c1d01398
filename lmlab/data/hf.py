"""Hugging Face dataset sources, streamed with ``datasets.load_dataset(..., streaming=True)``.

Each record becomes one document named ``<split>:<record index>``, its text made by
:func:`~lmlab.data.sources.format_record`. Sharding keeps the records whose index is k modulo n
and skips the others before formatting them (``split_dataset_by_node`` is not used: it hands out
whole files when it can, which is not the modulo order).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

from lmlab.config import HFSource
from lmlab.data.sources import Document, format_record
from lmlab.errors import LmlabError


def import_datasets() -> ModuleType:
    """The datasets module, or an LmlabError saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise LmlabError("hf sources need the datasets package: pip install 'lmlab[data]'") from None
    return datasets


def iter_hf_documents(
    source: HFSource, label: str, index: int, shard: tuple[int, int] = (0, 1)
) -> Iterator[Document]:
    """The documents of one streamed dataset split; records outside ``shard`` are skipped."""
    k, n = shard
    records = iter(open_dataset(source, index))
    position = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as e:  # datasets and its readers raise many types
            raise LmlabError(
                f"data.sources[{index}]: dataset {source.dataset!r}: cannot read record {position} "
                f"({_first_line(e)})"
            ) from None
        position += 1
        if (position - 1) % n != k:
            continue
        where = f"dataset {source.dataset!r} split {source.split!r} record {position - 1}"
        yield Document(label, f"{source.split}:{position - 1}", format_record(record, source, where, index))


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

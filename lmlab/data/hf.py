"""Hugging Face dataset sources, streamed with ``datasets.load_dataset(..., streaming=True)``.

A streamed dataset is read file shard by file shard (``ds.shard(n_shards, i)``), and record j of
file shard i becomes the document named ``<split>:<i>:<j>``, its text made by
:func:`~lmlab.data.sources.format_record`. Names do not depend on how the stream is sharded,
so the train/val split is the same for any number of ranks and workers. ``shard=(k, n)`` takes
whole file shards k, k + n, ... when the dataset has at least n of them (each file is streamed
by one shard only), else every n-th record of the whole stream, skipped before formatting.

A dataset on the hub is not asked for when offline: with ``HF_HUB_OFFLINE`` /
``HF_DATASETS_OFFLINE`` set nothing is called, and otherwise one connection to the hub (or the
proxy) is tried first, so an unreachable hub is one line at once instead of the hub client's
retries and backoff (half a minute of tracebacks). The attempt runs in a thread the caller
waits on, so Ctrl-C stops it at once.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from lmlab.config import HFSource
from lmlab.data.documents import Document, Shard, format_record
from lmlab.errors import LmlabError

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
BUILDERS = frozenset({"arrow", "audiofolder", "csv", "hdf5", "imagefolder", "json", "lance", "niftifolder",
                      "pandas", "parquet", "pdffolder", "text", "videofolder", "webdataset", "xml"})
"""datasets' packaged builders: they read ``data_files``, not the hub (when the package's own
table cannot be read)."""
CONNECT_TIMEOUT_S = 10.0


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
    """``load_dataset(..., streaming=True)`` for the source, its failures as one-line LmlabErrors
    (a hub dataset while offline: at once, see the module doc)."""
    datasets = import_datasets()
    if not _is_local(source, datasets):
        why = hub_unreachable()
        if why is not None:
            raise LmlabError(f"{_cannot_load(source, index)}: {why}")
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
        raise LmlabError(f"{_cannot_load(source, index)}: {_first_line(e)}") from None


def _cannot_load(source: HFSource, index: int) -> str:
    config = f" config {source.name!r}" if source.name else ""
    return f"data.sources[{index}]: cannot load dataset {source.dataset!r}{config} split {source.split!r}"


def _is_local(source: HFSource, datasets: ModuleType) -> bool:
    """A packaged builder (``json``, ``text``, ...) or a folder on disk: no hub involved."""
    builders = getattr(getattr(datasets, "packaged_modules", None), "_PACKAGED_DATASETS_MODULES", None)
    return source.dataset in (builders or BUILDERS) or Path(source.dataset).exists()


def hub_unreachable() -> str | None:
    """Why the hub cannot be asked now (offline by the environment, or a first connection that
    failed: never retried), else None."""
    for var in OFFLINE_VARS:
        value = os.environ.get(var, "").strip()
        if value.lower() in ("1", "true", "yes", "on"):
            return (f"it is on the Hugging Face hub and {var}={value} is set; unset it to download, or point "
                    "an hf source at a local copy (dataset: json, text or parquet with data_files)")
    host, port = _hub_address()
    error = _connect(host, port)
    if error is None:
        return None
    return (f"cannot reach the Hugging Face hub at {host}:{port} ({error}); check the network, or set "
            "HF_HUB_OFFLINE=1 to skip hub sources at once")


def _hub_address() -> tuple[str, int]:
    """Where the first connection goes: the HTTPS proxy when one applies, else the endpoint."""
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    proxy = urllib.request.getproxies().get(endpoint.scheme or "https")
    if proxy and not urllib.request.proxy_bypass(host):
        parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or host, parsed.port or 8080
    return host, endpoint.port or (80 if endpoint.scheme == "http" else 443)


def _connect(host: str, port: int) -> str | None:
    """One TCP connection (name lookup included), in a daemon thread: the caller waits on it, so a
    Ctrl-C arrives at once even while the lookup blocks. Returns the error's words, or None."""
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
            result.append(None)
        except OSError as e:
            result.append(_first_line(e))

    worker = threading.Thread(target=attempt, name="lmlab-hub-probe", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    return result[0] if result else "the connection attempt failed"


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__

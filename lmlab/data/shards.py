"""The on-disk token cache, built in parallel: one shard per (rank, DataLoader worker).

Layout::

    CACHE/shards.json               written last: fingerprint, shard count (the cache is complete)
    CACHE/shard-KKK-of-NNN/         a cache of build_token_arrays: train_i.bin, val_i.bin, index.json

Shard ``k`` of ``n`` reads documents ``k, k + n, k + 2n, ...`` of every source (``open_sources``
with ``shard=(k, n)``), so across all ranks and workers every document is read exactly once.
Budgets (``max_train_tokens`` ...) are split evenly over the shards. Opening merges the shards
by source label: each source becomes a list of segments, one per shard that has it.

The shard count is how the cache was built (``shards.json`` records it), not how it is read:
every rank opens every shard, so a cache built by one process (``lmlab prepare``) serves a
torchrun job of any size, and a resume at another world size keeps its data. Only budgets
make the count show in the data: each shard stops at its share, so ``max_train_tokens`` takes
the same number of tokens from a different mix of documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lmlab.data.cache import cache_status, open_token_cache
from lmlab.errors import LmlabError
from lmlab.fsio import atomic_write_text

SHARDS_FILE = "shards.json"


@dataclass
class ShardedTokens:
    """Per-source token segments (one per shard) for training; val concatenated per source."""

    names: list[str]
    train: list[list[np.ndarray]]
    val: list[np.ndarray]
    stats: dict[str, Any]


def shard_dir(cache_dir: Path, k: int, n: int) -> Path:
    return cache_dir / f"shard-{k:03d}-of-{n:03d}"


def split_budget(value: int | None, n: int, k: int) -> int | None:
    """Shard k's share of a global budget: the shares add up to it exactly (at least 1 each)."""
    if value is None:
        return None
    return max(1, value // n + (k < value % n))


class _ShardBuilds(IterableDataset):
    """Worker ``w`` of rank ``r`` builds shard ``r * workers + w`` and yields its number."""

    def __init__(self, build: Callable[[int, int], None], rank: int, world: int, workers: int):
        self.build, self.rank, self.world, self.workers = build, rank, world, max(1, workers)

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        k = self.rank * self.workers + (info.id if info is not None else 0)
        n = self.world * self.workers
        self.build(k, n)
        yield k


def build_shards(build: Callable[[int, int], None], rank: int, world: int, workers: int) -> list[int]:
    """Run this rank's shard builds: ``build(k, n)`` in ``workers`` spawned DataLoader worker
    processes (in this process when ``workers`` is 0; ``build`` must then pickle). Returns the
    shard numbers built here."""
    ds = _ShardBuilds(build, rank, world, workers)
    if workers == 0:
        return list(ds)
    # Spawned, not forked: the parent may hold a process group's and tokenizers' threads.
    loader = DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context="spawn")
    return [int(k) for k in loader]


def write_shards_file(cache_dir: Path, fingerprint: dict[str, Any], n: int) -> None:
    """Mark the cache complete (after every shard is built)."""
    atomic_write_text(cache_dir / SHARDS_FILE, json.dumps({"fingerprint": fingerprint, "shards": n}, indent=2))


def _shards_meta(cache_dir: Path) -> dict[str, Any] | str:
    """``shards.json`` of a complete cache (its ``shards`` a positive count), else why there is none."""
    path = cache_dir / SHARDS_FILE
    if not path.is_file():
        return f"no {SHARDS_FILE} (an incomplete or older cache)"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        n = meta.get("shards")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        return f"{path} is corrupt ({type(e).__name__}: {e})"
    if type(n) is not int or n < 1:
        return f"{path} is corrupt (shards: {n!r}, expected a positive count)"
    return meta


def sharded_cache_status(cache_dir: Path, fingerprint: dict[str, Any], n: int | None = None) -> str | None:
    """None if ``cache_dir`` holds a complete cache for ``fingerprint`` whose every shard opens
    (of ``n`` shards when given; of any count otherwise), else why not."""
    meta = _shards_meta(cache_dir)
    if isinstance(meta, str):
        return meta
    if n is not None and meta["shards"] != n:
        return f"it has {meta['shards']} shards, {n} were asked for"
    if json.loads(json.dumps(fingerprint)) != meta.get("fingerprint"):
        old = meta["fingerprint"] if isinstance(meta.get("fingerprint"), dict) else {}
        new = json.loads(json.dumps(fingerprint))
        key = next((k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)), "?")
        return f"it was built with another {key}"
    for k in range(meta["shards"]):  # each shard's index and file sizes: a torn shard shows before training
        reason = cache_status(shard_dir(cache_dir, k, meta["shards"]), fingerprint)
        if reason is not None:
            return reason
    return None


def open_sharded_cache(cache_dir: Path, fingerprint: dict[str, Any], n: int | None = None) -> ShardedTokens:
    """Open every shard (``n``, or as many as ``shards.json`` records) and merge them by source label."""
    reason = sharded_cache_status(cache_dir, fingerprint, n)
    if reason is not None:
        raise LmlabError(f"token cache {cache_dir}: {reason}")
    n = json.loads((cache_dir / SHARDS_FILE).read_text(encoding="utf-8"))["shards"]
    names: list[str] = []
    train: dict[str, list[np.ndarray]] = {}
    val: dict[str, list[np.ndarray]] = {}
    stats = []
    for k in range(n):
        arrays = open_token_cache(shard_dir(cache_dir, k, n), fingerprint)
        stats.append(arrays.stats)
        for name, tr, va in zip(arrays.names, arrays.train, arrays.val):
            if name not in train:
                names.append(name)
                train[name], val[name] = [], []
            train[name].append(tr)
            val[name].append(va)
    if not names:
        raise LmlabError(f"token cache {cache_dir} holds no sources")
    if not any(len(x) for parts in train.values() for x in parts):
        raise LmlabError(f"token cache {cache_dir}: no training text in any shard; add text to data.sources")
    return ShardedTokens(names, [train[x] for x in names], [np.concatenate(val[x]) for x in names],
                         {"shards": stats})

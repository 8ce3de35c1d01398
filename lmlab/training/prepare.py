"""``lmlab prepare``: a run's tokenizer and token cache, built (or found reusable) without training.

``prepare(cfg)`` runs what ``lmlab train`` runs first (``training/data.py``: the failure policy,
the tokenizer, the sharded token cache) in one process, ``data.num_workers`` spawned workers
building the cache's shards. The training run that follows, on one process or a torchrun job of
any size, reuses both: the tokenizer by its fit record (``RUN/tokenizer_fit.json``), the cache
by its fingerprint (a cache of any shard count serves any world size). A run dir that already
holds snapshots keeps its tokenizer, as the resume will.

Progress goes where the trainer's goes: a tqdm bar on stderr when it is a terminal, else a plain
line on stdout when a phase starts, at most every 30 s and at its end; none with
``train.progress: false``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmlab import rundir
from lmlab.config import RunConfig
from lmlab.data.cache import token_dtype
from lmlab.data.shards import ShardedTokens
from lmlab.errors import LmlabError
from lmlab.fsio import check_path, user_io
from lmlab.training.data import (
    check_vocab,
    prepare_tokenizer,
    prepare_tokens,
    readable_sources,
    token_cache_dir,
)
from lmlab.training.distributed import DistInfo
from lmlab.training.resume import init_tokenizer

COLUMNS = ("train_tokens", "val_tokens", "train_docs", "val_docs")


@dataclass
class PrepareReport:
    """What ``prepare`` did: the tokenizer and cache it built or reused, and the tokens per source."""

    run_dir: Path
    tokenizer: str
    """``fitted``, ``reused`` (fitted before for these settings), ``loaded`` (``tokenizer.model_path``)
    or ``kept`` (the run dir has snapshots: its resume keeps its tokenizer)."""
    backend: str
    vocab_size: int
    cache_dir: Path
    built: bool
    shards: int
    sources: list[dict[str, Any]] = field(default_factory=list)
    """Per source: ``name`` and ``COLUMNS`` (token and document counts per split)."""

    def text(self) -> str:
        """The report as printed by ``lmlab prepare``."""
        tok_dir = rundir.tokenizer_dir(self.run_dir)
        lines = [f"tokenizer: {self.tokenizer} ({self.backend}, {self.vocab_size:,} ids) in {tok_dir}",
                 f"token cache: {'built' if self.built else 'reused'} ({self.shards} shard"
                 f"{'s' if self.shards != 1 else ''}) in {self.cache_dir}",
                 "  " + "  ".join(f"{c.replace('_', ' '):>12}" for c in COLUMNS) + "  source"]
        total = {c: sum(s[c] for s in self.sources) for c in COLUMNS}
        for row in [*self.sources, {"name": "all sources", **total}] if len(self.sources) > 1 else self.sources:
            lines.append("  " + "  ".join(f"{row[c]:>12,}" for c in COLUMNS) + f"  {row['name']}")
        lines.append(f"lmlab train on this config (train.out_dir {self.run_dir}) reuses both, "
                     "in one process or under torchrun")
        return "\n".join(lines)


def prepare(cfg: RunConfig) -> PrepareReport:
    """Build (or reuse) ``cfg``'s tokenizer and token cache as ``lmlab train`` would, without
    training; one process (refused under torchrun), holding the run dir's lock."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise LmlabError("lmlab prepare runs in one process, not under torchrun: run it once (data.num_workers "
                         "sets how many processes build the cache), then torchrun lmlab train")
    d, run_dir = cfg.data, Path(cfg.train.out_dir)
    if not d.token_cache:
        raise LmlabError("data.token_cache is false, so there is no cache to prepare (lmlab train would tokenize "
                         "in memory every run); set data.token_cache: true in the config, or --set "
                         "data.token_cache=true here and in lmlab train")
    resuming = rundir.has_checkpoint(run_dir)
    # train.init_from: the weights' own tokenizer, placed in the run dir as lmlab train places it
    init_tok = init_tokenizer(cfg) if cfg.train.init_from is not None and not resuming else None
    if cfg.tokenizer.model_path is not None and not resuming:
        check_path(cfg.tokenizer.model_path, "tokenizer.model_path", "need_dir", "give a tokenizer folder (RUN/tokenizer)")
    if d.token_cache_dir is not None:
        check_path(d.token_cache_dir, "data.token_cache_dir", "out_dir", "give a folder")
    info = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    on = cfg.train.progress
    with rundir.locked(run_dir), user_io("preparing the data"):
        if init_tok is not None:
            init_tok.save(rundir.tokenizer_dir(run_dir))
            resuming = True  # kept, never fitted
        indices = readable_sources(cfg)
        fit = _Progress("tokenizer fit", "char", cfg.tokenizer.fit_max_chars, on)
        try:
            tokenizer, how = prepare_tokenizer(cfg, info, run_dir, resuming, indices, watch=fit.count_texts)
        except BaseException:
            fit.close(done=False)
            raise
        fit.close()
        check_vocab(cfg, tokenizer)
        cache_dir = token_cache_dir(cfg, run_dir)
        budget = (d.max_train_tokens + d.max_val_tokens
                  if d.max_train_tokens is not None and d.max_val_tokens is not None else None)
        with _CacheWatch(cache_dir, token_dtype(tokenizer.vocab_size).itemsize,
                         _Progress("token cache", "token", budget, on)):
            arrays = prepare_tokens(cfg, tokenizer, info, run_dir, indices)
    assert isinstance(arrays, ShardedTokens)  # token_cache is on: the sharded cache, never in-memory arrays
    return PrepareReport(run_dir, how, tokenizer.backend, tokenizer.vocab_size, cache_dir, arrays.stats["built"],
                         len(arrays.stats["shards"]), _per_source(arrays))


def _per_source(arrays: ShardedTokens) -> list[dict[str, Any]]:
    """Token and document counts per source and split, summed over the shards."""
    rows = {name: {"name": name, **dict.fromkeys(COLUMNS, 0)} for name in arrays.names}
    for shard in arrays.stats["shards"]:
        for s in shard["sources"]:
            for c in COLUMNS:
                rows[s["name"]][c] += int(s[c])
    return list(rows.values())


class _Progress:
    """One phase's progress: a tqdm bar on stderr when it is a terminal, else a plain line on
    stdout at the first count, at most every ``EVERY_S`` seconds after and at the end; nothing
    when off or when nothing was counted (a phase that reused its result)."""

    EVERY_S = 30.0

    def __init__(self, what: str, unit: str, total: int | None, enabled: bool):
        self.what, self.unit, self.total, self.enabled = what, unit, total, enabled
        self.n, self.begun, self.shown = 0, time.monotonic(), None
        self.bar: tqdm | None = None

    def set(self, n: int) -> None:
        """The count so far (never lower than before)."""
        n = min(n, self.total) if self.total is not None else n
        if not self.enabled or n <= self.n:
            return
        if sys.stderr.isatty():
            if self.bar is None:  # made at the first count: a phase that does nothing shows nothing
                self.bar = tqdm(total=self.total, desc=self.what, unit=self.unit, unit_scale=True,
                                dynamic_ncols=True, mininterval=0.5)
            self.bar.update(n - self.n)
            self.n = n
            return
        self.n = n
        now = time.monotonic()
        if self.shown is None or now - self.shown >= self.EVERY_S:
            self.shown = now
            self._line("")

    def count_texts(self, texts: Iterator[str]) -> Iterator[str]:
        """``texts`` unchanged, counting their characters."""
        for text in texts:
            self.set(self.n + len(text))
            yield text

    def close(self, done: bool = True) -> None:
        """End the bar; the last plain line, unless the phase failed (its error says the rest)."""
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.n and done:
            self._line(" (done)")

    def _line(self, end: str) -> None:
        elapsed = time.monotonic() - self.begun
        of = f" of {self.total:,}" if self.total is not None else ""
        print(f"{self.what}: {self.n:,}{of} {self.unit}s in {elapsed:.1f} s{end}", flush=True)


class _CacheWatch:
    """Counts the tokens written under ``cache_dir`` from its files' sizes, every half second in a
    thread: the shards may be built by spawned worker processes, and the files are what they
    share. Files there before it started (an old cache about to be replaced) are not counted."""

    def __init__(self, cache_dir: Path, itemsize: int, progress: _Progress):
        self.dir, self.itemsize, self.progress = cache_dir, itemsize, progress
        self.stop = threading.Event()
        self.old = set(self._files())
        self.thread = threading.Thread(target=self._run, name="lmlab-prepare-progress", daemon=True)

    def _files(self) -> Iterator[tuple[str, int, int, int]]:
        """(path, inode, mtime, size) of every .bin file of the shards and their temp dirs."""
        for f in self.dir.glob("*/*.bin"):
            with suppress(OSError):  # renamed into place or removed between the listing and the stat
                st = f.stat()
                yield str(f), st.st_ino, st.st_mtime_ns, st.st_size

    def _count(self) -> int:
        return sum(f[3] for f in self._files() if f not in self.old) // self.itemsize

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.progress.set(self._count())

    def __enter__(self) -> _CacheWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            self.progress.set(self._count())
        self.progress.close(done=exc[0] is None)

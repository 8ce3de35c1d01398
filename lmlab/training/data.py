"""Everything the trainer needs from the data side: a tokenizer, per-source token arrays, the
mixture sampler that draws training windows from them and the validation windows
(``prepare_data``).

Sources are opened with the failure policy of ``open_sources`` (a source that cannot be read is
skipped with a warning; none readable is an error). The tokenizer is fitted on training
documents only; the token arrays are built streaming, in memory or into the on-disk token cache
(``data.token_cache``), which later runs reuse when the tokenizer and sources are unchanged.

A fresh run reuses the tokenizer already in its run dir when ``RUN/tokenizer_fit.json`` says it
was fitted for the same settings and its files are unchanged (``lmlab prepare`` leaves one, so
the training run that follows neither fits again nor rebuilds the cache); any other tokenizer
there is fitted over, as before.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmlab import rundir
from lmlab.config import RunConfig
from lmlab.configure import validate_config
from lmlab.data.batches import eval_windows
from lmlab.data.cache import TokenArrays, build_token_arrays, interleave
from lmlab.data.mixing import Adaptive, MixtureSampler
from lmlab.data.shards import (
    SHARDS_FILE,
    ShardedTokens,
    build_shards,
    open_sharded_cache,
    shard_dir,
    sharded_cache_status,
    split_budget,
    write_shards_file,
)
from lmlab.data.sources import doc_hash_fraction, open_sources, source_streams
from lmlab.errors import LmlabError
from lmlab.fsio import atomic_write_text
from lmlab.tokenizers import Tokenizer, build_tokenizer, load_tokenizer, resolve_backend
from lmlab.training.distributed import DistInfo, barrier
from lmlab.training.plan import PreparedData

FINGERPRINT_KEYS = ("sources", "min_text_length", "val_fraction", "max_train_tokens", "max_val_tokens",
                    "max_train_examples")


def readable_sources(cfg: RunConfig) -> list[int]:
    """Indices of the sources that open (the failure policy: the others are skipped with a
    warning, none readable is an error). Decided once, unsharded, for the whole run."""
    strict = resolve_backend(cfg.tokenizer.type) != "byte"
    return [o.index for o in open_sources(cfg.data, strict_utf8=strict)]


def fit_texts(cfg: RunConfig, indices: list[int], strict_utf8: bool) -> Iterator[str]:
    """Training documents of every readable source, interleaved, for fitting the tokenizer."""
    docs = (doc for _, doc in interleave(source_streams(cfg.data, indices, strict_utf8)))
    return (d.text for d in docs if doc_hash_fraction(d) >= cfg.data.val_fraction)


def fit_record(cfg: RunConfig, indices: list[int]) -> dict[str, Any]:
    """What fitting the tokenizer depends on: its settings and backend, the data settings that
    choose the fitting text, and which sources opened."""
    data = cfg.data.model_dump(mode="json", include={"sources", "min_text_length", "val_fraction"})
    return json.loads(json.dumps({"backend": resolve_backend(cfg.tokenizer.type),
                                  "tokenizer": cfg.tokenizer.model_dump(mode="json"), "data": data,
                                  "readable": list(indices)}))


def tokenizer_hash(directory: Path) -> str:
    """sha256 over a tokenizer dir's file names and contents."""
    h = hashlib.sha256()
    for path in sorted(directory.iterdir()):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _fitted_before(cfg: RunConfig, run_dir: Path, record: dict[str, Any]) -> Tokenizer | None:
    """The run dir's tokenizer when its fit record matches ``record`` and its files are unchanged
    since; None otherwise (fit it again). A ``tokenizer.model_path`` is always read afresh."""
    path, tok_dir = rundir.tokenizer_fit_path(run_dir), rundir.tokenizer_dir(run_dir)
    if cfg.tokenizer.model_path is not None or not path.is_file() or not tok_dir.is_dir():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # an unreadable record is no record
    if not isinstance(saved, dict) or saved.get("fit") != record or saved.get("files") != tokenizer_hash(tok_dir):
        return None
    return load_tokenizer(tok_dir)


def prepare_tokenizer(cfg: RunConfig, info: DistInfo, run_dir: Path, resuming: bool, indices: list[int],
                      watch: Callable[[Iterator[str]], Iterator[str]] | None = None) -> tuple[Tokenizer, str]:
    """Rank 0 fits the run's tokenizer, or keeps the run dir's (resuming, or fitted before for these
    settings); the other ranks read it after a barrier. Returns it and how rank 0 came by it:
    ``fitted``, ``loaded`` (``tokenizer.model_path``), ``reused`` (fitted before) or ``kept``
    (resuming); ``read`` on the other ranks. ``watch`` wraps the fitting text (a progress bar)."""
    how = "kept" if resuming else "read"
    tok_dir, fit_path = rundir.tokenizer_dir(run_dir), rundir.tokenizer_fit_path(run_dir)
    if not resuming and info.is_main:
        record = fit_record(cfg, indices)
        tokenizer, how = _fitted_before(cfg, run_dir, record), "reused"
        if tokenizer is None:
            texts = fit_texts(cfg, indices, strict_utf8=record["backend"] != "byte")
            tokenizer = build_tokenizer(cfg.tokenizer, texts if watch is None else watch(texts))
            run_dir.mkdir(parents=True, exist_ok=True)
            fit_path.unlink(missing_ok=True)  # a tokenizer being rewritten is not the recorded one
            tokenizer.save(tok_dir)
            if cfg.tokenizer.model_path is None:
                atomic_write_text(fit_path, json.dumps({"fit": record, "files": tokenizer_hash(tok_dir)}, indent=2))
            how = "fitted" if cfg.tokenizer.model_path is None else "loaded"
    barrier(info)
    if resuming or not info.is_main:
        tokenizer = load_tokenizer(tok_dir)
    return tokenizer, how


def check_vocab(cfg: RunConfig, tokenizer: Tokenizer) -> None:
    """Refuse a ``model.vocab_size`` the tokenizer does not have."""
    if cfg.model.vocab_size not in (None, tokenizer.vocab_size):
        raise LmlabError(
            f"model.vocab_size = {cfg.model.vocab_size} but the tokenizer has {tokenizer.vocab_size} ids; "
            "leave model.vocab_size unset to take the tokenizer's"
        )


def fingerprint(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """What a token cache depends on: the tokenizer's files and the data settings."""
    data = cfg.data.model_dump(mode="json", include=set(FINGERPRINT_KEYS))
    if cfg.data.max_val_examples is not None:  # only when set: caches built before it stay reusable
        data["max_val_examples"] = cfg.data.max_val_examples
    return {"tokenizer": tokenizer_hash(rundir.tokenizer_dir(run_dir)), "data": data}


def token_cache_dir(cfg: RunConfig, run_dir: Path) -> Path:
    """Where the run's token cache lives: ``data.token_cache_dir``, else ``RUN/token_cache``."""
    return Path(cfg.data.token_cache_dir) if cfg.data.token_cache_dir else run_dir / "token_cache"


def prepare_tokens(cfg: RunConfig, tokenizer: Tokenizer, info: DistInfo, run_dir: Path,
                   indices: list[int]) -> TokenArrays | ShardedTokens:
    """Per-source train/val token arrays of the readable sources ``indices``: in memory, or from
    the on-disk token cache.

    The cache is built in ``world x max(1, data.num_workers)`` shards, one per (rank, worker),
    each reading a disjoint share of every source; a complete cache with the same fingerprint
    is reused whatever its shard count (every rank reads every shard), so one built by another
    world size (``lmlab prepare``: one process) serves this one. A different one is refused
    unless ``reuse_token_cache`` is off; an incomplete one, left by a crash, is rebuilt. The
    arrays' ``stats`` say where the cache is and whether this call built it (``cache_dir``, ``built``).
    """
    d = cfg.data
    strict = tokenizer.backend != "byte"
    fp = fingerprint(cfg, run_dir)
    if not d.token_cache:  # every rank builds the same arrays: no files, no coordination
        return build_token_arrays(
            source_streams(d, indices, strict), tokenizer, val_fraction=d.val_fraction,
            max_train_tokens=d.max_train_tokens, max_val_tokens=d.max_val_tokens,
            max_train_examples=d.max_train_examples, max_val_examples=d.max_val_examples, fingerprint=fp)

    cache_dir = token_cache_dir(cfg, run_dir)
    n = info.world * max(1, d.num_workers)  # the shards this job builds, if it must build

    job = ShardJob(cfg.to_dict(), indices, str(rundir.tokenizer_dir(run_dir)), str(cache_dir), fp)
    complete = (cache_dir / SHARDS_FILE).is_file()
    reason = sharded_cache_status(cache_dir, fp) if complete else "absent or incomplete"
    if reason is not None and complete and d.reuse_token_cache:
        raise LmlabError(
            f"token cache {cache_dir} cannot be reused: {reason}; delete it, point data.token_cache_dir "
            "elsewhere, or set data.reuse_token_cache: false to rebuild it"
        )
    barrier(info)  # every rank has looked at the cache before any rank changes it
    if reason is not None:
        if info.is_main:
            (cache_dir / SHARDS_FILE).unlink(missing_ok=True)  # incomplete until rewritten
            for old in cache_dir.glob("shard-*"):
                shutil.rmtree(old)
            cache_dir.mkdir(parents=True, exist_ok=True)
        barrier(info)
        build_shards(job, info.rank, info.world, d.num_workers)
        barrier(info)
        if info.is_main:
            write_shards_file(cache_dir, fp, n)
    barrier(info)
    arrays = open_sharded_cache(cache_dir, fp)
    arrays.stats.update(cache_dir=str(cache_dir), built=reason is not None)
    return arrays


@dataclass(frozen=True)
class ShardJob:
    """Build shard k of n of the token cache. Plain data, so DataLoader workers can be spawned
    rather than forked from a process that already runs threads and a process group."""

    config: dict[str, Any]
    indices: list[int]
    tokenizer_dir: str
    cache_dir: str
    fingerprint: dict[str, Any]

    def __call__(self, k: int, n: int) -> None:
        d = validate_config(self.config).data
        tokenizer = load_tokenizer(self.tokenizer_dir)
        build_token_arrays(
            source_streams(d, self.indices, tokenizer.backend != "byte", (k, n)), tokenizer,
            val_fraction=d.val_fraction, max_train_tokens=split_budget(d.max_train_tokens, n, k),
            max_val_tokens=split_budget(d.max_val_tokens, n, k),
            max_train_examples=split_budget(d.max_train_examples, n, k),
            max_val_examples=split_budget(d.max_val_examples, n, k),
            out_dir=shard_dir(Path(self.cache_dir), k, n), fingerprint=self.fingerprint, balance_split=n == 1)


@dataclass
class RunData:
    """What a run trains and validates on: ``val_sets`` are (source name, windows) pairs."""

    tokenizer: Tokenizer
    arrays: TokenArrays | ShardedTokens
    sampler: MixtureSampler
    val_sets: list[tuple[str, list[np.ndarray]]]


def prepare_data(cfg: RunConfig, info: DistInfo, run_dir: Path, prepared: PreparedData | None,
                 resuming: bool) -> RunData:
    """The run's tokenizer and token arrays (from ``cfg``'s sources, or ``prepared`` ones), the
    mixture sampler over the training arrays and the validation windows of every source; sets
    ``cfg.model.vocab_size`` from the tokenizer."""
    t, d = cfg.train, cfg.data
    if prepared is None:
        indices = readable_sources(cfg)  # the failure policy, decided once for the run
        tokenizer, how = prepare_tokenizer(cfg, info, run_dir, resuming, indices)
        if how == "reused" and info.is_main:
            print(f"lmlab: reusing the tokenizer in {rundir.tokenizer_dir(run_dir)}, fitted before for these "
                  "settings (lmlab prepare; RUN/tokenizer_fit.json)", flush=True)
    else:
        indices, tokenizer = list(range(len(prepared.arrays.names))), prepared.tokenizer
        if info.is_main and not rundir.tokenizer_dir(run_dir).is_dir():
            tokenizer.save(rundir.tokenizer_dir(run_dir))
    check_vocab(cfg, tokenizer)
    cfg.model.vocab_size = tokenizer.vocab_size
    arrays = prepare_tokens(cfg, tokenizer, info, run_dir, indices) if prepared is None else prepared.arrays
    block = t.seq_len or cfg.model.block_size
    adaptive = (Adaptive(d.adaptive_interval_tokens, d.adaptive_smoothing, d.adaptive_min_weight,
                         d.adaptive_max_weight) if d.adaptive else None)
    sampler = MixtureSampler(arrays.train, arrays.names, block, t.batch_target, t.grad_accum_steps,
                             info.world, info.rank, t.seed, d.mix_strategy,
                             [d.source_weights[i] for i in indices] if d.source_weights else None, adaptive)
    per_source = max(1, t.eval_batches * t.batch_target // len(arrays.names))
    val_sets = [(name, eval_windows(v, block, per_source)) for name, v in zip(arrays.names, arrays.val)
                if len(v) >= 2]
    if not val_sets:
        raise LmlabError("the validation split is empty; raise data.val_fraction or add documents")
    return RunData(tokenizer, arrays, sampler, val_sets)

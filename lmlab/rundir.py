"""Read and write a run dir: config, tokenizer, rolling checkpoint snapshots.

Layout::

    RUN/config.yaml                 resolved config of the run
    RUN/tokenizer/                  the tokenizer, in its backend's native format
    RUN/checkpoints/current|prev|prev2/
        model.safetensors           weights
        meta.json                   format version, family, config, tokenizer, step, tokens, sha256s
        trainer.pt                  optimizer, schedule, scaler, RNG, data position (tensors only)
        dcp/                        (parallel: fsdp) model and optimizer shards, torch.distributed.checkpoint

The snapshot names come from a :class:`Layout`: ``CORE`` (``current|prev|prev2``, the trainer
and everything else) or ``CONTINUOUS`` (``lm_current|lm_prev|lm_prev2``, the continuous trainer),
which also keeps ``checkpoints/simple_lm_trained``, a legacy mirror: a whole copy (hard links)
of the newest snapshot, refreshed after every save. A run dir holds one layout.

A snapshot is written to ``checkpoints/.tmp-*``, fsynced, then rotated in by renames
(prev -> prev2, current -> prev, tmp -> current), so a crash at any moment leaves the earlier
snapshots whole. The mirror is built beside and swapped in by renames after the rotation; it is a
convenience copy for outside readers and never read here. Loading checks the sha256 of every
file and falls back current -> prev -> prev2 (of either layout).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from lmlab.errors import LmlabError
from lmlab.fsio import fsync_dir, fsync_file

FORMAT_VERSION = 1
WEIGHTS, META, TRAINER = "model.safetensors", "meta.json", "trainer.pt"


@dataclass(frozen=True)
class Layout:
    """Names of the rolling snapshots under ``checkpoints/``, newest first, and the optional
    mirror dir that holds a copy of the newest one (for readers that expect a fixed path)."""

    names: tuple[str, str, str]
    mirror: str | None = None


CORE = Layout(("current", "prev", "prev2"))
CONTINUOUS = Layout(("lm_current", "lm_prev", "lm_prev2"), mirror="simple_lm_trained")
LAYOUTS = (CORE, CONTINUOUS)  # the search order when reading
SNAPSHOTS = CORE.names


@dataclass
class Snapshot:
    """A verified snapshot on disk."""

    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def load_weights(self, model: torch.nn.Module, tolerant: bool | None = None) -> None:
        """Load the weights into ``model``: every tensor must match by name and shape, unless
        ``tolerant`` (default: the model class's ``tolerant_load``); then added / missing tensors
        are a warning that lists them. A shape mismatch is always an error."""
        if tolerant is None:
            tolerant = model.tolerant_load
        try:
            missing, unexpected = load_model(model, self.path / WEIGHTS, strict=not tolerant,
                                             device=str(next(model.parameters()).device))
        except (RuntimeError, KeyError) as e:
            first = str(e).strip().splitlines()[0]
            raise LmlabError(f"{self.path / WEIGHTS}: weights do not fit the model: {first}") from None
        if missing or unexpected:
            warnings.warn(f"{self.path / WEIGHTS}: loaded with missing tensors {sorted(missing)} (kept at "
                          f"their initial values) and unexpected tensors {sorted(unexpected)} (ignored)",
                          stacklevel=2)

    def load_trainer_state(self) -> dict[str, Any]:
        """The trainer state (plain tensors and containers; never unpickles objects)."""
        return torch.load(self.path / TRAINER, map_location="cpu", weights_only=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot_meta(cfg, tokenizer, model: torch.nn.Module, step: int, tokens_seen: int,
                  **extra: Any) -> dict[str, Any]:
    """``meta.json`` of a snapshot (docs/model_versions.md): family, family model version,
    the whole config, the tokenizer's identity, progress and size, plus ``extra`` keys."""
    return {
        "family": cfg.model.family,
        "model_version": getattr(cfg.model, "version", None),  # families that version their math
        "config": cfg.to_dict(),
        "tokenizer": {"backend": tokenizer.backend, "vocab_size": tokenizer.vocab_size,
                      "special_ids": tokenizer.special_ids},
        "step": step,
        "tokens_seen": tokens_seen,
        "num_params": sum(p.numel() for p in model.parameters()),
        **extra,
    }


def stage_snapshot(run_dir: str | Path) -> Path:
    """A fresh ``checkpoints/.tmp-*`` folder for the next snapshot (stale ones, left by a crash
    mid-write, are removed first: they are never whole snapshots)."""
    ckpt = Path(run_dir) / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    # Safe to sweep: the writer holds the run dir's lock (``locked``), so no other process is
    # writing a snapshot here; what is left is a crashed writer's.
    for stale in ckpt.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=".tmp-", dir=ckpt))


def commit_snapshot(
    tmp: Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
    layout: Layout = CORE,
    extra_files: tuple[str, ...] = (),
) -> Path:
    """Finish the staged snapshot ``tmp`` (weights, trainer state, meta with the sha256 of every
    file, ``extra_files`` being ones already written there, e.g. a DCP folder's shards), make it
    the newest (``layout.names[0]``), rotate the older ones and refresh the mirror, if any."""
    ckpt = tmp.parent
    save_model(model, str(tmp / WEIGHTS))
    files = [WEIGHTS, *extra_files]
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
        files.append(TRAINER)
    for name in files:
        fsync_file(tmp / name)
    for sub in {Path(name).parent for name in files} - {Path(".")}:
        fsync_dir(tmp / sub)
    meta = {**meta, "format_version": FORMAT_VERSION, "sha256": {n: _sha256(tmp / n) for n in files}}
    (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    fsync_file(tmp / META)
    fsync_dir(tmp)
    # Rotate: every intermediate state leaves at least one whole snapshot behind.
    current, prev, prev2 = (ckpt / name for name in layout.names)
    if prev2.exists():
        shutil.rmtree(prev2)
    for older, newer in ((prev2, prev), (prev, current)):
        if newer.exists():
            os.replace(newer, older)
    os.replace(tmp, current)
    fsync_dir(ckpt)
    if layout.mirror is not None:
        _refresh_mirror(current, ckpt / layout.mirror)
    return current


def save_snapshot(
    run_dir: str | Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
    layout: Layout = CORE,
) -> Path:
    """Write a new newest snapshot atomically (stage, then commit). Returns its path."""
    return commit_snapshot(stage_snapshot(run_dir), model, meta, trainer_state, layout)


def _refresh_mirror(snapshot: Path, mirror: Path) -> None:
    """Make ``mirror`` a whole copy of ``snapshot``: built beside as ``.tmp-*``, then swapped in.
    A crash leaves the old mirror, the new one or none (the snapshots themselves are whole)."""
    new = Path(tempfile.mkdtemp(prefix=".tmp-", dir=mirror.parent))
    _link_tree(snapshot, new)
    old = new.with_name(new.name + "-old")  # a .tmp-* name: a crash leaves it to the next cleanup
    if mirror.exists():
        os.replace(mirror, old)
    os.replace(new, mirror)
    fsync_dir(mirror.parent)
    shutil.rmtree(old, ignore_errors=True)


def _link_tree(src_dir: Path, dst_dir: Path) -> None:
    """Fill ``dst_dir`` with hard links to ``src_dir``'s files (copies where links fail), recursively."""
    for src in sorted(src_dir.iterdir()):
        dst = dst_dir / src.name
        if src.is_dir():
            dst.mkdir()
            _link_tree(src, dst)
            continue
        try:
            # Sharing the inode is safe: snapshot files are only ever renamed or deleted, never
            # rewritten in place, so the mirror's copy cannot change under it.
            os.link(src, dst)
        except OSError:  # e.g. a filesystem without hard links
            shutil.copy2(src, dst)
            fsync_file(dst)
    fsync_dir(dst_dir)


def _verify(path: Path) -> dict[str, Any]:
    """Meta of a whole snapshot; raises ValueError saying what is wrong with a broken one."""
    if not (path / META).is_file():
        raise ValueError("no meta.json")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"meta.json is not valid JSON ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    for name, digest in meta.get("sha256", {}).items():
        if not (path / name).is_file():
            raise ValueError(f"{name} is missing")
        if _sha256(path / name) != digest:
            raise ValueError(f"{name} is truncated or corrupt (checksum mismatch)")
    return meta


def _snapshot_names() -> tuple[str, ...]:
    """Every snapshot name, newest first per layout; never the mirrors (copies, not sources)."""
    return tuple(name for layout in LAYOUTS for name in layout.names)


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run dir holds any snapshot (whole or not), of either layout."""
    ckpt = Path(run_dir) / "checkpoints"
    return any((ckpt / s).is_dir() for s in _snapshot_names())


def layout_of(run_dir: str | Path) -> Layout:
    """The layout whose snapshots the run dir holds (``CORE`` when it holds none)."""
    ckpt = Path(run_dir) / "checkpoints"
    for layout in LAYOUTS:
        if any((ckpt / s).is_dir() for s in layout.names):
            return layout
    return CORE


def latest_snapshot(run_dir: str | Path) -> Snapshot:
    """The newest whole snapshot of either layout, warning about each broken one skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmlabError(f"run dir not found: {run_dir}")
    problems = []
    for name in _snapshot_names():
        path = run_dir / "checkpoints" / name
        if not path.is_dir():
            continue
        try:
            meta = _verify(path)
        except ValueError as e:
            problems.append(f"{name}: {e}")
            warnings.warn(f"checkpoint {path} is unusable ({e}); falling back to an older snapshot", stacklevel=2)
            continue
        return Snapshot(path, meta)
    if problems:
        raise LmlabError(f"{run_dir}: no usable checkpoint ({'; '.join(problems)})")
    raise LmlabError(
        f"{run_dir}: no checkpoint found (expected {run_dir}/checkpoints/current); "
        "train first with: lmlab train --config CONFIG --set train.out_dir=" + str(run_dir)
    )


LOCK = ".lock"


@contextmanager
def locked(run_dir: str | Path) -> Iterator[None]:
    """Hold the run dir's training lock (``RUN/.lock``, ``fcntl.flock``; the OS drops it when the
    holder dies, even by SIGKILL). A second trainer on the same run dir is refused in one line
    naming the holder's PID, before it writes anything."""
    import fcntl

    run_dir = Path(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LmlabError(f"{run_dir} is being trained by another process (PID {holder}); wait for it to "
                             "finish or stop it, or pick another train.out_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
        created = False  # a run that ran keeps its lock file (unlinking it would race a new locker)
    finally:
        if created and [p.name for p in run_dir.iterdir()] == [LOCK]:  # refused before writing anything
            (run_dir / LOCK).unlink()
            run_dir.rmdir()
        os.close(fd)  # closing the descriptor releases the lock


def tokenizer_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tokenizer"


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "config.yaml"


def checkpoint_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The run config a snapshot was saved with, upgraded by its family's config class where
    the family defines ``upgrade_checkpoint_config`` (e.g. apelr: no version means v1)."""
    from lmlab.registry import get_family

    raw = json.loads(json.dumps(meta["config"]))  # a copy
    model = raw.get("model", {})
    cfg_cls, _ = get_family(model.get("family", "transformer"))
    raw["model"] = cfg_cls.upgrade_checkpoint_config(model)
    return raw


def load_run(run_dir: str | Path, device: str | torch.device = "cpu"):
    """Rebuild (model, tokenizer, run config, snapshot) from a run dir alone, model in eval mode."""
    from lmlab.config import validate_config
    from lmlab.registry import build_model
    from lmlab.tokenizers import load_tokenizer

    snap = latest_snapshot(run_dir)
    cfg = validate_config(checkpoint_config(snap.meta), source=str(snap.path / META))
    tokenizer = load_tokenizer(tokenizer_dir(run_dir))
    if tokenizer.vocab_size != cfg.model.vocab_size:
        raise LmlabError(
            f"{run_dir}: tokenizer has {tokenizer.vocab_size} ids but the checkpoint's model expects "
            f"{cfg.model.vocab_size}; the run dir mixes files of different runs"
        )
    model = build_model(cfg.model).to(device)
    snap.load_weights(model)
    model.eval()
    return model, tokenizer, cfg, snap

"""Read and write a run dir: config, tokenizer, rolling checkpoint snapshots.

Layout::

    RUN/config.yaml                 resolved config of the run
    RUN/tokenizer/                  the tokenizer, in its backend's native format
    RUN/tokenizer_fit.json          what it was fitted on (a fresh run with the same settings reuses it)
    RUN/checkpoints/current|prev|prev2/
        model.safetensors           weights
        meta.json                   format version, family, config, tokenizer, step, tokens, sha256s
        SHA256SUMS                  the sha256 of every file, meta.json included (``sha256sum -c``)
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
file (``SHA256SUMS`` covers ``meta.json`` itself) and falls back current -> prev -> prev2 (of
either layout). A snapshot found broken is remembered by this process and is the first to go at
the next rotation, so a fallback never costs a good snapshot.
"""

from __future__ import annotations

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
from lmlab.fsio import check_output, fsync_dir, fsync_file, user_error_line, user_io, user_os_error
from lmlab.integrity import (  # noqa: F401  (FORMAT_VERSION, SUMS: re-exported, part of the layout)
    FORMAT_VERSION,
    META,
    SUMS,
    TRAINER,
    WEIGHTS,
    known_broken,
    mark_broken,
    read_trainer_state,
    seal,
    verify,
    weights_mismatch,
)


@dataclass(frozen=True)
class Layout:
    """Names of the rolling snapshots under ``checkpoints/``, newest first, and the optional
    mirror dir that holds a copy of the newest one (for readers that expect a fixed path)."""

    names: tuple[str, str, str]
    mirror: str | None = None
    best: str = "best"
    """The weights of the lowest validation loss so far (``train.save_best``): never rotated,
    never resumed from; ``load_run(..., snapshot="best")`` reads it."""


CORE = Layout(("current", "prev", "prev2"))
CONTINUOUS = Layout(("lm_current", "lm_prev", "lm_prev2"), mirror="simple_lm_trained", best="lm_best")
LAYOUTS = (CORE, CONTINUOUS)  # the search order when reading
SNAPSHOTS = CORE.names


@dataclass
class Snapshot:
    """A verified snapshot on disk (``trainer_state``: preloaded when asked of ``latest_snapshot``)."""

    path: Path
    meta: dict[str, Any]
    trainer_state: dict[str, Any] | None = None

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def load_weights(self, model: torch.nn.Module, tolerant: bool | None = None) -> None:
        """Load the weights into ``model``: every tensor must match by name and shape, unless
        ``tolerant`` (default: the model class's ``tolerant_load``); then added / missing tensors
        are a warning that lists them. A shape mismatch is always an error naming the tensors."""
        if tolerant is None:
            tolerant = model.tolerant_load
        path = self.path / WEIGHTS
        differ = weights_mismatch(model, path)
        if differ and (not tolerant or differ.startswith("shape")):
            raise LmlabError(f"{path}: weights do not fit the model built from its config ({differ}); the "
                             "snapshot's config and weights come from different models")
        missing, unexpected = load_model(model, path, strict=not tolerant, device=str(next(model.parameters()).device))
        if missing or unexpected:
            warnings.warn(f"{path}: loaded with missing tensors {sorted(missing)} (kept at "
                          f"their initial values) and unexpected tensors {sorted(unexpected)} (ignored)",
                          stacklevel=2)

    def load_trainer_state(self) -> dict[str, Any]:
        """The trainer state (plain tensors and containers; never unpickles objects)."""
        if self.trainer_state is None:
            self.trainer_state = read_trainer_state(self.path)
        return self.trainer_state


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
    need = tensor_bytes(model.state_dict()) + tensor_bytes(trainer_state) + (64 << 10)
    kept = "; the snapshots saved before are kept"

    def full() -> LmlabError:
        return LmlabError(f"saving a snapshot: {ckpt}: the disk is full ({_mib(need)} needed, "
                          f"{_mib(shutil.disk_usage(ckpt).free)} free); free some space or pick another "
                          f"train.out_dir{kept}")

    try:
        if shutil.disk_usage(ckpt).free < need:
            raise full()
        _write_files(tmp, model, meta, trainer_state, extra_files)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written snapshot is never used: free its space
        if user_os_error(e):
            raise LmlabError(user_error_line(e, "saving a snapshot") + kept) from None
        if isinstance(e, Exception) and not isinstance(e, LmlabError) and shutil.disk_usage(ckpt).free < need:
            raise full() from None  # safetensors and torch.save word a full disk their own way (or not at all)
        raise
    _rotate(ckpt, tmp, layout)
    current = ckpt / layout.names[0]
    if layout.mirror is not None:
        _refresh_mirror(current, ckpt / layout.mirror)
    return current


def _write_files(tmp: Path, model: torch.nn.Module, meta: dict[str, Any], trainer_state: dict[str, Any] | None,
                 extra_files: tuple[str, ...]) -> None:
    """Weights, trainer state, meta.json and SHA256SUMS into ``tmp``, each flushed to disk."""
    save_model(model, str(tmp / WEIGHTS))
    files = [WEIGHTS, *extra_files]
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
        files.append(TRAINER)
    for name in files:
        fsync_file(tmp / name)
    for sub in {Path(name).parent for name in files} - {Path(".")}:
        fsync_dir(tmp / sub)
    seal(tmp, files, meta)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) state: what saving it writes, give or take headers."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def check_room(run_dir: str | Path, snapshot_bytes: int, count: int) -> None:
    """Refuse, in one line saying how much is needed, when the filesystem of ``run_dir`` has no
    room for ``count`` more snapshots of ``snapshot_bytes`` each."""
    folder = Path(run_dir)
    while not folder.exists():  # the run dir may not exist yet: its filesystem is its nearest parent's
        folder = folder.parent
    free, need = shutil.disk_usage(folder).free, count * snapshot_bytes
    if free < need:
        raise LmlabError(f"{run_dir}: not enough disk space for {count} more snapshot(s) of ~{_mib(snapshot_bytes)}: "
                         f"{_mib(need)} needed, {_mib(free)} free; free some space or pick another train.out_dir")


def _rotate(ckpt: Path, tmp: Path, layout: Layout) -> None:
    """Make ``tmp`` the newest snapshot and keep the two newest older ones that are not known to
    be broken (a snapshot this process found broken goes first, whatever its age). Every
    intermediate state leaves at least one whole snapshot behind."""
    existing = [ckpt / name for name in layout.names if (ckpt / name).is_dir()]
    for path in existing:
        if known_broken(path):
            shutil.rmtree(path)
    kept = [p for p in existing if p.is_dir()]
    for path in kept[2:]:
        shutil.rmtree(path)
    # Oldest first, each into the name one older than its new place in the list: a target is
    # free by then (deleted, or already moved on).
    for i in reversed(range(len(kept[:2]))):
        target = ckpt / layout.names[i + 1]
        if kept[i] != target:
            os.replace(kept[i], target)
    os.replace(tmp, ckpt / layout.names[0])
    fsync_dir(ckpt)


def save_snapshot(
    run_dir: str | Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
    layout: Layout = CORE,
) -> Path:
    """Write a new newest snapshot atomically (stage, then commit). Returns its path."""
    return commit_snapshot(stage_snapshot(run_dir), model, meta, trainer_state, layout)


def save_best(run_dir: str | Path, model: torch.nn.Module, meta: dict[str, Any], layout: Layout = CORE) -> Path:
    """Write ``checkpoints/best`` (weights and meta, checksummed like any snapshot): built as a
    ``.tmp-*`` folder, then swapped in, so a crash leaves the old best, the new one, or none."""
    tmp = stage_snapshot(run_dir)
    try:
        _write_files(tmp, model, meta, None, ())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    best = tmp.parent / layout.best
    _swap_in(tmp, best)
    return best


def best_snapshot(run_dir: str | Path) -> Snapshot:
    """The run's best-validation snapshot (either layout), verified."""
    run_dir = Path(run_dir)
    for layout in LAYOUTS:
        path = run_dir / "checkpoints" / layout.best
        if path.is_dir():
            try:
                return Snapshot(path, verify(path))
            except ValueError as e:
                raise LmlabError(f"{path} is unusable ({e}); load the latest snapshot instead") from None
    raise LmlabError(f"{run_dir}: no best snapshot (checkpoints/best is written when train.save_best is on and "
                     "a validation loss improves); load the latest one instead")


def _refresh_mirror(snapshot: Path, mirror: Path) -> None:
    """Make ``mirror`` a whole copy of ``snapshot``: built beside as ``.tmp-*``, then swapped in.
    A crash leaves the old mirror, the new one or none (the snapshots themselves are whole)."""
    new = Path(tempfile.mkdtemp(prefix=".tmp-", dir=mirror.parent))
    _link_tree(snapshot, new)
    _swap_in(new, mirror)


def _swap_in(new: Path, target: Path) -> None:
    """Replace the folder ``target`` with ``new`` by renames: a crash leaves the old one, the new
    one or none, and the old one moves aside under a ``.tmp-*`` name (swept by the next save)."""
    old = new.with_name(new.name + "-old")
    if target.exists():
        os.replace(target, old)
    os.replace(new, target)
    fsync_dir(target.parent)
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


def latest_snapshot(run_dir: str | Path, with_trainer_state: bool = False) -> Snapshot:
    """The newest whole snapshot of either layout, warning about each broken one skipped.
    ``with_trainer_state``: also read its ``trainer.pt`` (where it has one), a snapshot whose
    trainer state cannot be read being broken too (a resume falls back past it)."""
    run_dir = Path(run_dir)
    above = enclosing_run_dir(run_dir)
    if not run_dir.is_dir():
        if above is not None:
            raise LmlabError(f"{run_dir} is a file inside a run dir; give the run dir: {above}")
        raise LmlabError(f"run dir not found: {run_dir}")
    problems = []
    for name in _snapshot_names():
        path = run_dir / "checkpoints" / name
        if not path.is_dir():
            continue
        try:
            meta = verify(path)
            state = None
            if with_trainer_state and TRAINER in meta.get("sha256", {}):
                try:
                    state = read_trainer_state(path)
                except ValueError:
                    mark_broken(path)
                    raise
        except ValueError as e:
            problems.append((path, str(e)))
            continue
        for broken, why in problems:  # warned only when a fallback is used; otherwise the error lists them
            warnings.warn(f"checkpoint {broken} is unusable ({why}); falling back to an older snapshot", stacklevel=2)
        return Snapshot(path, meta, state)
    if problems:
        listed = "; ".join(f"{p.name}: {why}" for p, why in problems)
        raise LmlabError(f"{run_dir}: no usable checkpoint ({listed}); nothing can be loaded from it")
    if above is not None:
        raise LmlabError(f"{run_dir} is inside a run dir; give the run dir: {above}")
    raise LmlabError(
        f"{run_dir}: no checkpoint found (expected {run_dir}/checkpoints/current); "
        "train first with: lmlab train --config CONFIG --set train.out_dir=" + str(run_dir)
    )


def resolve_run_path(path: str | Path, quiet: bool = False) -> tuple[Path, Path | None]:
    """(run dir, snapshot folder or None) for a path a reader was given: a run dir as it is; a
    snapshot folder (``RUN/checkpoints/prev``) or any path inside a run dir (seed 000's habit,
    ``runs/x/checkpoint.pt``) with a warning that says which run dir is read (unless ``quiet``:
    the path was resolved and warned about once already); any other path as it is."""
    path = Path(path)
    if path.is_dir() and has_checkpoint(path):
        return path, None
    if path.parent.name == "checkpoints" and (path / META).is_file():
        return path.parent.parent, path
    above = enclosing_run_dir(path)
    if above is None:
        return path, None
    if not quiet:
        warnings.warn(f"{path} is inside run dir {above}: reading that run dir's latest snapshot", stacklevel=3)
    return above, None


def named_snapshot(path: Path) -> Snapshot:
    """The snapshot folder ``path`` itself, verified (a broken one is an error: it was asked for)."""
    try:
        return Snapshot(path, verify(path))
    except ValueError as e:
        raise LmlabError(f"{path} is unusable ({e}); give the run dir to read its newest whole snapshot") from None


def enclosing_run_dir(path: str | Path, levels: int | None = 3) -> Path | None:
    """The nearest run dir (one with snapshots) that holds ``path``, up to ``levels`` above (three:
    a file of a snapshot; None: any); None when there is none."""
    for parent in list(Path(os.path.abspath(path)).parents)[:levels]:
        if has_checkpoint(parent):
            return parent
    return None


def check_out_dir(path: str | Path, what: str = "train.out_dir") -> Path:
    """A folder a run is made in (``fsio.check_output``), never inside another run dir: a run
    planted in RUN/checkpoints would be read in the place of RUN's snapshots."""
    path = check_output(path, what, "dir", f"pick another {what} (a folder, e.g. runs/NAME)")
    above = enclosing_run_dir(path, levels=None)
    if above is not None:
        raise LmlabError(f"{what} {path} is inside run dir {above}; a run dir holds one run: give a folder "
                         f"outside it, e.g. {above.parent / (above.name + '-2')}")
    return path


LOCK = ".lock"


@contextmanager
def locked(run_dir: str | Path) -> Iterator[None]:
    """Hold the run dir's training lock (``RUN/.lock``, ``fcntl.flock``; the OS drops it when the
    holder dies, even by SIGKILL). A second trainer on the same run dir is refused in one line
    naming the holder's PID, before it writes anything. The lock file stays (unlinking it would
    race a new locker), except in a run dir this call made and left before training."""
    # deferred: fcntl is POSIX-only; the rest of the run dir code reads on any system
    import fcntl

    run_dir = check_out_dir(run_dir)
    created = not run_dir.exists()
    with user_io("train.out_dir"):
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LmlabError(f"{run_dir} is being trained by another process (PID {holder}); wait for it to "
                             "finish or stop it, or pick another train.out_dir") from None
        before = os.pread(fd, 64, 0)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        except BaseException:
            os.ftruncate(fd, 0)  # a refused or failed run leaves the file as it found it
            os.pwrite(fd, before, 0)
            raise
    except BaseException:
        # A run dir this call made, left before it trained anything (a refusal, Ctrl-C while the
        # tokenizer fits): remove it whole, so the retry starts clean.
        if created and not has_checkpoint(run_dir) and not (run_dir / "metrics.jsonl").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def tokenizer_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tokenizer"


def tokenizer_fit_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "tokenizer_fit.json"


def config_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "config.yaml"


def weights_file(source: str | Path) -> Path:
    """The safetensors file ``source`` names: the file itself, or the weights of the newest whole
    snapshot of a run dir (what a family loads part of: the abstractinator's ``load_base_from``)."""
    p = Path(source)
    if p.is_dir():
        if not has_checkpoint(p):
            raise LmlabError(f"{p}: neither a weights file nor a run dir with a checkpoint")
        return latest_snapshot(p).path / WEIGHTS
    if not p.is_file():
        raise LmlabError(f"{source}: no such file; give a safetensors file or the run dir that holds one")
    return p

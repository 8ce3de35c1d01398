"""Read and write a run dir: config, tokenizer, rolling checkpoint snapshots.

Layout::

    RUN/config.yaml                 resolved config of the run
    RUN/tokenizer/                  the tokenizer, in its backend's native format
    RUN/checkpoints/current|prev|prev2/
        model.safetensors           weights
        meta.json                   format version, family, config, tokenizer, step, tokens, sha256s
        trainer.pt                  optimizer, schedule, scaler, RNG, data position (tensors only)

A snapshot is written to ``checkpoints/.tmp-*``, fsynced, then rotated in by renames
(prev -> prev2, current -> prev, tmp -> current), so a crash at any moment leaves the earlier
snapshots whole. Loading checks the sha256 of every file and falls back current -> prev -> prev2.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from lmlab.errors import LmlabError
from lmlab.fsio import fsync_dir, fsync_file

FORMAT_VERSION = 1
SNAPSHOTS = ("current", "prev", "prev2")
WEIGHTS, META, TRAINER = "model.safetensors", "meta.json", "trainer.pt"


@dataclass
class Snapshot:
    """A verified snapshot on disk."""

    path: Path
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    def load_weights(self, model: torch.nn.Module) -> None:
        """Load the weights into ``model``: every tensor must match by name and shape, unless the
        model class sets ``tolerant_load`` (then added / missing tensors are a warning that
        lists them; a shape mismatch is still an error)."""
        tolerant = bool(getattr(model, "tolerant_load", False))
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


def save_snapshot(
    run_dir: str | Path,
    model: torch.nn.Module,
    meta: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
) -> Path:
    """Write a new ``current`` snapshot atomically and rotate the older ones. Returns its path."""
    ckpt = Path(run_dir) / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for stale in ckpt.glob(".tmp-*"):  # left by a crash mid-write; never a whole snapshot
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=ckpt))
    save_model(model, str(tmp / WEIGHTS))
    files = [WEIGHTS]
    if trainer_state is not None:
        torch.save(trainer_state, tmp / TRAINER)
        files.append(TRAINER)
    for name in files:
        fsync_file(tmp / name)
    meta = {**meta, "format_version": FORMAT_VERSION, "sha256": {n: _sha256(tmp / n) for n in files}}
    (tmp / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    fsync_file(tmp / META)
    fsync_dir(tmp)
    # Rotate: every intermediate state leaves at least one whole snapshot behind.
    if (ckpt / "prev2").exists():
        shutil.rmtree(ckpt / "prev2")
    for older, newer in (("prev2", "prev"), ("prev", "current")):
        if (ckpt / newer).exists():
            os.replace(ckpt / newer, ckpt / older)
    os.replace(tmp, ckpt / "current")
    fsync_dir(ckpt)
    return ckpt / "current"


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


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run dir holds any snapshot (whole or not)."""
    ckpt = Path(run_dir) / "checkpoints"
    return any((ckpt / s).is_dir() for s in SNAPSHOTS)


def latest_snapshot(run_dir: str | Path) -> Snapshot:
    """The newest whole snapshot, warning about each broken one skipped on the way."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LmlabError(f"run dir not found: {run_dir}")
    problems = []
    for name in SNAPSHOTS:
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
    upgrade = getattr(cfg_cls, "upgrade_checkpoint_config", None)
    if upgrade is not None:
        raw["model"] = upgrade(model)
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

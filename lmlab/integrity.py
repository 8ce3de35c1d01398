"""A snapshot's integrity: what is in it, checksummed, and how a broken one is recognised.

``seal`` finishes a snapshot folder: ``meta.json`` with the sha256 of every other file, then
``SHA256SUMS`` (the ``sha256sum -c`` format) listing every file, ``meta.json`` included.
``verify`` checks both, that the weights open as safetensors, and remembers a folder it found
broken (by device, inode and ctime) so ``rundir``'s next rotation drops it first.
``read_trainer_state`` never unpickles objects; ``weights_mismatch`` says which tensors of a
weights file do not fit a model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from lmlab.fsio import fsync_dir, fsync_file

FORMAT_VERSION = 1
WEIGHTS, META, TRAINER = "model.safetensors", "meta.json", "trainer.pt"
SUMS = "SHA256SUMS"  # covers meta.json, which meta.json's own sha256 map cannot


def seal(folder: Path, files: list[str], meta: dict[str, Any]) -> None:
    """Write ``meta.json`` (``meta`` plus the format version and the sha256 of ``files``, already
    flushed) and ``SHA256SUMS`` into ``folder``, and flush both."""
    sums = {n: sha256(folder / n) for n in files}
    meta = {**meta, "format_version": FORMAT_VERSION, "sha256": dict(sums), "checksums": SUMS}
    (folder / META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    sums[META] = sha256(folder / META)
    (folder / SUMS).write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())), encoding="utf-8")
    for name in (META, SUMS):
        fsync_file(folder / name)
    fsync_dir(folder)


def weights_mismatch(model: torch.nn.Module, path: Path, shown: int = 4) -> str:
    """How the tensors in the safetensors file ``path`` differ from ``model``'s, in a few words
    ("" when they fit): shape differences first, then tensors only one side has."""
    with safe_open(str(path), "pt") as f:
        saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    state = model.state_dict()
    # Tied tensors are stored once (save_model): a model name whose storage another stored name
    # shares is not missing.
    stored = {state[k].untyped_storage().data_ptr() for k in saved if k in state}
    shapes = [f"{k} {list(saved[k])} in the file vs {list(v.shape)} in the model"
              for k, v in state.items() if k in saved and tuple(v.shape) != saved[k]]
    missing = [k for k, v in state.items() if k not in saved and v.untyped_storage().data_ptr() not in stored]
    extra = [k for k in saved if k not in state]

    def few(names: list[str]) -> str:
        return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")

    parts = [f"shape of {len(shapes)} tensor(s): {few(shapes)}"] if shapes else []
    if missing:
        parts.append(f"{len(missing)} missing from the file: {few(missing)}")
    if extra:
        parts.append(f"{len(extra)} not in the model: {few(extra)}")
    return "; ".join(parts)


def read_trainer_state(path: Path) -> dict[str, Any]:
    """``trainer.pt`` read with ``weights_only=True``; anything else (a pickled object, a torn or
    foreign file) makes the snapshot unusable (ValueError), never a reason to unpickle it."""
    try:
        return torch.load(path / TRAINER, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (torch raises UnpicklingError, RuntimeError, EOFError... for a bad file)
        kind = "holds pickled objects, not only tensors (refused unread)" if "Weights only" in str(e) else \
            f"is not a readable torch file ({e.__class__.__name__})"
        raise ValueError(f"{TRAINER} {kind}") from None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_BROKEN: set[tuple[int, int, int]] = set()  # (device, inode, ctime) of snapshot dirs found broken


def _identity(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_ctime_ns  # ctime: an inode number reused later is a new dir


def known_broken(path: Path) -> bool:
    return _identity(path) in _BROKEN


def mark_broken(path: Path) -> None:
    """Remember the snapshot folder ``path`` as broken (this process; the next rotation drops it)."""
    _BROKEN.add(_identity(path))


def verify(path: Path) -> dict[str, Any]:
    """Meta of a whole snapshot; raises ValueError saying what is wrong with a broken one (and
    remembers it as broken, for the next rotation)."""
    try:
        return _check(path)
    except ValueError:
        mark_broken(path)
        raise


def _check(path: Path) -> dict[str, Any]:
    if not (path / META).is_file():
        raise ValueError("no meta.json")
    listed = _read_sums(path) if (path / SUMS).is_file() else {}
    if META in listed and sha256(path / META) != listed[META]:
        raise ValueError(f"meta.json does not match its checksum in {SUMS} (edited or corrupt)")
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"meta.json is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError("meta.json is not a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    if meta.get("checksums") == SUMS and META not in listed:  # written with one: it went missing
        raise ValueError(f"{SUMS} is missing or does not list meta.json")
    sums = meta.get("sha256", {})
    for name in sorted(set(sums) | set(listed) - {META}):
        if not (path / name).is_file():
            raise ValueError(f"{name} is missing")
        digest = sha256(path / name)
        if digest != sums.get(name, digest) or digest != listed.get(name, digest):
            raise ValueError(f"{name} is truncated or corrupt (checksum mismatch)")
    if (path / WEIGHTS).is_file():
        try:
            with safe_open(str(path / WEIGHTS), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{WEIGHTS} is not a safetensors file ({e})") from None
    return meta


def _read_sums(path: Path) -> dict[str, str]:
    """``SHA256SUMS`` as {name: hex digest}; ValueError for a line that is not ``HEX  NAME``."""
    out = {}
    for i, line in enumerate((path / SUMS).read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ValueError(f"{SUMS} line {i} is not 'SHA256  NAME' (edited or corrupt)")
        out[name] = digest
    return out

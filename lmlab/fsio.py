"""Durable file writes: flush a file or a directory entry to disk before renaming things into place."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_file(path: str | Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, flush it, then rename it over ``path``:
    a reader (or a crash) sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of an append-only JSON-lines file. A torn last line (a kill mid-append) is
    dropped with a warning; a bad line before the end is an error naming it."""
    import json
    import warnings

    from lmlab.errors import LmlabError

    path = Path(path)
    if not path.is_file():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             if line.strip()]
    rows = []
    for k, (i, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k == len(lines) - 1:
                warnings.warn(f"{path}: line {i} is torn (a write was cut off); dropping it", stacklevel=2)
                break
            raise LmlabError(f"{path}: line {i} is not JSON ({e.msg}); fix or delete that line") from None
    return rows

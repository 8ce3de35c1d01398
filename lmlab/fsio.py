"""Durable file writes: flush a file or a directory entry to disk before renaming things into place."""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lmlab.errors import LmlabError

# OS errors a user causes and fixes (the disk, the permissions, the path), with the fix; any other
# OSError is left alone (it keeps its traceback: it may be a bug).
_USER_ERRNOS = {
    errno.ENOSPC: "free some space or write somewhere else",
    errno.EDQUOT: "free some space or write somewhere else",
    errno.EROFS: "write somewhere else",
    errno.EACCES: "fix the permissions or write somewhere else",
    errno.EPERM: "fix the permissions or write somewhere else",
    errno.ENOTDIR: "part of that path is a file, not a folder",
    errno.EEXIST: "a file is in the way; remove it or write somewhere else",
    errno.EISDIR: "that is a folder, not a file",
    errno.ENAMETOOLONG: "the name is too long",
}


def user_os_error(e: BaseException) -> bool:
    """Whether ``e`` is an OS error the user causes and fixes (see ``user_io``)."""
    return isinstance(e, OSError) and e.errno in _USER_ERRNOS


def user_error_line(e: OSError, what: str) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return f"{what}: {where}{e.strerror}; {_USER_ERRNOS[e.errno]}"


@contextmanager
def user_io(what: str, also: str = "") -> Iterator[None]:
    """Turn a user-caused OS error (no space, read-only, permission, a file in the way) raised
    inside into one :class:`LmlabError` line: ``what: PATH: reason; fix`` plus ``also``."""
    try:
        yield
    except OSError as e:
        if not user_os_error(e):
            raise
        raise LmlabError(user_error_line(e, what) + also) from None


def check_writable(path: str | Path, what: str) -> None:
    """Fail now, in one line, if the file ``path`` cannot be written (its folder is made)."""
    path = Path(path)
    if path.is_dir():
        raise LmlabError(f"{what} {path} is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if not user_os_error(e):
            raise
        e.filename = str(path)  # the file asked for, not the probe
        raise LmlabError(user_error_line(e, what)) from None


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
    try:
        tmp.write_text(text, encoding="utf-8")
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):  # a half-written temp file, where there is one
            tmp.unlink(missing_ok=True)
        e.filename = str(path)  # the file being written, not its temp name
        raise
    fsync_dir(path.parent)


def read_jsonl(path: str | Path) -> list[dict]:
    """The rows of an append-only JSON-lines file. A torn last line (a kill mid-append) is
    dropped with a warning; a bad line before the end is an error naming it."""
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

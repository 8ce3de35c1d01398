"""Durable file writes: flush a file or a directory entry to disk before renaming things into place."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePath

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
    """``what: PATH: reason; fix``: the path from the error, or where it has none (a ``write`` or
    ``flush`` on a full disk: the OS names a descriptor, not a file) from the file being written."""
    path = e.filename or _failed_file(e)
    where = f"{path}: " if path else ""
    return f"{what}: {where}{e.strerror}; {_USER_ERRNOS[e.errno]}"


def _failed_file(e: BaseException) -> str | None:
    """The name of the open file (or the path, in ``pathlib``'s writers) in the innermost frame of
    ``e``'s traceback that holds one: where a write without a file name failed."""
    frames = []
    tb = e.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        names = frame.f_locals
        for value in names.values():
            if isinstance(value, io.IOBase) and isinstance(getattr(value, "name", None), str):
                return value.name
        if isinstance(names.get("self"), PurePath):  # Path.write_text, before its file is open
            return str(names["self"])
    return None


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
    """Fail now, in one line, if the file ``path`` cannot be written (``check_output``, then a
    probe file in its folder). Nothing is left behind: a missing folder is made by the write
    (``atomic_write_text``), not by this check, so a later refusal leaves no empty folder."""
    path = check_output(path, what, "file", "give a file name")
    if not path.parent.is_dir():  # check_output made and removed a folder where it will be made
        return
    try:
        probe = path.with_name(f".{path.name}.probe-{os.getpid()}")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        if not user_os_error(e):
            raise
        e.filename = str(path)  # the file asked for, not the probe
        raise LmlabError(user_error_line(e, what)) from None


# Every path a user gives is checked before anything is read or written, the same way for every
# key and flag: ``check_input`` (a file or folder to read) and ``check_output`` (one to write).
def _special(want: str) -> str:
    return "is a pipe, socket or device, not a folder" if want == "dir" else \
        "is not a regular file (a pipe, socket or device)"


def _stat(path: Path, what: str) -> os.stat_result | None:
    """``os.stat(path)``; None where nothing is there. A symlink loop, or a file where a folder of
    the path belongs, is a one-line error."""
    try:
        return os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LmlabError(f"{what} {path}: a symlink loop (following its links leads back to them); fix or "
                             "remove the link, or give another path") from None
        if e.errno == errno.ENOTDIR:
            above = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
            raise LmlabError(f"{what} {path}: a file is in the way ({above} is a file, not a folder); "
                             "give another path") from None
        if e.errno == errno.ENOENT:
            return None
        if user_os_error(e):
            raise LmlabError(user_error_line(e, what)) from None
        raise


def check_input(path: str | Path, what: str, want: str = "file", fix: str = "give a file",
                must_exist: bool = False) -> Path:
    """A path to read (``want``: ``file``, ``dir`` or ``any``), refused in one line naming ``what``
    (and ending in ``fix``) when it is empty, a symlink loop, under a file, a pipe or device, or the
    wrong one of file and folder. A missing one is refused with ``must_exist``, else left to its
    reader to say."""
    if str(path) == "":
        raise LmlabError(f"{what} is empty; {fix}")
    path = Path(path)
    st = _stat(path, what)
    if st is None:
        if must_exist:
            raise LmlabError(f"{what} {path}: no such file or folder; {fix}")
        return path
    if stat.S_ISDIR(st.st_mode):
        if want == "file":
            raise LmlabError(f"{what} {path} is a folder; {fix}")
    elif not stat.S_ISREG(st.st_mode):  # reading a pipe could block forever, and reads it once only
        raise LmlabError(f"{what} {path} {_special(want)}; {fix}")
    elif want == "dir":
        raise LmlabError(f"{what} {path} is a file, not a folder; {fix}")
    return path


def check_output(path: str | Path, what: str, want: str = "dir", fix: str = "give a folder") -> Path:
    """A folder (``want="dir"``) or file to write, refused in one line naming ``what`` when it is
    empty (which would mean the working directory), a symlink loop, under a file, a pipe or device,
    the wrong one of file and folder, or cannot be made (its nearest folder takes no new entry)."""
    if str(path) == "":
        raise LmlabError(f"{what} is empty; {fix}")
    path = Path(path)
    st = _stat(path, what)
    if st is not None:
        if stat.S_ISDIR(st.st_mode) and want == "file":
            raise LmlabError(f"{what} {path} is a folder; {fix}")
        if stat.S_ISREG(st.st_mode) and want == "dir":
            raise LmlabError(f"{what} {path} is a file, not a folder; {fix}")
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):  # opening a pipe to write blocks
            raise LmlabError(f"{what} {path} {_special(want)}; {fix}")
        return path
    top = next(p for p in path.absolute().parents if p.is_dir())
    probe = top / f".lmlab-probe-{os.getpid()}"
    try:  # a folder made and removed: what making the path will meet (ENOENT under /proc, EROFS, EACCES)
        probe.mkdir(exist_ok=True)
        probe.rmdir()
    except OSError as e:
        if user_os_error(e):  # read-only, no permission: said as every other write says it
            e.filename = str(path)
            raise LmlabError(user_error_line(e, what)) from None
        raise LmlabError(f"{what} {path} cannot be made ({e.strerror} in {top}); give a path you can write") from None
    return path


def check_path(path: str | Path, what: str, role: str, fix: str) -> Path:
    """``path`` checked by its ``role``: ``in_*`` (``check_input``), ``need_*`` (the same, and it
    must exist), ``out_*`` (``check_output``), each ``_file``, ``_dir`` or ``_any``."""
    way, want = role.split("_")
    if way == "out":
        return check_output(path, what, want, fix)
    return check_input(path, what, want, fix, must_exist=way == "need")


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
        path.parent.mkdir(parents=True, exist_ok=True)
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

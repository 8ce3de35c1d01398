"""How a command talks to the terminal when something goes wrong: one-line warnings, the line an
interrupted run prints, and the exit code of each ending. Used by ``lmlab`` (cli.py) and the
continuous trainer (``python main.py``) alike, so both end the same way.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import TypeVar

from lmlab.errors import Interrupted, LmlabError
from lmlab.fsio import user_error_line, user_os_error

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

T = TypeVar("T")


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """``warnings.formatwarning`` for users: the message alone, no source line or path."""
    return f"warning: {message}\n"


def interrupted_line(e: BaseException) -> str:
    """What an interrupted command says: the trainer's own message (where it stopped, how to
    resume), else that it stopped and what is kept."""
    if str(e):
        return str(e)
    by = f" by {signal.Signals(e.signum).name}" if isinstance(e, Interrupted) else ""
    return f"interrupted{by}; nothing was lost (snapshots are written whole or not at all)"


def _raise_terminated(signum, frame) -> None:
    raise Interrupted("", signum)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside: SIGTERM raises ``Interrupted`` as SIGINT raises KeyboardInterrupt, so a
    terminated command unwinds (files close, the trainer saves: it installs its own handler)
    and exits 143 with its one line, instead of dying silently mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_command(name: str, func: Callable[[], T], interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,)
                ) -> tuple[int, T | None]:
    """Run ``func`` as the command ``name``: (exit code, its result). A user error is one line
    and exit 2 (an OS error only when it is the user's to fix: a full disk, a read-only
    folder; any other keeps its traceback); an interrupt prints where it stopped and exits
    128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    warnings.formatwarning = one_line_warning
    try:
        with sigterm_interrupts():
            return 0, func()
    except LmlabError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR, None
    except OSError as e:
        if not user_os_error(e):
            raise
        print(f"{name}: error: {user_error_line(e, 'cannot write')}", file=sys.stderr)
        return EXIT_USER_ERROR, None
    except interrupts as e:
        print(f"{name}: {interrupted_line(e)}", file=sys.stderr)
        return (e.exit_code if isinstance(e, Interrupted) else EXIT_INTERRUPTED), None

"""Where a run's metrics go: a tracker interface with do-nothing defaults and a container.

The trainer logs every row to one :class:`Trackers` and never asks which trackers are on; a new
tracker is a subclass of :class:`Tracker` and an entry in ``TRACKERS``. Only rank 0 has any
(other ranks hold an empty container). ``jsonl`` (``metrics.jsonl``) is always on: it is what
lmlab itself reads back (``lmlab report``, resumption).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmlab.fsio import atomic_write_text, read_jsonl


class Tracker:
    """A metrics sink. Every method is a no-op here; trackers override what they use."""

    def start(self, config: dict[str, Any], step: int) -> None:
        """The run begins (or resumes) at ``step``; ``config`` is the resolved run config."""

    def log(self, row: dict[str, Any]) -> None:
        """One row of metrics (it has ``step`` and ``tokens``; values are numbers or small dicts)."""

    def close(self) -> None:
        """The run ends (normally or not): flush and release."""


class JsonlTracker(Tracker):
    """Append-only ``metrics.jsonl``; on resume, rows after the snapshot's step are dropped
    (they will be logged again) and a torn last row (a kill mid-write) goes with a warning."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"

    def start(self, config: dict[str, Any], step: int) -> None:
        if self.path.is_file():  # rewritten whole or not at all; a torn last row is dropped
            keep = [row for row in read_jsonl(self.path) if row.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in keep))

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


class Trackers(Tracker):
    """Forwards every call to each of its trackers (none: a null object)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def start(self, config: dict[str, Any], step: int) -> None:
        for t in self.trackers:
            t.start(config, step)

    def log(self, row: dict[str, Any]) -> None:
        for t in self.trackers:
            t.log(row)

    def close(self) -> None:
        for t in self.trackers:
            t.close()


TRACKERS: dict[str, Callable[[Path], Tracker]] = {"jsonl": JsonlTracker}


def build_trackers(run_dir: Path, is_main: bool, names: tuple[str, ...] = ("jsonl",)) -> Trackers:
    """The run's trackers: ``names`` on rank 0, none elsewhere."""
    return Trackers([TRACKERS[n](run_dir) for n in names] if is_main else [])

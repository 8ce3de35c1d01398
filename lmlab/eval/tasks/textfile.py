"""``file:PATH``: any local UTF-8 text file as one document, scored like WikiText (no
detokenization). Named by its path, so it is a prefix of the task table, not a row."""

from __future__ import annotations

from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.eval.tasks.base import Doc, RollingTask


def text_file_docs(path: Path) -> list[Doc]:
    """The file at ``path`` as one document."""
    if not path.is_file():
        why = "is not a regular file" if path.exists() else "no such file"
        raise LmlabError(f"--tasks file:{path}: {why}; give a UTF-8 text file to score")
    try:
        return [{"page": path.read_text(encoding="utf-8")}]
    except UnicodeDecodeError as e:
        raise LmlabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


class TextFile(RollingTask):
    """``file:PATH``; ``--data-dir`` does not apply."""

    def __init__(self, name: str):
        super().__init__(name)
        self.path = Path(name.partition(":")[2])

    def documents(self, data_dir: Path | None) -> list[Doc]:
        return text_file_docs(self.path)

    def data_source(self, data_dir: Path | None) -> str:
        return self.name

"""Character tokenizer: one id per character seen when fitting."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError
from lmlab.tokenizers.base import Tokenizer

VOCAB_FILE = "vocab.json"


class CharTokenizer(Tokenizer):
    """ids: 0 = ``<eos>``, 1 = ``<unk>``, then the sorted characters."""

    backend = "char"
    eos_id = 0
    unk_id = 1
    n_special = 2

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.stoi = {ch: i + self.n_special for i, ch in enumerate(self.chars)}

    @classmethod
    def fit(cls, texts: Iterable[str]) -> CharTokenizer:
        """Vocabulary = sorted set of every character in ``texts``."""
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        if not seen:
            raise LmlabError("cannot fit a tokenizer on an empty corpus (no characters to learn)")
        return cls(sorted(seen))

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + self.n_special

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Id per character; unseen ones become unk (or raise when ``strict``)."""
        unk = self.unk_id
        ids = [self.stoi.get(ch, unk) for ch in text]
        if strict and unk in ids:
            missing = sorted({ch for ch in text if ch not in self.stoi})
            names = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in missing)
            raise LmlabError(f"prompt has characters the char tokenizer never saw: {names}")
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        n = self.n_special
        return "".join(self.chars[i - n] for i in map(int, ids) if n <= i < self.vocab_size)

    def token_byte_lengths(self) -> np.ndarray:
        lengths = [0] * self.n_special + [
            len(ch.encode("utf-8", "surrogateescape")) for ch in self.chars
        ]
        return np.array(lengths, dtype=np.int64)

    def _save_native(self, directory: Path) -> None:
        (directory / VOCAB_FILE).write_text(json.dumps(self.chars), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, meta: dict) -> CharTokenizer:
        """Read ``vocab.json`` (a JSON list of characters)."""
        return cls(json.loads((directory / VOCAB_FILE).read_text(encoding="utf-8")))

"""The interface every tokenizer backend implements."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

META_FILE = "tokenizer_meta.json"


class Tokenizer(ABC):
    """Text <-> token ids. ``eos_id`` always exists and separates documents."""

    backend: str = ""
    eos_id: int
    bos_id: int | None = None
    pad_id: int | None = None
    unk_id: int | None = None

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids (the embedding table size)."""

    @property
    def special_ids(self) -> dict[str, int]:
        """Name -> id of every special token this tokenizer has."""
        names = ("eos", "bos", "pad", "unk")
        ids = {n: getattr(self, f"{n}_id") for n in names}
        return {n: i for n, i in ids.items() if i is not None}

    @abstractmethod
    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Token ids of ``text`` (no eos added). ``strict`` raises if it is not exact."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, batched where the backend can."""
        return [self.encode(t) for t in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens are dropped."""

    @abstractmethod
    def token_byte_lengths(self) -> np.ndarray:
        """int64 array (vocab_size,): UTF-8 bytes each id decodes to (0 for specials)."""

    def save(self, directory: str | Path) -> None:
        """Write the backend's native files plus ``tokenizer_meta.json`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self._save_native(d)
        meta = {
            "backend": self.backend,
            "vocab_size": self.vocab_size,
            "special_ids": self.special_ids,
        }
        (d / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @abstractmethod
    def _save_native(self, directory: Path) -> None:
        """Write the backend's own files into ``directory``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"

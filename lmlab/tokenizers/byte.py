"""Byte tokenizer: ids 0..255 are raw bytes, 256 is eos. Needs no fitting."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmlab.tokenizers.base import Tokenizer


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes as tokens; text read with ``surrogateescape`` keeps its exact bytes."""

    backend = "byte"
    eos_id = 256

    @property
    def vocab_size(self) -> int:
        return 257

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Bytes of ``text`` (lone surrogates from surrogateescape map back to their byte)."""
        return list(text.encode("utf-8", "surrogateescape"))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Ids of raw bytes."""
        return list(data)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """Raw bytes of ``ids`` (eos and out-of-range ids dropped)."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; invalid UTF-8 comes back as surrogate escapes (so it round-trips)."""
        return self.decode_bytes(ids).decode("utf-8", "surrogateescape")

    def token_byte_lengths(self) -> np.ndarray:
        lengths = np.ones(self.vocab_size, dtype=np.int64)
        lengths[self.eos_id] = 0
        return lengths

    def _save_native(self, directory: Path) -> None:
        pass  # stateless: tokenizer_meta.json is all there is

    @classmethod
    def load(cls, directory: Path, meta: dict) -> ByteTokenizer:
        """Nothing to read: the byte tokenizer has no state."""
        return cls()

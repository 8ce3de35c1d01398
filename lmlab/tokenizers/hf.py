"""Any Hugging Face ``tokenizer.json`` (Llama, SmolLM, TinyLlama, Qwen-style), kept verbatim.

lmlab's own ``bpe`` backend is byte-level BPE with ``<|endoftext|>``; a model imported from the HF
hub brings its own tokenizer, with its own special tokens (``</s>``, ``<|im_end|>``) and pieces
(byte-level or SentencePiece-style ``▁`` with byte fallback). This backend runs that file through
HF ``tokenizers`` unchanged and saves it back byte for byte, so an export gives back the file the
import read. The special ids come from the folder (``config.json`` / ``tokenizer_config.json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.errors import LmlabError
from lmlab.tokenizers.base import Tokenizer
from lmlab.tokenizers.bpe import TOKENIZER_FILE, _import_tokenizers, bytes_to_unicode

# The HF files kept beside tokenizer.json (written back on export exactly as read).
EXTRA_FILES = ("tokenizer_config.json", "special_tokens_map.json")
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # SentencePiece's byte fallback pieces


class HFTokenizer(Tokenizer):
    """A ``tokenizers.Tokenizer`` read from its JSON text. ``vocab_size`` may exceed the file's
    ids: models pad their embedding table (the extra ids are never produced)."""

    backend = "hf"

    def __init__(self, json_text: str, special_ids: dict[str, int], vocab_size: int | None = None,
                 extra: dict[str, str] | None = None):
        tk = _import_tokenizers()
        self.json_text, self.extra = json_text, dict(extra or {})
        self.hf = tk.Tokenizer.from_str(json_text)
        if "eos" not in special_ids:
            raise LmlabError("the tokenizer has no end-of-text token (eos), which lmlab separates documents with")
        own = self.hf.get_vocab_size(with_added_tokens=True)
        self._vocab_size = own if vocab_size is None else vocab_size
        if self._vocab_size < own:
            raise LmlabError(f"the tokenizer has {own} ids but vocab_size is {self._vocab_size}")
        for name, i in special_ids.items():
            setattr(self, f"{name}_id", int(i))
        # The literal text "</s>" in a document is text, not a special token (lmlab's rule for every backend).
        self.hf.encode_special_tokens = True

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """The file's own pre-processing, without its post-processor's specials (a BOS)."""
        ids = self.hf.encode(text, add_special_tokens=False).ids
        if strict and self.unk_id is not None and self.unk_id in ids:
            raise LmlabError(f"text has characters the tokenizer maps to its unknown token: {text[:40]!r}")
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes per id: byte-level pieces count their bytes; SentencePiece-style pieces
        count ``▁`` as the space it stands for and ``<0xNN>`` as one byte. A Metaspace tokenizer's
        leading ``▁`` on a document's first word is counted though the text has no space there
        (one byte per document, as SentencePiece's own counts do)."""
        decoder = json.loads(self.json_text).get("decoder") or {}
        byte_level = "ByteLevel" in json.dumps(decoder)
        table = {ch: 1 for ch in bytes_to_unicode().values()}
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = {t.content for t in self.hf.get_added_tokens_decoder().values() if t.special}
        for tok, i in self.hf.get_vocab(with_added_tokens=True).items():
            if tok in special:
                continue
            if byte_level:
                lengths[i] = sum(table.get(ch, 0) for ch in tok)
            elif BYTE_PIECE.fullmatch(tok):
                lengths[i] = 1
            else:
                lengths[i] = len(tok.replace("\u2581", " ").encode("utf-8"))
        return lengths

    def _save_native(self, directory: Path) -> None:
        (directory / TOKENIZER_FILE).write_text(self.json_text, encoding="utf-8")
        for name, text in self.extra.items():
            (directory / name).write_text(text, encoding="utf-8")

    def write_hf(self, directory: Path) -> None:
        """The HF files as the import read them (``tokenizer.json`` and its config files)."""
        self._save_native(directory)

    @classmethod
    def load(cls, directory: Path, meta: dict[str, Any]) -> HFTokenizer:
        extra = {n: (directory / n).read_text(encoding="utf-8") for n in EXTRA_FILES if (directory / n).is_file()}
        text = (directory / TOKENIZER_FILE).read_text(encoding="utf-8")
        return cls(text, meta.get("special_ids", {}), meta.get("vocab_size"), extra)

    @classmethod
    def from_hf_dir(cls, hf_dir: Path, hf_config: dict[str, Any], vocab_size: int | None) -> HFTokenizer:
        """The tokenizer of an HF model folder: ``tokenizer.json``, its special tokens from
        ``config.json``'s ids, else ``tokenizer_config.json``'s token strings."""
        text = (hf_dir / TOKENIZER_FILE).read_text(encoding="utf-8")
        extra = {n: (hf_dir / n).read_text(encoding="utf-8") for n in EXTRA_FILES if (hf_dir / n).is_file()}
        try:
            tok_config = json.loads(extra.get("tokenizer_config.json", "{}"))
        except json.JSONDecodeError as e:
            raise LmlabError(f"{hf_dir / 'tokenizer_config.json'}: cannot parse: {e}") from None
        hf = _import_tokenizers().Tokenizer.from_str(text)
        special: dict[str, int] = {}
        for name in ("eos", "bos", "pad", "unk"):
            found = _special_id(hf, hf_config.get(f"{name}_token_id"), tok_config.get(f"{name}_token"))
            if found is not None:
                special[name] = found
        if "eos" not in special:
            raise LmlabError(f"{hf_dir}: neither config.json's eos_token_id nor tokenizer_config.json's eos_token "
                             "names an end-of-text token, which lmlab separates documents with")
        return cls(text, special, vocab_size, extra)


def _special_id(hf: Any, config_id: Any, token: Any) -> int | None:
    """An id from config.json (an int, or a list whose first entry counts), else a token string
    (or AddedToken dict) of tokenizer_config.json looked up in the vocabulary."""
    if isinstance(config_id, list):
        config_id = config_id[0] if config_id else None
    if isinstance(config_id, int):
        return config_id
    if isinstance(token, dict):
        token = token.get("content")
    return hf.token_to_id(token) if isinstance(token, str) else None

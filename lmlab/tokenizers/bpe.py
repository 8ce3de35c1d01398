"""Byte-level BPE trained with HF ``tokenizers`` (GPT-2 style, exact round trip)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError
from lmlab.tokenizers.base import Tokenizer

EOS = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
INSTALL_HINT = "tokenizer.type: bpe needs the tokenizers package: pip install tokenizers"


def _import_tokenizers():
    try:
        # deferred: an import error becomes the install hint
        import tokenizers
    except ImportError:
        raise LmlabError(INSTALL_HINT) from None
    return tokenizers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


class BPETokenizer(Tokenizer):
    """Wraps an HF ``tokenizers.Tokenizer`` with a ByteLevel pre-tokenizer and decoder."""

    backend = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        eos = self.hf.token_to_id(EOS)
        if eos is None:
            raise LmlabError(f"bpe tokenizer has no {EOS} token; was it saved by lmlab?")
        self.eos_id = eos
        # The literal text "<|endoftext|>" in a document is text, not a document separator.
        self.hf.encode_special_tokens = True

    @classmethod
    def fit(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Train byte-level BPE on ``texts`` (the vocab may come out smaller on tiny corpora)."""
        tk = _import_tokenizers()
        decoders, models, pre_tokenizers, trainers = tk.decoders, tk.models, tk.pre_tokenizers, tk.trainers
        hf = tk.Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        hf.train_from_iterator(texts, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Byte-level BPE represents every string exactly, so ``strict`` never raises."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    def token_byte_lengths(self) -> np.ndarray:
        byte_len = {ch: 1 for ch in bytes_to_unicode().values()}
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        special = set(self.special_ids.values())
        for tok, i in self.hf.get_vocab(with_added_tokens=True).items():
            if i not in special:
                lengths[i] = sum(byte_len.get(ch, 0) for ch in tok)
        return lengths

    def _save_native(self, directory: Path) -> None:
        self.hf.save(str(directory / TOKENIZER_FILE))

    @classmethod
    def load(cls, directory: Path, meta: dict) -> BPETokenizer:
        """Read the HF ``tokenizer.json``."""
        tk = _import_tokenizers()
        return cls(tk.Tokenizer.from_file(str(directory / TOKENIZER_FILE)))

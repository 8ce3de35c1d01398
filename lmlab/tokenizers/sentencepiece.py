"""SentencePiece (bpe or unigram) with byte fallback, trained in memory.

Settings chosen for an exact round trip: identity normalization, no dummy-prefix space, extra
whitespace kept, and ``"\\n"`` as a user-defined symbol (SentencePiece trains on lines and would
otherwise have no piece for a newline). Unseen characters fall back to ``<0xNN>`` byte pieces.
One exception is inherent to SentencePiece: it uses U+2581 (``▁``) to stand for a space, so a
literal ``▁`` in the text decodes as a space. Use ``bpe`` or ``byte`` where that matters.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lmlab.errors import LmlabError
from lmlab.tokenizers.base import Tokenizer

MODEL_FILE = "tokenizer.model"
INSTALL_HINT = "tokenizer.type: sentencepiece needs the sentencepiece package: pip install 'lmlab[sentencepiece]'"
MAX_LINE_CHARS = 4096  # lines are cut into chunks this long (<= 16 KiB of UTF-8)
WS = "\u2581"  # '▁', SentencePiece's space


def _import_spm():
    try:
        # deferred: sentencepiece is optional (the sentencepiece extra)
        import sentencepiece
    except ImportError:
        raise LmlabError(INSTALL_HINT) from None
    return sentencepiece


def _sentences(texts: Iterable[str]) -> Iterator[str]:
    """Non-empty lines of every text, cut to at most MAX_LINE_CHARS characters."""
    for text in texts:
        for line in text.split("\n"):
            for i in range(0, len(line), MAX_LINE_CHARS):
                yield line[i : i + MAX_LINE_CHARS]


class SentencePieceTokenizer(Tokenizer):
    """Wraps a ``sentencepiece.SentencePieceProcessor``."""

    backend = "sentencepiece"

    def __init__(self, model_proto: bytes):
        spm = _import_spm()
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.eos_id = self.sp.eos_id()
        get = {"unk": self.sp.unk_id(), "bos": self.sp.bos_id(), "pad": self.sp.pad_id()}
        self.unk_id, self.bos_id, self.pad_id = (None if get[k] < 0 else get[k] for k in get)

    @classmethod
    def fit(
        cls, texts: Iterable[str], vocab_size: int, model_type: str = "bpe"
    ) -> SentencePieceTokenizer:
        """Train on the lines of ``texts``; the vocab may come out smaller on tiny corpora."""
        spm = _import_spm()
        sentences = [s for s in _sentences(texts) if s]
        if not sentences:
            raise LmlabError("cannot fit a tokenizer on an empty corpus (no non-empty lines)")
        # 256 byte pieces + specials + "\n" + every character must fit in the vocabulary
        min_vocab = 256 + 3 + len(set().union(*sentences))
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=max(vocab_size, min_vocab),
            model_type=model_type,
            byte_fallback=True,
            character_coverage=1.0,
            unk_id=0,
            eos_id=1,
            bos_id=-1,
            pad_id=-1,
            user_defined_symbols=["\n"],
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            hard_vocab_limit=False,
            max_sentence_length=4 * MAX_LINE_CHARS,
            input_sentence_size=0,
            num_threads=min(4, os.cpu_count() or 1),
            minloglevel=2,
        )
        return cls(model.getvalue())

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str, strict: bool = False) -> list[int]:
        """Byte fallback makes every string exact, so ``strict`` never raises."""
        return self.sp.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[int]) -> str:
        skip = set(self.special_ids.values())
        return self.sp.decode([int(i) for i in ids if int(i) not in skip])

    def token_byte_lengths(self) -> np.ndarray:
        sp = self.sp
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for i in range(self.vocab_size):
            if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
                continue
            piece = sp.id_to_piece(i)
            lengths[i] = 1 if sp.is_byte(i) else len(piece.replace(WS, " ").encode("utf-8"))
        return lengths

    def _save_native(self, directory: Path) -> None:
        (directory / MODEL_FILE).write_bytes(self.model_proto)

    @classmethod
    def load(cls, directory: Path, meta: dict) -> SentencePieceTokenizer:
        """Read ``tokenizer.model``."""
        return cls((directory / MODEL_FILE).read_bytes())

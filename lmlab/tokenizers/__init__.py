"""Tokenizers: byte, char, byte-level BPE (HF tokenizers) and SentencePiece behind one interface.

``build_tokenizer(cfg, texts)`` fits (or loads) one; ``tok.save(dir)`` writes it in the backend's
native format plus ``tokenizer_meta.json``; ``load_tokenizer(dir)`` reads it back. Nothing is pickled.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from lmlab.config import TokenizerConfig
from lmlab.errors import LmlabError
from lmlab.tokenizers.base import META_FILE, Tokenizer
from lmlab.tokenizers.bpe import BPETokenizer
from lmlab.tokenizers.byte import ByteTokenizer
from lmlab.tokenizers.char import CharTokenizer
from lmlab.tokenizers.hf import HFTokenizer
from lmlab.tokenizers.sentencepiece import SentencePieceTokenizer

__all__ = [
    "Tokenizer",
    "ByteTokenizer",
    "CharTokenizer",
    "HFTokenizer",
    "build_tokenizer",
    "load_tokenizer",
    "load_tokenizer_path",
    "resolve_backend",
]

BACKENDS = ("byte", "char", "bpe", "sentencepiece", "hf")
# backend -> (module it needs, pip command)
NEEDS = {
    "bpe": ("tokenizers", "pip install tokenizers"),
    "hf": ("tokenizers", "pip install tokenizers"),
    "sentencepiece": ("sentencepiece", "pip install 'lmlab[sentencepiece]'"),
}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def resolve_backend(type: str) -> str:
    """``auto`` -> sentencepiece, else bpe, else char (by what imports); others checked as given."""
    if type == "auto":
        for backend in ("sentencepiece", "bpe"):
            if _importable(NEEDS[backend][0]):
                return backend
        return "char"
    if type not in BACKENDS:
        raise LmlabError(f"tokenizer.type: unknown {type!r} (choose auto, {', '.join(BACKENDS)})")
    if type in NEEDS and not _importable(NEEDS[type][0]):
        module, pip = NEEDS[type]
        raise LmlabError(f"tokenizer.type: {type} needs the {module} package: {pip}")
    return type


class _FitStream:
    """Lazily yields at most ``max_examples`` texts and ``max_chars`` characters (last one cut)."""

    def __init__(self, texts: Iterable[str], max_examples: int | None, max_chars: int | None):
        self.texts, self.max_examples, self.max_chars = texts, max_examples, max_chars
        self.n_examples = self.n_chars = 0

    def __iter__(self) -> Iterator[str]:
        it = iter(self.texts)
        while self.max_examples is None or self.n_examples < self.max_examples:
            if self.max_chars is not None and self.n_chars >= self.max_chars:
                return
            text = next(it, None)
            if text is None:
                return
            if self.max_chars is not None:
                text = text[: self.max_chars - self.n_chars]
            self.n_examples += 1
            self.n_chars += len(text)
            yield text


def build_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """Load ``cfg.model_path`` if set, else fit ``cfg.type`` on the first texts within the fit limits.

    bpe/sentencepiece may end up with fewer ids than ``cfg.vocab_size`` on a small corpus
    (sentencepiece may need more: 256 byte pieces + every character); ``tok.vocab_size`` is the truth.
    """
    if cfg.model_path is not None:
        return load_tokenizer_path(cfg.model_path)
    backend = resolve_backend(cfg.type)
    if backend == "hf":
        raise LmlabError("tokenizer.type: hf reads an existing Hugging Face tokenizer and is never fitted; set "
                         "tokenizer.model_path to its folder (or an lmlab tokenizer dir), or pick another type")
    if backend == "byte":
        return ByteTokenizer()
    stream = _FitStream(texts, cfg.fit_max_examples, cfg.fit_max_chars)
    if backend == "char":
        return CharTokenizer.fit(stream)
    if backend == "bpe":
        tok = BPETokenizer.fit(stream, cfg.vocab_size)
        if stream.n_chars == 0:
            raise LmlabError(
                "cannot fit a tokenizer on an empty corpus (the fitting data has no text)"
            )
        return tok
    return SentencePieceTokenizer.fit(stream, cfg.vocab_size, cfg.sp_model_type)


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read a tokenizer saved with ``Tokenizer.save`` (dispatches on ``tokenizer_meta.json``)."""
    d = Path(directory)
    meta_path = d / META_FILE
    if not meta_path.is_file():
        what = "no such directory" if not d.is_dir() else f"no {META_FILE} in it"
        raise LmlabError(
            f"tokenizer not found: {d} ({what}; expected a tokenizer dir saved by lmlab)"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LmlabError(f"{meta_path}: cannot parse: {e}") from None
    backend = meta.get("backend")
    if backend == "byte":
        return ByteTokenizer.load(d, meta)
    if backend == "char":
        return CharTokenizer.load(d, meta)
    if backend == "bpe":
        resolve_backend("bpe")
        return BPETokenizer.load(d, meta)
    if backend == "sentencepiece":
        resolve_backend("sentencepiece")
        return SentencePieceTokenizer.load(d, meta)
    if backend == "hf":
        resolve_backend("hf")
        return HFTokenizer.load(d, meta)
    raise LmlabError(
        f"{meta_path}: unknown tokenizer backend {backend!r} (expected one of {', '.join(BACKENDS)})"
    )


def load_tokenizer_path(path: str | Path) -> Tokenizer:
    """A prebuilt tokenizer: a dir saved by lmlab, an HF model or tokenizer folder
    (``tokenizer.json`` with its ``tokenizer_config.json``: the ``hf`` backend), a SentencePiece
    ``.model`` file, or an HF tokenizers ``.json`` file (byte-level BPE with an ``<|endoftext|>``
    token, e.g. GPT-2's)."""
    p = Path(path)
    if p.is_dir() and not (p / META_FILE).is_file() and (p / "tokenizer.json").is_file():
        resolve_backend("hf")
        config = p / "config.json"
        try:
            hf_config = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
        except json.JSONDecodeError as e:
            raise LmlabError(f"{config}: cannot parse: {e}") from None
        try:
            return HFTokenizer.from_hf_dir(p, hf_config, None)
        except LmlabError:
            raise
        except Exception as e:  # a corrupt tokenizer.json: the library's own message, with the path
            raise LmlabError(f"tokenizer {p / 'tokenizer.json'}: cannot read it: {e}") from None
    if p.is_dir() or not p.exists():
        return load_tokenizer(p)
    try:
        if p.suffix == ".model":
            resolve_backend("sentencepiece")
            tok = SentencePieceTokenizer(p.read_bytes())
            if tok.eos_id < 0:
                raise LmlabError("the SentencePiece model has no EOS piece (lmlab separates documents with it)")
            return tok
        if p.suffix == ".json":
            resolve_backend("bpe")
            # deferred: an optional package; resolve_backend above says how to install it
            from tokenizers import Tokenizer as RawTokenizer

            return BPETokenizer(RawTokenizer.from_file(str(p)))
    except LmlabError as e:
        raise LmlabError(f"tokenizer {p}: {e}") from None
    except Exception as e:  # a corrupt file: the library's own message, with the path
        raise LmlabError(f"tokenizer {p}: cannot read it: {e}") from None
    raise LmlabError(f"tokenizer {p}: expected an lmlab tokenizer dir, a SentencePiece .model or an HF "
                     "tokenizers .json file")

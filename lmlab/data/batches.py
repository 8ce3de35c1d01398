"""Token arrays from documents, and the validation windows cut from them.

Training windows are drawn by :class:`lmlab.data.mixing.MixtureSampler`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmlab.errors import LmlabError


def encode_documents(texts: Sequence[str], tokenizer, chunk: int = 256) -> np.ndarray:
    """Concatenate the token ids of ``texts``, each followed by the EOS id (the separator)."""
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    parts: list[np.ndarray] = []
    eos = np.array([tokenizer.eos_id], dtype=dtype)
    for i in range(0, len(texts), chunk):
        for ids in tokenizer.encode_batch(list(texts[i : i + chunk])):
            parts.append(np.asarray(ids, dtype=dtype))
            parts.append(eos)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def eval_windows(tokens: np.ndarray, block_size: int, max_windows: int) -> list[np.ndarray]:
    """Up to ``max_windows`` windows of ``block_size`` tokens spread evenly over ``tokens``.

    Consecutive windows overlap by one token (stride ``block_size - 1``) so that, scored with
    ``log_probs``, all of them together predict every token after the first exactly once.
    A split shorter than a window gives one shorter window.
    """
    if len(tokens) < 2:
        raise LmlabError("the validation split has fewer than 2 tokens; add text or raise data.val_fraction")
    stride = block_size - 1
    n = max(1, (len(tokens) - 1) // stride)
    length = min(block_size, len(tokens))
    picks = np.unique(np.linspace(0, n - 1, num=min(n, max_windows)).round().astype(np.int64))
    return [tokens[s * stride : s * stride + length] for s in picks]

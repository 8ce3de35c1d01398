"""Token streams and batches: documents -> one token array -> shuffled fixed-length windows.

The data position is the optimizer step alone: epoch and offset follow from it, and each
epoch's order is a permutation seeded by (seed, epoch). So resuming at step s reproduces the
exact batches an uninterrupted run would have seen, and the global batch of a step is the same
whatever the split into processes and accumulation micro-batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

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


class WindowSampler:
    """Non-overlapping windows of ``block_size + 1`` tokens, reshuffled every epoch.

    A step draws ``global_batch = micro_batch * accum * world`` windows; micro-batch ``m`` of rank
    ``r`` takes slice ``m * world + r`` of them, so 1 process x 2 micro-batches and 2 processes
    x 1 micro-batch train on the same sequences.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, micro_batch: int, accum: int,
                 world: int = 1, rank: int = 0, seed: int = 0):
        self.tokens, self.block_size = tokens, block_size
        self.micro_batch, self.accum, self.world, self.rank, self.seed = micro_batch, accum, world, rank, seed
        self.global_batch = micro_batch * accum * world
        self.n_windows = max(0, (len(tokens) - 1) // block_size)
        self.steps_per_epoch = self.n_windows // self.global_batch
        if self.steps_per_epoch == 0:
            raise LmlabError(
                f"the training split has {len(tokens)} tokens, fewer than one global batch "
                f"({self.global_batch} sequences of {block_size + 1} tokens); lower train.batch_size "
                "or model.block_size, or add text to data.sources"
            )
        self._epoch, self._perm = -1, None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            g = np.random.default_rng([self.seed, epoch])
            self._epoch, self._perm = epoch, g.permutation(self.n_windows)
        return self._perm

    def micro_batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's ``accum`` micro-batches (x, y) of (micro_batch, block_size) for ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        idx = self._order(epoch)[i * self.global_batch : (i + 1) * self.global_batch]
        mb = self.micro_batch
        for m in range(self.accum):
            k = m * self.world + self.rank
            yield windows(self.tokens, idx[k * mb : (k + 1) * mb] * self.block_size, self.block_size)


def windows(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets (len(starts), block_size) cut from ``tokens`` at ``starts``."""
    rows = np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


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

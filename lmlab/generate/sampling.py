"""Pure functions on next-token logits (B, V): penalties, n-gram blocking, filtering, sampling."""

from __future__ import annotations

import torch


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL-style penalty on every token in ``history`` (B, L): divide positive logits, multiply negative."""
    if penalty == 1.0 or history.numel() == 0:
        return logits
    seen = logits.gather(1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, history, seen)


def banned_ngram_tokens(history: list[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in ``history``."""
    if n <= 0 or len(history) < n:
        return []
    prefix = tuple(history[len(history) - n + 1 :]) if n > 1 else ()
    return [
        history[i + n - 1]
        for i in range(len(history) - n + 1)
        if tuple(history[i : i + n - 1]) == prefix
    ]


def block_repeated_ngrams(logits: torch.Tensor, histories: list[list[int]], n: int) -> torch.Tensor:
    """Set to -inf the logits of tokens that would repeat an n-gram of each row's history."""
    if n <= 0:
        return logits
    logits = logits.clone()
    for row, hist in enumerate(histories):
        banned = banned_ngram_tokens(hist, n)
        if banned:
            logits[row, banned] = float("-inf")
    return logits


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value kept), -inf elsewhere."""
    if k is None or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of top tokens whose probability mass reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Drop a token when the mass of the tokens strictly before it already reaches p.
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row (B,) from logits (B, V); temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

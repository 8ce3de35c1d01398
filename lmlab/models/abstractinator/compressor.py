"""SegmentCompressor: a short sliding-window transformer, then learned-query attention that pools
each variable-length patch into one fixed-size vector (seed 003's key to stacking levels)."""

from __future__ import annotations

import torch
from torch import nn

from lmlab.models.abstractinator.attention import Attention, Stack, causal_mask


class LearnedQueryAttention(nn.Module):
    """Pools positions (B, T, D) into one vector per segment (B, K, D).

    Each segment k asks ``n_queries`` learned queries; query i of segment k attends only to
    positions t with ``seg[b, t] == k``, so a segment's vector never depends on anything outside
    it. With a bank (n_queries > 1) the query outputs are concatenated and mixed back to D.
    """

    def __init__(self, d_model: int, n_head: int, n_queries: int, form: str, backend: str, kv_rank: int):
        super().__init__()
        self.n_queries = n_queries
        self.queries = nn.Parameter(torch.randn(n_queries, d_model) * 0.02)
        self.attn = Attention(d_model, n_head, form, backend, kv_rank)
        self.mix = nn.Linear(n_queries * d_model, d_model, bias=False) if n_queries > 1 else None

    def forward(self, h: torch.Tensor, seg: torch.Tensor, K: int) -> torch.Tensor:
        """h (B, T, D), seg (B, T) segment index per position (>= K: belongs to none) -> (B, K, D)."""
        B, _, D = h.shape
        nq = self.n_queries
        q = self.queries.to(h.dtype).repeat(K, 1).expand(B, K * nq, D)  # query j serves segment j // nq
        out = self.attn(q, lambda b, qi, ki: seg[b, ki] == qi // nq, kv=h)  # (B, K*nq, D)
        if self.mix is None:
            return out
        return self.mix(out.reshape(B, K, nq * D))


class SegmentCompressor(nn.Module):
    """Input vectors (B, T, D) and their segment ids -> one pooled vector per segment (B, K, D).

    The window attention is causal, so a segment's vector depends only on symbols up to its
    last one: codes never look ahead of the patch they describe.
    """

    def __init__(self, d_model: int, n_head: int, layers: int, window: int, n_queries: int, form: str,
                 backend: str, kv_rank: int, max_len: int):
        super().__init__()
        self.window = window
        self.trunk = Stack(layers, d_model, n_head, form, backend, kv_rank, max_len=max_len)
        self.pool = LearnedQueryAttention(d_model, n_head, n_queries, form, backend, kv_rank)

    def forward(self, x: torch.Tensor, seg: torch.Tensor, K: int) -> torch.Tensor:
        h = self.trunk(x, causal_mask(self.window))  # (B, T, D)
        return self.pool(h, seg, K)

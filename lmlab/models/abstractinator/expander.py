"""DecoderOnlyExpanderRVQ: reconstructs a level's input from the codes above it.

A causal transformer over the lower sequence (bytes, or the codes of the level below) with
cross-attention to the codes above. With ``expander_context: patch`` (the default) its
self-attention stays inside the patch being decoded, so the codes must carry everything from
earlier patches (an expander that sees the whole past learns to ignore its codes, and the
quantiser collapses onto one code); ``full`` lets it see every earlier symbol. Position t is told which code covers the symbol it predicts
(that code's vector is added to its input) and may attend to every code up to it, never past
it. Training teacher-forces the lower sequence; generation runs the same network one symbol
at a time. Scores live in the small code space: bytes through a ``d_lo_d_c``-wide factorised
embedding and head, codes stage by stage through a :class:`CodeHead` (residual VQ).

Causal decoding (``decoding: causal``) uses the same network with another memory: the states
of the level above (width ``d_mem`` = D) instead of code vectors, and at a code level it makes
states for the level below rather than scoring codes (``head=False``), reading the codes below
as their straight-through vectors (``low_vec``).
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.models.abstractinator.attention import Stack, causal_mask
from lmlab.models.abstractinator.vq import CodeHead, ResidualVQ


class DecoderOnlyExpanderRVQ(nn.Module):
    """Bytes (``vocab``): position t predicts x_{t+1} from x_<=t. Codes (``below``): a learned
    start vector shifts the sequence, so position t predicts code t (the first code too)."""

    def __init__(self, d_model: int, n_head: int, layers: int, form: str, backend: str, kv_rank: int,
                 max_len: int, d_mem: int, vocab: int | None = None, d_lo: int = 64,
                 below: ResidualVQ | None = None, context: str = "patch", head: bool = True,
                 d_low: int | None = None):
        super().__init__()
        self.patch_local = context == "patch"
        if below is None:
            self.low_embed = nn.Embedding(vocab, d_lo)  # (V, d_lo): the factorised byte space
            self.low_up = nn.Linear(d_lo, d_model, bias=False)
            self.low_down = nn.Linear(d_model, d_lo, bias=False)
        else:
            self.below = [below]
            self.low_up = nn.Linear(d_low or below.d_c, d_model, bias=False)  # d_low: pooled vectors in (causal)
            self.bos = nn.Parameter(torch.randn(d_model) * 0.02)
            if head:
                self.head = CodeHead(d_model, below)
        self.mem_up = nn.Linear(d_mem, d_model, bias=False)  # (d_c or D) -> D
        self.trunk = Stack(layers, d_model, n_head, form, backend, kv_rank, cross=True, max_len=max_len)

    @property
    def byte_level(self) -> bool:
        return not hasattr(self, "below")

    def hidden(self, low: torch.Tensor, tseg: torch.Tensor, codes_vec: torch.Tensor,
               code_valid: torch.Tensor, low_vec: torch.Tensor | None = None) -> torch.Tensor:
        """low (B, T) bytes or (B, T, S) codes; tseg (B, T) the code index of each position's
        target; codes_vec (B, K, d_mem) the codes above (or their states), code_valid (B, K) ->
        hidden (B, T, D). ``low_vec`` (B, T, d_c or d_low): a code level's input vectors in
        place of the codebook's (causal decoding: straight-through, or the pooled vectors)."""
        if self.byte_level:
            x = self.low_up(self.low_embed(low))
        else:
            vec = self.below[0].embed(low) if low_vec is None else low_vec
            prev = self.low_up(vec[:, :-1].to(self.low_up.weight.dtype))
            x = torch.cat([self.bos.expand(low.size(0), 1, -1), prev], dim=1)
        mem = self.mem_up(codes_vec.to(self.mem_up.weight.dtype))  # (B, K, D)
        cur = tseg.clamp(0, mem.size(1) - 1)
        x = x + mem.gather(1, cur[..., None].expand(-1, -1, mem.size(-1)))  # the covering code
        if self.patch_local:
            # Position t sees only the symbols of the patch it is decoding (and itself): whatever
            # it needs from earlier patches must come through the codes. own[t] is the patch of
            # position t's input symbol (bytes: x_t; codes: code t-1 after the start vector).
            first = 0 if self.byte_level else -1
            own = torch.cat([torch.full_like(tseg[:, :1], first), tseg[:, :-1]], dim=1)
            mask = lambda b, q, k: (k <= q) & ((own[b, k] == tseg[b, q]) | (k == q))  # noqa: E731
        else:
            mask = causal_mask()
        return self.trunk(x, mask, mem, lambda b, q, k: (k <= tseg[b, q]) & code_valid[b, k])

    def byte_logits(self, h: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, D) -> byte logits (B, T, V) through the d_lo space (tied embedding)."""
        return self.low_down(h) @ self.low_embed.weight.T

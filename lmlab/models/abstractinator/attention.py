"""Pluggable attention for the Abstractinator: form ``regular | mla`` x backend ``sdpa | flex``.

A mask is one function ``allowed(b, q, k) -> bool`` of index tensors. The SDPA backend evaluates
it on broadcast aranges into a dense (B, 1, Tq, Tk) mask; the flex backend hands the same
function to ``create_block_mask`` as its ``mask_mod``. So both backends attend to exactly the
same keys, and a test compares them. A query row with no allowed key returns zeros (callers
mask such rows out: padded segments, empty code slots).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import LmlabError
from lmlab.models.common.layers import MLP, RMSNorm
from lmlab.models.common.positions import apply_rope, rope_cache

MaskFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def causal_mask(window: int | None = None) -> MaskFn:
    """Key k visible from query q when k <= q (and q - k < window, a sliding window)."""
    if window is None:
        return lambda b, q, k: k <= q
    return lambda b, q, k: (k <= q) & (q - k < window)


def dense_mask(fn: MaskFn, B: int, Tq: int, Tk: int, device) -> torch.Tensor:
    """``fn`` evaluated on every (b, q, k): (B, 1, Tq, Tk) bool."""
    b = torch.arange(B, device=device)[:, None, None]
    q = torch.arange(Tq, device=device)[None, :, None]
    k = torch.arange(Tk, device=device)[None, None, :]
    return torch.broadcast_to(fn(b, q, k), (B, Tq, Tk))[:, None]


def _flex(q, k, v, fn: MaskFn) -> torch.Tensor:
    """FlexAttention with ``fn`` as the block mask; a clear error where it cannot run."""
    try:
        # deferred: FlexAttention is missing from older PyTorch builds; only attn_backend flex needs it
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        raise LmlabError(f"attn_backend flex: this PyTorch ({torch.__version__}) has no FlexAttention; "
                         "set model.attn_backend: sdpa") from None
    if q.device.type == "cpu" and torch.is_grad_enabled() and q.requires_grad:
        raise LmlabError(f"attn_backend flex: FlexAttention has no backward on CPU in torch {torch.__version__}; "
                         "train with model.attn_backend: sdpa (same masks, same numbers) or on CUDA")
    B, _, Tq, _ = q.shape
    block = create_block_mask(lambda b, h, qi, ki: fn(b, qi, ki), B, None, Tq, k.size(2), device=q.device)
    return flex_attention(q, k, v, block_mask=block)


class Attention(nn.Module):
    """Multi-head attention of ``x`` (B, Tq, D) over ``kv`` (B, Tk, D) (``x`` itself if None).

    ``mla``: keys and values are up-projections of one shared latent of width ``kv_rank`` (the
    only per-key tensor an inference cache would need: kv_rank instead of 2 x D numbers).
    ``rope`` rotates queries and keys by position (self-attention only).
    """

    def __init__(self, d_model: int, n_head: int, form: str, backend: str, kv_rank: int = 32,
                 rope: bool = False, max_len: int = 4096):
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not divisible by n_head {n_head}")
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.form, self.backend = form, backend
        self.q = nn.Linear(d_model, d_model, bias=False)
        if form == "regular":
            self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        elif form == "mla":
            self.kv_down = nn.Linear(d_model, kv_rank, bias=False)
            self.kv_norm = RMSNorm(kv_rank)
            self.kv_up = nn.Linear(kv_rank, 2 * d_model, bias=False)
        else:
            raise ValueError(f"unknown attention form {form!r}; expected regular or mla")
        if backend not in ("sdpa", "flex"):
            raise ValueError(f"unknown attention backend {backend!r}; expected sdpa or flex")
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.rope = rope
        if rope:
            self.register_buffer("rope_table", rope_cache(self.head_dim, max_len), persistent=False)

    def forward(self, x: torch.Tensor, mask: MaskFn, kv: torch.Tensor | None = None) -> torch.Tensor:
        B, Tq, D = x.shape
        src = x if kv is None else kv
        Tk = src.size(1)
        kv_out = self.kv(src) if self.form == "regular" else self.kv_up(self.kv_norm(self.kv_down(src)))
        q = self.q(x).view(B, Tq, self.n_head, self.head_dim)
        k, v = kv_out.view(B, Tk, 2, self.n_head, self.head_dim).unbind(2)
        if self.rope:
            q = apply_rope(q, self.rope_table[:Tq, None])
            k = apply_rope(k, self.rope_table[:Tk, None])
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if self.backend == "flex":
            y = _flex(q, k, v, mask)
        else:
            allowed = dense_mask(mask, B, Tq, Tk, x.device)
            empty = ~allowed.any(-1, keepdim=True)  # (B, 1, Tq, 1): rows with no key
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | empty)
            y = y.masked_fill(empty, 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, Tq, D))


class Block(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to a memory, MLP."""

    def __init__(self, d_model: int, n_head: int, form: str, backend: str, kv_rank: int,
                 cross: bool = False, max_len: int = 4096):
        super().__init__()
        self.norm1 = RMSNorm(d_model)
        self.attn = Attention(d_model, n_head, form, backend, kv_rank, rope=True, max_len=max_len)
        self.cross = None
        if cross:
            self.norm_c = RMSNorm(d_model)
            self.cross = Attention(d_model, n_head, form, backend, kv_rank)
        self.norm2 = RMSNorm(d_model)
        self.mlp = MLP(d_model, 4 * d_model, "gelu", bias=False, dropout=0.0)

    def forward(self, x: torch.Tensor, mask: MaskFn, memory: torch.Tensor | None = None,
                cross_mask: MaskFn | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        if self.cross is not None:
            x = x + self.cross(self.norm_c(x), cross_mask, memory)
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    """``n`` blocks and a final norm: the trunk every component of a level is built from."""

    def __init__(self, n: int, d_model: int, n_head: int, form: str, backend: str, kv_rank: int,
                 cross: bool = False, max_len: int = 4096):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d_model, n_head, form, backend, kv_rank, cross, max_len)
                                    for _ in range(n))
        self.norm = RMSNorm(d_model)

    def forward(self, x: torch.Tensor, mask: MaskFn, memory: torch.Tensor | None = None,
                cross_mask: MaskFn | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask, memory, cross_mask)
        return self.norm(x)

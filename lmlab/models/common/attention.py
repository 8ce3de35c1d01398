"""Causal multi-head self-attention over SDPA, with RoPE / ALiBi and an optional KV cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.common.positions import alibi_bias, alibi_slopes, apply_rope


class KVCache:
    """Preallocated keys and values of one layer: (B, n_kv_head, max_len, hs) each (with
    grouped-query attention the cache holds the key/value heads only, n_head / n_kv_head times
    smaller than the query heads would need)."""

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, n_head, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)


class CausalSelfAttention(nn.Module):
    """``n_kv_head`` < ``n_head`` is grouped-query attention (Ainslie et al. 2023): each key/value
    head serves n_head / n_kv_head query heads. ``qkv`` holds the query rows, then the key rows,
    then the value rows ((n_head + 2 n_kv_head) x hs of them), which with n_kv_head = n_head is
    the (3, nh, hs) layout of every checkpoint saved before GQA existed."""

    def __init__(self, d_model: int, n_head: int, bias: bool, dropout: float, pos_encoding: str,
                 n_kv_head: int | None = None):
        super().__init__()
        assert d_model % n_head == 0
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.n_kv_head = n_kv_head or n_head
        assert n_head % self.n_kv_head == 0
        self.qkv = nn.Linear(d_model, (n_head + 2 * self.n_kv_head) * self.head_dim, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.rope = pos_encoding == "rope"
        self.alibi = pos_encoding == "alibi"
        if self.alibi:
            self.register_buffer("slopes", alibi_slopes(n_head), persistent=False)

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
    ) -> torch.Tensor:
        """x (B, T, C) at absolute positions pos..pos+T-1; ``cache`` holds positions < pos.

        ``rope`` is the rotary (cos, sin) table (max_len, hs/2, 2) when positions are rotary.
        """
        B, T, C = x.shape
        if self.n_kv_head == self.n_head:
            qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim)
            # split, not slicing: its backward concatenates the two gradients, where a slice's
            # zero-fills the whole (B, T, 3, nh, hs) buffer and copies into it (~2% of a CPU step)
            qk, v = qkv.split([2, 1], dim=2)
            v = v.squeeze(2)
            if self.rope:  # q and k in one call: table (T, 1, 1, hs/2, 2) against qk (B, T, 2, nh, hs)
                qk = apply_rope(qk, rope[pos : pos + T, None, None])
            q, k = qk.transpose(1, 3).unbind(2)  # (B, nh, T, hs) each
            v = v.transpose(1, 2)
        else:
            hs, kv = self.head_dim, self.n_kv_head
            q, k, v = self.qkv(x).split([self.n_head * hs, kv * hs, kv * hs], dim=-1)
            q, k, v = q.view(B, T, self.n_head, hs), k.view(B, T, kv, hs), v.view(B, T, kv, hs)
            if self.rope:  # table (T, 1, hs/2, 2) against (B, T, heads, hs)
                q, k = apply_rope(q, rope[pos : pos + T, None]), apply_rope(k, rope[pos : pos + T, None])
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, heads, T, hs)
        # SDPA repeats each key/value head over its query group (the keyword is torch >= 2.5's: only
        # passed with GQA, so multi-head attention runs on torch 2.4 as before)
        gqa = {"enable_gqa": True} if self.n_kv_head != self.n_head else {}
        if cache is not None:
            cache.k[:, :, pos : pos + T] = k
            cache.v[:, :, pos : pos + T] = v
            k, v = cache.k[:, :, : pos + T], cache.v[:, :, : pos + T]  # (B, n_kv_head, pos+T, hs)
        dropout_p = self.dropout if self.training else 0.0
        if self.alibi:
            q_pos = torch.arange(pos, pos + T, device=x.device)
            k_pos = torch.arange(0, pos + T, device=x.device)
            mask = alibi_bias(self.slopes, q_pos, k_pos).to(q.dtype)  # (nh, T, pos+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, **gqa)
        elif pos == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, dropout_p=dropout_p, **gqa)
        elif T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, **gqa)
        else:
            # A chunk after a cached prefix: query i sees keys 0..pos+i (SDPA's is_causal
            # would align the mask top-left, which is wrong when Tq != Tk).
            mask = torch.ones(T, pos + T, dtype=torch.bool, device=x.device).tril(diagonal=pos)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, **gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))

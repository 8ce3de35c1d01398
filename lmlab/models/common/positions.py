"""Positional encodings: rotary (RoPE), ALiBi biases and sinusoidal tables."""

from __future__ import annotations

import math

import torch


def rope_cache(head_dim: int, max_len: int, base: float = 10000.0) -> torch.Tensor:
    """(cos, sin) of the rotary angles pos * theta_j, as a real table (max_len, head_dim // 2, 2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (T, hs/2)
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[..., 2j], x[..., 2j+1]) of x (..., hs) by the angle in table[..., j, :].

    ``table`` (..., hs/2, 2) broadcasts against x's leading dims. Eager code does it as one
    complex multiply (on CPU ~2.5x faster than the real rotate-half form); under torch.compile
    the real form is used, because Inductor fuses it and cannot generate complex code.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., hs/2, 2)
    if torch.compiler.is_compiling():
        x0, x1 = pairs.unbind(-1)
        cos, sin = table.unbind(-1)
        out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    else:
        out = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * torch.view_as_complex(table))
    return out.flatten(-2).type_as(x)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes from the ALiBi paper (geometric; interleaved for non powers of two). (nh,)"""

    def pow2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_head).is_integer():
        return torch.tensor(pow2(n_head))
    closest = 2 ** math.floor(math.log2(n_head))
    extra = pow2(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(pow2(closest) + extra)


def alibi_bias(slopes: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
    """Additive attention bias (nh, Tq, Tk): -slope * distance, -inf for future keys."""
    dist = (q_pos[:, None] - k_pos[None, :]).float()  # (Tq, Tk)
    bias = -slopes[:, None, None] * dist
    return bias.masked_fill(dist < 0, float("-inf"))


def sinusoidal_table(max_len: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos position table of "Attention is all you need". (max_len, dim)"""
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(max_len, dim)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return table

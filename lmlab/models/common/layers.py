"""Norms and MLPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def build_norm(kind: str, dim: int, eps: float = 1e-5, bias: bool = False) -> nn.Module:
    """``rmsnorm`` or ``layernorm`` over the last dimension."""
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    raise ValueError(f"unknown norm {kind!r}; expected rmsnorm or layernorm")


class MLP(nn.Module):
    """Position-wise feed-forward: ``gelu`` / ``gelu_tanh`` (d -> d_ff -> d) or ``swiglu``."""

    def __init__(self, d_model: int, d_ff: int, kind: str, bias: bool, dropout: float):
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=bias)  # gate and up in one matmul
        elif kind in ("gelu", "gelu_tanh"):
            self.up = nn.Linear(d_model, d_ff, bias=bias)
        else:
            raise ValueError(f"unknown mlp {kind!r}; expected gelu, gelu_tanh or swiglu")
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            gate, up = self.gate_up(x).chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = F.gelu(self.up(x), approximate="tanh" if self.kind == "gelu_tanh" else "none")
        return self.dropout(self.down(h))

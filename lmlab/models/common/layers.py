"""Norms and MLPs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _RMSNormFn(torch.autograd.Function):
    """y = x * r * w with r = 1/sqrt(mean(x^2) + eps), and a hand-written backward.

    On CPU, nn.RMSNorm runs as separate elementwise kernels whose autograd graph saves several
    intermediates; this saves only x and r and computes the input gradient in one expression:
    dx = r * (g*w - x * r^2 * mean(g*w*x)). About 1.5x faster forward+backward at our shapes.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, r)
        return x * r * weight

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, weight, r = ctx.saved_tensors
        gw = g * weight
        xhat = x * r
        dx = r * (gw - xhat * (gw * xhat).mean(-1, keepdim=True))
        dw = (g * xhat).reshape(-1, x.size(-1)).sum(0)
        return dx, dw, None


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (no bias, no mean subtraction)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:  # fused kernel there
            return F.rms_norm(x, (x.size(-1),), self.weight, self.eps)
        w = self.weight.to(x.dtype)
        if not torch.is_grad_enabled():  # decoding: skip the autograd.Function bookkeeping
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w
        return _RMSNormFn.apply(x, w, self.eps)


def build_norm(kind: str, dim: int, eps: float = 1e-5, bias: bool = False) -> nn.Module:
    """``rmsnorm`` or ``layernorm`` over the last dimension."""
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
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


def init_gpt2(module: nn.Module) -> None:
    """GPT-2's init, for ``model.apply``: N(0, 0.02) linear and embedding weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)

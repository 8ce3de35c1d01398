"""WaveResNet's temporal branch: depthwise causal Conv1d -> activation -> pointwise projection.

Causal by left padding: output t sees inputs t - j * dilation, j = 0..k-1, and zeros before the
sequence start. In decoding, ``ConvCache`` keeps the last P = (k - 1) * dilation inputs of the
branch (the normed residual stream), so a step over new positions sees exactly what the full
forward sees: the cached inputs where the full forward has earlier positions, zeros where it has
padding (a fresh cache is zeros).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.psann.config import SineParams
from lmlab.models.psann.sine import SineActivation


class ConvCache:
    """The last P = (k - 1) * dilation conv inputs of one layer: ``hist`` (B, C, P)."""

    def __init__(self, batch: int, channels: int, history: int, device: torch.device | str,
                 dtype: torch.dtype):
        self.hist = torch.zeros(batch, channels, history, device=device, dtype=dtype)


class TemporalConv(nn.Module):
    """x (B, T, C) -> pointwise(act(depthwise_causal_conv(x))) (B, T, C)."""

    def __init__(self, d_model: int, kernel_size: int, dilation: int, activation: str,
                 sine_params: SineParams, bias: bool, dropout: float):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.history = (kernel_size - 1) * dilation  # P
        # groups = channels: one length-k filter per channel; padding is done by hand (causal).
        self.depthwise = nn.Conv1d(d_model, d_model, kernel_size, dilation=dilation, groups=d_model, bias=bias)
        self.act = SineActivation(d_model, sine_params) if activation == "sine" else nn.GELU()
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        """x (B, T, C) the normed inputs at the next T positions; ``cache`` holds the P before
        them (updated in place), None means the sequence starts here."""
        u = x.transpose(1, 2)  # (B, C, T)
        if cache is None:
            y = self.depthwise(F.pad(u, (self.history, 0)))  # zeros before the start: (B, C, T)
        else:
            u = torch.cat([cache.hist, u], dim=2)  # (B, C, P + T)
            cache.hist = u[:, :, u.size(2) - self.history :].contiguous()  # (B, C, P)
            y = self._taps(u, x.size(1))
        return self.dropout(self.proj(self.act(y.transpose(1, 2))))  # (B, T, C)

    def _taps(self, u: torch.Tensor, T: int) -> torch.Tensor:
        """The depthwise conv as k shifted multiply-adds: u (B, C, P + T) -> (B, C, T). The same
        sum as the Conv1d; for the few positions of a decoding step it skips the conv's setup."""
        w = self.depthwise.weight[:, 0, :, None]  # (C, k, 1)
        d = self.dilation
        y = u[:, :, :T] * w[:, 0]
        for j in range(1, self.kernel_size):
            y = torch.addcmul(y, u[:, :, j * d : j * d + T], w[:, j])
        return y if self.depthwise.bias is None else y + self.depthwise.bias[:, None]

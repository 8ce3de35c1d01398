"""The parametric sine activation and the sine MLP (docs/psann.md).

``y = amplitude * sin(frequency * x) * exp(-damping * |x|)`` with one amplitude, frequency and
damping per channel (the last dimension of x). Damping stays non-negative: it is stored as a raw
value and read as ``softplus(raw)``; the raw value starts at ``softplus^-1(damp_init)``, so the
damping starts at ``damp_init`` (to float32 rounding: the inverse is taken in float64).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from lmlab.models.psann.config import SineParams


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """The raw value whose softplus is ``y`` (> 0): ``log(expm1(y))``, taken in float64."""
    y64 = y.double()
    # For large y, log(expm1(y)) = y + log(1 - exp(-y)) avoids overflow of expm1.
    return (y64 + torch.log(-torch.expm1(-y64))).to(y.dtype)


def damped_sine(x: torch.Tensor, amplitude: torch.Tensor, frequency: torch.Tensor,
                damping: torch.Tensor) -> torch.Tensor:
    """The formula itself, for x (..., C) and per-channel (C,) parameters (plain autograd)."""
    return amplitude * torch.sin(frequency * x) * torch.exp(-damping * x.abs())


class _DampedSineFn(torch.autograd.Function):
    """``damped_sine`` with a hand-written backward that saves only x and the (C,) parameters.

    Plain autograd saves several (..., C) intermediates per call (f x, sin, |x|, the exponential
    and products); this saves x alone (as GELU does), recomputes sin, cos and exp in backward and
    works in place (on CPU also ~20% faster than plain autograd at the small shape). With
    s = sin(f x), c = cos(f x), e = exp(-d |x|) and upstream g, per-channel factors pulled out
    of the sums over positions:
    dx = (a f) g e c - (a d) sign(x) g e s,  da = sum g e s,  df = a sum g e c x,
    dd = -a sum g e s |x|.
    """

    @staticmethod
    def forward(ctx, x, amplitude, frequency, damping):
        ctx.save_for_backward(x, amplitude, frequency, damping)
        y = torch.mul(x, frequency).sin_()  # (..., C)
        return y.mul_(x.abs().mul_(-damping).exp_()).mul_(amplitude)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, a, f, d = ctx.saved_tensors
        need_x, need_a, need_f, need_d = ctx.needs_input_grad
        dims = tuple(range(x.dim() - 1))  # every dimension but the channels

        def total(t: torch.Tensor) -> torch.Tensor:
            return t.sum(dims, dtype=torch.float32).to(a.dtype)  # (C,)

        fx = x * f
        gs = torch.sin(fx)  # becomes g e s
        gc = fx.cos_()  # becomes g e c
        ax = x.abs()
        ge = torch.mul(ax, -d).exp_().mul_(g)  # g e
        gs.mul_(ge)
        gc.mul_(ge)
        dx = da = df = dd = None
        if need_a:
            da = total(gs)
        if need_f:
            df = total(torch.mul(gc, x, out=ge)).mul_(a)
        if need_d:
            dd = total(ax.mul_(gs)).mul_(-a)
        if need_x:
            dx = gc.mul_(a * f).sub_(torch.sign(x, out=ax).mul_(gs).mul_(a * d))
        return dx, da, df, dd


def _init_values(dim: int, value: float, span: tuple[float, float] | None) -> torch.Tensor:
    """(dim,) float32: the constant ``value``, or uniform on [lo, hi] per channel (global RNG)."""
    if span is None:
        return torch.full((dim,), float(value))
    lo, hi = span
    return torch.empty(dim).uniform_(lo, hi)


class SineActivation(nn.Module):
    """``amplitude * sin(frequency * x) * exp(-softplus(damping_raw) * |x|)`` per channel.

    Trainable: ``amplitude``, ``frequency``, ``damping_raw`` are (dim,) parameters. Frozen
    (``trainable=False``): the same names as persistent buffers, so they are saved and loaded
    but never receive a gradient, and no optimizer sees them.
    """

    def __init__(self, dim: int, params: SineParams | None = None):
        super().__init__()
        p = params or SineParams()
        self.dim = dim
        self.trainable = p.trainable
        damping = _init_values(dim, p.damp_init, p.damp_range)
        values = {
            "amplitude": _init_values(dim, p.amp_init, p.amp_range),
            "frequency": _init_values(dim, p.freq_init, p.freq_range),
            "damping_raw": inverse_softplus(damping),
        }
        for name, value in values.items():
            if p.trainable:
                self.register_parameter(name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        # Where training started, for the drift diagnostics (not saved: a model built again with
        # the run's seed draws the same init, ranges included).
        self.register_buffer("amplitude_init", values["amplitude"].clone(), persistent=False)
        self.register_buffer("frequency_init", values["frequency"].clone(), persistent=False)
        self.register_buffer("damping_init", F.softplus(values["damping_raw"]), persistent=False)

    @property
    def damping(self) -> torch.Tensor:
        """softplus(damping_raw) >= 0. (dim,)"""
        return F.softplus(self.damping_raw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., dim) -> (..., dim)."""
        a, f, d = (t.to(x.dtype) for t in (self.amplitude, self.frequency, self.damping))
        if torch.compiler.is_compiling() or not torch.is_grad_enabled():
            return damped_sine(x, a, f, d)  # Inductor fuses the plain form; no-grad needs no saves
        return _DampedSineFn.apply(x, a, f, d)

    @torch.no_grad()
    def drift(self) -> dict[str, torch.Tensor]:
        """Per channel (dim,): the current amplitude, frequency, damping and |change| since init."""
        out = {}
        for key in ("amplitude", "frequency", "damping"):
            now = _whole(self.damping if key == "damping" else getattr(self, key)).float()
            out[key], out[f"d_{key}"] = now, (now - _whole(getattr(self, f"{key}_init")).float()).abs()
        return out

    def extra_repr(self) -> str:
        return f"dim={self.dim}, trainable={self.trainable}"


def _whole(t: torch.Tensor) -> torch.Tensor:
    """A sharded (FSDP DTensor) parameter gathered whole; a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


class SineMLP(nn.Module):
    """Position-wise feed-forward with the sine activation: d -> d_ff -> d.

    Same names as the shared MLP's (``up``, ``down``), so the residual-projection init and
    parameter naming match the transformer's.
    """

    def __init__(self, d_model: int, d_ff: int, params: SineParams, bias: bool, dropout: float):
        super().__init__()
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.act = SineActivation(d_ff, params)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) -> (B, T, d)."""
        return self.dropout(self.down(self.act(self.up(x))))  # hidden (B, T, d_ff)


"""Config of PSANN: the transformer's fields plus the sine activation, residual gating and the
WaveResNet temporal convolutions (seeds 002 / 004; docs/psann.md has the table).

Presets give shapes only: the base (``respsann`` | ``waveresnet``) is chosen orthogonally, as
the seed asks ("keep base selection orthogonal to model dimensions").
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmlab.config import LAYER_OVERHEAD, Int, Strict
from lmlab.models.transformer.config import TransformerConfig


class SineParams(Strict):
    """Init and trainability of the per-channel amplitude, frequency and damping.

    A ``*_range`` [lo, hi], when given, replaces the constant ``*_init``: each channel draws
    uniformly from it (torch's global RNG, so ``torch.manual_seed`` fixes it).
    """

    amp_init: float = 1.0
    freq_init: float = 1.0
    damp_init: float = Field(0.01, gt=0)
    """> 0: the damping is softplus(raw), and softplus reaches 0 only at raw = -inf."""
    amp_range: tuple[float, float] | None = None
    freq_range: tuple[float, float] | None = None
    damp_range: tuple[float, float] | None = None
    trainable: bool = True
    """False: the three stay at their init (buffers: saved, never optimized)."""

    @model_validator(mode="after")
    def _check_ranges(self) -> SineParams:
        for name in ("amp_range", "freq_range", "damp_range"):
            span = getattr(self, name)
            if span is not None and span[0] > span[1]:
                raise ValueError(f"{name} = {list(span)}: expected [lo, hi] with lo <= hi")
        if self.damp_range is not None and self.damp_range[0] <= 0:
            raise ValueError(f"damp_range = {list(self.damp_range)}: lo must be > 0 (damping is softplus(raw))")
        return self


class PsannConfig(TransformerConfig):
    family: Literal["psann"] = "psann"  # type: ignore[assignment]
    base: Literal["respsann", "waveresnet"] = "respsann"
    """respsann: sine-MLP transformer blocks; waveresnet: plus depthwise causal conv blocks."""
    activation: Literal["sine", "gelu"] = "sine"
    """The MLP activation; gelu builds the shared transformer MLP (``mlp`` picks its kind)."""
    sine_params: SineParams = Field(default_factory=SineParams)

    # residual gating: x + scale * branch(norm(x)), one learnable (d_model,) scale per branch
    residual_gating: bool = True
    residual_scale_init: float = 1.0

    # waveresnet: depthwise causal temporal convolutions
    conv_mode: Literal["interleave", "replace_mlp"] = "interleave"
    """interleave: attention, MLP, conv per layer; replace_mlp: attention, conv."""
    conv_kernel_size: Int = Field(3, ge=1)
    conv_dilation_growth: Int = Field(2, ge=1)
    """Layer i dilates by growth**i, capped at ``conv_max_dilation`` (1: no growth)."""
    conv_max_dilation: Int = Field(16, ge=1)
    conv_activation: Literal["sine", "gelu"] = "sine"

    aliases: ClassVar[dict[str, dict[str, Any]]] = {"respsann": {"base": "respsann"},
                                                    "waveresnet": {"base": "waveresnet"}}
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Runs a training step on CPU in a few milliseconds: the contract tests use it.
        "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 64},
        # The transformer preset `small`'s shape (configs/psann/*_shakespeare.yaml).
        "small": {"n_layer": 4, "n_head": 4, "d_model": 192, "block_size": 192},
        # The seed's example model: 8 layers, 8 heads, d_model 512, d_mlp 2048, context 1024.
        "medium": {"n_layer": 8, "n_head": 8, "d_model": 512, "block_size": 1024},
    }

    @model_validator(mode="after")
    def _check_psann(self) -> PsannConfig:
        if self.activation == "sine" and self.mlp != "gelu":
            raise ValueError(f"mlp: {self.mlp} applies only with activation: gelu (the sine MLP is "
                             "d -> d_ff -> d); set activation: gelu or leave mlp at gelu")
        return self

    @property
    def has_conv(self) -> bool:
        return self.base == "waveresnet"

    def dilation(self, layer: int) -> int:
        """The conv dilation of layer ``layer`` (0-based): min(growth**layer, max_dilation),
        without the power's big integer (10**12 ** 100,000 would take minutes)."""
        g, cap = self.conv_dilation_growth, self.conv_max_dilation
        if g == 1 or layer == 0:
            return 1
        if layer * math.log2(g) > math.log2(cap) + 1:
            return cap
        return min(g**layer, cap)

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """The transformer's, plus per layer the sine parameters (3 x d_ff), the residual gates
        and, with waveresnet, the conv branch (depthwise k x d, a d x d projection; activations
        its five d-wide tensors and its left padding, (k - 1) x dilation positions per row of
        block_size); replace_mlp drops the MLP."""
        params, acts = super().size_estimate(tokens)
        d, f, n, T = self.d_model, self.ff_dim, self.n_layer, self.block_size
        branches = 1 + (not (self.has_conv and self.conv_mode == "replace_mlp")) + self.has_conv
        per_layer = branches * d + (3 * f if self.activation == "sine" else 0)
        per_token = 0
        if self.has_conv:
            per_layer += d * self.conv_kernel_size + d * d + 9 * d
            per_token = n * 5 * d
            if self.conv_mode == "replace_mlp":
                per_layer -= 2 * d * f + (3 * f if self.activation == "sine" else 0) + d
                per_token -= n * 2 * f
            # every row pads each layer's input by its history, (k - 1) x dilation positions
            per_token += d * self._history() // T
        return params + n * per_layer, acts + 4 * per_token * tokens

    def _history(self) -> int:
        """Every layer's left padding summed, the capped layers counted at once (dilation
        reaches its cap by layer 64 whatever the growth, so a 10**12-layer config is quick)."""
        n, head = self.n_layer, min(self.n_layer, 128)
        dilations = sum(self.dilation(i) for i in range(head)) + (n - head) * self.dilation(head)
        return dilations * (self.conv_kernel_size - 1)

    def overhead_bytes(self) -> int:
        """Per layer the transformer's, x 1.5 with waveresnet's conv branch (~200 KiB measured)."""
        return self.n_layer * LAYER_OVERHEAD * (3 if self.has_conv else 2) // 2

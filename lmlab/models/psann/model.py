"""PSANN: transformers with parametric sine activations (docs/psann.md).

Shapes: B batch, T positions, C = d_model, F = d_ff (the MLP hidden size), P = (k - 1) *
dilation (a conv layer's history). Each block is one layer, pre-norm, every branch gated by a
learnable per-channel residual scale (``residual_gating``):

- ``respsann``:  x += s_attn * attn(norm1(x));  x += s_mlp * mlp(norm2(x))
- ``waveresnet`` interleave: the two above, then x += s_conv * conv(norm_conv(x))
- ``waveresnet`` replace_mlp: attention, then the conv branch in place of the MLP

``mlp`` is the sine MLP (C -> F -> C, ``activation: sine``) or the transformer's (``gelu``);
``conv`` is a depthwise causal Conv1d with the layer's dilation, the sine or GELU activation and
a pointwise projection (conv.py). Everything else (embedding, positions, final norm, tied head,
``log_probs``) is the transformer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lmlab.models.common.attention import CausalSelfAttention, KVCache
from lmlab.models.common.layers import MLP, build_norm
from lmlab.models.psann.config import PsannConfig
from lmlab.models.psann.conv import ConvCache, TemporalConv
from lmlab.models.psann.sine import SineActivation, SineMLP
from lmlab.models.transformer.model import Transformer, TransformerState


@dataclass
class PsannState(TransformerState):
    """The transformer's KV caches and position, plus each layer's conv history (None for a
    layer without a conv branch)."""

    convs: list[ConvCache | None] = field(default_factory=list)


def _scale(dim: int, init: float) -> nn.Parameter:
    return nn.Parameter(torch.full((dim,), float(init)))


class PsannBlock(nn.Module):
    """One layer: attention, then the MLP and/or the temporal conv, each pre-norm and gated."""

    def __init__(self, cfg: PsannConfig, layer: int):
        super().__init__()
        C = cfg.d_model
        self.norm1 = build_norm(cfg.norm, C, cfg.norm_eps, cfg.bias)
        attn_bias = cfg.bias if cfg.attn_bias is None else cfg.attn_bias
        mlp_bias = cfg.bias if cfg.mlp_bias is None else cfg.mlp_bias
        self.attn = CausalSelfAttention(C, cfg.n_head, attn_bias, cfg.dropout, cfg.pos_encoding, cfg.n_kv_head)
        self.mlp: nn.Module | None = None
        self.conv: TemporalConv | None = None
        if not (cfg.has_conv and cfg.conv_mode == "replace_mlp"):
            self.norm2 = build_norm(cfg.norm, C, cfg.norm_eps, cfg.bias)
            if cfg.activation == "sine":
                self.mlp = SineMLP(C, cfg.ff_dim, cfg.sine_params, mlp_bias, cfg.dropout)
            else:
                self.mlp = MLP(C, cfg.ff_dim, cfg.mlp, mlp_bias, cfg.dropout)
        if cfg.has_conv:
            self.norm_conv = build_norm(cfg.norm, C, cfg.norm_eps, cfg.bias)
            self.conv = TemporalConv(C, cfg.conv_kernel_size, cfg.dilation(layer), cfg.conv_activation,
                                     cfg.sine_params, cfg.bias, cfg.dropout)
        # Residual gates: one (C,) scale per branch (1-d, so the optimizer does not decay them).
        on, init = cfg.residual_gating, cfg.residual_scale_init
        self.attn_scale = _scale(C, init) if on else None
        self.mlp_scale = _scale(C, init) if on and self.mlp is not None else None
        self.conv_scale = _scale(C, init) if on and self.conv is not None else None

    @staticmethod
    def _add(x: torch.Tensor, scale: torch.Tensor | None, branch: torch.Tensor) -> torch.Tensor:
        """x + scale * branch (one fused op), or x + branch without gating."""
        return x + branch if scale is None else torch.addcmul(x, branch, scale.to(branch.dtype))

    def forward(
        self,
        x: torch.Tensor,
        rope: torch.Tensor | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
        conv_cache: ConvCache | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) at positions pos..pos+T-1 -> (B, T, C); the caches hold positions < pos."""
        x = self._add(x, self.attn_scale, self.attn(self.norm1(x), rope, cache, pos))
        if self.mlp is not None:
            x = self._add(x, self.mlp_scale, self.mlp(self.norm2(x)))
        if self.conv is not None:
            x = self._add(x, self.conv_scale, self.conv(self.norm_conv(x), conv_cache))
        return x


class Psann(Transformer):
    """The transformer with PSANN blocks; ``respsann`` or ``waveresnet`` by ``cfg.base``."""

    supports_grad_checkpointing = True

    def __init__(self, cfg: PsannConfig):
        super().__init__(cfg)  # the transformer's embedding, positions, final norm, head; our blocks
        # GPT-2's residual-projection scaling, by the number of residual branches in the stack.
        branches = cfg.n_layer * sum(x is not None for x in (self.blocks[0].attn, self.blocks[0].mlp,
                                                               self.blocks[0].conv))
        for name, p in self.blocks.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight", "conv.proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(branches))

    def _make_block(self, cfg: PsannConfig, layer: int) -> PsannBlock:
        return PsannBlock(cfg, layer)

    def diagnostics(self, input_ids: torch.Tensor) -> dict | None:
        """Where the sine parameters went: the mean amplitude, frequency and damping over every
        sine channel, and their mean |change| since init (0 when frozen); None without sines."""
        acts = [m for m in self.modules() if isinstance(m, SineActivation)]
        if not acts:
            return None
        per = [a.drift() for a in acts]  # parameters: detached, or float() warns about their grad
        sine = {k: float(torch.cat([d[k] for d in per]).detach().mean()) for k in per[0]}
        return {"sine": sine, "sine_trainable": acts[0].trainable, "sine_channels": sum(a.dim for a in acts)}

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> PsannState:
        """Empty KV caches and zero conv histories (the full forward's left padding)."""
        base = super().init_state(batch_size, device)
        p = self.wte.weight
        convs = [
            ConvCache(batch_size, self.cfg.d_model, block.conv.history, device or p.device, p.dtype)
            if block.conv is not None else None
            for block in self.blocks
        ]
        return PsannState(base.caches, base.pos, convs)

    @torch.no_grad()
    def step_hidden(self, tokens: torch.Tensor, state: PsannState) -> tuple[torch.Tensor, torch.Tensor, PsannState]:
        """Feed tokens (B, T) after the cached positions -> the last one's hidden (B, C) and logits (B, V)."""
        h = self._trunk(tokens, state.caches, state.pos, state.convs)[:, -1]
        state.pos += tokens.size(1)
        return h, self.lm_head(h), state

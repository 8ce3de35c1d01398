"""The Abstractinator's cost, counted from its config: parameters (exactly the model's) and
training FLOPs (exactly what torch's FlopCounterMode counts where the patch count is known).
``AbstractinatorConfig.size_estimate``, ``training_flops`` and ``flops_per_token`` call these;
tests/models/test_abstractinator_flops.py checks them against the built model."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmlab.models.abstractinator.config import AbstractinatorConfig, LevelConfig


# ------------------------------------------------------------------------------ the count
# FLOPs per row, from the shapes level.py, compressor.py, expander.py, entropy.py, top.py and
# vq.py run. A matmul over r vectors, fan-in i, fan-out o costs 2 r i o forward, and 2 r i o again
# in backward for the weight's gradient and for the input's, where autograd computes them
# (``w``, ``x``): a frozen part runs forward only, detached code vectors take no gradient.
# Attention scores are dense, every query against every key whatever the mask (what SDPA with a
# dense mask computes; FlopCounterMode counts flex the same way): 4 Tq Tk D forward, 8 backward
# (no recompute, PaLM's convention, as the transformer family counts them).


def _mm(r: float, i: int, o: int, w: bool, x: bool) -> float:
    return 2.0 * r * i * o * (1 + w + x)


def _attention(c: AbstractinatorConfig, q: float, kv: float, g: bool) -> float:
    """``q`` queries over ``kv`` keys: projections and scores (``g``: the part trains)."""
    D, r = c.d_model, c.mla_kv_rank
    if c.attn_form == "regular":
        keys = _mm(kv, D, 2 * D, g, g)
    else:  # MLA: down to the latent, up to keys and values
        keys = _mm(kv, D, r, g, g) + _mm(kv, r, 2 * D, g, g)
    return 2 * _mm(q, D, D, g, g) + keys + 4.0 * q * kv * D * (1 + 2 * g)


def _stack(c: AbstractinatorConfig, layers: int, n: float, g: bool,
           memory: float | None = None) -> float:
    """``layers`` blocks over ``n`` positions (with cross-attention to ``memory`` codes)."""
    D = c.d_model
    block = _attention(c, n, n, g) + _mm(n, D, 4 * D, g, g) + _mm(n, 4 * D, D, g, g)
    if memory is not None:
        block += _attention(c, n, memory, g)
    return layers * block


def _code_head(c: AbstractinatorConfig, n: float, lv: LevelConfig, g: bool) -> float:
    """A CodeHead scoring ``n`` codes of level ``lv``: per stage a projection to d_c, then
    scores against the (detached) codebook."""
    scores = _mm(n, lv.d_c, lv.codebook_size, False, g)
    return lv.vq_stages * (_mm(n, c.d_model, lv.d_c, g, g) + scores)


def entropy_flops(c: AbstractinatorConfig, i: int, n: float, g: bool) -> float:
    """Level i's entropy model over ``n`` symbols; its heads predict the n - 1 next ones (the
    CE head all n with ``expander_prior``: the last position's logits serve the expander too)."""
    e, D, V = c.levels[i].entropy, c.d_model, c.vocab_size or 260
    below = c.levels[i - 1] if i else None
    f = _stack(c, e.n_layer, n, g)
    if below is not None:  # code vectors (detached) in
        f += _mm(n, below.d_c, D, g, False)
    if e.loss in ("ce", "both"):
        f += _mm(n - (not c.levels[i].expander_prior), D, V, g, g) if below is None else _code_head(c, n - 1, below, g)
        if below is not None and c.levels[i].expander_prior:  # the prior scores the n codes again (the first masked)
            f += _code_head(c, n, below, g)
    if e.loss in ("gaussian", "both"):
        f += _mm(n - 1, D, 2 * (D if below is None else below.d_c), g, g)
    return f


def encoder_flops(c: AbstractinatorConfig, i: int, n: float, k: float, rows: float, g: bool,
                   below_trains: bool) -> float:
    """Level i's compressor over ``n`` symbols into ``k`` pooled vectors, ``down`` and the
    quantiser over ``rows`` real codes (nearest code; in training also the EMA sums and the
    soft assignments' distances (diversity loss, code rate), forward and backward)."""
    lv, D = c.levels[i], c.d_model
    # inp: the pooled vectors (or the code vectors) of the level below
    f = _mm(n, D if lv.compress_input == "pooled" else c.levels[i - 1].d_c, D, g, below_trains) if i else 0.0
    f += _stack(c, lv.compressor_layers, n, g) + _attention(c, k * lv.n_queries, n, g)
    if lv.n_queries > 1:
        f += _mm(k, lv.n_queries * D, D, g, g)
    f += _mm(k, D, lv.d_c, g, g)
    passes = 1 + g * (lv.vq_ema + 2 * (lv.vq_diversity > 0 or lv.vq_rate > 0))  # soft assignments: fwd, bwd
    if not lv.fsq_levels:  # FSQ rounds: no distances
        f += 2.0 * rows * lv.d_c * lv.codebook_size * lv.vq_stages * passes
    if lv.w_patch_recon > 0:  # the patch probe over every symbol; its gradient reaches the code vectors
        below = c.levels[i - 1] if i else None
        out = (c.vocab_size or 260) if below is None else below.vq_stages * below.codebook_size
        f += _mm(n, lv.d_c, lv.d_c, g, g) + _mm(n, lv.d_c, out, g, g)
    return f


def expander_flops(c: AbstractinatorConfig, i: int, n: float, k: float, g: bool) -> float:
    """Level i's expander: ``n`` symbols cross-attending to ``k`` codes (causal decoding: to the
    ``k`` states of the level above, which train), and its scores (causal: none above bytes)."""
    lv, D, V = c.levels[i], c.d_model, c.vocab_size or 260
    causal = c.decoding == "causal"
    f = (_mm(k, D, D, g, True) if causal else _mm(k, lv.d_c, D, g, g)) + _stack(c, lv.expander_layers, n, g, memory=k)
    if i == 0:  # factorised bytes: embedding up, hidden down, tied logits
        return f + _mm(n, lv.d_lo, D, g, g) + _mm(n, D, lv.d_lo, g, g) + _mm(n, lv.d_lo, V, g, g)
    below = c.levels[i - 1]
    if causal:  # the codes below in as their straight-through (or pooled) vectors: the gradient reaches their encoder
        return f + _mm(n - 1, D if c.causal_reads == "pooled" else below.d_c, D, g, True)
    return f + _mm(n - 1, below.d_c, D, g, False) + _code_head(c, n, below, g)


def top_flops(c: AbstractinatorConfig, k: float) -> float:
    """The top model over ``k`` codes (not run when its loss weight is 0)."""
    top, lv, D = c.top_transformer_config, c.levels[-1], c.d_model
    if top is None or c.top_lm_loss_weight == 0:
        return 0.0
    if c.decoding == "causal":  # straight-through code vectors in (their encoder trains through them), no head
        return _mm(k - 1, D if c.causal_reads == "pooled" else lv.d_c, D, True, True) + _stack(c, top.n_layer, k, True)
    f = _mm(k - 1, lv.d_c, D, True, False) + _stack(c, top.n_layer, k, True)
    return f + (_mm(k, D, lv.d_c, True, True) if top.continuous else _code_head(c, k, lv, True))


# ------------------------------------------------------------------------------ parameters


def _attention_params(c: AbstractinatorConfig) -> int:
    D, r = c.d_model, c.mla_kv_rank
    return 2 * D * D + (2 * D * D if c.attn_form == "regular" else D * r + r + 2 * r * D)


def _stack_params(c: AbstractinatorConfig, layers: int, cross: bool = False) -> int:
    D = c.d_model
    block = _attention_params(c) + 8 * D * D + 2 * D
    if cross:
        block += _attention_params(c) + D
    return layers * block + D


def _head_params(c: AbstractinatorConfig, lv: LevelConfig) -> int:
    """A CodeHead over level ``lv``'s codes: projections, scales, per-code biases."""
    return lv.vq_stages * (c.d_model * lv.d_c + 1 + lv.codebook_size)


def _level_params(c: AbstractinatorConfig, i: int) -> int:
    lv, e, D, V = c.levels[i], c.levels[i].entropy, c.d_model, c.vocab_size or 260
    below = c.levels[i - 1] if i else None
    d_sym = D if below is None else below.d_c
    p = _stack_params(c, e.n_layer) + (V * D if below is None else below.d_c * D)
    if e.loss in ("ce", "both"):
        p += V * D if below is None else _head_params(c, below)
    if e.loss in ("gaussian", "both"):
        p += 2 * d_sym * (D + 1)
    # the compressor's input: embed (bytes), inp (the pooled vectors or code vectors below)
    p += V * D if below is None else (D if lv.compress_input == "pooled" else below.d_c) * D
    p += _stack_params(c, lv.compressor_layers) + lv.n_queries * D + _attention_params(c)
    p += lv.n_queries * D * D if lv.n_queries > 1 else 0
    p += D * lv.d_c + (0 if lv.vq_ema else lv.vq_stages * lv.codebook_size * lv.d_c)
    if lv.w_patch_recon > 0:  # the patch probe: inp, positions, out (with its bias)
        n_out = V if below is None else below.vq_stages * below.codebook_size
        p += lv.d_c * lv.d_c + e.max_patch_len * lv.d_c + (lv.d_c + 1) * n_out
    causal = c.decoding == "causal"  # the expander's memory: states (D) of the level above, not codes (d_c)
    p += (D if causal else lv.d_c) * D + _stack_params(c, lv.expander_layers, cross=True)
    if below is None:
        return p + V * lv.d_lo + 2 * lv.d_lo * D
    return p + (D if c.causal_reads == "pooled" else below.d_c) * D + D + (0 if causal else _head_params(c, below))


def count_params(c: AbstractinatorConfig) -> int:
    """The model's parameter count (``sum(p.numel() for p in model.parameters())``)."""
    p = sum(_level_params(c, i) for i in range(len(c.levels)))
    top, lv, D = c.top_transformer_config, c.levels[-1], c.d_model
    if top is not None:
        p += (D if c.causal_reads == "pooled" else lv.d_c) * D + D + _stack_params(c, top.n_layer)
        p += D * lv.d_c if top.continuous else 0 if c.decoding == "causal" else _head_params(c, lv)
    return p

"""Config of the Abstractinator (seed 003): levels of entropy patching, learned-query pooling and
vector quantisation, each with an expander back down, and an optional top code transformer.

One width ``d_model`` (the seed's ``D``) runs through every level; codes live in the smaller
``c_vq_d_c``. ``levels`` lists one :class:`LevelConfig` per level, bottom (bytes) first.
docs/abstractinator.md has the design and every loss.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmlab.config import LAYER_OVERHEAD, MAX_CONTEXT, Int, ModelConfig, Strict
from lmlab.errors import ConfigError
from lmlab.models.abstractinator.config_cost import (
    count_params,
    encoder_flops,
    entropy_flops,
    expander_flops,
    top_flops,
)


class EntropyModelConfig(Strict):
    """The small causal transformer whose next-symbol uncertainty cuts a level into patches."""

    n_layer: Int = Field(2, ge=1)
    loss: Literal["ce", "gaussian", "both"] = "ce"
    """ce: categorical CE on the next symbol (its entropy cuts); gaussian: Gaussian NLL of the
    next symbol's embedding (its differential entropy cuts); both: the sum (CE's entropy cuts)."""
    threshold: float | None = None
    """A new patch starts where the entropy (nats) exceeds this (default 2.0 unless
    ``target_patch_len`` is set)."""
    target_patch_len: float | None = Field(None, gt=1)
    """Instead of a fixed threshold: track the batch quantile that gives patches of this mean
    length (an EMA buffer during training, frozen at eval so cutting stays causal)."""
    monotonic: bool = False
    """BLT's approximate monotonic constraint: cut where entropy rises by more than the threshold
    over the previous position (H_t - H_{t-1} > threshold) instead of where it is high."""
    max_patch_len: Int = Field(32, ge=1)
    """A patch is cut after this many symbols whatever the entropy (bounds decoding and memory)."""
    threshold_ema: float = Field(0.5, ge=0, lt=1)
    """target_patch_len: how slowly the tracked threshold follows the batch quantile (the first
    training batch sets it)."""

    @model_validator(mode="after")
    def _one_rule(self) -> EntropyModelConfig:
        if self.threshold is not None and self.target_patch_len is not None:
            raise ValueError("set only one of threshold and target_patch_len")
        if self.threshold is None and self.target_patch_len is None:
            object.__setattr__(self, "threshold", 2.0)
        return self


class LevelConfig(Strict):
    """One level: entropy model, SegmentCompressor, (residual) VQ and DecoderOnlyExpanderRVQ."""

    entropy: EntropyModelConfig = Field(default_factory=EntropyModelConfig)
    compressor_layers: Int = Field(2, ge=1)
    window: Int = Field(16, ge=1)
    """Sliding-window size of the compressor's self-attention (each symbol sees this many)."""
    n_queries: Int = Field(1, ge=1)
    """Learned queries per segment (1: the seed's single query; more: a bank, mixed to D)."""
    codebook_size: Int = Field(512, ge=2)
    c_vq_d_c: Int | None = Field(None, ge=1)
    """Code-space width d_c (None: 64)."""
    vq_stages: Int = Field(1, ge=1)
    """Residual VQ stages (1: plain VQ). A code is one index per stage."""
    vq_ema: bool = True
    """EMA codebook updates (the codebook loss is then replaced by the EMA step)."""
    vq_decay: float = Field(0.99, gt=0, lt=1)
    vq_beta: float = Field(0.25, ge=0)
    """Commitment weight."""
    vq_diversity: float = Field(0.1, ge=0)
    """Weight of the code-usage diversity loss (1 - normalised entropy of the batch's soft
    code assignments), which keeps patches from collapsing onto one code."""
    vq_rate: float = Field(0.0, ge=0)
    """Weight of the code-rate term: each code's expected length under the model that pays for
    it (the next level's expander, or the top model at the top level), through the encoder's
    soft assignments (``vq_diversity``'s): sum_k soft[k] * -log p(k | what the decoder has),
    with p detached, so only the encoder moves, toward codes that model finds likely. The hard
    code's length is in the two-part code already but gives the encoder no gradient (an index
    has none); this is its differentiable stand-in. With ``loss_per_byte`` it is in nats per
    byte like the rest, and 1 weighs bits of codes against bits of bytes as the two-part code
    does. 0 (the seed): the encoder sees only the reconstruction."""
    fsq_levels: list[Int] | None = Field(None, min_length=1, max_length=8)
    """Finite scalar quantisation instead of the learnt codebook: feature i of the code space is
    bounded and rounded to ``fsq_levels[i]`` values, and a code is a point of that grid
    (``codebook_size`` = their product, ``c_vq_d_c`` = their number; e.g. [4, 4, 4]: 64 codes in 3
    features). No codebook to learn or reset, no commitment loss (docs/abstractinator.md,
    "Quantiser"). None: the VQ."""
    code_norm: Literal["batch", "vector"] = "batch"
    """The encoder's outputs before quantising: ``batch``, per feature by the batch's moments in
    training and running ones at eval; ``vector``, each over its own features (layer norm, no
    affine), alike in training and at eval (docs/abstractinator.md, "Quantiser")."""
    dead_code_threshold: float = Field(0.1, ge=0)
    """A code whose EMA usage count (vectors per step) falls below this is reset to a random
    batch vector."""
    expander_layers: Int = Field(2, ge=1)
    expander_context: Literal["patch", "full"] = "patch"
    """What the expander's self-attention sees: the patch being decoded (codes carry the rest)
    or every earlier symbol (a strong decoder that tends to ignore its codes)."""
    d_lo_d_c: Int | None = Field(None, ge=1)
    """Byte level only: width of the factorised byte embedding and logits (None: 64)."""
    w_entropy_ce: float = Field(1.0, ge=0)
    w_vq: float = Field(1.0, ge=0)
    w_patch_recon: float = Field(0.0, ge=0)
    """Weight of an auxiliary loss: a small probe reads each code's vector alone and predicts
    its patch's symbols position by position (cross-entropy, nats per symbol), so the encoder
    must make codes that tell patches apart. Nothing at inference reads the probe. 0 (the
    seed): off; under ``decoding: causal`` the codes are otherwise trained only as context for
    later patches, and collapse (docs/abstractinator.md, "Patch reconstruction")."""
    expander_prior: bool | None = None
    """The expander's next-symbol scores add the entropy model's (a product of experts). The
    entropy model is a causal LM over the level's input (bytes, or the codes below) that the
    decoder runs anyway to cut patches; with it as a prior, the codes carry only what it
    cannot predict. At a code level the two code heads' scores are added stage by stage.
    False: the seed's expander, which predicts each symbol from its codes and its patch alone.
    None (the default): on at the byte level when its entropy model has a CE head, off above."""
    prior_dropout: float = Field(0.0, ge=0, lt=1)
    """Byte level with ``expander_prior``, training only: the share of rows whose expander goes
    without the entropy model's logits, so that what the bytes need of earlier patches must come
    through the codes there (word dropout against a decoder strong enough to ignore its latent,
    as for VAEs). Scoring and generation always add the prior. 0: always added."""
    compress_input: Literal["pooled", "codes"] = "pooled"
    """Above the byte level: what the compressor reads of each symbol below. ``pooled`` (the
    seed): the level below's continuous pooled vector, a pass-through that skips its quantiser;
    ``codes``: only its quantised code vector, what the code stream itself carries."""

    @model_validator(mode="after")
    def _fsq(self) -> LevelConfig:
        """FSQ's grid sets the codebook; the learnt codebook's knobs are refused, not ignored."""
        if self.fsq_levels is None:
            return self
        K, why = math.prod(self.fsq_levels), "fsq_levels: the grid is the codebook"
        if min(self.fsq_levels) < 3:  # 2: the even shift's tanh saturates and the feature keeps one value
            raise ValueError(f"fsq_levels {self.fsq_levels}: every feature needs 3 or more values")
        for key, want in (("codebook_size", K), ("c_vq_d_c", len(self.fsq_levels))):
            if key in self.model_fields_set and getattr(self, key) != want:
                raise ValueError(f"{key} = {getattr(self, key)} but {why} ({want}); remove {key}")
        # what a saved config carries back (the defaults, the 0 diversity set below) passes
        fits = {"vq_ema": True, "vq_stages": 1, "vq_beta": type(self).model_fields["vq_beta"].default,
                "vq_rate": 0.0, "vq_diversity": 0.0}
        for key, value in fits.items():
            if key in self.model_fields_set and getattr(self, key) != value:
                raise ValueError(f"{key} = {getattr(self, key)}: {why}, with no codebook updates, commitment, "
                                 f"residual stages or soft assignments; remove {key}")
        object.__setattr__(self, "codebook_size", K)
        object.__setattr__(self, "c_vq_d_c", len(self.fsq_levels))
        object.__setattr__(self, "vq_diversity", 0.0)
        return self

    @property
    def d_c(self) -> int:
        return self.c_vq_d_c or 64

    @property
    def d_lo(self) -> int:
        return self.d_lo_d_c or 64


class TopConfig(Strict):
    """The CodeSequenceTransformer over the top level's codes."""

    n_layer: Int = Field(4, ge=1)
    n_head: Int | None = Field(None, ge=1)
    """None: the model's n_head."""
    continuous: bool = False
    """True: predict the next code's vector (MSE) instead of its index (CE)."""


class AbstractinatorConfig(ModelConfig):
    family: Literal["abstractinator"] = "abstractinator"  # type: ignore[assignment]
    block_size: Int = Field(256, ge=2, le=MAX_CONTEXT)
    """Context in bytes."""
    d_model: Int = Field(128, ge=8)
    n_head: Int = Field(4, ge=1)
    attn_form: Literal["regular", "mla"] = "regular"
    """regular multi-head attention, or MLA (keys and values from a shared low-rank latent)."""
    attn_backend: Literal["sdpa", "flex"] = "sdpa"
    """sdpa: dense masks; flex: FlexAttention block masks (needs autograd support on the device:
    CUDA in torch 2.13; on CPU it runs forward only)."""
    mla_kv_rank: Int = Field(32, ge=1)
    levels: list[LevelConfig] = Field(default_factory=lambda: [LevelConfig()], min_length=1, max_length=4)
    top_transformer_config: TopConfig | None = Field(default_factory=TopConfig)
    """None: no top model (stage 1); the code stream is then charged its uniform cost."""
    top_lm_loss_weight: float = Field(1.0, ge=0)
    decoding: Literal["two_part", "causal"] = "two_part"
    """two_part (the seed): each expander reads the codes of the patch it decodes (sent, paid
    for). causal (BLT's): each expander reads the states of the level above over *earlier*
    patches, nothing is sent, the bytes alone are scored (docs/abstractinator.md)."""
    causal_reads: Literal["codes", "pooled"] = "codes"
    """decoding: causal: what the level above reads of each patch: its code's vector, or its
    pooled vector (BLT's patch embedding; the quantiser then trains on its own loss alone)."""
    w_recon: float = Field(1.0, gt=0)
    loss_per_byte: bool = True
    """True: train on the two-part code itself: every level's reconstruction and the top
    model's code lengths are summed over the window and divided by its bytes (nats per byte, the
    units of ``val_bpb``), so each part weighs what it costs. False (the seed's weighting): each
    level's mean over its own symbols divided by the number of levels, the top model's mean
    per code (with two levels, level 1's bytes then weigh half, and a level-1 code, ~6 bytes, as
    much as a byte)."""
    save_base_components_path: str | None = None
    """Stage 1: write the levels' weights (compressors, quantisers, expanders, entropy models)
    here (safetensors) at every checkpoint."""
    load_base_from: str | None = None
    """Stage 2: load the levels' weights from this file and freeze them (``--load-base-from``)."""
    base_levels: Int | None = Field(None, ge=1)
    """How many bottom levels ``load_base_from`` holds, loads and freezes (None: all). Fewer than
    ``len(levels)`` stages the levels: train level 1, then level 2 on the frozen level 1, ..."""
    load_entropy_from: str | None = None
    """Load only the entropy models (from a base file or an lmlab checkpoint) and freeze them."""
    eos_id: Int | None = Field(None, ge=0)
    """The document separator (None: vocab_size - 1, the byte tokenizer's eos). It closes the
    patch of the document it ends and the byte after it opens a patch at every level, so patches
    never cross documents and a decoder knows every cut before the byte it cuts at. A closing eos
    is left out of its patch's code (and charged no code), so right padding with eos never moves
    a row's codes or scores."""

    required_tokenizer: ClassVar[str | None] = "byte"
    path_fields = {"load_entropy_from": "need_any", "save_base_components_path": "out_file"}
    train_flags: ClassVar[dict[str, dict[str, Any]]] = {
        "load_base_from": {"flags": ["--load-base-from", "--load_base_from"], "metavar": "PATH", "path": True,
                           "help": "stage 2: load the levels from a stage-1 base file (save_base_components_path) "
                                   "or its run dir, and freeze them"},
    }

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # CPU contract tests: a training step in well under a second.
        "tiny": {
            "d_model": 32, "n_head": 2, "block_size": 64,
            "levels": [{"compressor_layers": 1, "expander_layers": 1, "codebook_size": 32, "c_vq_d_c": 16,
                        "d_lo_d_c": 16, "window": 8, "entropy": {"n_layer": 1, "threshold": 2.5,
                                                                   "max_patch_len": 8}}],
            "top_transformer_config": {"n_layer": 1},
        },
        # The seed's experiment files (experiments/*.py).
        "regular_sdpa": {"attn_form": "regular", "attn_backend": "sdpa"},
        "regular_flex": {"attn_form": "regular", "attn_backend": "flex"},
        "mla_sdpa": {"attn_form": "mla", "attn_backend": "sdpa"},
        "mla_flex": {"attn_form": "mla", "attn_backend": "flex"},
        "regular_flex_512": {
            "attn_form": "regular", "attn_backend": "flex", "d_model": 512, "n_head": 8, "block_size": 1024,
            "levels": [{"compressor_layers": 4, "expander_layers": 4, "codebook_size": 4096, "vq_stages": 2,
                        "window": 32, "entropy": {"n_layer": 4, "threshold": 2.0}}],
            "top_transformer_config": {"n_layer": 8},
        },
        # Loads a pretrained entropy stack (set load_entropy_from) and keeps it frozen.
        "regular_flex_entropy_frozen": {"attn_form": "regular", "attn_backend": "flex"},
    }

    @model_validator(mode="after")
    def _check(self) -> AbstractinatorConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        for i, lv in enumerate(self.levels):
            if lv.expander_prior is None:
                object.__setattr__(lv, "expander_prior", i == 0 and lv.entropy.loss != "gaussian")
            if lv.expander_prior and lv.entropy.loss == "gaussian":
                raise ValueError(f"levels[{i}].expander_prior: a Gaussian-only entropy model has no next-symbol "
                                 "scores to add; set entropy.loss to ce or both, or expander_prior: false")
        for i, lv in enumerate(self.levels):
            if lv.prior_dropout > 0 and (i > 0 or not lv.expander_prior):
                raise ValueError(f"levels[{i}].prior_dropout: it drops the byte level's expander prior, and "
                                 f"{'this is a code level' if i else 'this level has none'}; set prior_dropout: 0")
        if self.levels[0].compress_input != "pooled":
            raise ValueError("levels[0].compress_input: the byte level reads bytes; set it on the levels above")
        top = self.top_transformer_config
        if self.decoding == "causal":
            self._check_causal()
        elif self.causal_reads != "codes":
            raise ValueError("causal_reads: what a causal decoder reads of each patch; set decoding: causal")
        if self.levels[-1].vq_rate > 0 and (top is None or top.continuous or self.top_lm_loss_weight == 0):
            raise ValueError(f"levels[{len(self.levels) - 1}].vq_rate: the top level's codes are priced by the top "
                             "model, and this one has no trained discrete top model (top_transformer_config with "
                             "continuous: false and top_lm_loss_weight > 0); set vq_rate: 0 there or add one")
        if top is not None and top.n_head is not None and self.d_model % top.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by top_transformer_config.n_head "
                             f"({top.n_head})")
        if self.base_levels is not None and self.base_levels > len(self.levels):
            raise ValueError(f"base_levels = {self.base_levels} but the model has {len(self.levels)} level(s)")
        if self.base_levels is not None and self.load_base_from is None:
            raise ValueError("base_levels says how much of load_base_from to load: set load_base_from too")
        if self.eos_id is not None and self.vocab_size is not None and self.eos_id >= self.vocab_size:
            # Raised as it is (not a ValueError): the trainer sets vocab_size from the tokenizer
            # by assignment, which runs this check again outside any config file's validation.
            raise ConfigError(f"model.eos_id = {self.eos_id}: not an id of the {self.vocab_size}-id vocabulary "
                              f"(0 .. {self.vocab_size - 1}); leave it unset for the tokenizer's eos")
        if self.preset == "regular_flex_entropy_frozen" and self.load_entropy_from is None:
            raise ValueError("preset regular_flex_entropy_frozen loads a pretrained entropy stack: set "
                             "model.load_entropy_from to a base file or a run dir")
        return self

    def _check_causal(self) -> None:
        """decoding: causal reads a discrete top model's states and sends no code: the knobs of
        the two-part code are refused rather than ignored."""
        top, why = self.top_transformer_config, "with decoding: causal no code is sent"
        if top is None or top.continuous:
            raise ValueError("decoding: causal: the expanders read the top model's states, and this config has "
                             f"{'no top model' if top is None else 'a continuous one'}; set top_transformer_config")
        if self.load_base_from is not None:
            raise ValueError("load_base_from: staged and two-stage runs build on levels trained to send codes; "
                             "decoding: causal trains every level with the top model (load_entropy_from works)")
        if self.top_lm_loss_weight != 1.0:
            raise ValueError(f"top_lm_loss_weight: {why} and the top model has no code loss; remove the key")
        for i, lv in enumerate(self.levels):
            if lv.vq_rate > 0:
                raise ValueError(f"levels[{i}].vq_rate: {why}, so none is priced; set vq_rate: 0")
            if i > 0 and lv.expander_prior:
                raise ValueError(f"levels[{i}].expander_prior: {why}: a code level's expander scores no codes; "
                                 "set expander_prior: false there")

    @classmethod
    def upgrade_checkpoint_config(cls, model: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint saved before ``expander_prior`` existed decoded bytes without the prior
        (its weights fit either way, so the default must not switch it on under them); one
        saved before ``loss_per_byte`` trained with the seed's weighting, and a resumed run
        keeps it."""
        if "loss_per_byte" not in model:
            model = {**model, "loss_per_byte": False}
        levels = model.get("levels")
        if not isinstance(levels, list):
            return model
        return {**model, "levels": [lv if not isinstance(lv, dict) or "expander_prior" in lv
                                    else {**lv, "expander_prior": False} for lv in levels]}

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """Parameters: counted from the shapes, exactly the model's (tested); the EMA codebooks
        are buffers and go with the activations. Activations as if every layer ran at byte
        resolution (an upper bound: upper levels see patches)."""
        d, layers, v = self.d_model, self._layer_count, self.vocab_size or 260
        buffers = sum(2 * lv.vq_stages * lv.codebook_size * lv.d_c
                      for lv in self.levels if lv.vq_ema and not lv.fsq_levels)  # EMA codebooks and sums
        # per code (at most one a byte): its distances to every code, the soft assignments of
        # the diversity loss and the code head's scores, per stage; n_queries pooled vectors
        codes = sum(lv.vq_stages * lv.codebook_size * 3 + lv.n_queries * d for lv in self.levels)
        return count_params(self), 4 * ((layers * 14 * d + 3 * v + codes) * tokens + buffers)

    def overhead_bytes(self) -> int:
        """``LAYER_OVERHEAD`` per transformer-like layer: every level's entropy model,
        compressor and expander, and the top model."""
        return self._layer_count * LAYER_OVERHEAD

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per byte (forward + backward) of ``seq_len``-byte windows:
        :meth:`training_flops` at the codes per row :meth:`expected_codes` gives, over
        ``seq_len``. Exact where the patch count is (tested against torch's FlopCounterMode);
        see docs/abstractinator.md "Compute"."""
        return self.training_flops(seq_len, self.expected_codes(seq_len)) / seq_len

    def expected_codes(self, seq_len: int) -> list[float]:
        """Codes per row at each level, bottom first. Where the threshold tracks
        ``target_patch_len`` (capped at ``max_patch_len``), position 0 opens a patch and one in
        target_patch_len of the others does. A fixed threshold gives no static length: one
        symbol per patch is counted (what an untrained entropy model cuts, its entropy ~log V
        being above any usual threshold), the most codes a level can make: an upper bound."""
        n, out = float(seq_len), []
        for lv in self.levels:
            e = lv.entropy
            if e.target_patch_len:  # position 0 opens a patch, 1 in target_patch_len of the rest
                n = 1 + (n - 1) / min(e.target_patch_len, e.max_patch_len)
            out.append(max(n, 1.0))
        return out

    def training_flops(self, seq_len: int, codes: list[float],
                       quantised: list[float] | None = None) -> float:
        """FLOPs of one training step (forward + backward) per row of ``seq_len`` bytes, given
        ``codes[l]``, the codes per row at level l (``compress_all`` pads every row to the
        batch's most), and ``quantised[l]`` the real (unpadded) codes per row the quantiser sees
        (default: ``codes``). Counted from the shapes the model runs; frozen parts (two-stage
        training, zero loss weights) count their forward only."""
        rows = codes if quantised is None else quantised
        n, total = float(seq_len), 0.0
        for i, k in enumerate(codes):
            level, entropy = self._trains(i)
            total += entropy_flops(self, i, n, entropy) + expander_flops(self, i, n, k, level)
            total += encoder_flops(self, i, n, k, rows[i], level, i > 0 and self._trains(i - 1)[0])
            n = k
        return total + top_flops(self, n)

    def _trains(self, i: int) -> tuple[bool, bool]:
        """(level i trains, its entropy model trains), as AbstractinatorPyramid freezes them."""
        base = self.load_base_from is not None
        level = not (base and i < (self.base_levels or len(self.levels)))
        entropy = (level and (base or self.load_entropy_from is None)
                   and self.levels[i].w_entropy_ce > 0)
        return level, entropy

    @property
    def _layer_count(self) -> int:
        """Transformer-like layers: every level's compressor, expander and entropy model, and the top."""
        top = self.top_transformer_config.n_layer if self.top_transformer_config is not None else 0
        return top + sum(lv.compressor_layers + lv.expander_layers + lv.entropy.n_layer for lv in self.levels)

    @property
    def eos(self) -> int:
        assert self.vocab_size is not None
        return self.vocab_size - 1 if self.eos_id is None else self.eos_id

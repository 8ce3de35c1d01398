"""Config of the Abstractinator (seed 003): levels of entropy patching, learned-query pooling and
vector quantisation, each with an expander back down, and an optional top code transformer.

One width ``d_model`` (the seed's ``D``) runs through every level; codes live in the smaller
``c_vq_d_c``. ``levels`` lists one :class:`LevelConfig` per level, bottom (bytes) first.
docs/abstractinator.md has the design and every loss.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmlab.config import ModelConfig, Strict


class EntropyModelConfig(Strict):
    """The small causal transformer whose next-symbol uncertainty cuts a level into patches."""

    n_layer: int = Field(2, ge=1)
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
    max_patch_len: int = Field(32, ge=1)
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
    compressor_layers: int = Field(2, ge=1)
    window: int = Field(16, ge=1)
    """Sliding-window size of the compressor's self-attention (each symbol sees this many)."""
    n_queries: int = Field(1, ge=1)
    """Learned queries per segment (1: the seed's single query; more: a bank, mixed to D)."""
    codebook_size: int = Field(512, ge=2)
    c_vq_d_c: int | None = Field(None, ge=1)
    """Code-space width d_c (None: 64)."""
    vq_stages: int = Field(1, ge=1)
    """Residual VQ stages (1: plain VQ). A code is one index per stage."""
    vq_ema: bool = True
    """EMA codebook updates (the codebook loss is then replaced by the EMA step)."""
    vq_decay: float = Field(0.99, gt=0, lt=1)
    vq_beta: float = Field(0.25, ge=0)
    """Commitment weight."""
    vq_diversity: float = Field(0.1, ge=0)
    """Weight of the code-usage diversity loss (1 - normalised entropy of the batch's soft
    code assignments), which keeps patches from collapsing onto one code."""
    dead_code_threshold: float = Field(0.1, ge=0)
    """A code whose EMA usage count (vectors per step) falls below this is reset to a random
    batch vector."""
    expander_layers: int = Field(2, ge=1)
    expander_context: Literal["patch", "full"] = "patch"
    """What the expander's self-attention sees: the patch being decoded (codes carry the rest)
    or every earlier symbol (a strong decoder that tends to ignore its codes)."""
    d_lo_d_c: int | None = Field(None, ge=1)
    """Byte level only: width of the factorised byte embedding and logits (None: 64)."""
    w_entropy_ce: float = Field(1.0, ge=0)
    w_vq: float = Field(1.0, ge=0)

    @property
    def d_c(self) -> int:
        return self.c_vq_d_c or 64

    @property
    def d_lo(self) -> int:
        return self.d_lo_d_c or 64


class TopConfig(Strict):
    """The CodeSequenceTransformer over the top level's codes."""

    n_layer: int = Field(4, ge=1)
    n_head: int | None = Field(None, ge=1)
    """None: the model's n_head."""
    continuous: bool = False
    """True: predict the next code's vector (MSE) instead of its index (CE)."""


class AbstractinatorConfig(ModelConfig):
    family: Literal["abstractinator"] = "abstractinator"  # type: ignore[assignment]
    block_size: int = Field(256, ge=2)
    """Context in bytes."""
    d_model: int = Field(128, ge=8)
    n_head: int = Field(4, ge=1)
    attn_form: Literal["regular", "mla"] = "regular"
    """regular multi-head attention, or MLA (keys and values from a shared low-rank latent)."""
    attn_backend: Literal["sdpa", "flex"] = "sdpa"
    """sdpa: dense masks; flex: FlexAttention block masks (needs autograd support on the device:
    CUDA in torch 2.13; on CPU it runs forward only)."""
    mla_kv_rank: int = Field(32, ge=1)
    levels: list[LevelConfig] = Field(default_factory=lambda: [LevelConfig()], min_length=1, max_length=4)
    top_transformer_config: TopConfig | None = Field(default_factory=TopConfig)
    """None: no top model (stage 1); the code stream is then charged its uniform cost."""
    top_lm_loss_weight: float = Field(1.0, ge=0)
    w_recon: float = Field(1.0, gt=0)
    save_base_components_path: str | None = None
    """Stage 1: write the levels' weights (compressors, quantisers, expanders, entropy models)
    here (safetensors) at every checkpoint."""
    load_base_from: str | None = None
    """Stage 2: load the levels' weights from this file and freeze them (``--load-base-from``)."""
    base_levels: int | None = Field(None, ge=1)
    """How many bottom levels ``load_base_from`` holds, loads and freezes (None: all). Fewer than
    ``len(levels)`` stages the levels: train level 1, then level 2 on the frozen level 1, ..."""
    load_entropy_from: str | None = None
    """Load only the entropy models (from a base file or an lmlab checkpoint) and freeze them."""
    eos_id: int | None = Field(None, ge=0)
    """The document separator (None: vocab_size - 1, the byte tokenizer's eos). It closes the
    patch of the document it ends and the byte after it opens a patch at every level, so patches
    never cross documents and a decoder knows every cut before the byte it cuts at. A closing eos
    is left out of its patch's code (and charged no code), so right padding with eos never moves
    a row's codes or scores."""

    required_tokenizer: ClassVar[str | None] = "byte"
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
        top = self.top_transformer_config
        if top is not None and top.n_head is not None and self.d_model % top.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by top_transformer_config.n_head "
                             f"({top.n_head})")
        if self.base_levels is not None and self.base_levels > len(self.levels):
            raise ValueError(f"base_levels = {self.base_levels} but the model has {len(self.levels)} level(s)")
        if self.base_levels is not None and self.load_base_from is None:
            raise ValueError("base_levels says how much of load_base_from to load: set load_base_from too")
        if self.preset == "regular_flex_entropy_frozen" and self.load_entropy_from is None:
            raise ValueError("preset regular_flex_entropy_frozen loads a pretrained entropy stack: set "
                             "model.load_entropy_from to a base file or a run dir")
        return self

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """Every level's compressor, expander and entropy layers and the top model's layers as
        transformer layers of width ``d_model`` (12 d^2 each), plus codebooks and byte
        embeddings; activations as if every layer ran at byte resolution (an upper bound:
        upper levels see patches)."""
        d, layers = self.d_model, self._layer_count
        codebooks = sum(lv.codebook_size * lv.d_c * lv.vq_stages for lv in self.levels)
        params = layers * 12 * d * d + codebooks + 2 * (self.vocab_size or 260) * d
        return params, 4 * (layers * 14 * d + 3 * (self.vocab_size or 260)) * tokens

    def flops_per_token(self, seq_len: int) -> float:
        """6 x parameters + the attention term of every layer (12 x layers x d_model x
        seq_len), as if every layer ran at byte resolution: an upper bound, so MFU reads low."""
        return 6.0 * self.size_estimate(1)[0] + 12.0 * self._layer_count * self.d_model * seq_len

    @property
    def _layer_count(self) -> int:
        """Transformer-like layers: every level's compressor, expander and entropy model, and the top."""
        top = self.top_transformer_config.n_layer if self.top_transformer_config is not None else 0
        return top + sum(lv.compressor_layers + lv.expander_layers + lv.entropy.n_layer for lv in self.levels)

    @property
    def eos(self) -> int:
        assert self.vocab_size is not None
        return self.vocab_size - 1 if self.eos_id is None else self.eos_id

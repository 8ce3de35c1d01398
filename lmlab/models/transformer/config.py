"""Config of the baseline: a pre-norm decoder-only transformer."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmlab.config import LAYER_OVERHEAD, Int, ModelConfig


class TransformerConfig(ModelConfig):
    family: Literal["transformer"] = "transformer"
    n_layer: Int = Field(4, ge=1)
    n_head: Int = Field(4, ge=1)
    n_kv_head: Int | None = Field(None, ge=1)
    """Key/value heads (grouped-query attention; Llama's ``num_key_value_heads``): each serves
    n_head / n_kv_head query heads and the KV cache holds only these. None: n_head (multi-head)."""
    d_model: Int = Field(128, ge=8)
    d_ff: Int | None = Field(None, ge=1)
    """Hidden size of the MLP; None: 4 x d_model (gelu) or 8/3 x d_model rounded to 64 (swiglu)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = False
    """Biases in every linear layer and LayerNorm."""
    attn_bias: bool | None = None
    """Biases of the attention's projections (Llama's ``attention_bias``); None: ``bias``."""
    mlp_bias: bool | None = None
    """Biases of the MLP's projections (Llama's ``mlp_bias``); None: ``bias``."""
    pos_encoding: Literal["rope", "alibi", "sinusoidal", "learned"] = "rope"
    rope_base: float = Field(10000.0, gt=0)
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    norm_eps: float = Field(1e-5, gt=0)
    mlp: Literal["gelu", "gelu_tanh", "swiglu"] = "gelu"
    tie_weights: bool = True

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # Runs a training step on CPU in a few milliseconds: the contract tests use it.
        "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 64},
        # The `make train` model (configs/default.yaml).
        "small": {"n_layer": 4, "n_head": 4, "d_model": 192, "block_size": 192},
        # GPT-2 small's shape and architecture (learned positions, LayerNorm, tanh GELU, biases).
        "gpt2": {
            "n_layer": 12, "n_head": 12, "d_model": 768, "block_size": 1024,
            "pos_encoding": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True,
        },
    }

    @model_validator(mode="after")
    def _check_shapes(self) -> TransformerConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head}): each "
                             "key/value head serves a whole group of query heads")
        if self.pos_encoding == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rope needs an even head size; d_model/n_head = {self.d_model // self.n_head}")
        if self.pos_encoding == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        return self

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or n_head without grouped-query attention."""
        return self.n_kv_head or self.n_head

    @property
    def attn_dims(self) -> int:
        """Rows of the fused q/k/v projection: d_model for the queries, 2 x kv_heads x head size."""
        return self.d_model + 2 * self.kv_heads * (self.d_model // self.n_head)

    @property
    def ff_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":
            return 64 * ((8 * self.d_model // 3 + 63) // 64)
        return 4 * self.d_model

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """Parameters from the shapes; activations per token per layer as Korthikanti et al.
        (2022) count them without the attention matrix (SDPA does not keep it), in fp32:
        the block's inputs, q/k/v, the attention output and the MLP's hidden, plus the logits;
        and the tables built once: positions (rope, sinusoidal) and ALiBi's (heads, T, T) bias,
        which every layer keeps for backward."""
        d, f, v, n = self.d_model, self.ff_dim, self.vocab_size or 256, self.n_layer
        mlp = (3 if self.mlp == "swiglu" else 2) * d * f
        per_layer = (self.attn_dims + d) * d + mlp + 4 * d
        params = n * per_layer + v * d * (1 if self.tie_weights else 2) + d
        if self.pos_encoding == "learned":
            params += self.block_size * d
        hidden = (3 if self.mlp == "swiglu" else 2) * f
        # elements: layers (q/k/v at attn_dims, the rest at d), then logits, softmax and grad
        per_token = n * (7 * d + self.attn_dims + hidden) + 3 * v
        return params, 4 * (per_token * tokens + self._tables())

    def _tables(self) -> int:
        """Elements of the position tables and ALiBi biases (seq_len is at most block_size)."""
        T = self.block_size
        if self.pos_encoding == "rope":
            return T * (self.d_model // self.n_head)
        if self.pos_encoding == "sinusoidal":
            return T * self.d_model
        if self.pos_encoding == "alibi":
            return self.n_layer * self.n_head * T * T
        return 0

    def overhead_bytes(self) -> int:
        """``LAYER_OVERHEAD`` per block (apelr's planner and experts add no layers)."""
        return self.n_layer * LAYER_OVERHEAD

    def flops_per_token(self, seq_len: int) -> float:
        """PaLM's count (Chowdhery et al. 2022, appendix B): 6 x the matmul parameters (the
        blocks and the output projection; embeddings are lookups) + 12 x n_layer x d_model x
        seq_len for the attention scores and their weighted sums, forward and backward."""
        d, f, v, n = self.d_model, self.ff_dim, self.vocab_size or 256, self.n_layer
        matmul = n * ((self.attn_dims + d) * d + (3 if self.mlp == "swiglu" else 2) * d * f) + v * d
        return 6.0 * matmul + 12.0 * n * d * seq_len


"""Config of the baseline: a pre-norm decoder-only transformer."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmlab.config import ModelConfig


class TransformerConfig(ModelConfig):
    family: Literal["transformer"] = "transformer"
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    d_model: int = Field(128, ge=8)
    d_ff: int | None = Field(None, ge=1)
    """Hidden size of the MLP; None: 4 x d_model (gelu) or 8/3 x d_model rounded to 64 (swiglu)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    bias: bool = False
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
        if self.pos_encoding == "rope" and (self.d_model // self.n_head) % 2:
            raise ValueError(f"rope needs an even head size; d_model/n_head = {self.d_model // self.n_head}")
        if self.pos_encoding == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        return self

    @property
    def ff_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.mlp == "swiglu":
            return 64 * ((8 * self.d_model // 3 + 63) // 64)
        return 4 * self.d_model

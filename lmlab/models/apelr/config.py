"""Config of APEL-R: the transformer executor's fields plus the planner and its loss weights.

Seed 000 keeps the loss weights under ``train.``; in lmlab the model computes its own loss
terms, so they live in the ``model:`` section under the same names (``docs/apelr.md`` has the
mapping). ``loss_weights`` holds v2's planner-required objectives; an unset entry falls back to
the v1 weight the seed names (``boundary_entropy`` <- ``entropy_reg_weight``, ``usage_balance``
<- ``usage_balance_weight``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from lmlab.config import Int, Strict
from lmlab.models.transformer.config import TransformerConfig

V1 = "v1_filtered_mixture"
V2 = "v2_planner_required"


class LossWeights(Strict):
    """v2's objectives; None means "use the v1 fallback" (or 0 where there is none)."""

    future_contrastive: float | None = Field(None, ge=0)
    plan_js_div: float | None = Field(None, ge=0)
    boundary_entropy: float | None = Field(None, ge=0)
    usage_balance: float | None = Field(None, ge=0)


class ApelrConfig(TransformerConfig):
    family: Literal["apelr"] = "apelr"  # type: ignore[assignment]
    version: Literal["v1_filtered_mixture", "v2_planner_required"] = V2
    """Architecture version; a checkpoint saved without one loads as v1 (docs/model_versions.md)."""

    # planner
    num_plan_states: Int = Field(4, ge=1)
    chunk_size: Int = Field(16, ge=1)
    planner_context_scale: float = Field(0.5, ge=0)
    planner_self_bias: float = 2.0
    expert_rank: Int = Field(32, ge=1)
    """Rank of each plan state's expert correction to the shared output head."""
    lookahead_horizon: Int = Field(2, ge=0)
    lookahead_feedback_scale: float = Field(0.25, ge=0, le=1)
    token_filtering: bool = True
    async_planner: bool = True

    # loss weights (seed 000: train.*)
    entropy_reg_weight: float = Field(0.0, ge=0)
    usage_balance_weight: float = Field(0.0, ge=0)
    chunk_bow_weight: float = Field(0.0, ge=0)
    chunk_bow_warmup_steps: Int = Field(0, ge=0)
    plan_mi_weight: float = Field(0.0, ge=0)
    chunk_post_kl_weight: float = Field(0.0, ge=0)
    loss_weights: LossWeights = Field(default_factory=LossWeights)
    contrastive_temperature: float = Field(0.1, gt=0)
    divergence_positions: Int = Field(32, ge=1)
    """plan_mi / plan_js_div need every expert's whole distribution: they are averaged over this
    many evenly spaced positions per sequence (all of them when the sequence is shorter)."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"n_layer": 2, "n_head": 2, "d_model": 64, "block_size": 64, "num_plan_states": 3,
                 "chunk_size": 8, "expert_rank": 8},
        "small": {"n_layer": 4, "n_head": 4, "d_model": 192, "block_size": 192},
    }

    @model_validator(mode="after")
    def _check_planner(self) -> ApelrConfig:
        if self.chunk_size > self.block_size:
            raise ValueError(f"chunk_size ({self.chunk_size}) must not exceed block_size ({self.block_size})")
        return self

    @classmethod
    def upgrade_checkpoint_config(cls, model: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint saved without ``version`` predates v2: it is a v1 model."""
        return model if "version" in model else {**model, "version": V1}

    def size_estimate(self, tokens: int) -> tuple[int, int]:
        """The transformer's, plus the planner and the K rank-r experts (model.py): parameters
        2 D K r + K^2 + D K and the loss-only modules; activations per token the experts' z
        (K r), beliefs and gates, and the lookahead's (K, K) sums per step; once per call the
        experts' (K, V, r) factor; with plan_mi, the (K, V) table at its sampled positions."""
        params, acts = super().size_estimate(tokens)
        K, r, D, V, T = self.num_plan_states, self.expert_rank, self.d_model, self.vocab_size or 256, self.block_size
        v2 = self.version != V1
        params += 2 * D * K * r + K * K + D * K + 2 * K
        if self.weight("chunk_bow_weight") or (v2 and self.weight("future_contrastive")):
            params += K * D
        if self.weight("chunk_post_kl_weight"):
            params += D * K + K
        if v2 and self.weight("future_contrastive"):
            params += D * D
        horizon = self.lookahead_horizon if v2 and self.lookahead_feedback_scale else 0
        per_token = 2 * K * r + 8 * K + 2 * horizon * K * K + K * K // self.chunk_size
        if self.weight("plan_mi_weight"):  # (B, T', K, V) logits, log-probs and their exp
            per_token += 3 * K * V * min(self.divergence_positions, T) // T
        return params, acts + 4 * (per_token * tokens + 3 * K * V * r)

    def weight(self, name: str) -> float:
        """The effective weight of a loss term, v2 fallbacks applied."""
        if self.version == V1:
            return float(getattr(self, name, 0.0)) if name.endswith("_weight") else 0.0
        fallback = {"boundary_entropy": "entropy_reg_weight", "usage_balance": "usage_balance_weight"}
        if name in LossWeights.model_fields:
            value = getattr(self.loss_weights, name)
            if value is None:
                value = getattr(self, fallback[name]) if name in fallback else 0.0
            return float(value)
        if name in ("entropy_reg_weight", "usage_balance_weight"):
            return 0.0  # v2 uses them only as the fallbacks above
        return float(getattr(self, name))

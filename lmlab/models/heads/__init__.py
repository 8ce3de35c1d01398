"""Auxiliary planning heads for any family that exposes hidden states (seed 001)."""

from lmlab.models.heads.heads import (
    AuxiliaryHeads,
    DynamicsModel,
    PolicyHead,
    SpanContrastive,
    ValueHead,
)

__all__ = ["AuxiliaryHeads", "DynamicsModel", "PolicyHead", "SpanContrastive", "ValueHead"]

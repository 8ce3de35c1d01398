"""The GPT-style baseline family."""

from lmlab.models.transformer.config import TransformerConfig
from lmlab.models.transformer.model import Transformer, TransformerState

__all__ = ["Transformer", "TransformerConfig", "TransformerState"]

"""Abstractinator: a hierarchical byte-level autoencoder with a top code model (seed 003)."""

from lmlab.models.abstractinator.config import (
    AbstractinatorConfig,
    EntropyModelConfig,
    LevelConfig,
    TopConfig,
)
from lmlab.models.abstractinator.model import AbstractinatorPyramid

__all__ = ["AbstractinatorConfig", "AbstractinatorPyramid", "EntropyModelConfig", "LevelConfig", "TopConfig"]

"""lmlab: train, sample and evaluate experimental LM architectures beside a transformer baseline."""

from lmlab.api import LoadedModel, evaluate, load, prepare, train
from lmlab.highlevel import LM, TextData, psannLM, psannLMDataPrep

__version__ = "0.1.0"
__all__ = ["LM", "LoadedModel", "TextData", "evaluate", "load", "prepare", "psannLM", "psannLMDataPrep", "train",
           "__version__"]

"""lmlab: train, sample and evaluate experimental LM architectures beside a transformer baseline."""

from lmlab.api import LoadedModel, evaluate, load, train

__version__ = "0.1.0"
__all__ = ["LoadedModel", "evaluate", "load", "train", "__version__"]

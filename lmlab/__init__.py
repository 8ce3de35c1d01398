"""lmlab: train, sample and evaluate experimental LM architectures beside a transformer baseline."""

from lmlab.api import LoadedModel, load, train

__version__ = "0.1.0"
__all__ = ["LoadedModel", "load", "train", "__version__"]

"""PSANN: sine-activated transformers (seeds 002 / 004), bases respsann and waveresnet."""

from lmlab.models.psann.config import PsannConfig, SineParams
from lmlab.models.psann.model import Psann, PsannBlock, PsannState
from lmlab.models.psann.sine import SineActivation

__all__ = ["Psann", "PsannBlock", "PsannConfig", "PsannState", "SineActivation", "SineParams"]

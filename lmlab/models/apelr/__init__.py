"""APEL-R: a planner/executor LM (seed 000), versions v1_filtered_mixture and v2_planner_required."""

from lmlab.models.apelr.config import V1, V2, ApelrConfig
from lmlab.models.apelr.model import Apelr, ApelrState

__all__ = ["V1", "V2", "Apelr", "ApelrConfig", "ApelrState"]

"""The zero-flag continuous trainer of seed 001 (``python main.py`` / ``lmlab run``)."""

from lmlab.continuous.run import main, run

__all__ = ["main", "run"]

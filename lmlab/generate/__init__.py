"""Sampling functions and the decoding loop shared by the token-by-token families."""

from lmlab.generate.decode import DecodeSettings, complete, generate_ids

__all__ = ["DecodeSettings", "complete", "generate_ids"]

"""Sampling functions and the decoding loop shared by the token-by-token families."""

from lmlab.generate.decode import DecodeSettings, generate_ids

__all__ = ["DecodeSettings", "generate_ids"]

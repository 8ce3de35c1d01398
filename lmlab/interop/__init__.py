"""Interoperability with other formats: Hugging Face GPT-2 checkpoints <-> lmlab transformers."""

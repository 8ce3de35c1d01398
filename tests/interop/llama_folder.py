"""A tiny random ``LlamaForCausalLM`` folder with a Llama-style tokenizer, written offline (the
interop and init_from tests load it with runpy)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT = ("the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat. "
        "a small model reads the words and guesses the next one, again and again. ") * 20


def tokenizer_files(folder: Path) -> int:
    """A SentencePiece-style BPE (Metaspace ``▁``, <unk>/<s>/</s>) like Llama's, written as
    tokenizer.json + tokenizer_config.json; returns its vocabulary size."""
    import tokenizers as tk
    tok = tk.Tokenizer(tk.models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = tk.pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = tk.decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = tk.trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator([TEXT], trainer=trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": 64}, indent=2))
    return tok.get_vocab_size()


def llama_folder(folder: Path, kv_heads: int, tied: bool, pad_vocab: int = 0, **extra) -> Path:
    folder.mkdir(parents=True)
    vocab = tokenizer_files(folder) + pad_vocab
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=500.0,
        tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, **extra)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF zero-inits nothing we need, but make the norms non-trivial
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder



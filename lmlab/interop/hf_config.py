"""Hugging Face ``config.json`` -> lmlab ``model`` sections: plain dict functions (no torch, no
weights), so reading what an HF folder holds is cheap; ``train.init_from`` reads a folder's model
section here before any weight is loaded. The weight mappings are in gpt2.py and llama.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError

CONFIG_FILE = "config.json"


def is_hf_folder(path: str | Path) -> bool:
    """An HF model folder (``config.json``), not an lmlab run dir."""
    p = Path(path)
    return (p / CONFIG_FILE).is_file() and not (p / "checkpoints").is_dir()


def read_hf_config(hf_dir: Path, what: str = "Hugging Face model") -> dict[str, Any]:
    """``config.json`` of an HF folder as a dict (one line when it is missing or unreadable)."""
    if not (hf_dir / CONFIG_FILE).is_file():
        raise LmlabError(f"{hf_dir}: no {CONFIG_FILE} (expected a {what} dir)")
    try:
        found = json.loads((hf_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlabError(f"{hf_dir / CONFIG_FILE}: cannot parse: {e}") from None
    if not isinstance(found, dict):
        raise LmlabError(f"{hf_dir / CONFIG_FILE}: expected a JSON object, got {type(found).__name__}")
    return found


# HF activation_function -> lmlab mlp (exact matches only: gelu_fast/quick_gelu differ numerically).
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}

# GPT2Config defaults, used for keys a config.json leaves out (HF does the same).
GPT2_DEFAULTS: dict[str, Any] = {
    "model_type": "gpt2",
    "vocab_size": 50257,
    "n_positions": 1024,
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
}
# HF options lmlab's transformer cannot express: key -> the only value it supports.
GPT2_REQUIRED: dict[str, Any] = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "is_encoder_decoder": False,
}

# LlamaConfig's defaults, for keys a config.json leaves out (HF does the same).
LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "max_position_embeddings": 2048, "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": None, "hidden_act": "silu",
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0, "rope_scaling": None,
    "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False, "head_dim": None,
}

# ---------------------------------------------------------------------------------------- gpt2


def gpt2_model_config(hf_config: dict[str, Any]) -> dict[str, Any]:
    """HF GPT-2 ``config.json`` dict -> lmlab ``model`` section (explicit fields, no preset)."""
    cfg = {**GPT2_DEFAULTS, **hf_config}
    if cfg["model_type"] != "gpt2":
        raise LmlabError(f"config.json: model_type = {cfg['model_type']!r}: only gpt2 is supported")
    for key, needed in GPT2_REQUIRED.items():
        if key in cfg and cfg[key] is not None and cfg[key] != needed:
            raise LmlabError(
                f"config.json: {key} = {cfg[key]!r} is not supported (lmlab's transformer needs {needed!r})"
            )
    act = cfg["activation_function"]
    if act not in ACTIVATIONS:
        raise LmlabError(
            f"config.json: activation_function = {act!r} is not supported "
            f"(expected one of {', '.join(ACTIVATIONS)})"
        )
    n_embd = int(cfg["n_embd"])
    return {
        "family": "transformer",
        "vocab_size": int(cfg["vocab_size"]),
        "block_size": int(cfg["n_positions"]),
        "n_layer": int(cfg["n_layer"]),
        "n_head": int(cfg["n_head"]),
        "d_model": n_embd,
        "d_ff": int(cfg["n_inner"]) if cfg["n_inner"] is not None else 4 * n_embd,
        "dropout": 0.0,
        "bias": True,
        "pos_encoding": "learned",
        "norm": "layernorm",
        "norm_eps": float(cfg["layer_norm_epsilon"]),
        "mlp": ACTIVATIONS[act],
        "tie_weights": True,
    }


# --------------------------------------------------------------------------------------- llama


def llama_model_config(hf_config: dict[str, Any], where: str = "config.json") -> dict[str, Any]:
    """HF Llama ``config.json`` dict -> lmlab ``model`` section (explicit fields, no preset)."""
    cfg = {**LLAMA_DEFAULTS, **hf_config}
    if cfg.get("model_type") != "llama":
        raise LmlabError(f"{where}: model_type = {cfg.get('model_type')!r}: this reader maps llama only")
    _refuse(where, "hidden_act", cfg["hidden_act"], ("silu",), "lmlab's swiglu MLP gates with silu")
    scaling = cfg["rope_scaling"]
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    if scaling is not None and kind != "default":
        raise LmlabError(f"{where}: rope_scaling = {scaling!r} is not supported (lmlab's rope has no scaling "
                         f"of type {kind!r}); only plain rope (rope_scaling: null) maps")
    if float(cfg["attention_dropout"] or 0.0) != 0.0:
        raise LmlabError(f"{where}: attention_dropout = {cfg['attention_dropout']!r} is not supported (lmlab's "
                         "dropout also drops residuals); set it to 0.0 and use model.dropout when training")
    d, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    if cfg["head_dim"] is not None and int(cfg["head_dim"]) * heads != d:
        raise LmlabError(f"{where}: head_dim = {cfg['head_dim']} is not hidden_size / num_attention_heads "
                         f"({d} / {heads}); lmlab's attention needs heads that split hidden_size")
    kv = cfg["num_key_value_heads"]
    return {
        "family": "transformer",
        "vocab_size": int(cfg["vocab_size"]),
        "block_size": int(cfg["max_position_embeddings"]),
        "n_layer": int(cfg["num_hidden_layers"]),
        "n_head": heads,
        "n_kv_head": int(kv) if kv is not None and int(kv) != heads else None,
        "d_model": d,
        "d_ff": int(cfg["intermediate_size"]),
        "dropout": 0.0,
        "bias": False,
        "attn_bias": bool(cfg["attention_bias"]),
        "mlp_bias": bool(cfg["mlp_bias"]),
        "pos_encoding": "rope",
        "rope_base": float(cfg["rope_theta"]),
        "norm": "rmsnorm",
        "norm_eps": float(cfg["rms_norm_eps"]),
        "mlp": "swiglu",
        "tie_weights": bool(cfg["tie_word_embeddings"]),
    }


def _refuse(where: str, key: str, value: Any, allowed: tuple[Any, ...], why: str) -> None:
    if value not in allowed:
        raise LmlabError(f"{where}: {key} = {value!r} is not supported ({why}); lmlab maps "
                         f"{' or '.join(map(repr, allowed))}")




SUPPORTED = ("gpt2", "llama")


def hf_model_type(hf_dir: Path) -> str:
    """The ``model_type`` of an HF folder, refused in one line unless lmlab maps it."""
    kind = read_hf_config(hf_dir).get("model_type")
    if kind not in SUPPORTED:
        raise LmlabError(f"{hf_dir / CONFIG_FILE}: model_type = {kind!r} is not supported; lmlab reads "
                         f"{' and '.join(SUPPORTED)} folders")
    return kind


def hf_model_config(hf_dir: Path) -> dict[str, Any]:
    """The lmlab model section of an HF folder (GPT-2 or Llama)."""
    if hf_model_type(hf_dir) == "gpt2":
        return gpt2_model_config(read_hf_config(hf_dir))
    return llama_model_config(read_hf_config(hf_dir), str(hf_dir / CONFIG_FILE))

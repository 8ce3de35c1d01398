"""Hugging Face ``LlamaForCausalLM`` folders <-> lmlab ``transformer`` models.

Llama is lmlab's transformer with RoPE, RMSNorm, a SwiGLU MLP and no biases, plus grouped-query
attention (``n_kv_head``) and, in the small models, tied embeddings. Two layouts differ:

- lmlab fuses q, k and v into one ``qkv`` projection (query rows, then key rows, then value rows)
  and gate and up into one ``gate_up`` (gate rows first); HF keeps them apart.
- RoPE rotates pairs. HF's ``rotate_half`` pairs dimension j of a head with j + hs/2; lmlab's
  complex form pairs 2j with 2j + 1, at the same frequency j. The query and key rows are permuted
  per head on the way in (HF row j -> lmlab row 2j, HF row j + hs/2 -> lmlab row 2j + 1) and back
  on the way out; a dot product of q and k is unchanged by permuting both alike.

- :func:`llama_model_config`: HF ``config.json`` dict -> lmlab model section, refusing (by key)
  what lmlab's transformer cannot express (rope scaling, another activation, a head_dim that is
  not hidden_size / heads, attention dropout).
- :func:`load_hf_llama`: HF dir -> (model, tokenizer or None, model section).
- :func:`export_hf_llama`: an lmlab Llama-shaped transformer -> HF dir that
  ``LlamaForCausalLM.from_pretrained`` reads, with the tokenizer files the import read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmlab.configure import build_model_config
from lmlab.errors import LmlabError
from lmlab.interop.hf_config import llama_model_config, read_hf_config
from lmlab.interop.hf_files import load_mapped, read_hf_weights, write_folder
from lmlab.models.transformer import Transformer
from lmlab.registry import build_model
from lmlab.tokenizers.base import Tokenizer
from lmlab.tokenizers.bpe import BPETokenizer
from lmlab.tokenizers.hf import HFTokenizer

# What an lmlab transformer must be for Llama: field -> allowed values.
LLAMA_COMPATIBLE: dict[str, tuple[Any, ...]] = {
    "pos_encoding": ("rope",),
    "norm": ("rmsnorm",),
    "mlp": ("swiglu",),
}


# ------------------------------------------------------------------------------------- config


def exportable(cfg: Any) -> list[str]:
    """What keeps a model config from being a Llama (empty when it is one)."""
    if getattr(cfg, "family", None) != "transformer":
        return [f"model.family={getattr(cfg, 'family', None)!r} (Llama needs transformer)"]
    return [f"model.{field}={getattr(cfg, field)!r} (Llama needs {' or '.join(map(str, allowed))})"
            for field, allowed in LLAMA_COMPATIBLE.items() if getattr(cfg, field) not in allowed]


def _hf_config(cfg: Any, tokenizer: Tokenizer | None) -> dict[str, Any]:
    """A complete LlamaConfig dict for an lmlab transformer config."""
    special = tokenizer.special_ids if tokenizer is not None else {}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.block_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ff_dim,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.d_model // cfg.n_head,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_base,
        "rope_scaling": None,
        "attention_bias": cfg.bias if cfg.attn_bias is None else cfg.attn_bias,
        "attention_dropout": 0.0,
        "mlp_bias": cfg.bias if cfg.mlp_bias is None else cfg.mlp_bias,
        "tie_word_embeddings": cfg.tie_weights,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": special.get("bos"),
        "eos_token_id": special.get("eos"),
        "pad_token_id": special.get("pad"),
    }


# ------------------------------------------------------------------------------------ weights


def _rope_rows(w: torch.Tensor, heads: int, to_lmlab: bool) -> torch.Tensor:
    """Permute the rows of a query or key projection (heads x hs rows; weight or bias) between
    HF's half-split rotary pairs and lmlab's interleaved ones."""
    hs = w.size(0) // heads
    rest = w.shape[1:]
    if to_lmlab:  # (heads, 2, hs/2, ...) -> (heads, hs/2, 2, ...): row j + k*hs/2 goes to 2j + k
        return w.reshape(heads, 2, hs // 2, *rest).transpose(1, 2).reshape(w.shape).contiguous()
    return w.reshape(heads, hs // 2, 2, *rest).transpose(1, 2).reshape(w.shape).contiguous()


def _layer_names(i: int) -> dict[str, str]:
    """lmlab module -> HF module of layer i (those stored one to one)."""
    return {f"blocks.{i}.norm1": f"model.layers.{i}.input_layernorm",
            f"blocks.{i}.norm2": f"model.layers.{i}.post_attention_layernorm",
            f"blocks.{i}.attn.proj": f"model.layers.{i}.self_attn.o_proj",
            f"blocks.{i}.mlp.down": f"model.layers.{i}.mlp.down_proj"}


def _map_in(sd: dict[str, torch.Tensor], cfg: Any) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF state dict -> (lmlab state dict, HF names that map to nothing)."""
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # older files' rope buffers
    taken: set[str] = set()

    def take(name: str) -> torch.Tensor | None:
        if name in sd:
            taken.add(name)
            return sd[name]
        return None

    out: dict[str, torch.Tensor] = {}
    for ours, theirs in (("wte", "model.embed_tokens"), ("norm_f", "model.norm")):
        if (t := take(f"{theirs}.weight")) is not None:
            out[f"{ours}.weight"] = t
    head = take("lm_head.weight")
    if cfg.tie_weights:
        if head is not None and "wte.weight" in out and not torch.equal(head, out["wte.weight"]):
            raise LmlabError("lm_head.weight differs from model.embed_tokens.weight although tie_word_embeddings "
                             "is true; the folder's config and weights disagree")
    elif head is not None:
        out["lm_head.weight"] = head
    kv = cfg.kv_heads
    for i in range(cfg.n_layer):
        for ours, theirs in _layer_names(i).items():
            for kind in ("weight", "bias"):
                if (t := take(f"{theirs}.{kind}")) is not None:
                    out[f"{ours}.{kind}"] = t
        attn, mlp = f"model.layers.{i}.self_attn", f"model.layers.{i}.mlp"
        for kind in ("weight", "bias"):
            q, k, v = (take(f"{attn}.{p}_proj.{kind}") for p in "qkv")
            if q is not None and k is not None and v is not None:
                q, k = _rope_rows(q, cfg.n_head, True), _rope_rows(k, kv, True)
                out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([q, k, v])
            gate, up = take(f"{mlp}.gate_proj.{kind}"), take(f"{mlp}.up_proj.{kind}")
            if gate is not None and up is not None:
                out[f"blocks.{i}.mlp.gate_up.{kind}"] = torch.cat([gate, up])
    return out, sorted(set(sd) - taken)


def _map_out(model: Transformer) -> dict[str, torch.Tensor]:
    """lmlab state dict -> HF ``LlamaForCausalLM`` state dict."""
    cfg = model.cfg
    sd = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    out = {"model.embed_tokens.weight": sd["wte.weight"], "model.norm.weight": sd["norm_f.weight"]}
    if not cfg.tie_weights:
        out["lm_head.weight"] = sd["lm_head.weight"]
    hs, kv = cfg.d_model // cfg.n_head, cfg.kv_heads
    for i in range(cfg.n_layer):
        for ours, theirs in _layer_names(i).items():
            for kind in ("weight", "bias"):
                if f"{ours}.{kind}" in sd:
                    out[f"{theirs}.{kind}"] = sd[f"{ours}.{kind}"]
        for kind in ("weight", "bias"):
            if (qkv := sd.get(f"blocks.{i}.attn.qkv.{kind}")) is not None:
                q, k, v = qkv.split([cfg.n_head * hs, kv * hs, kv * hs])
                rows = {"q": _rope_rows(q, cfg.n_head, False), "k": _rope_rows(k, kv, False), "v": v}
                for p, t in rows.items():
                    out[f"model.layers.{i}.self_attn.{p}_proj.{kind}"] = t
            if (gu := sd.get(f"blocks.{i}.mlp.gate_up.{kind}")) is not None:
                gate, up = gu.chunk(2)
                out[f"model.layers.{i}.mlp.gate_proj.{kind}"] = gate
                out[f"model.layers.{i}.mlp.up_proj.{kind}"] = up
    return {k: v.contiguous() for k, v in out.items()}


def _hf_name(name: str) -> str:
    """An lmlab tensor name as the HF folder would call it (for the missing-tensor message)."""
    top, _, rest = name.partition(".")
    if top != "blocks":
        return {"wte.weight": "model.embed_tokens.weight", "norm_f.weight": "model.norm.weight"}.get(name, name)
    index, _, rest = rest.partition(".")
    module, _, kind = rest.rpartition(".")
    fused = {"attn.qkv": "self_attn.{q,k,v}_proj", "mlp.gate_up": "mlp.{gate,up}_proj"}
    if module in fused:
        return f"model.layers.{index}.{fused[module]}.{kind}"
    return f"{_layer_names(int(index))[f'blocks.{index}.{module}']}.{kind}"


# ------------------------------------------------------------------------------------- public


def load_hf_llama(hf_dir: str | Path) -> tuple[Transformer, Tokenizer | None, dict[str, Any]]:
    """Read an HF Llama dir -> (lmlab model in eval mode, its tokenizer or None, model section)."""
    hf_dir = Path(hf_dir)
    hf_config = read_hf_config(hf_dir, "Hugging Face Llama model")
    model_dict = llama_model_config(hf_config, str(hf_dir / "config.json"))
    model = build_model(build_model_config(model_dict))
    mapped, unexpected = _map_in(read_hf_weights(hf_dir), model.cfg)
    skip = {"lm_head.weight"} if model.cfg.tie_weights else set()
    load_mapped(model, mapped, unexpected, skip, _hf_name, f"{hf_dir} (Llama)")
    return model.eval(), read_hf_tokenizer(hf_dir), model_dict


def read_hf_tokenizer(hf_dir: Path) -> HFTokenizer | None:
    """The folder's ``tokenizer.json`` as an ``hf`` tokenizer with the model's (padded) vocab
    size, or None when it has none."""
    if not (hf_dir / "tokenizer.json").is_file():
        return None
    hf_config = read_hf_config(hf_dir)
    return HFTokenizer.from_hf_dir(hf_dir, hf_config, llama_model_config(hf_config)["vocab_size"])


def export_hf_llama(model: Transformer, out_dir: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """Write a Llama-shaped lmlab transformer as an HF Llama dir; returns ``out_dir``.

    ``config.json``, ``model.safetensors`` and, for a tokenizer imported from HF (the ``hf``
    backend), its ``tokenizer.json`` and config files as they were read; lmlab's own ``bpe``
    tokenizer goes out as its ``tokenizer.json``. An existing non-empty ``out_dir`` is refused.
    """
    bad = exportable(model.cfg)
    if bad:
        raise LmlabError("cannot export to Llama: " + "; ".join(bad))
    if tokenizer is not None and tokenizer.vocab_size != model.cfg.vocab_size:
        raise LmlabError(f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is "
                         f"{model.cfg.vocab_size}")

    def write_tokenizer(folder: Path) -> None:
        if isinstance(tokenizer, HFTokenizer):
            tokenizer.write_hf(folder)
        elif isinstance(tokenizer, BPETokenizer):  # lmlab's own byte-level BPE is an HF tokenizers file too
            tokenizer.hf.save(str(folder / "tokenizer.json"))

    return write_folder(Path(out_dir), _hf_config(model.cfg, tokenizer), _map_out(model), write_tokenizer)

"""Hugging Face GPT-2 checkpoints <-> lmlab ``transformer`` models (no ``transformers`` needed).

GPT-2 is the transformer family with learned positions, LayerNorm, (tanh) GELU, biases and tied
embeddings. HF stores the attention and MLP projections as ``Conv1D`` with (in, out) weights; lmlab
uses ``nn.Linear`` (out, in), so those four weights are transposed on the way in and out.

- :func:`gpt2_model_config`: HF ``config.json`` dict -> lmlab model section.
- :func:`load_hf_gpt2`: HF dir -> (model, tokenizer or None, model section).
- :func:`import_hf_gpt2`: HF dir -> an lmlab run dir that ``lmlab.load`` and ``lmlab sample`` read.
- :func:`export_hf_gpt2`: run dir or model -> HF dir (``config.json``, ``model.safetensors``,
  ``tokenizer.json``) that ``GPT2LMHeadModel.from_pretrained`` reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmlab.configure import build_model_config
from lmlab.errors import LmlabError
from lmlab.interop.hf_config import gpt2_model_config, read_hf_config
from lmlab.interop.hf_files import (
    check_import_target,
    load_mapped,
    model_to_export,
    read_hf_weights,
    write_folder,
    write_run,
)
from lmlab.models.transformer import Transformer
from lmlab.registry import build_model
from lmlab.tokenizers.base import Tokenizer
from lmlab.tokenizers.bpe import EOS, BPETokenizer, _import_tokenizers

EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}  # lmlab mlp -> HF activation_function

# Block submodules: HF name -> lmlab name. The four Conv1D ones have transposed weights.
BLOCK_NAMES = {
    "ln_1": "norm1",
    "attn.c_attn": "attn.qkv",
    "attn.c_proj": "attn.proj",
    "ln_2": "norm2",
    "mlp.c_fc": "mlp.up",
    "mlp.c_proj": "mlp.down",
}
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
TOP_NAMES = {"wte": "wte", "wpe": "wpe", "ln_f": "norm_f"}
# HF buffers that are not weights (causal mask tables in older checkpoints).
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")

# What an lmlab transformer must be for GPT-2: field -> allowed values.
GPT2_COMPATIBLE: dict[str, tuple[Any, ...]] = {
    "pos_encoding": ("learned",),
    "norm": ("layernorm",),
    "mlp": ("gelu_tanh", "gelu"),
    "bias": (True,),
    "tie_weights": (True,),
}


# ------------------------------------------------------------------------------------- config


def not_exportable(cfg: Any) -> list[str]:
    """What keeps a model config from being a GPT-2 (empty when it is one)."""
    if getattr(cfg, "family", None) != "transformer":
        return [f"model.family={getattr(cfg, 'family', None)!r} (GPT-2 needs transformer)"]
    bad = [f"model.{field}={getattr(cfg, field)!r} (GPT-2 needs {' or '.join(map(str, allowed))})"
           for field, allowed in GPT2_COMPATIBLE.items() if getattr(cfg, field) not in allowed]
    if getattr(cfg, "n_kv_head", None) not in (None, cfg.n_head):
        bad.append(f"model.n_kv_head={cfg.n_kv_head!r} (GPT-2 has no grouped-query attention)")
    bad += [f"model.{f}={getattr(cfg, f)!r} (GPT-2 has one bias setting: leave it unset)"
            for f in ("attn_bias", "mlp_bias") if getattr(cfg, f, None) not in (None, cfg.bias)]
    return bad


def _check_exportable(cfg: Any) -> None:
    """Raise naming every field of a transformer config that GPT-2 cannot express."""
    bad = not_exportable(cfg)
    if bad and bad[0].startswith("model.family"):
        raise LmlabError(bad[0])
    if bad:
        raise LmlabError("cannot export to GPT-2: " + "; ".join(bad))


def _hf_config(cfg: Any, eos_id: int | None) -> dict[str, Any]:
    """A complete GPT2Config dict for an lmlab transformer config."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.ff_dim,
        "activation_function": EXPORT_ACTIVATIONS[cfg.mlp],
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps,
        "initializer_range": 0.02,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


# ------------------------------------------------------------------------------------ weights


def _to_lmlab_name(hf_name: str) -> tuple[str | None, bool]:
    """HF tensor name (no ``transformer.`` prefix) -> (lmlab name or None if unknown, transpose)."""
    top, _, rest = hf_name.partition(".")
    if top in TOP_NAMES and rest in ("weight", "bias"):
        return f"{TOP_NAMES[top]}.{rest}", False
    if top == "h":
        index, _, rest = rest.partition(".")
        module, _, kind = rest.rpartition(".")
        if index.isdigit() and module in BLOCK_NAMES and kind in ("weight", "bias"):
            return f"blocks.{index}.{BLOCK_NAMES[module]}.{kind}", kind == "weight" and module in CONV1D
    return None, False


def _to_hf_name(name: str) -> tuple[str, bool]:
    """lmlab tensor name -> (HF name without prefix, transpose)."""
    top, _, rest = name.partition(".")
    if top == "blocks":
        index, _, rest = rest.partition(".")
        module, _, kind = rest.rpartition(".")
        hf_module = {v: k for k, v in BLOCK_NAMES.items()}[module]
        return f"h.{index}.{hf_module}.{kind}", kind == "weight" and hf_module in CONV1D
    return f"{({v: k for k, v in TOP_NAMES.items()})[top]}.{rest}", False


def _map_hf_weights(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """HF state dict -> (lmlab state dict, HF names that map to nothing)."""
    if any(k.startswith("transformer.") for k in sd):
        sd = {k.removeprefix("transformer."): v for k, v in sd.items()}
    lm_head = sd.pop("lm_head.weight", None)
    if lm_head is not None and "wte.weight" in sd and not torch.equal(lm_head, sd["wte.weight"]):
        raise LmlabError(
            "lm_head.weight differs from wte.weight: lmlab ties the output head to the embedding, "
            "so an untied GPT-2 cannot be loaded"
        )
    mapped, unexpected = {}, []
    for hf_name, tensor in sd.items():
        if hf_name.endswith(HF_BUFFERS):
            continue
        name, transpose = _to_lmlab_name(hf_name)
        if name is None:
            unexpected.append(hf_name)
            continue
        mapped[name] = tensor.t().contiguous() if transpose else tensor
    return mapped, unexpected


# ---------------------------------------------------------------------------------- tokenizer


def read_hf_tokenizer(hf_dir: Path) -> Tokenizer | None:
    """``tokenizer.json``, else ``vocab.json`` + ``merges.txt``, as a BPETokenizer; else None."""
    if (hf_dir / "tokenizer.json").is_file():
        tk = _import_tokenizers()
        hf = tk.Tokenizer.from_file(str(hf_dir / "tokenizer.json"))
    elif (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        tk = _import_tokenizers()
        hf = tk.Tokenizer(tk.models.BPE.from_file(str(hf_dir / "vocab.json"), str(hf_dir / "merges.txt")))
        hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = tk.decoders.ByteLevel()
        if hf.token_to_id(EOS) is not None:  # mark it special (keeps its id) so decode drops it
            hf.add_special_tokens([tk.AddedToken(EOS, special=True)])
    else:
        return None
    if hf.token_to_id(EOS) is None:
        raise LmlabError(f"{hf_dir}: the tokenizer has no {EOS} token, which lmlab uses as end of text")
    return BPETokenizer(hf)


# ------------------------------------------------------------------------------------- public


def load_hf_gpt2(hf_dir: str | Path) -> tuple[Transformer, Tokenizer | None, dict[str, Any]]:
    """Read an HF GPT-2 dir -> (lmlab model in eval mode, its tokenizer or None, model section)."""
    hf_dir = Path(hf_dir)
    model_dict = gpt2_model_config(read_hf_config(hf_dir, "Hugging Face GPT-2 model"))
    model = build_model(build_model_config(model_dict))
    mapped, unexpected = _map_hf_weights(read_hf_weights(hf_dir))
    load_mapped(model, mapped, unexpected, {"lm_head.weight"},  # tied to wte
                lambda k: _to_hf_name(k)[0], f"{hf_dir} (GPT-2)")
    return model.eval(), read_hf_tokenizer(hf_dir), model_dict


def import_hf_gpt2(
    hf_dir: str | Path, run_dir: str | Path, tokenizer_from: str | Path | None = None
) -> Path:
    """Turn an HF GPT-2 dir into an lmlab run dir (config.yaml, tokenizer, one step-0 snapshot).

    The tokenizer comes from ``tokenizer_from`` (an lmlab run dir or tokenizer dir) when given,
    else from ``hf_dir``. A run dir that already holds a checkpoint is refused.
    """
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    check_import_target(run_dir)
    model, tokenizer, model_dict = load_hf_gpt2(hf_dir)
    return write_run(hf_dir, run_dir, model, tokenizer, model_dict, tokenizer_from)


def export_hf_gpt2(
    run_dir_or_model: str | Path | Transformer,
    out_dir: str | Path,
    tokenizer: Tokenizer | None = None,
) -> Path:
    """Write an lmlab GPT-2-shaped transformer as an HF GPT-2 dir; returns ``out_dir``.

    Writes ``config.json``, ``model.safetensors`` and, for a BPE tokenizer, ``tokenizer.json``
    (byte/char/sentencepiece tokenizers have no GPT-2 form and are left out). The files are built in
    a temporary dir renamed into place; an existing non-empty ``out_dir`` is refused.
    """
    out_dir = Path(out_dir)
    model, tokenizer = model_to_export(run_dir_or_model, tokenizer, "export_hf_gpt2")
    cfg = model.cfg
    _check_exportable(cfg)
    if tokenizer is not None and tokenizer.vocab_size != cfg.vocab_size:
        raise LmlabError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model's vocab_size is {cfg.vocab_size}"
        )
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied to wte; HF re-ties it
            continue
        hf_name, transpose = _to_hf_name(name)
        t = tensor.detach().to("cpu")
        tensors[f"transformer.{hf_name}"] = (t.t() if transpose else t).contiguous()

    eos = tokenizer.eos_id if tokenizer is not None else None

    def write_tokenizer(folder: Path) -> None:
        if isinstance(tokenizer, BPETokenizer):
            tokenizer.hf.save(str(folder / "tokenizer.json"))

    return write_folder(out_dir, _hf_config(cfg, eos), tensors, write_tokenizer)

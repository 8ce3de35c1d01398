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

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmlab import rundir, runs
from lmlab.configure import build_model_config, read_config_file, save_config, validate_config
from lmlab.errors import LmlabError
from lmlab.models.transformer import Transformer
from lmlab.registry import build_model
from lmlab.tokenizers import load_tokenizer
from lmlab.tokenizers.base import META_FILE, Tokenizer
from lmlab.tokenizers.bpe import EOS, BPETokenizer, _import_tokenizers

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"

# HF activation_function -> lmlab mlp (exact matches only: gelu_fast/quick_gelu differ numerically).
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}
EXPORT_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu"}

# GPT2Config defaults, used for keys a config.json leaves out (HF does the same).
HF_DEFAULTS: dict[str, Any] = {
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
HF_REQUIRED: dict[str, Any] = {
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
    "reorder_and_upcast_attn": False,
    "add_cross_attention": False,
    "tie_word_embeddings": True,
    "is_encoder_decoder": False,
}

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


def gpt2_model_config(hf_config: dict[str, Any]) -> dict[str, Any]:
    """HF GPT-2 ``config.json`` dict -> lmlab ``model`` section (explicit fields, no preset)."""
    cfg = {**HF_DEFAULTS, **hf_config}
    if cfg["model_type"] != "gpt2":
        raise LmlabError(f"config.json: model_type = {cfg['model_type']!r}: only gpt2 is supported")
    for key, needed in HF_REQUIRED.items():
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


def _check_exportable(cfg: Any) -> None:
    """Raise naming every field of a transformer config that GPT-2 cannot express."""
    if getattr(cfg, "family", None) != "transformer":
        raise LmlabError(f"model.family={getattr(cfg, 'family', None)!r} (GPT-2 needs transformer)")
    bad = [
        f"model.{field}={getattr(cfg, field)!r} (GPT-2 needs {' or '.join(map(str, allowed))})"
        for field, allowed in GPT2_COMPATIBLE.items()
        if getattr(cfg, field) not in allowed
    ]
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


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing file or one that is not safetensors (a
    renamed pickle, a torn download) is a one-line error."""
    try:
        return load_file(str(path))
    except (SafetensorError, FileNotFoundError) as e:
        raise LmlabError(f"{path}: not a readable safetensors file ({e}); download it again") from None


def _read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of an HF checkpoint: safetensors (single or sharded) or pytorch_model.bin."""
    if (hf_dir / SAFETENSORS_FILE).is_file():
        return _load_safetensors(hf_dir / SAFETENSORS_FILE)
    if (hf_dir / SAFETENSORS_INDEX).is_file():
        index = json.loads((hf_dir / SAFETENSORS_INDEX).read_text(encoding="utf-8"))
        out: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            out.update(_load_safetensors(hf_dir / shard))
        return out
    if (hf_dir / BIN_FILE).is_file():
        try:
            return torch.load(hf_dir / BIN_FILE, map_location="cpu", weights_only=True)
        except Exception as e:  # any unpickling failure means a bad file
            raise LmlabError(f"{hf_dir / BIN_FILE}: {_bin_refusal(e)}") from None
    raise LmlabError(f"{hf_dir}: no weights found (expected {SAFETENSORS_FILE} or {BIN_FILE})")


def _bin_refusal(e: Exception) -> str:
    """Why a ``.bin`` did not load, never in torch's words, which advise ``weights_only=False``
    (that would run whatever the pickle holds)."""
    text = str(e)
    if "GLOBAL" in text or "Unsupported global" in text:
        return ("holds pickled objects, not only tensors: refused unread (lmlab never unpickles a weights "
                "file); use the model's model.safetensors instead")
    return (f"not a readable torch weights file ({type(e).__name__}); download it again or use the "
            "model's model.safetensors")


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


def _read_hf_tokenizer(hf_dir: Path) -> Tokenizer | None:
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


def _read_lmlab_tokenizer(path: Path) -> tuple[Tokenizer, dict[str, Any] | None]:
    """A tokenizer dir, or a run dir's tokenizer -> (tokenizer, that run's tokenizer section)."""
    if (path / META_FILE).is_file():
        return load_tokenizer(path), None
    tok = load_tokenizer(rundir.tokenizer_dir(path))
    section = None
    if rundir.config_path(path).is_file():
        section = read_config_file(rundir.config_path(path)).get("tokenizer")
    return tok, section if isinstance(section, dict) else None


# ------------------------------------------------------------------------------------- public


def load_hf_gpt2(hf_dir: str | Path) -> tuple[Transformer, Tokenizer | None, dict[str, Any]]:
    """Read an HF GPT-2 dir -> (lmlab model in eval mode, its tokenizer or None, model section)."""
    hf_dir = Path(hf_dir)
    if not (hf_dir / CONFIG_FILE).is_file():
        raise LmlabError(f"{hf_dir}: no {CONFIG_FILE} (expected a Hugging Face GPT-2 model dir)")
    try:
        hf_config = json.loads((hf_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LmlabError(f"{hf_dir / CONFIG_FILE}: cannot parse: {e}") from None
    model_dict = gpt2_model_config(hf_config)
    model = build_model(build_model_config(model_dict))
    mapped, unexpected = _map_hf_weights(_read_hf_weights(hf_dir))
    wanted = set(model.state_dict()) - {"lm_head.weight"}  # tied to wte
    missing = sorted(_to_hf_name(k)[0] for k in wanted - set(mapped))
    if missing or unexpected:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(sorted(unexpected))}"] if unexpected else []
        raise LmlabError(f"{hf_dir}: weights do not fit a GPT-2 of this config: {'; '.join(parts)}")
    try:
        model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).strip().splitlines()[1:3])
        raise LmlabError(f"{hf_dir}: weights do not fit a GPT-2 of this config: {detail}") from None
    return model.eval(), _read_hf_tokenizer(hf_dir), model_dict


def import_hf_gpt2(
    hf_dir: str | Path, run_dir: str | Path, tokenizer_from: str | Path | None = None
) -> Path:
    """Turn an HF GPT-2 dir into an lmlab run dir (config.yaml, tokenizer, one step-0 snapshot).

    The tokenizer comes from ``tokenizer_from`` (an lmlab run dir or tokenizer dir) when given,
    else from ``hf_dir``. A run dir that already holds a checkpoint is refused.
    """
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    rundir.check_out_dir(run_dir, "run_dir")  # the API too: never empty, never inside another run
    if rundir.has_checkpoint(run_dir):
        raise LmlabError(
            f"{run_dir} already holds a checkpoint; import into a new run dir so nothing is overwritten"
        )
    model, tokenizer, model_dict = load_hf_gpt2(hf_dir)
    tok_section: dict[str, Any] | None = None
    if tokenizer_from is not None:
        tokenizer, tok_section = _read_lmlab_tokenizer(Path(tokenizer_from))
    if tokenizer is None:
        raise LmlabError(
            f"no tokenizer in {hf_dir} (tokenizer.json or vocab.json+merges.txt); "
            "pass --tokenizer-from RUN_DIR"
        )
    if tokenizer.vocab_size != model_dict["vocab_size"]:
        source = tokenizer_from if tokenizer_from is not None else hf_dir
        raise LmlabError(
            f"the tokenizer from {source} has {tokenizer.vocab_size} ids but the model's vocab_size "
            f"is {model_dict['vocab_size']}; they must match"
        )
    tok_dir = rundir.tokenizer_dir(run_dir).resolve()
    tok_section = {
        **(tok_section or {}),
        "type": tokenizer.backend,
        "vocab_size": max(16, tokenizer.vocab_size),
        "model_path": str(tok_dir),  # a config that trains from this one keeps the same tokenizer
    }
    cfg = validate_config(
        {
            "data": {"sources": [{"type": "builtin", "name": "pydocs"}]},
            "tokenizer": tok_section,
            "model": model_dict,
            "train": {"out_dir": str(run_dir)},
        },
        source=f"import of {hf_dir}",
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if tok_dir.exists():
        shutil.rmtree(tok_dir)
    tokenizer.save(tok_dir)
    save_config(cfg, rundir.config_path(run_dir))
    meta = rundir.snapshot_meta(cfg, tokenizer, model, 0, 0, imported_from=str(hf_dir))
    rundir.save_snapshot(run_dir, model, meta)  # last: a failed import leaves no checkpoint
    return run_dir


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
    _refuse_non_empty(out_dir)
    if isinstance(run_dir_or_model, Transformer):
        model = run_dir_or_model
    elif isinstance(run_dir_or_model, (str, Path)):
        model, run_tokenizer, _, _ = runs.load_run(run_dir_or_model)
        tokenizer = tokenizer if tokenizer is not None else run_tokenizer
    else:
        raise LmlabError(
            f"export_hf_gpt2: expected a run dir or a transformer model, got {type(run_dir_or_model).__name__}"
        )
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

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        eos = tokenizer.eos_id if tokenizer is not None else None
        hf_config = _hf_config(cfg, eos)
        dtype = next(iter(tensors.values())).dtype
        hf_config["torch_dtype"] = str(dtype).removeprefix("torch.")
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        if isinstance(tokenizer, BPETokenizer):
            tokenizer.hf.save(str(tmp / "tokenizer.json"))
        _refuse_non_empty(out_dir)
        if out_dir.exists():
            out_dir.rmdir()  # empty: checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise LmlabError(f"{out_dir} already exists and is not empty; pick a new output dir")

"""The files of a Hugging Face model folder, shared by every architecture lmlab maps (gpt2.py,
llama.py): reading ``config.json`` and the weights (safetensors, sharded or not, or a
``pytorch_model.bin`` read without unpickling objects), writing a folder atomically, and turning a
loaded model into an lmlab run dir.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmlab import rundir, runs
from lmlab.configure import read_config_file, save_config, validate_config
from lmlab.errors import LmlabError
from lmlab.interop.hf_config import CONFIG_FILE
from lmlab.models.transformer import Transformer
from lmlab.tokenizers import load_tokenizer
from lmlab.tokenizers.base import META_FILE, Tokenizer

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; a missing file or one that is not safetensors (a
    renamed pickle, a torn download) is a one-line error."""
    try:
        return load_file(str(path))
    except (SafetensorError, FileNotFoundError) as e:
        raise LmlabError(f"{path}: not a readable safetensors file ({e}); download it again") from None


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
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


def load_mapped(model: torch.nn.Module, mapped: dict[str, torch.Tensor], unexpected: list[str],
                skip: set[str], hf_name: Callable[[str], str], where: str) -> None:
    """Load ``mapped`` (lmlab names) into ``model``: every tensor but ``skip`` (tied ones) must be
    there and fit; ``hf_name`` names a missing one as the HF folder would."""
    missing = sorted(hf_name(k) for k in set(model.state_dict()) - skip - set(mapped))
    if missing or unexpected:
        parts = [f"missing {', '.join(missing)}"] if missing else []
        parts += [f"unexpected {', '.join(sorted(unexpected))}"] if unexpected else []
        raise LmlabError(f"{where}: weights do not fit a model of this config: {'; '.join(parts)}")
    try:
        model.load_state_dict(mapped, strict=False)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).strip().splitlines()[1:3])
        raise LmlabError(f"{where}: weights do not fit a model of this config: {detail}") from None


def model_to_export(run_dir_or_model: Any, tokenizer: Tokenizer | None, what: str) -> tuple[Any, Tokenizer | None]:
    """(transformer, tokenizer) of an export's source: a transformer model as given, or a run
    dir's newest snapshot and, unless ``tokenizer`` is given, its tokenizer."""
    if isinstance(run_dir_or_model, Transformer):
        return run_dir_or_model, tokenizer
    if isinstance(run_dir_or_model, (str, Path)):
        model, run_tokenizer, _, _ = runs.load_run(run_dir_or_model)
        return model, tokenizer if tokenizer is not None else run_tokenizer
    raise LmlabError(f"{what}: expected a run dir or a transformer model, got {type(run_dir_or_model).__name__}")


def refuse_non_empty(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise LmlabError(f"{out_dir} already exists and is not empty; pick a new output dir")


def write_folder(out_dir: Path, hf_config: dict[str, Any], tensors: dict[str, torch.Tensor],
                 extra: Callable[[Path], None] | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and whatever ``extra(tmp)`` adds (the
    tokenizer) into a temporary dir renamed into place: a failure leaves no half folder."""
    refuse_non_empty(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        dtype = next(iter(tensors.values())).dtype
        hf_config = {**hf_config, "torch_dtype": str(dtype).removeprefix("torch.")}
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
        save_file(tensors, str(tmp / SAFETENSORS_FILE), metadata={"format": "pt"})
        if extra is not None:
            extra(tmp)
        refuse_non_empty(out_dir)
        if out_dir.exists():
            out_dir.rmdir()  # empty: checked above
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_lmlab_tokenizer(path: Path) -> tuple[Tokenizer, dict[str, Any] | None]:
    """A tokenizer dir, or a run dir's tokenizer -> (tokenizer, that run's tokenizer section)."""
    if (path / META_FILE).is_file():
        return load_tokenizer(path), None
    tok = load_tokenizer(rundir.tokenizer_dir(path))
    section = None
    if rundir.config_path(path).is_file():
        section = read_config_file(rundir.config_path(path)).get("tokenizer")
    return tok, section if isinstance(section, dict) else None


def check_import_target(run_dir: Path) -> None:
    """The run dir an import makes (checked before any weight is read): never empty, never inside
    another run, never one that holds a checkpoint already."""
    rundir.check_out_dir(run_dir, "run_dir")
    if rundir.has_checkpoint(run_dir):
        raise LmlabError(f"{run_dir} already holds a checkpoint; import into a new run dir so nothing is overwritten")


def write_run(hf_dir: Path, run_dir: Path, model: torch.nn.Module, tokenizer: Tokenizer | None,
              model_dict: dict[str, Any], tokenizer_from: str | Path | None = None) -> Path:
    """An lmlab run dir (config.yaml, tokenizer, one weights-only step-0 snapshot) of a model
    loaded from ``hf_dir``; the tokenizer is ``tokenizer_from``'s (an lmlab run or tokenizer dir)
    when given. A run dir that already holds a checkpoint is refused."""
    check_import_target(run_dir)
    tok_section: dict[str, Any] | None = None
    if tokenizer_from is not None:
        tokenizer, tok_section = read_lmlab_tokenizer(Path(tokenizer_from))
    if tokenizer is None:
        raise LmlabError(f"no tokenizer in {hf_dir} (tokenizer.json or vocab.json+merges.txt); pass "
                         "--tokenizer-from RUN_DIR")
    if tokenizer.vocab_size != model_dict["vocab_size"]:
        source = tokenizer_from if tokenizer_from is not None else hf_dir
        raise LmlabError(f"the tokenizer from {source} has {tokenizer.vocab_size} ids but the model's vocab_size "
                         f"is {model_dict['vocab_size']}; they must match")
    tok_dir = rundir.tokenizer_dir(run_dir).resolve()
    tok_section = {
        **(tok_section or {}),
        "type": tokenizer.backend,
        "vocab_size": max(16, min(tokenizer.vocab_size, 2**24)),
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

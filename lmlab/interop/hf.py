"""Hugging Face model folders in and out, whatever the architecture: ``lmlab import-hf`` and
``lmlab export-hf`` (and ``lmlab eval`` of an HF folder) go through here, which picks the mapping
(gpt2.py, llama.py) by the folder's ``model_type`` on the way in and by the model's shape on the
way out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError
from lmlab.interop import gpt2, llama
from lmlab.interop.hf_config import hf_model_type, is_hf_folder  # noqa: F401  (is_hf_folder: re-exported)
from lmlab.interop.hf_files import check_import_target, model_to_export, write_run
from lmlab.models.transformer import Transformer
from lmlab.tokenizers.base import Tokenizer

READERS = {"gpt2": gpt2.load_hf_gpt2, "llama": llama.load_hf_llama}
FORMATS = ("llama", "gpt2")  # export: the first the model fits
NAMES = {"llama": "Llama", "gpt2": "GPT-2"}


def load_hf(hf_dir: str | Path) -> tuple[Transformer, Tokenizer | None, dict[str, Any]]:
    """(lmlab model in eval mode, tokenizer or None, model section) of an HF folder."""
    hf_dir = Path(hf_dir)
    return READERS[hf_model_type(hf_dir)](hf_dir)


def load_hf_tokenizer(hf_dir: str | Path) -> Tokenizer | None:
    """The tokenizer of an HF folder as :func:`load_hf` gives it, without reading the weights."""
    hf_dir = Path(hf_dir)
    if hf_model_type(hf_dir) == "gpt2":
        return gpt2.read_hf_tokenizer(hf_dir)
    return llama.read_hf_tokenizer(hf_dir)


def import_hf(hf_dir: str | Path, run_dir: str | Path, tokenizer_from: str | Path | None = None) -> Path:
    """Turn an HF folder (GPT-2 or Llama) into an lmlab run dir with one weights-only snapshot."""
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    check_import_target(run_dir)
    model, tokenizer, model_dict = load_hf(hf_dir)
    return write_run(hf_dir, run_dir, model, tokenizer, model_dict, tokenizer_from)


def export_hf(run_dir_or_model: str | Path | Transformer, out_dir: str | Path,
              tokenizer: Tokenizer | None = None, to: str | None = None) -> tuple[Path, str]:
    """Write a run dir (its newest snapshot) or a transformer as an HF folder; ``to``: llama or
    gpt2 (None: the first the model fits). Returns (folder, format)."""
    model, tokenizer = model_to_export(run_dir_or_model, tokenizer, "export")
    if to is not None and to not in FORMATS:
        raise LmlabError(f"export format {to!r}: choose {' or '.join(FORMATS)}")
    reasons = {"llama": llama.exportable(model.cfg), "gpt2": gpt2.not_exportable(model.cfg)}
    if to is not None and reasons[to]:
        raise LmlabError(f"cannot export to {NAMES[to]}: " + "; ".join(reasons[to]))
    fits = [f for f in FORMATS if not reasons[f]] if to is None else [to]
    if not fits:
        raise LmlabError("cannot export: " + " | ".join(f"{f}: {'; '.join(reasons[f])}" for f in FORMATS))
    if fits[0] == "llama":
        return llama.export_hf_llama(model, out_dir, tokenizer), "llama"
    return gpt2.export_hf_gpt2(model, out_dir, tokenizer), "gpt2"

"""What a saved model says about itself, read without building it: the run config a snapshot was
saved with (``checkpoint_config``) and, for ``train.init_from``, the model and tokenizer sections
of a run dir, a snapshot folder or an HF model folder (``read_source``).

Below ``configure`` (which resolves a config's ``init_from`` with it) and above ``rundir``,
``compat`` and the registry; the weights are loaded later, by the trainer (``training/resume.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab import compat, rundir
from lmlab.config import DEFAULT_FAMILY
from lmlab.errors import LmlabError
from lmlab.interop.hf_config import hf_model_config, hf_model_type, is_hf_folder
from lmlab.registry import get_family

WHAT = "give a run dir, a snapshot folder (RUN/checkpoints/current) or a Hugging Face GPT-2 / Llama folder"


def checkpoint_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The run config a snapshot was saved with, upgraded (:func:`upgrade_saved`)."""
    raw = upgrade_saved(json.loads(json.dumps(meta["config"])))  # a copy
    # Run dirs saved before lmlab/compat held a few seed spellings in the schema itself: today's spelling.
    return compat.translate(raw, "checkpoint").raw


def upgrade_saved(raw: dict[str, Any]) -> dict[str, Any]:
    """A config lmlab wrote (a snapshot's, or a run dir's config.yaml), with its model section
    upgraded by its family's config class where the family defines ``upgrade_checkpoint_config``
    (e.g. apelr: no version means v1; the abstractinator: a key added since reads as what the
    run trained with). Such a config holds every key of its day, so a missing key is one that
    did not exist when it was written."""
    model = raw.get("model", {})
    cfg_cls, _ = get_family(model.get("family", DEFAULT_FAMILY))
    return {**raw, "model": cfg_cls.upgrade_checkpoint_config(model)}


@dataclass
class Source:
    """Where ``init_from`` weights come from: ``kind`` ``hf`` (an HF folder) or ``lmlab`` (a
    snapshot); the model section; the tokenizer section (``model_path``: where it is read)."""

    path: Path
    kind: str
    model: dict[str, Any]
    tokenizer: dict[str, Any]
    snapshot: rundir.Snapshot | None = None
    saved_tokenizer: dict[str, Any] | None = None
    """A snapshot's tokenizer section as it was saved (its ``model_path`` where that run read it)."""


def read_source(path: str | Path, key: str = "train.init_from") -> Source:
    """The model and tokenizer sections of ``path`` (one line when it holds neither)."""
    p = Path(path)
    if not p.exists():
        raise LmlabError(f"{key} = {path}: not found; {WHAT}")
    if is_hf_folder(p):
        kind = hf_model_type(p)
        tok = {"type": "bpe" if kind == "gpt2" else "hf", "model_path": str(p)}
        return Source(p, "hf", hf_model_config(p), tok)
    run, named = rundir.resolve_run_path(p)
    if named is None and not rundir.has_checkpoint(run):
        raise LmlabError(f"{key} = {path}: no snapshot there (no checkpoints/current) and no config.json; {WHAT}")
    snap = rundir.named_snapshot(named) if named is not None else rundir.latest_snapshot(run)
    saved = checkpoint_config(snap.meta)
    tok = {**(saved.get("tokenizer") or {}), "model_path": str(rundir.tokenizer_dir(run))}
    return Source(p, "lmlab", saved["model"], tok, snap, saved.get("tokenizer") or {})

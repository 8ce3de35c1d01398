"""Seed 001's JSON presets on disk: where they are, their list, reading one, and what a run of
one costs on a CPU. Their schema and the run config each stands for are a seed dialect
(``lmlab/compat/seed001.py``); docs/continuous.md has the table.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmlab.compat.seed001 import (  # noqa: F401  (re-exported: the continuous trainer's vocabulary)
    TARGET_TOKENS,
    Preset,
    read_preset,
    to_run_config,
    validate_preset,
)
from lmlab.configure import validate_config
from lmlab.errors import ConfigError
from lmlab.training.memory import BYTES_PER_PARAM

DEFAULT_PRESET = "00_best_general"


def presets_dir(cwd: Path | None = None) -> Path:
    """``configs/presets`` under the working directory, else the one beside the lmlab package."""
    here = (cwd or Path.cwd()) / "configs" / "presets"
    if here.is_dir():
        return here
    repo = Path(__file__).resolve().parents[2] / "configs" / "presets"
    if repo.is_dir():
        return repo
    raise ConfigError(f"no presets found: expected JSON presets in {here} (create it, or run main.py from the "
                      "lmlab checkout)")


def list_presets(folder: Path) -> list[tuple[str, str]]:
    """(name, one-line description) of every ``*.json`` preset, sorted by file name."""
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            desc = str(raw.get("description", "")) if isinstance(raw, dict) else ""
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            desc = f"(unreadable: {e.__class__.__name__})"
        out.append((path.stem, " ".join(desc.split())))
    if not out:
        raise ConfigError(f"{folder}: no *.json presets there; add one (see docs/continuous.md)")
    return out


def load_preset(path: Path) -> Preset:
    """Read and validate one preset file (one-line errors naming the file and the key), through
    the one safe reader every config goes through (a repeated key, deep nesting, an empty file)."""
    return read_preset(path)


CPU_GFLOPS_PER_CORE = 9.0
"""Training throughput of one CPU core (fp32, AdamW, small transformers), for the CPU picker:
00_best_general took 396 s per step of ~7.2e12 FLOPs on 2 cores, ~9 GFLOPS per core."""
CPU_HOURS_LIMIT = 24.0
"""A preset "fits" a CPU-only machine when its run of ``TARGET_TOKENS`` takes at most this long."""


def cpu_estimate(preset: Preset, name: str, cores: int, available: int,
                 target_tokens: int = TARGET_TOKENS) -> tuple[float, int, bool]:
    """(hours for one run on ``cores`` CPU cores, bytes of training memory, fits) of a preset:
    FLOPs per token from the family's formula (``ModelConfig.flops_per_token``) at
    ``CPU_GFLOPS_PER_CORE``; memory as ``training/memory.py`` counts it, against ``available``."""
    raw = to_run_config(preset, name, target_tokens)
    tok = preset.tokenizer
    raw["model"]["vocab_size"] = tok.vocab_size if tok.type in ("bpe", "sentencepiece", "auto") else 256
    cfg = validate_config(raw, name)
    seq = preset.model.seq_length
    flops = cfg.model.flops_per_token(seq) * target_tokens
    hours = flops / (max(1, cores) * CPU_GFLOPS_PER_CORE * 1e9) / 3600
    params, activations = cfg.model.size_estimate(preset.train.per_gpu_batch_size * seq)
    need = params * BYTES_PER_PARAM + activations + cfg.model.overhead_bytes()
    return hours, need, hours <= CPU_HOURS_LIMIT and need <= available

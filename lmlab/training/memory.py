"""Refuse a model that cannot fit before building it: ``model.n_layer=100000`` would otherwise
allocate until the machine kills it.

The family's ``ModelConfig.size_estimate`` gives parameters and the activations a training step
keeps; AdamW training holds 16 bytes per parameter (fp32 weights, gradients, two moments;
sharded over the ranks under FSDP); ``overhead_bytes`` adds what every layer costs whatever its
widths (module objects, autograd's graph), which is what a very deep, narrow model runs out of.
The budget is the GPU's memory, or the RAM available now. The refusal names the model key whose
value weighs most: the one that, put back to its default, would shrink the estimate the most.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from pydantic import BaseModel

from lmlab.config import ModelConfig, RunConfig
from lmlab.errors import LmlabError
from lmlab.training.distributed import DistInfo

BYTES_PER_PARAM = 16  # fp32 weights + gradients + AdamW's exp_avg and exp_avg_sq


def available_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes a run on ``device`` may use, where they are): the GPU's total memory, or the RAM
    available now (MemAvailable; the physical RAM where /proc is absent)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1], f"on {device}"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024, "of RAM available"
    except (OSError, KeyError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "of RAM"


def training_bytes(cfg: RunConfig, model: ModelConfig, tokens: int, ranks: int) -> tuple[int, int, int, int]:
    """(parameters, their state's bytes per rank, activation bytes, per-layer overhead bytes) of
    training ``model`` on micro-batches of ``tokens`` tokens, the state sharded over ``ranks``;
    gradient checkpointing keeps only each block's input, so its activations are not counted."""
    params, activations = model.size_estimate(tokens)
    if cfg.train.precision in ("bf16", "fp16"):
        activations //= 2  # autocast keeps most saved activations in 16 bits
    if cfg.train.grad_checkpoint:
        activations = 0
    return params, params * BYTES_PER_PARAM // ranks, activations, model.overhead_bytes()


def check_fits(cfg: RunConfig, info: DistInfo, micro_batch: int, seq_len: int, sharded: bool) -> None:
    """A one-line refusal when the estimated training memory of one rank exceeds its device's."""
    ranks, tokens = info.world if sharded else 1, micro_batch * seq_len
    params, state, activations, overhead = training_bytes(cfg, cfg.model, tokens, ranks)
    need = state + activations + overhead
    have, where = available_bytes(info.device)
    if need <= have:
        return
    acts = ("" if cfg.train.grad_checkpoint else
            f" + activations of a {micro_batch} x {seq_len} micro-batch ~{_gib(activations)} GiB")
    layers = f" + per-layer bookkeeping ~{_gib(overhead)} GiB" if overhead >= 2**30 else ""
    count = (f"{params:.1e}" if params >= 1e15 else f"{params / 1e9:,.1f}B" if params >= 1e9
             else f"{params / 1e6:,.1f}M")
    raise LmlabError(
        f"the model cannot train here: ~{count} parameters need ~{_gib(need)} GiB "
        f"(weights, gradients and AdamW state {BYTES_PER_PARAM} bytes each ~{_gib(state)} GiB{acts}{layers}), "
        f"and this machine has {_gib(have)} GiB {where}; {_largest_term(cfg, tokens, ranks, need)}"
        "shrink model.* or train.batch_size / seq_len")


def _gib(n: int) -> str:
    """Bytes as GiB, in plain figures up to a million GiB, then as a power of ten."""
    g = n / 2**30
    return f"{g:,.1f}" if g < 1e6 else f"{g:.1e}"


def _largest_term(cfg: RunConfig, tokens: int, ranks: int, need: int) -> str:
    """"the largest term is model.KEY = V (at its default D: ~X GiB); " for the model key whose
    default (or unset, where None is the default) shrinks the estimate the most, or "" when
    every key is at its default."""
    best: tuple[int, str, object, object] | None = None
    for path, value, default, variant in _at_default(cfg.model, "model"):
        smaller = sum(training_bytes(cfg, variant, tokens, ranks)[1:])
        if smaller < need and (best is None or smaller < best[0]):
            best = (smaller, path, value, default)
    if best is None:
        return ""
    smaller, path, value, default = best
    at = "unset" if default is None else f"at its default {default}"
    return f"the largest term is {path} = {value} ({at}: ~{_gib(smaller)} GiB); "


def _at_default(obj: BaseModel, path: str) -> Iterator[tuple[str, int, int | None, BaseModel]]:
    """(dotted key, value, default, a copy of ``obj`` with that key at its default) for every
    integer key below ``obj`` that is off its class default (nested sections, list items too)."""
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        if isinstance(value, BaseModel):
            for key, v, d, sub in _at_default(value, f"{path}.{name}"):
                yield key, v, d, obj.model_copy(update={name: sub})
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    for key, v, d, sub in _at_default(item, f"{path}.{name}[{i}]"):
                        yield key, v, d, obj.model_copy(update={name: [*value[:i], sub, *value[i + 1:]]})
        elif type(value) is int and (type(field.default) is int or field.default is None) and name != "vocab_size":
            # (vocab_size is the tokenizer's, not a knob; None defaults: d_ff and such, derived)
            if value != field.default:
                yield f"{path}.{name}", value, field.default, obj.model_copy(update={name: field.default})

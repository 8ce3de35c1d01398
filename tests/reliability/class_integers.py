"""The integer-knob class (issue 28): every integer key of every schema x {0, negative, huge,
beyond int64}, and the integer flags of ``lmlab sample``.

The keys are not listed by hand: ``knobs()`` walks the pydantic classes (the run config's
sections, each family's model config with its nested sections, the decoding settings), so a new
integer field joins the class by existing. What each kind should do is decided here, by rule:

- beyond int64 (2**70): refused everywhere (``train_config.Int``; seeds: ``Seed``);
- negative: refused everywhere (every field has a lower bound; a field without one fails here);
- 0 and huge (10**12): refused where the field's bounds say so, else by ``ZERO`` / ``HUGE``,
  which name every other key with its reason: accepted, or refused by a later check (a
  validator, the data, the memory estimate) that still names the key in one line.

A knob missing from the table it needs fails at import, so the catalogue cannot silently skip
it. Each refused pair is a row: ``lmlab train --config {cfg} --set KEY=VALUE`` (needle: the key's
last name), the decoding keys also through the Python API (``lmlab.load(run).generate``), and
the ``lmlab sample`` flags through the CLI. The accepted pairs are listed below with reasons;
``tests/test_integers.py`` checks the list is exactly what the rules give and that each
accepted huge value validates.

Accepted pairs (key, kind: why):
    data.sources[0].chunk_chars, huge: a PDF becomes one document; its text bounds it
    data.min_text_length, zero: keep every document (the default)
    data.adaptive_interval_tokens, huge: an interval: the weights never move
    data.num_workers, zero: build the cache in the main process (the default)
    data.max_train_tokens, huge: a budget: all the data
    data.max_val_tokens, huge: a budget: all the data
    data.max_train_examples, huge: a budget: all the data
    data.max_val_examples, huge: a budget: all the data
    tokenizer.fit_max_examples, huge: a budget: fit on every document
    tokenizer.fit_max_chars, huge: a budget: fit on every character
    train.seed, zero: a seed
    train.seed, huge: a seed below 2**63
    train.adaptive_batch.reprobe_interval_steps, zero: probe only at the start (the default)
    train.adaptive_batch.reprobe_interval_steps, huge: an interval: never probe again
    train.max_steps, huge: a budget (the schedule is sized to it; a run stops at another cap)
    train.max_tokens, huge: a budget
    train.stop_at_step, huge: a pause past the budget: never pauses
    train.warmup_steps, zero: no warmup
    train.warmup_steps, huge: capped at the budget (optim.lr_at)
    train.max_nonfinite_steps, huge: a patience: skip every non-finite step
    train.log_interval, huge: an interval: the final log only
    train.eval_interval, huge: an interval: the final evaluation only
    train.eval_batches, huge: capped at the validation windows there are (eval_windows)
    train.eval_tasks_interval, huge: an interval: the final task evaluation only
    train.eval_tasks_max_examples, huge: a cap: every example of each task
    train.save_interval, huge: an interval: the final snapshot only
    train.mlflow.batch_interval, huge: rows are buffered and flushed at close
    sample.top_k, huge: past the vocabulary it filters nothing
    sample.no_repeat_ngram_size, zero: off (the default)
    sample.no_repeat_ngram_size, huge: longer than any history: blocks nothing
    sample.seed, zero: a seed (the default)
    sample.seed, huge: a seed below 2**63
    sample.planner_rerank, zero: off (the default)
    sample.planner_rerank, huge: capped at the vocabulary (generate/planner.py)
    model.auxiliary.policy_positions, huge: capped at the window (models/heads)
    model.auxiliary.value_span, huge: capped at the window (models/heads)
    model.lookahead_horizon, zero: no lookahead
    model.chunk_bow_warmup_steps, zero: no ramp
    model.chunk_bow_warmup_steps, huge: a ramp that never ends: a schedule
    model.divergence_positions, huge: capped at the window (every position)
    model.conv_dilation_growth, huge: capped by conv_max_dilation
    model.conv_max_dilation, huge: a cap the growth never reaches
    model.levels[0].entropy.max_patch_len, huge: no cap: patches end where the entropy says
    model.levels[0].window, huge: a window past the context is plain causal attention
    model.eos_id, zero: byte 0 as the document separator
    sample --top-k, huge: past the vocabulary it filters nothing
    sample --no-repeat-ngram-size, zero: off
    sample --no-repeat-ngram-size, huge: blocks nothing
    sample --seed, zero: a seed
    sample --seed, huge: a seed below 2**63

Not rows: ``--lookahead-steps`` and ``--force-state`` (apelr's options, refused for the catalogue's
transformer run whatever their value; apelr bounds lookahead_steps at 64: tests/test_integers.py).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Literal, Union

import annotated_types
from pydantic import BaseModel

from lmlab.config import DecodeSettings, ModelConfig, RunConfig
from lmlab.registry import FAMILIES

KINDS = {"zero": 0, "negative": -1, "huge": 10**12, "int64": 2**70}

# Where a family's knobs are tried: the catalogue's {cfg} is a tiny transformer on a char tokenizer.
FAMILY_SETS = {"transformer": (), "apelr": ("model.family=apelr",), "psann": ("model.family=psann",),
               "abstractinator": ("model.family=abstractinator", "tokenizer.type=byte")}
# What makes a knob act where it would otherwise be ignored.
KNOB_SETS = {
    "model.conv_kernel_size": ("model.base=waveresnet",), "model.conv_dilation_growth": ("model.base=waveresnet",),
    "model.conv_max_dilation": ("model.base=waveresnet",), "model.mla_kv_rank": ("model.attn_form=mla",),
}

MEMORY = "refused: the memory estimate (training/memory.py) names it as the largest term"
# Huge values the field's bounds let through: accepted (why), or refused later, naming the key.
HUGE = {
    "data.sources[0].chunk_chars": "accepted", "data.min_text_length": "refused: the corpus is empty",
    "data.adaptive_interval_tokens": "accepted", "data.max_train_tokens": "accepted",
    "data.max_val_tokens": "accepted", "data.max_train_examples": "accepted", "data.max_val_examples": "accepted",
    "tokenizer.fit_max_examples": "accepted", "tokenizer.fit_max_chars": "accepted", "train.seed": "accepted",
    "train.batch_size": "refused: batch x accumulation over 2**20",
    "train.grad_accum_steps": "refused: batch x accumulation over 2**20",
    "train.adaptive_batch.reprobe_interval_steps": "accepted",
    "train.max_steps": "accepted", "train.max_tokens": "accepted", "train.stop_at_step": "accepted",
    "train.warmup_steps": "accepted", "train.max_nonfinite_steps": "accepted", "train.log_interval": "accepted",
    "train.eval_interval": "accepted", "train.eval_batches": "accepted", "train.save_interval": "accepted",
    "train.eval_tasks_interval": "accepted", "train.eval_tasks_max_examples": "accepted",
    "train.mlflow.batch_interval": "accepted", "sample.top_k": "accepted", "sample.no_repeat_ngram_size": "accepted",
    "sample.seed": "accepted", "sample.planner_rerank": "accepted", "model.auxiliary.policy_positions": "accepted",
    "model.auxiliary.value_span": "accepted", "model.n_layer": MEMORY, "model.d_model": MEMORY,
    "model.d_ff": MEMORY, "model.n_head": "refused: d_model is not divisible by it",
    "model.n_kv_head": "refused: n_head is not divisible by it",
    "model.num_plan_states": MEMORY, "model.chunk_size": "refused: over block_size", "model.expert_rank": MEMORY,
    "model.lookahead_horizon": MEMORY, "model.chunk_bow_warmup_steps": "accepted",
    "model.divergence_positions": "accepted", "model.conv_kernel_size": MEMORY,
    "model.conv_dilation_growth": "accepted", "model.conv_max_dilation": "accepted",
    "model.d_model@abstractinator": MEMORY, "model.n_head@abstractinator": "refused: d_model is not divisible by it",
    "model.mla_kv_rank": MEMORY, "model.levels[0].entropy.n_layer": MEMORY,
    "model.levels[0].entropy.max_patch_len": "accepted", "model.levels[0].compressor_layers": MEMORY,
    "model.levels[0].window": "accepted", "model.levels[0].n_queries": MEMORY, "model.levels[0].codebook_size": MEMORY,
    "model.levels[0].c_vq_d_c": MEMORY, "model.levels[0].vq_stages": MEMORY, "model.levels[0].expander_layers": MEMORY,
    "model.levels[0].d_lo_d_c": MEMORY, "model.top_transformer_config.n_layer": MEMORY,
    "model.top_transformer_config.n_head": "refused: d_model is not divisible by it",
    "model.base_levels": "refused: more than the levels", "model.eos_id": "refused: not an id of the vocabulary",
}
# Zeros the field's bounds let through (ge=0): all meaningful.
ZERO = {"data.min_text_length", "data.num_workers", "train.seed", "train.adaptive_batch.reprobe_interval_steps",
        "train.warmup_steps", "sample.no_repeat_ngram_size", "sample.seed", "sample.planner_rerank",
        "model.lookahead_horizon", "model.chunk_bow_warmup_steps", "model.eos_id"}
SEEDS = {"train.seed", "sample.seed"}


class Knob(typing.NamedTuple):
    name: str
    """The knob's name in the tables: its dotted key, ``@family`` where another family has it too."""
    key: str
    family: str
    low: int
    high: int | None


def _int_args(annotation) -> list:
    """The int members of ``annotation`` (through Annotated and unions), with their metadata."""
    origin = typing.get_origin(annotation)
    if annotation is int:
        return [annotation]
    if origin is Annotated:
        return [annotation] if typing.get_args(annotation)[0] is int else _int_args(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _int_args(arg)]
    return []


def _bounds(field) -> tuple[int | None, int | None]:
    meta = list(field.metadata)
    for arg in _int_args(field.annotation):
        meta += list(getattr(arg, "__metadata__", ())) if typing.get_origin(arg) is Annotated else []
    for m in list(meta):  # Field(...) inside Annotated[...] carries its own metadata
        meta += list(getattr(m, "metadata", []))
    low = max((m.ge for m in meta if isinstance(m, annotated_types.Ge)), default=None)
    high = min((m.le for m in meta if isinstance(m, annotated_types.Le)), default=None)
    return low, high


def _models(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (None, Literal):
        return []
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def int_fields(cls: type[BaseModel], prefix: str, own_only: bool = False):
    """(dotted key, field) of every int field below ``cls``; a list of sections is item [0]
    (a union of sections, e.g. the data sources, contributes each member's own fields)."""
    own = vars(cls).get("__annotations__", {}) if own_only else cls.model_fields
    for name, field in cls.model_fields.items():
        if name not in own:
            continue
        if _int_args(field.annotation):
            yield f"{prefix}{name}", field
        is_list = typing.get_origin(field.annotation) is list
        for sub in _models(field.annotation):
            if sub is ModelConfig:
                continue
            yield from int_fields(sub, f"{prefix}{name}{'[0]' if is_list else ''}.")


def knobs() -> list[Knob]:
    """Every integer knob once: the run config's sections, the model base (as the transformer,
    the default family) and each family's own fields."""
    found = [("transformer", k, f) for section, f0 in RunConfig.model_fields.items() if section != "model"
             for k, f in int_fields(f0.annotation, f"{section}.")]
    found += [("transformer", k, f) for k, f in int_fields(ModelConfig, "model.")]
    for family, (cls, _) in FAMILIES.items():
        found += [(family, k, f) for k, f in int_fields(cls, "model.", own_only=True)]
    out, seen = [], set()
    for family, key, field in found:
        name = key if key not in seen else f"{key}@{family}"
        seen.add(key)
        low, high = _bounds(field)
        if low is None and key not in SEEDS:
            raise AssertionError(f"{name}: an integer knob without a lower bound (Field(ge=...))")
        out.append(Knob(name, key, family, 0 if key in SEEDS else low, high))
    return out


def outcome(knob: Knob, kind: str) -> str:
    """"refused" or "accepted: why" for one knob and kind, by the rules in the docstring."""
    value = KINDS[kind]
    if kind in ("int64", "negative") or value < knob.low or (knob.high is not None and value > knob.high):
        return "refused"
    table = HUGE if kind == "huge" else dict.fromkeys(ZERO, "accepted")
    if knob.name not in table:
        raise AssertionError(f"{knob.name} = {value}: decide what it does (HUGE / ZERO in class_integers.py)")
    return table[knob.name]


def _set(key: str, value: int) -> tuple[str, ...]:
    """The --set arguments that give ``key`` the value (a list item's key sets the whole list)."""
    if key == "data.sources[0].chunk_chars":
        return ("--set", f"data.sources=[{{type: pdf, path: '{{file}}', chunk_chars: {value}}}]")
    if key.startswith("model.levels[0]."):
        inner = f"{value}"
        for part in reversed(key.removeprefix("model.levels[0].").split(".")):
            inner = f"{{{part}: {inner}}}"
        return ("--set", f"model.levels=[{inner}]")
    return ("--set", f"{key}={value}")


def _train_rows() -> list[dict]:
    rows = []
    for knob in knobs():
        sets = [x for s in (*FAMILY_SETS[knob.family], *KNOB_SETS.get(knob.key, ())) for x in ("--set", s)]
        for kind, value in KINDS.items():
            if outcome(knob, kind).startswith("refused"):
                rows.append({"id": f"int-{knob.name}-{kind}", "argv": ["train", "--config", "{cfg}", *sets,
                                                                      *_set(knob.key, value)],
                             "needles": [knob.key.rsplit(".", 1)[-1]]})
    return rows


def _api_rows() -> list[dict]:
    """The decoding knobs through ``lmlab.load(run).generate(...)``: the schema's refusals."""
    rows = []
    for knob in knobs():
        name = knob.key.removeprefix("sample.")
        if not knob.key.startswith("sample.") or name not in DecodeSettings.model_fields:
            continue
        for kind, value in KINDS.items():
            if outcome(knob, kind) == "refused":
                rows.append({"id": f"int-api-generate-{name}-{kind}", "api": True,
                             "argv": ["generate", "run_dir={run}", f"{name}={value}"], "needles": [name]})
    return rows


# lmlab sample's integer flags: (flags that make it act, {kind: the needle of its refusal, or None
# where it is accepted (the docstring's list)}). Values argparse refuses are named by the flag,
# values the decoding settings refuse by the key.
SAMPLE_FLAGS = {
    "--max-new-tokens": ((), {"zero": "max_new_tokens", "negative": "max_new_tokens", "huge": "max_new_tokens",
                              "int64": "max_new_tokens"}),
    "--top-k": ((), {"zero": "top_k", "negative": "top_k", "huge": None, "int64": "top_k"}),
    "--no-repeat-ngram-size": ((), {"zero": None, "negative": "no_repeat_ngram_size", "huge": None,
                                    "int64": "no_repeat_ngram_size"}),
    "--seed": ((), {"zero": None, "negative": "--seed", "huge": None, "int64": "--seed"}),
    "--planner-rerank": ((), {"zero": "--planner-rerank", "negative": "--planner-rerank",
                              "huge": "planner_rerank", "int64": "planner_rerank"}),
    "--planner-depth": (("--planner-rerank", "2"), {"zero": "--planner-depth", "negative": "--planner-depth",
                                                    "huge": "planner_depth", "int64": "planner_depth"}),
    "--num-samples": ((), {"zero": "--num-samples", "negative": "--num-samples", "huge": "--num-samples",
                           "int64": "--num-samples"}),
}


def _sample_rows() -> list[dict]:
    return [{"id": f"int-sample{flag}-{kind}", "argv": ["sample", "--checkpoint", "{run}", *extra, flag,
                                                         str(KINDS[kind])], "needles": [needle]}
            for flag, (extra, kinds) in SAMPLE_FLAGS.items() for kind, needle in kinds.items() if needle]


ROWS = _train_rows() + _api_rows() + _sample_rows()

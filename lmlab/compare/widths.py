"""What every seed of a trained arm shares in a comparison: the one tokenizer (fitted once into
``<root>/tokenizer``) and, with ``match_params``, the width solved so the arm matches the
baseline's parameters (or, in a scaling comparison, its training FLOPs per token)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmlab import rundir
from lmlab.compare.spec import ArmSpec, CompareSpec, required_tokenizer, resolved
from lmlab.config import RunConfig, TokenizerConfig
from lmlab.configure import validate_config
from lmlab.errors import ConfigError
from lmlab.registry import build_model
from lmlab.tokenizers import Tokenizer, build_tokenizer, load_tokenizer, resolve_backend
from lmlab.training.data import fit_texts, readable_sources

TOKENIZER_DIR = "tokenizer"


def shared_settings(spec: CompareSpec, is_main: bool, log=print, match: bool = True
                    ) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Per trained arm, what every seed of it gets on top of its sections: the comparison's
    one tokenizer (fitted once into ``<root>/tokenizer``; a family that reads another unit,
    e.g. bytes, keeps its own) and, with ``match_params`` (and ``match``), its solved width;
    and the vocabulary each shared-tokenizer arm reads."""
    tok_dir = spec.root / TOKENIZER_DIR
    trained = [a for a in spec.arms if a.run is None]
    # arms whose family reads its own unit (bytes) keep it (arm_raw sets it); the rest share one
    sharing = [a for a in trained if required_tokenizer(spec.arm_raw(a, spec.seeds[0])["model"]) is None]
    out: dict[str, dict[str, Any]] = {a.name: {} for a in trained}
    vocab: dict[str, int] = {}  # from memory: under torchrun only rank 0 has written the tokenizer yet
    if sharing:
        first = validate_config(spec.arm_raw(sharing[0], spec.seeds[0]), source=f"arm {sharing[0].name}")
        tokenizer = _shared_tokenizer(first, tok_dir, is_main, log)
        for arm in sharing:
            out[arm.name] = {"tokenizer": {"type": tokenizer.backend, "model_path": str(tok_dir.resolve())}}
            vocab[arm.name] = tokenizer.vocab_size
    if spec.match_params is not None and match:
        match_widths(spec, out, vocab, log)
    return out, vocab


def _shared_tokenizer(cfg: RunConfig, tok_dir: Path, is_main: bool, log) -> Tokenizer:
    """The comparison's tokenizer: read back when it was fitted before, else fitted on the
    shared data's training documents (as a run fits its own) and saved by rank 0."""
    if (tok_dir / "tokenizer_meta.json").is_file():
        return load_tokenizer(tok_dir)
    strict = resolve_backend(cfg.tokenizer.type) != "byte"
    tok = build_tokenizer(cfg.tokenizer, fit_texts(cfg, readable_sources(cfg), strict))
    if is_main:
        tok.save(tok_dir)
        log(f"lmlab compare: one {tok.backend} tokenizer of {tok.vocab_size} ids for every arm ({tok_dir})")
    return tok


def count_params(model_section: dict[str, Any], vocab_size: int, tokenizer: dict[str, Any]) -> int:
    """Exact parameters of a model section (built on the meta device: no memory, no time)."""
    cfg = validate_config({"model": {**model_section, "vocab_size": vocab_size}, "tokenizer": tokenizer})
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(cfg.model).parameters())


Measure = Callable[[dict[str, Any], int, dict[str, Any]], float]


def match_widths(spec: CompareSpec, extra: dict[str, dict[str, Any]], vocab_of: dict[str, int], log=print,
                 measure: Measure = count_params, what: str = "parameters") -> None:
    """Set ``match_params.width`` of every trained arm but the reference so its ``measure``
    (parameters by default; a scaling comparison may match FLOPs per token) is the nearest to
    the reference's; refused in one line when the nearest is off by more than the tolerance (or
    the family has no such width)."""
    mp = spec.match_params
    arms = {a.name: a for a in spec.arms}

    def section(arm: ArmSpec) -> tuple[dict[str, Any], int, dict[str, Any]]:
        cfg = resolved(spec, arm, spec.seeds[0], extra.get(arm.name, {}))
        vocab = vocab_of.get(arm.name) or unit_vocab(cfg.tokenizer.type)
        return cfg.model.model_dump(mode="json", exclude={"vocab_size"}), vocab, {"type": cfg.tokenizer.type}

    ref = arms[mp.arm]
    if ref.run is not None:
        meta = rundir.latest_snapshot(ref.run).meta
        target = int(meta["num_params"])
    else:
        target = measure(*section(ref))
    problems = []
    for arm in spec.arms:
        if arm.run is not None or arm.name == mp.arm:
            continue
        model, vocab, tok = section(arm)
        width = mp.widths.get(arm.name, mp.width)
        if width not in model:
            problems.append(f"arm {arm.name}: the {model['family']} family has no {width} "
                            f"(match_params.widths: {{{arm.name}: d_model}})")
            continue
        # d_model: whole heads of an even size (rotary positions pair the channels)
        step = 2 * (model.get("n_head") or 1) if width == "d_model" else 1

        @functools.cache  # keyed by k alone (one function per arm); the search asks for some twice
        def at(k: int, model=model, width=width, step=step, vocab=vocab, tok=tok) -> int | None:
            try:
                return measure({**model, width: k * step}, vocab, tok)
            except ConfigError:
                return None  # too narrow for the family (d_model >= 8, ...)

        lo = next(k for k in range(1, 1 << 12) if at(k) is not None)  # the narrowest valid width
        hi = lo
        while at(hi) < target and hi < 1 << 20:
            lo, hi = hi, hi * 2
        while hi - lo > 1:  # parameters grow with the width: bisect to the crossing
            mid = (lo + hi) // 2
            if at(mid) < target:
                lo = mid
            else:
                hi = mid
        best = min((lo, hi), key=lambda k: abs(at(k) - target))
        got = at(best)
        off = abs(got - target) / target
        if off > mp.tolerance:
            problems.append(f"arm {arm.name}: the nearest {width} ({best * step}) gives {got:,.0f} {what}, "
                            f"{off:.1%} from {mp.arm}'s {target:,.0f} (tolerance {mp.tolerance:.0%})")
            continue
        extra.setdefault(arm.name, {}).setdefault("model", {})[width] = best * step
        log(f"lmlab compare: arm {arm.name}: {width} = {best * step} -> {got:,.0f} {what} "
            f"({mp.arm}: {target:,.0f}, {off:.2%} apart)")
    if problems:
        raise ConfigError(f"match_params: {'; '.join(problems)}")


def unit_vocab(kind: str) -> int:
    """The vocabulary of a tokenizer that needs no fitting (byte: an arm that reads its own unit)."""
    return build_tokenizer(TokenizerConfig(type=kind), []).vocab_size

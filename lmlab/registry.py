"""Family name -> (config class, model class). A plain dict; a miss lists the valid names."""

from __future__ import annotations

from torch import nn

from lmlab.config import ModelConfig
from lmlab.errors import ConfigError
from lmlab.models.abstractinator import AbstractinatorConfig, AbstractinatorPyramid
from lmlab.models.apelr import Apelr, ApelrConfig
from lmlab.models.psann import Psann, PsannConfig
from lmlab.models.transformer import Transformer, TransformerConfig

FAMILIES: dict[str, tuple[type[ModelConfig], type[nn.Module]]] = {
    "transformer": (TransformerConfig, Transformer),
    "apelr": (ApelrConfig, Apelr),
    "psann": (PsannConfig, Psann),
    "abstractinator": (AbstractinatorConfig, AbstractinatorPyramid),
}


def get_family(name: str) -> tuple[type[ModelConfig], type[nn.Module]]:
    """The (config class, model class) registered under ``name``."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown model family {name!r}; valid families: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def family_aliases() -> dict[str, tuple[str, dict]]:
    """Alias -> (family, the fields it sets), from every family's ``aliases`` (e.g. psann's
    ``waveresnet`` -> ``("psann", {"base": "waveresnet"})``)."""
    return {alias: (name, dict(fields)) for name, (cfg, _) in FAMILIES.items() for alias, fields in cfg.aliases.items()}


def resolve_family(name: str) -> tuple[str, dict]:
    """(family, fields) for a family name or a family's alias; an unknown name lists both."""
    if name in FAMILIES:
        return name, {}
    aliases = family_aliases()
    if name in aliases:
        return aliases[name]
    raise ConfigError(f"unknown model family {name!r}; valid families: {', '.join(sorted(FAMILIES))} "
                      f"(or an alias: {', '.join(sorted(aliases))})")


def generation_option_owners() -> dict[str, list[str]]:
    """Decoding option -> the families whose models take it (``generation_flags``)."""
    owners: dict[str, list[str]] = {}
    for name, (_, model_cls) in FAMILIES.items():
        for option in getattr(model_cls, "generation_flags", {}):
            owners.setdefault(option, []).append(name)
    return owners


def build_model(cfg: ModelConfig) -> nn.Module:
    """Instantiate the family model for a validated model config (``vocab_size`` must be set)."""
    if cfg.vocab_size is None:
        raise ConfigError("model.vocab_size is not set: build the tokenizer first")
    _, model_cls = get_family(cfg.family)
    return model_cls(cfg)

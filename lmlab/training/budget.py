"""The training budget: ``train.max_steps`` / ``max_tokens`` / ``epochs`` as optimizer steps.

Every entry point states its budget in the config and the trainer turns it into steps here, over
the windows its sampler draws (``data/mixing.py``): ``LM.fit`` passes ``epochs`` through as
``train.epochs`` and asks ``budget_for`` how many steps that is, so nothing else counts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lmlab.config import RunConfig
from lmlab.data.cache import TokenArrays
from lmlab.data.mixing import MixtureSampler


@dataclass
class Budget:
    max_steps: int
    tokens_per_step: int


def resolve_budget(cfg: RunConfig, sampler: MixtureSampler) -> Budget:
    """Turn max_steps / max_tokens / epochs into a number of optimizer steps."""
    per_step = sampler.global_batch * sampler.block_size
    t = cfg.train
    if t.max_tokens is not None:
        steps = math.ceil(t.max_tokens / per_step)
    elif t.epochs is not None:
        steps = math.ceil(t.epochs * sampler.steps_per_epoch)
    else:
        steps = t.max_steps
    if t.max_steps is not None:  # beside max_tokens or epochs, max_steps caps them
        steps = min(steps, t.max_steps)
    return Budget(max(1, steps), per_step)


def n_tokens(arrays: list) -> int:
    """Tokens in per-source arrays, each one array or a list of segments (cache shards)."""
    return sum(len(a) if isinstance(a, np.ndarray) else sum(len(x) for x in a) for a in arrays)


def budget_for(cfg: RunConfig, arrays: TokenArrays, world: int) -> Budget:
    """The budget the trainer will resolve for ``cfg`` on ``arrays`` at ``world`` processes, known
    before it runs (``LM.fit`` sizes its warmup and intervals by it): same windows, same steps."""
    t = cfg.train
    sampler = MixtureSampler(arrays.train, arrays.names, t.seq_len or cfg.model.block_size, t.batch_target,
                             t.grad_accum_steps, world)
    return resolve_budget(cfg, sampler)

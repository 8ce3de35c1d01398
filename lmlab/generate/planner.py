"""Planner-guided decoding (seed 001's "adapter reintegration"): look ahead in latent space with
the auxiliary heads before committing each token.

For each row, N distinct candidate tokens are drawn from the decoding distribution (after the
repetition penalty, n-gram blocking, temperature, top-k and top-p; Gumbel top-N, so without
replacement). Each candidate a is rolled ``depth`` steps with the dynamics model from the last
hidden state h (B, C): z_1 = g(h, a), then z_k = g(z_{k-1}, argmax p_pi(. | z_{k-1})) with the
policy head choosing the rollout's next tokens. The value head reads every z_k: the predicted mean
NLL of what follows. The committed token maximises

    score(a) = log p_LM(a) - value_weight * mean_k v(z_k)

so the LM's own preference is traded against how predictable the continuation it leads to
looks. ``value_weight: 0`` reranks by the LM alone (the control that isolates the heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmlab.errors import LmlabError
from lmlab.generate.sampling import top_k_filter, top_p_filter


def check_planner_heads(model: torch.nn.Module, depth: int) -> None:
    """Refuse (one line) a model without the heads planner decoding reads."""
    heads = model.auxiliary_heads
    need = ["value", "dynamics"] + (["policy"] if depth > 1 else [])
    missing = [n for n in need if heads is None or getattr(heads, n) is None]
    if missing:
        flags = ", ".join(f"model.auxiliary.enable_{n}: true" for n in missing)
        raise LmlabError(f"planner decoding (planner_rerank) reads the {', '.join(missing)} head(s), which this "
                         f"model was not trained with; train it with {flags}, or decode without planner_rerank")


@torch.no_grad()
def planner_pick(model: torch.nn.Module, h: torch.Tensor, logits: torch.Tensor, n: int, depth: int,
                 value_weight: float, temperature: float, top_k: int | None, top_p: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The committed token (B,) for last hidden states h (B, C) and penalised logits (B, V)."""
    heads = model.auxiliary_heads
    logp = F.log_softmax(logits.float(), dim=-1)  # the LM's preference, untempered
    if temperature == 0:
        keys = logits.float()
    else:
        keys = top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p).log_softmax(-1)
        u = torch.rand(keys.shape, generator=generator, device=keys.device).clamp_(1e-10, 1.0)
        keys = keys - torch.log(-torch.log(u))  # Gumbel top-N: N draws without replacement
    n = min(n, logits.size(-1))
    top = keys.topk(n, dim=-1)
    cand = top.indices  # (B, N)
    allowed = torch.isfinite(top.values)  # rows with fewer than N tokens left after filtering
    B, C = h.shape
    h = h.to(next(heads.parameters()).dtype)
    z = heads.dynamics(h[:, None].expand(B, n, C), cand)  # (B, N, C)
    values = [heads.value(z).float()]
    for _ in range(depth - 1):
        nxt = heads.policy(z).argmax(dim=-1)  # (B, N): the rollout's own next token
        z = heads.dynamics(z, nxt)
        values.append(heads.value(z).float())
    future = torch.stack(values).mean(0)  # (B, N): predicted mean NLL ahead
    score = logp.gather(1, cand) - value_weight * future
    score = score.masked_fill(~allowed, float("-inf"))
    return cand.gather(1, score.argmax(dim=-1, keepdim=True)).squeeze(-1)

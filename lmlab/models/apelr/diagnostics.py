"""Planner diagnostics (``planner_eval.json``): how the plan states are used, how sure the
belief is, the transition matrix, and an intervention test: force each state in turn and
measure how far the next-token distribution moves (a planner-bypass score: near 0 means the
executor ignores the planner)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F

from lmlab.models.apelr.planner import PlannerState


@torch.no_grad()
def planner_diagnostics(model, input_ids: torch.Tensor) -> dict[str, Any]:
    """Diagnostics of ``model`` (an Apelr) on token windows input_ids (N, T)."""
    was_training = model.training
    model.eval()
    try:
        h = model._trunk(input_ids)
        ex = model._experts(h)
        trace = model.planner.filter(model.planner.context(h), ex.ell(input_ids[:, 1:]), PlannerState(),
                                     model._filtering())
        lb = trace.log_belief  # (N, T, K)
        K = lb.size(-1)
        priors = torch.stack(trace.priors, dim=1)
        forced = []
        for k in range(K):  # the output distribution with plan state k forced
            gate = torch.full_like(lb, -math.inf)
            gate[..., k] = 0.0
            forced.append(F.log_softmax(model._emit(ex, gate).float(), dim=-1))
        js = torch.zeros(K, K)
        kls = []
        for a, b in itertools.combinations(range(K), 2):
            pa, pb = forced[a], forced[b]
            m = torch.logsumexp(torch.stack([pa, pb]), 0) - math.log(2)
            jsd = 0.5 * ((pa.exp() * (pa - m)).sum(-1) + (pb.exp() * (pb - m)).sum(-1)).mean()
            js[a, b] = js[b, a] = jsd
            kls.append(0.5 * ((pa.exp() * (pa - pb)).sum(-1) + (pb.exp() * (pb - pa)).sum(-1)).mean())
        belief = lb.exp()
        return {
            "version": model.cfg.version,
            "num_plan_states": K,
            "positions": int(lb.shape[0] * lb.shape[1]),
            "usage": belief.mean(dim=(0, 1)).tolist(),
            "argmax_usage": torch.bincount(lb.argmax(-1).flatten(), minlength=K).div(lb[..., 0].numel()).tolist(),
            "belief_entropy": float(-(belief * lb).sum(-1).mean()),
            "boundary_prior_entropy": float(-(priors.exp() * priors).sum(-1).mean()),
            "max_entropy": math.log(K),
            "transition": model.planner.log_transition().exp().tolist(),
            "intervention": {
                "mean_pairwise_js": float(js.sum() / max(1, K * (K - 1))),
                "mean_pairwise_kl": float(torch.stack(kls).mean()) if kls else 0.0,
                "pairwise_js": js.tolist(),
            },
        }
    finally:
        model.train(was_training)

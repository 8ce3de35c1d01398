"""The APEL-R planner: a belief over K plan states, filtered by the experts' token likelihoods
and carried across chunk boundaries by a learned transition (docs/apelr.md has the math).

Shapes: B batch, n positions in this call, K plan states. Everything is in log space.
Positions are absolute (``state.pos`` onwards), so one routine serves training (a whole
sequence from position 0) and cached decoding (a few positions at a time): chunk c covers
positions [cC, (c+1)C) and its plan state governs the predictions made at those positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PlannerState:
    """Belief bookkeeping between calls: the current chunk's log prior, the summed expert
    log-likelihoods of its observed tokens, and the context logits of the last position."""

    log_prior: torch.Tensor | None = None  # (B, K)
    acc: torch.Tensor | None = None  # (B, K)
    u_last: torch.Tensor | None = None  # (B, K)
    pos: int = 0


@dataclass
class PlannerTrace:
    """What one pass produced: per-position beliefs and, per chunk started / ended in it, the
    prior and the filtered posterior (used by the auxiliary losses and diagnostics)."""

    log_belief: torch.Tensor  # (B, n, K)
    priors: list[torch.Tensor] = field(default_factory=list)  # chunk starts: (B, K) each
    posteriors: list[torch.Tensor] = field(default_factory=list)  # chunk ends: (B, K) each


class Planner(nn.Module):
    def __init__(self, num_states: int, d_model: int, chunk_size: int, self_bias: float, context_scale: float):
        super().__init__()
        self.K, self.C, self.context_scale = num_states, chunk_size, context_scale
        self.init_logits = nn.Parameter(torch.zeros(num_states))
        # Row i of the transition: logits of moving from state i; the diagonal starts at self_bias.
        self.trans_logits = nn.Parameter(self_bias * torch.eye(num_states))
        self.context = nn.Linear(d_model, num_states)
        nn.init.normal_(self.context.weight, std=0.02)
        nn.init.zeros_(self.context.bias)

    def log_transition(self) -> torch.Tensor:
        """log A (K, K), rows sum to one: A[i, j] = p(z_{c+1} = j | z_c = i)."""
        return F.log_softmax(self.trans_logits.float(), dim=-1)

    def boundary_prior(self, log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Next chunk's log prior: log(alpha A) + s * u, renormalised. (B, K), (B, K) -> (B, K)."""
        pushed = torch.logsumexp(log_alpha[:, :, None] + self.log_transition(), dim=1)  # (B, K)
        return F.log_softmax(pushed + self.context_scale * u, dim=-1)

    def initial_prior(self, batch: int, device) -> torch.Tensor:
        return F.log_softmax(self.init_logits.float(), -1).to(device).expand(batch, -1)

    def lookahead(self, log_belief: torch.Tensor, horizon: int) -> list[torch.Tensor]:
        """Forecast beliefs b A^h for h = 1..horizon (each shaped like ``log_belief``)."""
        log_a = self.log_transition()
        out, cur = [], log_belief
        for _ in range(horizon):
            cur = torch.logsumexp(cur.unsqueeze(-1) + log_a, dim=-2)
            out.append(cur)
        return out

    def filter(
        self, u: torch.Tensor, ell: torch.Tensor, state: PlannerState, token_filtering: bool = True
    ) -> PlannerTrace:
        """Beliefs at positions state.pos .. state.pos + n - 1, advancing ``state``.

        u (B, n, K): context logits at those positions; ell (B, n, K): log p_k(next token) at
        each (0 where the next token is not known yet; the caller folds it in later via
        ``state.acc``). The belief at t is the chunk prior times the likelihoods of the chunk's
        tokens observed before t (``token_filtering``), or the prior alone.
        """
        B, n, K = u.shape
        u, ell = u.float(), ell.float()
        if state.log_prior is None:
            state.log_prior = self.initial_prior(B, u.device)
            state.acc = u.new_zeros(B, K)
            state.u_last = u.new_zeros(B, K)
        trace_beliefs, priors, posteriors = [], [], []
        i = 0
        while i < n:
            t = state.pos + i
            if t % self.C == 0 and t > 0:  # a chunk boundary: filter the old chunk, transition
                log_alpha = F.log_softmax(state.log_prior + state.acc, dim=-1)
                posteriors.append(log_alpha)
                u_prev = u[:, i - 1] if i > 0 else state.u_last
                state.log_prior = self.boundary_prior(log_alpha, u_prev)
                state.acc = torch.zeros_like(state.acc)
            if t % self.C == 0:
                priors.append(state.log_prior)
            j = min(n, i + self.C - t % self.C)  # [i, j): the rest of this chunk in the call
            seg = ell[:, i:j]  # (B, m, K)
            if token_filtering:
                before = torch.cumsum(seg, dim=1) - seg  # exclusive: tokens observed before t
                logits = state.log_prior[:, None] + state.acc[:, None] + before
            else:
                logits = state.log_prior[:, None].expand(B, j - i, K)
            trace_beliefs.append(F.log_softmax(logits, dim=-1))
            state.acc = state.acc + seg.sum(1)
            i = j
        state.u_last = u[:, -1]
        state.pos += n
        return PlannerTrace(torch.cat(trace_beliefs, dim=1), priors, posteriors)

    def final_posterior(self, state: PlannerState) -> torch.Tensor:
        """The filtered posterior of the current (possibly partial) chunk. (B, K)"""
        return F.log_softmax(state.log_prior + state.acc, dim=-1)

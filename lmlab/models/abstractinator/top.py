"""CodeSequenceTransformer: a causal transformer over the top level's codes.

Discrete (default): log p(code_k | code_<k) stage by stage (cross-entropy). ``continuous``: it
regresses the next code's vector (MSE) and generation snaps the prediction to the nearest code.
A learned start vector shifts the sequence, so the first code is predicted too. ``head=False``
(causal decoding): no code head; :meth:`states` over the codes' vectors is all it gives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.abstractinator.attention import Stack, causal_mask
from lmlab.models.abstractinator.vq import CodeHead, ResidualVQ


class CodeSequenceTransformer(nn.Module):
    def __init__(self, d_model: int, n_head: int, layers: int, form: str, backend: str, kv_rank: int,
                 max_len: int, rvq: ResidualVQ, continuous: bool = False, head: bool = True,
                 d_in: int | None = None):
        super().__init__()
        self.rvq, self.continuous = [rvq], continuous
        self.up = nn.Linear(d_in or rvq.d_c, d_model, bias=False)  # d_in: causal decoding's pooled vectors (D)
        self.bos = nn.Parameter(torch.randn(d_model) * 0.02)
        self.trunk = Stack(layers, d_model, n_head, form, backend, kv_rank, max_len=max_len)
        if continuous:
            self.out = nn.Linear(d_model, rvq.d_c, bias=False)
        elif head:  # causal decoding has none: the expanders read the states, nothing scores a code
            self.head = CodeHead(d_model, rvq)

    def hidden(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, S) -> hidden (B, K, D); position k sees codes < k."""
        return self.states(self.rvq[0].embed(codes))

    def states(self, vecs: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, K, d_c), or pooled ones (B, K, d_in) -> hidden (B, K, D); position k
        sees vectors < k (the start vector at 0). Causal decoding feeds the quantiser's
        straight-through vectors (or the pooled ones), so the gradient reaches the encoder; the
        code stream uses the codebook's."""
        prev = self.up(vecs[:, :-1].to(self.up.weight.dtype))
        x = torch.cat([self.bos.expand(vecs.size(0), 1, -1), prev], dim=1)
        return self.trunk(x, causal_mask())

    def loss(self, codes: torch.Tensor, valid: torch.Tensor,
             soft: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean CE (nats per code) or MSE over the valid codes, the codes' mean rate or None).
        codes (B, K, S), valid (B, K); ``soft`` (discrete only): the encoder's soft assignments
        of the codes, one (B, K, codebook_size) per stage, priced by ``CodeHead.log_prob``."""
        h = self.hidden(codes)
        n = valid.sum().clamp(min=1)
        if self.continuous:
            target = self.rvq[0].embed(codes).float()
            err = F.mse_loss(self.out(h).float(), target, reduction="none").mean(-1)
            return (err * valid).sum() / n, None
        lp, _, rate = self.head.log_prob(h, codes, soft=soft)
        return -(lp * valid).sum() / n, None if rate is None else (rate * valid).sum() / n

    def log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """log p(code_k | code_<k) (B, K) under the discrete model."""
        lp, *_ = self.head.log_prob(self.hidden(codes), codes)
        return lp

    def next_code(self, codes: torch.Tensor, pick) -> torch.Tensor:
        """The next code (B, S) after codes (B, K, S); ``pick(logits) -> idx`` chooses each stage."""
        pad = torch.zeros_like(codes[:, :1])
        h = self.hidden(torch.cat([codes, pad], dim=1))[:, -1]  # position K sees codes 0..K-1
        if self.continuous:
            return self.rvq[0].quantize(self.out(h).float())
        return self.head.sample(h, pick)

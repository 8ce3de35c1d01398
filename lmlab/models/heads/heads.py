"""Auxiliary planning heads (seed 001, "Tier 1 auxiliary modules"), usable on any family that
exposes hidden states.

Shapes: B batch, T positions, C hidden size, V vocabulary, P policy positions per row, S value
span, K rollout steps, L span length. ``h`` is the family's final hidden state (B, T, C), what
its output head reads; position t has seen tokens 0..t and predicts target t (= token t+1).

- **policy**: p_pi(. | h_t) at P random positions per row; KL(p_LM || p_pi) with the LM's own
  distribution detached, so the LM is the teacher and never moves toward the student.
- **value**: v(h_t) regresses the mean NLL the LM pays on targets t..t+S-1 (detached): how hard
  the next span is, a proxy for its information gain.
- **dynamics**: z_t = h_t, z_{t+k} = g(z_{t+k-1}, e(x_{t+k})) predicts h_{t+k} for k = 1..K
  (a short latent rollout; relative MSE against the detached h, as in SPR / EfficientZero).
  The prediction lives in h's space, so the value and policy heads read rollouts directly.
- **span contrastive**: a random span of L = round(f T) tokens (one place per batch) is replaced
  by uniformly random tokens (no family needs a mask token) and the trunk reruns on the prefix up
  to the span's end (positions after it cannot see it). InfoNCE between the corrupted and the
  original (detached: the target) hidden states at the span positions, projected (optionally
  L2-normalised) with temperature tau; the negatives are the other span positions of the batch.

Each loss is unweighted here; :class:`AuxiliaryHeads` adds ``weight * loss`` to the LM loss and
logs each weighted term by name (``policy_kl``, ``value``, ``dynamics``, ``span_contrastive``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.config import AuxiliaryConfig
from lmlab.models.output import ModelOutput


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def span_valid(targets: torch.Tensor, span: int) -> torch.Tensor:
    """(B, T - span + 1) bools: whether targets t..t+span-1 are all real (not -1)."""
    ok = (targets != -1).float().unfold(1, span, 1)  # (B, T - span + 1, span)
    return ok.amin(-1) > 0


class PolicyHead(nn.Module):
    """h (..., C) -> next-token logits (..., V)."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.net = _mlp(hidden, hidden, vocab)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)

    def loss(self, h: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, positions: int | None) -> torch.Tensor:
        """KL(p_LM || p_pi) averaged over P random real positions per row (teacher detached)."""
        B, T, _ = h.shape
        if positions is not None and positions < T:
            idx = torch.rand(B, T, device=h.device).argsort(dim=1)[:, :positions]  # (B, P)
            h = h.gather(1, idx[..., None].expand(-1, -1, h.size(-1)))
            logits = logits.gather(1, idx[..., None].expand(-1, -1, logits.size(-1)))
            targets = targets.gather(1, idx)
        teacher = F.log_softmax(logits.detach().float(), dim=-1)  # (B, P, V)
        student = F.log_softmax(self(h).float(), dim=-1)
        kl = (teacher.exp() * (teacher - student)).sum(-1)  # (B, P)
        mask = (targets != -1).float()
        return (kl * mask).sum() / mask.sum().clamp_min(1)


class ValueHead(nn.Module):
    """h (..., C) -> predicted mean NLL (nats) of the next ``span`` targets (...)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.net = _mlp(hidden, hidden, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).squeeze(-1)

    def loss(self, h: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, span: int) -> torch.Tensor:
        """MSE between v(h_t) and the mean LM NLL of targets t..t+S-1, over full real spans."""
        T = h.size(1)
        span = min(span, T)
        with torch.no_grad():
            nll = F.cross_entropy(logits.detach().float().transpose(1, 2), targets.clamp_min(0),
                                  reduction="none")  # (B, T)
            future = nll.unfold(1, span, 1).mean(-1)  # (B, T - S + 1)
            mask = span_valid(targets, span).float()
        pred = self(h[:, : T - span + 1]).float()
        return (((pred - future) ** 2) * mask).sum() / mask.sum().clamp_min(1)


class DynamicsModel(nn.Module):
    """g(z (..., C), token (...)) -> the next latent (..., C), in the space of h."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.net = _mlp(2 * hidden, 2 * hidden, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, z: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        e = self.embed(tokens).to(z.dtype)
        return self.norm(z + self.net(torch.cat([z, e], dim=-1)))

    def loss(self, h: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor, steps: int) -> torch.Tensor:
        """Mean over k = 1..K of the relative MSE of the k-step rollout against sg(h_{t+k})."""
        T = h.size(1)
        K = min(steps, T - 1)
        if K < 1:
            return h.sum() * 0.0
        n = T - K  # rollouts start at t = 0..n-1
        target = h.detach().float()
        valid = span_valid(targets, K)[:, :n].float()  # the K tokens fed in are real
        z, total = h[:, :n], h.new_zeros((), dtype=torch.float32)
        for k in range(1, K + 1):
            z = self(z, input_ids[:, k : n + k])  # (B, n, C): the latent after token t+k
            tgt = target[:, k : n + k]
            err = (z.float() - tgt).pow(2).sum(-1) / tgt.pow(2).sum(-1).clamp_min(1e-6)  # (B, n)
            total = total + (err * valid).sum() / valid.sum().clamp_min(1)
        return total / K


class SpanContrastive(nn.Module):
    """Projection for the span InfoNCE: h (..., C) -> (..., C)."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.proj = nn.Linear(hidden, hidden)
        self.vocab = vocab  # corrupted tokens are drawn from 0..vocab-1

    def loss(self, model: nn.Module, h: torch.Tensor, input_ids: torch.Tensor, cfg: AuxiliaryConfig) -> torch.Tensor:
        B, T, C = h.shape
        L = max(1, min(T - 1, round(cfg.span_mask_fraction * T)))
        start = int(torch.randint(0, T - L + 1, ()))
        end = start + L
        corrupted = input_ids[:, :end].clone()
        corrupted[:, start:end] = torch.randint(0, self.vocab, (B, L), device=input_ids.device)
        h_masked = model.hidden_states(corrupted)[:, start:end]  # (B, L, C)
        a = self.proj(h_masked).reshape(B * L, C).float()
        # The clean states are the target (detached, as a teacher): pulling them toward what a
        # corrupted context allows cost 0.15 nats of val loss at 300 steps (BENCHMARKS.md).
        b = self.proj(h[:, start:end].detach()).reshape(B * L, C).float()
        if cfg.span_l2_normalize:
            a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        sim = a @ b.T / cfg.span_contrastive_temperature  # (BL, BL): row i's positive is column i
        return F.cross_entropy(sim, torch.arange(B * L, device=h.device))


class AuxiliaryHeads(nn.Module):
    """The enabled heads of an :class:`AuxiliaryConfig`; ``add_losses`` folds them into the loss."""

    def __init__(self, cfg: AuxiliaryConfig, hidden: int, vocab: int):
        super().__init__()
        self.cfg = cfg
        self.policy = PolicyHead(hidden, vocab) if cfg.enable_policy else None
        self.value = ValueHead(hidden) if cfg.enable_value else None
        self.dynamics = DynamicsModel(hidden, vocab) if cfg.enable_dynamics else None
        self.span = SpanContrastive(hidden, vocab) if cfg.enable_span_contrastive else None
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        if self.value is not None:  # an untrained LM pays ~log V nats per token: start there
            nn.init.constant_(self.value.net[-1].bias, math.log(vocab))

    def losses(self, model: nn.Module, h: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor,
               logits: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """Named (weight, unweighted loss) of every enabled head."""
        c, out = self.cfg, {}
        if self.policy is not None:
            out["policy_kl"] = (c.policy_kl_weight, self.policy.loss(h, logits, targets, c.policy_positions))
        if self.value is not None:
            out["value"] = (c.value_weight, self.value.loss(h, logits, targets, c.value_span))
        if self.dynamics is not None:
            out["dynamics"] = (c.dynamics_weight, self.dynamics.loss(h, input_ids, targets, c.dynamics_rollout_steps))
        if self.span is not None and h.size(1) > 1:
            out["span_contrastive"] = (c.span_contrastive_weight, self.span.loss(model, h, input_ids, c))
        return out

    def add_losses(self, model: nn.Module, h: torch.Tensor, input_ids: torch.Tensor, targets: torch.Tensor,
                   out: ModelOutput) -> ModelOutput:
        """``out`` with loss CE + sum(weight_i * aux_i) and each weighted term logged by name."""
        loss, terms = out.loss, dict(out.terms)
        for name, (weight, value) in self.losses(model, h, input_ids, targets, out.logits).items():
            loss = loss + weight * value
            terms[name] = (weight * value).detach()
        return ModelOutput(out.logits, loss, terms)

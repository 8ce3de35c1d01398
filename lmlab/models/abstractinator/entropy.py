"""The entropy model of a level and the rule that turns its uncertainty into patch boundaries.

As in BLT, a small causal transformer predicts the next symbol (a byte, or a code of the level
below); where its prediction is uncertain, a new patch starts. Cutting is a causal function of
the prefix, so a decoder that has produced x_<t knows whether x_t opens a new patch: the
two-part code length (docs/abstractinator.md) stays decodable.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lmlab.models.abstractinator.attention import Stack, causal_mask
from lmlab.models.abstractinator.config import EntropyModelConfig
from lmlab.models.abstractinator.vq import CodeHead, ResidualVQ, StepStatistics


def patch_starts(entropy: torch.Tensor, threshold: float, monotonic: bool = False, max_len: int | None = None,
                 forced: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T) bool: True where a new patch starts.

    ``entropy[:, t]`` is the uncertainty of x_t given x_<t (position 0 always starts a patch).
    A patch starts where it exceeds ``threshold`` (``monotonic``: where it rose by more than
    ``threshold`` over position t-1), where ``forced`` is True (x_t opens a document: x_{t-1}
    closed one; ``forced`` must be a function of x_<t like every other input here), and after
    ``max_len`` symbols without a start.
    """
    B, T = entropy.shape
    if monotonic:
        rise = entropy[:, 1:] - entropy[:, :-1]
        starts = torch.cat([torch.ones_like(entropy[:, :1], dtype=torch.bool), rise > threshold], dim=1)
    else:
        starts = entropy > threshold
    starts[:, 0] = True
    if forced is not None:
        starts = starts | forced
    if max_len is not None and max_len < T:
        run = torch.zeros(B, dtype=torch.long, device=entropy.device)
        cols = []
        for t in range(T):  # the running patch length: a scan, T small vector steps
            s = starts[:, t] | (run >= max_len)
            run = torch.where(s, torch.ones_like(run), run + 1)
            cols.append(s)
        starts = torch.stack(cols, dim=1)
    return starts


def segment_ids(starts: torch.Tensor) -> torch.Tensor:
    """(B, T) bool starts -> (B, T) patch index of every position (0-based)."""
    return starts.long().cumsum(1) - 1


class EntropyModel(StepStatistics):
    """Next-symbol model of one level. Bytes: ids (B, T). Codes: (B, T, S) of ``below``'s RVQ."""

    def __init__(self, cfg: EntropyModelConfig, d_model: int, n_head: int, form: str, backend: str,
                 kv_rank: int, max_len: int, vocab: int | None = None, below: ResidualVQ | None = None):
        super().__init__()
        self.cfg = cfg
        if below is None:
            self.embed = nn.Embedding(vocab, d_model)
            d_sym = d_model
        else:
            self.below = [below]
            self.embed_codes = nn.Linear(below.d_c, d_model, bias=False)
            d_sym = below.d_c
        self.trunk = Stack(cfg.n_layer, d_model, n_head, form, backend, kv_rank, max_len=max_len)
        if cfg.loss in ("ce", "both"):
            self.head = nn.Linear(d_model, vocab, bias=False) if below is None else CodeHead(d_model, below)
        if cfg.loss in ("gaussian", "both"):
            self.gauss = nn.Linear(d_model, 2 * d_sym)
        # The cutting threshold: fixed, or tracked toward target_patch_len during training.
        start = cfg.threshold if cfg.threshold is not None else 0.5 * math.log(vocab or below.K)
        self.register_buffer("threshold", torch.tensor(float(start)))
        self.register_buffer("tracked", torch.tensor(False))  # target_patch_len: set once trained

    def _symbols(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.embed(x)
        return self.embed_codes(self.below[0].embed(x).to(self.embed_codes.weight.dtype))

    def _target_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """What the Gaussian head predicts: the (detached) vector of each symbol."""
        return self.embed(x).detach() if x.dim() == 2 else self.below[0].embed(x).float()

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, logits: bool = False):
        """x (B, T) or (B, T, S), valid (B, T) -> (loss, entropy (B, T) of x_t given x_<t), and
        with ``logits`` what the expander's prior (``expander_prior``) needs at every position,
        the last one's included: bytes, the next-byte logits (B, T, V); codes, the hidden states
        (B, T, D) that the code head scores stage by stage (:class:`~.vq.Prior`).

        entropy[:, 0] is +inf (nothing to predict from); the loss is the mean over valid targets.
        """
        h = self.trunk(self._symbols(x), causal_mask())  # (B, T, D)
        every = None
        if logits:  # bytes: the head over all T positions, once
            every = self.head(h) if x.dim() == 2 else h
        B, T = h.shape[:2]
        valid = torch.ones(B, T, dtype=torch.bool, device=h.device) if valid is None else valid
        tgt_valid = valid[:, 1:]
        n = tgt_valid.sum().clamp(min=1)
        loss = h.new_zeros((), dtype=torch.float32)
        ent = None
        if hasattr(self, "head"):
            if x.dim() == 2:
                scores = self.head(h[:, :-1]) if every is None else every[:, :-1]
                logp = torch.log_softmax(scores.float(), dim=-1)  # (B, T-1, V)
                nll = -logp.gather(-1, x[:, 1:, None]).squeeze(-1)
                ent = -(logp.exp() * logp).sum(-1)
            else:
                lp, ent, _ = self.head.log_prob(h[:, :-1], x[:, 1:])
                nll = -lp
            loss = loss + (nll * tgt_valid).sum() / n
        if hasattr(self, "gauss"):
            mean, log_var = self.gauss(h[:, :-1]).float().chunk(2, dim=-1)
            log_var = log_var.clamp(-8, 8)
            target = self._target_vectors(x[:, 1:])
            nll = 0.5 * (log_var + (target - mean).pow(2) / log_var.exp() + math.log(2 * math.pi)).sum(-1)
            loss = loss + (nll * tgt_valid).sum() / n
            if ent is None:  # differential entropy of the predicted Gaussian
                ent = 0.5 * (log_var + math.log(2 * math.pi * math.e)).sum(-1)
        inf = torch.full((B, 1), float("inf"), device=h.device)
        entropy = torch.cat([inf, ent.detach().float()], dim=1)
        return (loss, entropy, every) if logits else (loss, entropy)

    def cut(self, entropy: torch.Tensor, forced: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Patch starts (B, T) under this level's rule. With target_patch_len, training gathers
        the batch quantile that gives that mean length; the threshold moves toward the step's
        mean quantile at its end (:class:`StepStatistics`). Before the first step has set it, a
        batch cuts at its own quantile."""
        cfg = self.cfg
        threshold = float(self.threshold)
        if cfg.target_patch_len is not None and self.training:
            score = entropy[:, 1:] - entropy[:, :-1] if cfg.monotonic else entropy[:, 1:]
            ok = torch.isfinite(score)
            if valid is not None:
                ok &= valid[:, 1:]
            if ok.any():
                q = torch.quantile(score[ok].float(), 1.0 - 1.0 / cfg.target_patch_len)
                if not self.tracked:
                    threshold = float(q)
                self.gather(q=q.detach(), n=q.new_ones(()))
            self.applied()
        starts = patch_starts(entropy, threshold, cfg.monotonic, cfg.max_patch_len, forced)
        if valid is not None:
            starts = starts | ~valid  # padding: one patch per slot, dropped by the caller
        return starts

    @torch.no_grad()
    def step_end(self) -> None:
        """target_patch_len: the threshold moves (EMA ``threshold_ema``) toward the mean of the
        step's batch quantiles over micro-batches and ranks; the first step sets it."""
        if not self.training or self.cfg.target_patch_len is None:
            return
        stats = self.take(q=self.threshold, n=self.threshold)
        if stats["n"] == 0:
            return
        q = stats["q"] / stats["n"]
        if self.tracked:
            self.threshold.mul_(self.cfg.threshold_ema).add_((1 - self.cfg.threshold_ema) * q)
        else:
            self.threshold.copy_(q)
            self.tracked.fill_(True)

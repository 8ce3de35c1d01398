"""Vector quantisation: an EMA codebook with dead-code resets, stacked into residual VQ, and the
stage-wise code head that scores a code index by index in the code space d_c."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    """``z_q`` (N, d_c) with straight-through gradients to the input; ``codes`` (N, S) indices;
    ``loss`` the weighted commitment (+ codebook) loss; usage statistics of this batch."""

    z_q: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    perplexity: list[float]
    dead: list[int]
    soft: list[torch.Tensor]  # per stage (N, K) soft assignments with gradients to z (``rate`` quantisers in training)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


class StepStatistics(nn.Module):
    """A module whose training forward gathers statistics (codebook counts and sums, batch
    moments, quantiles) that move its buffers.

    The buffers move once per optimizer step, from the statistics of every micro-batch of every
    rank: the forward only adds to ``pending`` (plain tensors, not buffers: DDP broadcasts
    buffers from rank 0 before each forward and would overwrite another rank's sums), and
    :meth:`step_end` reduces them over the ranks and applies them. So every micro-batch of a
    step sees the same buffers, and two ranks with one micro-batch each compute exactly what
    one process computes over the same two micro-batches with accumulation (tested), and every
    rank holds the same buffers. Standalone (``deferred`` False, the default: a module used
    outside the trainer) each training forward applies its own statistics at once."""

    deferred: bool = False

    def gather(self, **stats: torch.Tensor) -> None:
        """Add this micro-batch's statistics (summed over micro-batches until ``step_end``)."""
        pending = self.__dict__.setdefault("pending", {})
        for k, v in stats.items():
            pending[k] = pending[k] + v if k in pending else v.clone()

    def take(self, **like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The step's statistics summed over the ranks (zeros where this rank had none, shaped
        as ``like``), and a clean slate. Every rank must call it when any does (a collective)."""
        pending = self.__dict__.pop("pending", {})
        names = sorted(like)
        flat = torch.cat([pending.get(k, torch.zeros_like(like[k])).reshape(-1).float() for k in names])
        flat = _all_reduce(flat)
        out, i = {}, 0
        for k in names:
            n = like[k].numel()
            out[k] = flat[i : i + n].view_as(like[k])
            i += n
        return out

    def step_end(self) -> None:
        """Apply the step's statistics to the buffers (every rank, after the optimizer step)."""
        raise NotImplementedError

    def applied(self) -> None:
        """After a training forward: a standalone module applies its statistics at once."""
        if not self.deferred:
            self.step_end()


class VectorQuantizer(StepStatistics):
    """Nearest-neighbour quantiser over ``K`` codes of width ``d_c``.

    With ``ema`` the codebook is a buffer moved toward the mean of the vectors assigned to each
    code (decay ``decay``, Laplace-smoothed counts; sums are all-reduced under DDP so every rank
    holds the same codebook) and the loss is the commitment term ``beta * |z - sg(q)|^2``.
    Without it the codebook is a parameter and ``|sg(z) - q|^2`` is added. A code whose EMA count
    falls below ``dead_threshold`` is reset to a vector of the step's first micro-batch (rank
    0's). Counts, sums and resets move once per optimizer step (:class:`StepStatistics`).
    """

    def __init__(self, K: int, d_c: int, beta: float = 0.25, decay: float = 0.99, ema: bool = True,
                 dead_threshold: float = 1e-2, diversity: float = 0.0, rate: bool = False):
        super().__init__()
        self.K, self.d_c, self.beta, self.decay, self.ema = K, d_c, beta, decay, ema
        self.diversity, self.rate = diversity, rate
        self.dead_threshold = dead_threshold
        init = torch.randn(K, d_c) / math.sqrt(d_c)
        # Counts start at 0: every code is dead until used, so the first training batch resets
        # them all onto its own vectors (a data-dependent init, no collapse onto one code).
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.zeros(K))
            self.register_buffer("ema_sum", torch.zeros(K, d_c))  # consistent with the zero counts
        else:
            self.codebook = nn.Parameter(init)
            self.register_buffer("ema_count", torch.zeros(K))  # usage only (dead-code resets)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code of each row of z (N, d_c) -> (N,)."""
        c = self.codebook.detach().to(z.dtype)
        d = (z.pow(2).sum(-1, keepdim=True) - 2 * z @ c.T + c.pow(2).sum(-1))  # (N, K)
        return d.argmin(-1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, int,
                                                  torch.Tensor | None]:
        """z (N, d_c) -> (q (N, d_c) without straight-through, idx (N,), loss, perplexity, dead,
        soft assignments (N, K) or None: in training, for the diversity loss and ``rate``)."""
        z32 = z.float()
        idx = self.nearest(z32.detach())
        q = self.codebook[idx].float()  # (N, d_c)
        onehot = F.one_hot(idx, self.K).float()
        counts = onehot.sum(0)
        loss = self.beta * F.mse_loss(z32, q.detach()) if z.numel() else z32.sum()
        if not self.ema and z.numel():
            loss = loss + F.mse_loss(q, z32.detach())
        soft = self.soft_assign(z32) if self.training and (self.diversity > 0 or self.rate) else None
        if soft is not None and self.diversity > 0 and z.numel():
            loss = loss + self.diversity * self._diversity(soft)
        p = counts / counts.sum().clamp(min=1)
        perplexity = float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))
        if self.training:
            stats = {"counts": counts}
            if self.ema:
                stats["sums"] = onehot.T @ z32.detach()  # (K, d_c)
            if "pending" not in self.__dict__:  # the step's first micro-batch: reset candidates
                self.__dict__["candidates"] = z32.detach().clone()
            self.gather(**stats)
            self.applied()
        dead = int((self.ema_count < self.dead_threshold).sum())
        return q, idx, loss, perplexity, dead, soft

    def soft_assign(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, d_c) -> soft assignments (N, K): softmax(-|z - c|^2 / sqrt(d_c)), differentiable
        in z (the codebook is a constant here: the EMA step moves it, not this gradient)."""
        c = self.codebook.detach().clone()  # saved for backward: the step's update moves the codebook
        d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ c.T + c.pow(2).sum(-1)  # (N, K)
        return torch.softmax(-d / math.sqrt(self.d_c), dim=-1)

    def _diversity(self, soft: torch.Tensor) -> torch.Tensor:
        """1 - H(mean soft assignment) / log K, in [0, 1]: 0 when the batch spreads evenly over
        the codebook (wav2vec 2.0's diversity loss). Its gradient pushes the encoder's vectors
        apart, against all patches drifting onto one code."""
        p = soft.mean(0)  # this rank's batch (DDP averages grads)
        return 1 + (p * p.clamp(min=1e-12).log()).sum() / math.log(self.K)

    @torch.no_grad()
    def step_end(self) -> None:
        """The step's EMA update (counts and sums over every micro-batch and rank), then resets."""
        if not self.training:
            return
        like = {"counts": self.ema_count}
        if self.ema:
            like["sums"] = self.ema_sum
        stats = self.take(**like)
        self.ema_count.mul_(self.decay).add_(stats["counts"], alpha=1 - self.decay)
        if self.ema:
            self.ema_sum.mul_(self.decay).add_(stats["sums"], alpha=1 - self.decay)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + 1e-5) / (n + self.K * 1e-5) * n  # Laplace: no division by 0
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        candidates = self.__dict__.pop("candidates", None)
        dead = self.ema_count < self.dead_threshold
        if dead.any():
            self.reset(dead, candidates)

    @torch.no_grad()
    def reset(self, dead: torch.Tensor, z: torch.Tensor | None) -> None:
        """Move the ``dead`` (K,) codes onto random rows of z (N, d_c), rank 0's candidates
        (none, or no rows: nothing moves). Their counts restart at twice the threshold: a reset
        code nobody picks is dead again after ~ln 2 / (1 - decay) steps and gets another chance,
        instead of sitting unused for hundreds of steps."""
        n_dead = int(dead.sum())
        fresh = torch.zeros(n_dead, self.d_c + 1, device=self.codebook.device)  # last column: rows exist
        if z is not None and z.size(0):
            pick = torch.randint(0, z.size(0), (n_dead,), device=z.device)
            fresh[:, :-1], fresh[:, -1] = z[pick].float(), 1.0
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(fresh, src=0)  # every rank resets to rank 0's vectors
        if not bool(fresh[:, -1].all()):
            return
        fresh = fresh[:, :-1].to(self.codebook.dtype)
        count = max(2 * self.dead_threshold, 1e-3)
        self.codebook.data[dead] = fresh
        if self.ema:
            self.ema_sum[dead] = fresh * count  # sum / count = the fresh vector
        self.ema_count[dead] = count


class FiniteScalarQuantizer(StepStatistics):
    """Finite scalar quantisation (FSQ, Mentzer et al. 2023): feature i of z (N, d_c) is bounded
    to ``levels[i]`` values (a shifted tanh) and rounded, straight-through inside, so a code is a
    point of the grid of those values: K = prod(levels) codes, d_c = len(levels). The codebook
    is that grid (a constant buffer, scaled into [-1, 1]): nothing to learn, no loss, no dead
    code to reset. Every grid point is reachable from any input, so unlike a learnt codebook it
    cannot collapse onto codes far from the data. ``ema_count`` tracks usage (as the VQ's does)
    for the diagnostics' dead codes."""

    inner_gradient = True  # forward's q carries the gradient (through the bound), not a plain straight-through

    def __init__(self, levels: list[int], decay: float = 0.99, dead_threshold: float = 1e-2):
        super().__init__()
        self.levels = list(levels)
        self.K, self.d_c, self.decay, self.dead_threshold = math.prod(levels), len(levels), decay, dead_threshold
        L = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("_L", L, persistent=False)
        # mixed radix: code index = sum_i digit_i * prod_{j < i} L_j
        self.register_buffer("_basis", torch.cumprod(torch.cat([L.new_ones(1), L[:-1]]), 0).long(), persistent=False)
        digits = (torch.arange(self.K)[:, None] // self._basis) % L.long()  # (K, d_c)
        self.register_buffer("codebook", (digits - L.long() // 2).float() / (L // 2), persistent=False)
        self.register_buffer("ema_count", torch.zeros(self.K))

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, d_c) -> values in (-L/2, L/2) per feature, whose rounding has L values
        (shifted by a half for even L, as in the paper)."""
        half = (self._L - 1) * (1 + 1e-3) / 2
        offset = (self._L % 2 == 0).float() * 0.5
        return torch.tanh(z + torch.atanh(offset / half)) * half - offset

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """The code of each row of z (N, d_c) -> (N,): its rounded bound as a mixed-radix index."""
        return self._index(torch.round(self.bound(z.float())))

    def _index(self, rounded: torch.Tensor) -> torch.Tensor:
        """Rounded bounds (N, d_c) -> their mixed-radix code indices (N,)."""
        return ((rounded.detach().long() + self._L.long() // 2) * self._basis).sum(-1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, int, None]:
        """As :meth:`VectorQuantizer.forward`; q (N, d_c) is the grid point with a straight-through
        gradient to the bound (the rounding's only), the loss 0."""
        b = self.bound(z.float())
        rounded = torch.round(b)
        q = (b + (rounded - b).detach()) / (self._L // 2)
        idx = self._index(rounded)  # the bound once: the same rounding nearest() makes
        counts = F.one_hot(idx, self.K).float().sum(0)
        p = counts / counts.sum().clamp(min=1)
        perplexity = float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))
        if self.training:
            self.gather(counts=counts)
            self.applied()
        dead = int((self.ema_count < self.dead_threshold).sum())
        return q, idx, z.new_zeros((), dtype=torch.float32), perplexity, dead, None

    @torch.no_grad()
    def step_end(self) -> None:
        """The step's usage counts (every micro-batch and rank) move ``ema_count``."""
        if not self.training:
            return
        counts = self.take(counts=self.ema_count)["counts"]
        self.ema_count.mul_(self.decay).add_(counts, alpha=1 - self.decay)


class ResidualVQ(nn.Module):
    """``stages`` quantisers in series, each coding what the previous ones left: a code is one
    index per stage and its vector the sum of the stages' code vectors. With ``fsq_levels``
    the one stage is a :class:`FiniteScalarQuantizer` over that grid (K, d_c follow from it)."""

    def __init__(self, stages: int, K: int, d_c: int, fsq_levels: list[int] | None = None, **kw):
        super().__init__()
        if fsq_levels:
            self.stages = nn.ModuleList([FiniteScalarQuantizer(fsq_levels, kw.get("decay", 0.99),
                                                               kw.get("dead_threshold", 1e-2))])
        else:
            self.stages = nn.ModuleList(VectorQuantizer(K, d_c, **kw) for _ in range(stages))
        self.K, self.d_c = self.stages[0].K, self.stages[0].d_c

    def forward(self, z: torch.Tensor) -> Quantized:
        """z (N, d_c) -> Quantized (straight-through z_q, codes (N, S))."""
        residual, total = z.float(), torch.zeros_like(z, dtype=torch.float32)
        codes, loss, perp, dead, soft = [], z.new_zeros((), dtype=torch.float32), [], [], []
        for vq in self.stages:
            q, idx, stage_loss, p, d, s = vq(residual)
            total = total + q
            residual = residual - q.detach()
            codes.append(idx)
            loss = loss + stage_loss
            perp.append(p)
            dead.append(d)
            if s is not None and vq.rate:
                soft.append(s)
        if getattr(self.stages[0], "inner_gradient", False):  # FSQ: the gradient runs through its bound
            z_q = total.to(z.dtype)
        else:
            z_q = z + (total - z.float()).detach().to(z.dtype)  # straight-through estimator
        return Quantized(z_q, torch.stack(codes, dim=-1), loss, perp, dead, soft)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (..., S) -> their vectors (..., d_c): the sum over stages (no gradient)."""
        out = 0
        for s, vq in enumerate(self.stages):
            out = out + vq.codebook.detach()[codes[..., s]]
        return out

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Codes (N, S) of vectors z (N, d_c), without updating anything."""
        codes, residual = [], z.float()
        for vq in self.stages:
            idx = vq.nearest(residual)
            residual = residual - vq.codebook.detach()[idx].float()
            codes.append(idx)
        return torch.stack(codes, dim=-1)


class CodeHead(nn.Module):
    """Scores a residual code stage by stage, factorised in the code space d_c.

    Stage s projects the hidden state into d_c, subtracts the vectors of the stages before it
    (the residual that stage s quantised) and scores each code c by a scaled dot product u . c plus a per-code bias
    (a K-way head tied to the codebook; -|u - c|^2 would add a -|c|^2 prior that favours small
    codes). log p(code) = sum_s log p(idx_s | idx_<s, h): teacher-forced on the true earlier
    stages when scoring, sampled stage after stage when generating.
    """

    def __init__(self, d_model: int, rvq: ResidualVQ):
        super().__init__()
        self.rvq = [rvq]  # a reference, not a submodule: the codebook belongs to its level
        self.proj = nn.ModuleList(nn.Linear(d_model, rvq.d_c, bias=False) for _ in rvq.stages)
        # Codes have norm ~sqrt(d_c): a 1/sqrt(d_c) start keeps the first scores near uniform.
        self.scale = nn.Parameter(torch.full((len(rvq.stages),), rvq.d_c ** -0.5))
        # A bias per code: how often a code is used is learnt at once, not through u's direction.
        self.bias = nn.Parameter(torch.zeros(len(rvq.stages), rvq.K))

    def _logits(self, s: int, h: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        c = self.rvq[0].stages[s].codebook.detach().to(h.dtype)  # (K, d_c)
        u = self.proj[s](h) - prev  # (..., d_c)
        return self.scale[s] * (u @ c.T) + self.bias[s]  # (..., K)

    def log_prob(self, h: torch.Tensor, codes: torch.Tensor, prior: Prior | None = None,
                 soft: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """h (..., D), codes (..., S) -> (log p(code) (...), entropy of stage 0 given h (...),
        rate (...) or None). ``prior``: another head's scores added stage by stage (a product of
        experts). ``soft``: the encoder's soft assignments of the same codes (one (..., K) per
        stage); the rate is their expected code length under these scores, sum_s sum_k
        soft_s[k] * -log p_s(k), with the scores detached: its gradient moves only the encoder,
        toward the codes this head finds likely."""
        prev = torch.zeros(*h.shape[:-1], self.rvq[0].d_c, device=h.device, dtype=h.dtype)
        total, entropy, rate = 0, None, None
        for s, vq in enumerate(self.rvq[0].stages):
            logits = self._logits(s, h, prev)
            if prior is not None:
                logits = logits + prior.logits(s, prev)
            logp = torch.log_softmax(logits.float(), dim=-1)
            total = total + logp.gather(-1, codes[..., s : s + 1]).squeeze(-1)
            if entropy is None:
                entropy = -(logp.exp() * logp).sum(-1)
            if soft is not None:
                stage_rate = -(soft[s] * logp.detach()).sum(-1)
                rate = stage_rate if rate is None else rate + stage_rate
            prev = prev + vq.codebook.detach().to(h.dtype)[codes[..., s]]
        return total, entropy, rate

    def sample(self, h: torch.Tensor, pick, prior: Prior | None = None) -> torch.Tensor:
        """Codes (N, S) for hidden states h (N, D); ``pick(logits (N, K)) -> (N,)`` chooses;
        ``prior`` as in :meth:`log_prob`."""
        prev = torch.zeros(h.size(0), self.rvq[0].d_c, device=h.device, dtype=h.dtype)
        codes = []
        for s, vq in enumerate(self.rvq[0].stages):
            logits = self._logits(s, h, prev)
            if prior is not None:
                logits = logits + prior.logits(s, prev)
            idx = pick(logits.float())
            codes.append(idx)
            prev = prev + vq.codebook.detach().to(h.dtype)[idx]
        return torch.stack(codes, dim=-1)


class Prior:
    """A code-level expander's prior: the level's entropy model's stage-wise scores for the same
    codes (a product of experts, as ``expander_prior`` at the byte level). ``hidden`` (..., D)
    holds, at each position, the entropy model's state that predicts that position's code
    (its state at the symbol before); ``has`` (...) is False where there is none (a row's
    first code), and the prior adds nothing there."""

    def __init__(self, head: CodeHead, hidden: torch.Tensor, has: torch.Tensor | None = None):
        self.head, self.hidden, self.has = head, hidden, has

    def logits(self, s: int, prev: torch.Tensor) -> torch.Tensor:
        """Stage s's scores (..., K) given the true vectors of the earlier stages ``prev``."""
        out = self.head._logits(s, self.hidden, prev)
        return out if self.has is None else out * self.has[..., None].to(out.dtype)

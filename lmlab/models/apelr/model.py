"""APEL-R: a transformer executor whose next-token distribution is gated by a planner's belief
over K latent plan states (docs/apelr.md).

Shapes: B batch, T positions, D d_model, K plan states, r expert rank, V vocab.
Expert k's logits are the shared head plus a rank-r correction: ``base + delta_k``, with
``base = head(h)`` and ``delta_k = (h A_k) (W_head B_k)^T``; the correction's (V, r) factor is
built once per call, so K experts cost r x K (not D x K) multiply-adds per vocabulary entry.

- v1 ``v1_filtered_mixture``: p(x_{t+1}) = sum_k b_t(k) p_k(x_{t+1}): the online mixture; with
  ``planner_context_scale = 0`` it is exactly the forward algorithm over chunk-level plan states
  (in log space), while a non-zero scale tilts each chunk's prior by the context and
  renormalises, a proper next-token distribution but no longer a path sum of one Markov chain.
  The logits returned are its log-probabilities.
- v2 ``v2_planner_required``: logits = base + sum_k g_t(k) delta_k, where the gate g blends the
  belief with its lookahead forecasts; the experts' own likelihoods still filter the belief.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.apelr.config import V1, ApelrConfig
from lmlab.models.apelr.diagnostics import planner_diagnostics
from lmlab.models.apelr.fused import expert_js_divergence, expert_log_likelihoods, expert_mixture
from lmlab.models.apelr.planner import Planner, PlannerState, PlannerTrace
from lmlab.models.base import ModelOutput, lm_loss
from lmlab.models.common.attention import KVCache
from lmlab.models.transformer.model import Transformer

MAX_LOOKAHEAD = 64
"""Chunks a forecast looks ahead at most: each is a K x K product per step, and a plan past a few
chunks is the stationary mixture anyway."""


@dataclass
class GenerationOptions:
    """Decoding-time planner controls (``lmlab sample`` flags)."""

    force_state: int | None = None
    freeze_planner: bool = False
    planner_temperature: float = 1.0
    lookahead_feedback_scale: float | None = None
    async_planner: bool | None = None
    record: bool = False
    """Append each decoding step's belief (and ``lookahead_steps`` forecasts) to ``model.plan_history``."""
    lookahead_steps: int = 0


@dataclass
class ApelrState:
    caches: list[KVCache]
    planner: PlannerState
    pos: int = 0
    pending: torch.Tensor | None = None  # (B, K, V) expert log-probs at the last position
    frozen: torch.Tensor | None = None  # (B, K) the belief a frozen planner keeps


def _entropy(logp: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return -(logp.exp() * logp).sum(dim)


class Experts:
    """The K expert distributions of one call, kept factored so v2 never needs a (B, T, K, V)
    tensor for its logits: expert k's logits are ``base + z_k M_k^T`` with base (B, T, V),
    z (B, T, K, r) and M (K, V, r)."""

    def __init__(self, base: torch.Tensor, z: torch.Tensor, factor: torch.Tensor):
        self.base, self.z, self.factor = base, z, factor
        self._logp: torch.Tensor | None = None

    def logits(self) -> torch.Tensor:
        """Every expert's logits (B, T, K, V) in fp32 (a full table: v1 and some losses)."""
        delta = torch.einsum("btkr,kvr->btkv", self.z, self.factor)
        return self.base.float().unsqueeze(2) + delta.float()

    def logp(self) -> torch.Tensor:
        """log p_k(v | x_<=t) (B, T, K, V) in fp32 (built once, on demand)."""
        if self._logp is None:
            self._logp = F.log_softmax(self.logits(), dim=-1)
        return self._logp

    def ell(self, next_ids: torch.Tensor) -> torch.Tensor:
        """log p_k(observed next token) (B, T, K); 0 at the last position (not observed yet).
        next_ids (B, T-1). Without the full table: fused, blockwise normalisers (fused.py)."""
        B, T, K, _ = self.z.shape
        ell = self.z.new_zeros(B, T, K, dtype=torch.float32)
        if T == 1:
            return ell
        if self._logp is not None:
            idx = next_ids[:, :, None, None].expand(B, T - 1, K, 1)
            ell[:, :-1] = self._logp[:, :-1].gather(-1, idx).squeeze(-1)
            return ell
        # Every position goes in (the last with a dummy id, dropped after): slicing the (B, T, V)
        # logits would cost a (B, T, V) zero-fill and copy in backward.
        V, r = self.base.size(-1), self.z.size(-1)
        ids = F.pad(next_ids, (0, 1)).reshape(-1)
        flat = expert_log_likelihoods(self.base.reshape(-1, V), self.z.reshape(-1, K, r), self.factor, ids)
        flat = flat.view(B, T, K)
        return torch.cat([flat[:, :-1], torch.zeros_like(flat[:, -1:])], dim=1)

    def mix(self, gate: torch.Tensor) -> torch.Tensor:
        """base + sum_k gate_k z_k M_k^T (..., V) for gate (B, T, K) probabilities: one matmul
        with inner size K r."""
        K, V, r = self.factor.shape
        w = (gate.to(self.z.dtype).unsqueeze(-1) * self.z).flatten(-2)  # (B, T, K r)
        out = torch.addmm(self.base.reshape(-1, V), w.reshape(-1, K * r), self.factor.permute(0, 2, 1).reshape(K * r, V))
        return out.view(self.base.shape)

    def mixture(self, log_gate: torch.Tensor) -> torch.Tensor:
        """v1: log sum_k gate_k p_k(v) (B, T, V) fp32 for log_gate (B, T, K), fused (fused.py)."""
        B, T, K, r = self.z.shape
        V = self.base.size(-1)
        out = expert_mixture(self.base.reshape(-1, V), self.z.reshape(-1, K, r), self.factor, log_gate.reshape(-1, K))
        return out.view(B, T, V)

    def last(self) -> Experts:
        """The experts of the last position only (a T = 1 view)."""
        return Experts(self.base[:, -1:], self.z[:, -1:], self.factor)


class Apelr(Transformer):
    # Checkpoints of other versions of this family load with a warning listing added / missing
    # tensors (docs/model_versions.md).
    tolerant_load = True
    generation_options = tuple(f.name for f in fields(GenerationOptions))
    generation_flags = {
        "force_state": {"flag": "--force-state", "type": int, "metavar": "K", "help": "decode with plan state K only"},
        "freeze_planner": {"flag": "--freeze-planner", "action": "store_true",
                           "help": "keep the belief the prompt produced"},
        "planner_temperature": {"flag": "--planner-temperature", "type": float,
                                "help": "sharpen (<1) or flatten (>1) the belief"},
        "lookahead_feedback_scale": {"flag": "--lookahead-feedback-scale", "type": float,
                                     "help": "override model.lookahead_feedback_scale (v2 only: v1 refuses it)"},
        "async_planner": {"flag": "--no-async-planner", "action": "store_false",
                          "help": "compute lookahead in the decoding thread (same output, no overlap)"},
    }
    diagnostics_file = "planner_eval.json"

    def __init__(self, cfg: ApelrConfig):
        super().__init__(cfg)
        K, r, D = cfg.num_plan_states, cfg.expert_rank, cfg.d_model
        self.planner = Planner(K, D, cfg.chunk_size, cfg.planner_self_bias, cfg.planner_context_scale)
        self.expert_down = nn.Linear(D, K * r, bias=False)  # A_k, stacked
        self.expert_up = nn.Parameter(torch.empty(K, r, D))  # B_k
        # Loss-only modules exist only when their loss is on: no parameter without a gradient
        # (DDP refuses those), and a run's checkpoint holds exactly what it trained.
        w = cfg.weight
        v2 = cfg.version != V1
        if w("chunk_bow_weight") or (v2 and w("future_contrastive")):
            self.plan_emb = nn.Parameter(torch.empty(K, D))  # a vector per plan state
        if w("chunk_post_kl_weight"):
            self.recognizer = nn.Linear(D, K)  # chunk recognizer q(z_c | whole chunk)
            nn.init.zeros_(self.recognizer.bias)
        if v2 and w("future_contrastive"):
            self.future_proj = nn.Linear(D, D, bias=False)
        for name in ("plan_emb", "recognizer", "future_proj"):
            if hasattr(self, name):
                p = getattr(self, name)
                nn.init.normal_(p if isinstance(p, nn.Parameter) else p.weight, std=0.02)
        nn.init.normal_(self.expert_down.weight, std=0.02)
        nn.init.normal_(self.expert_up, std=0.02)
        self.gen = GenerationOptions()
        self.plan_history: list[dict] = []
        self.train_step = 0
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ pieces

    def set_train_step(self, step: int) -> None:
        """The trainer's global step (``chunk_bow_warmup_steps`` ramps on it)."""
        self.train_step = step

    def _experts(self, h: torch.Tensor) -> Experts:
        """The K expert distributions at every position of h (B, T, D), kept factored."""
        B, T, _ = h.shape
        K, r = self.cfg.num_plan_states, self.cfg.expert_rank
        z = self.expert_down(h).view(B, T, K, r)
        factor = torch.einsum("vd,krd->kvr", self.lm_head.weight, self.expert_up)  # (K, V, r)
        return Experts(self.lm_head(h), z, factor)

    def _gate(self, log_belief: torch.Tensor, feedback: float | None = None) -> torch.Tensor:
        """Mixture weights over experts (log, shape of ``log_belief``): the belief, sharpened by
        the planner temperature, blended (v2) with the mean of its lookahead forecasts."""
        g = self.gen
        if g.force_state is not None:
            onehot = torch.full_like(log_belief, -math.inf)
            onehot[..., g.force_state] = 0.0
            return onehot
        lb = log_belief
        if g.planner_temperature != 1.0:
            lb = F.log_softmax(lb / g.planner_temperature, dim=-1)
        lam = self.cfg.lookahead_feedback_scale if feedback is None else feedback
        if self.cfg.version == V1 or lam == 0 or self.cfg.lookahead_horizon == 0:
            return lb
        ahead = torch.stack(self.planner.lookahead(lb, self.cfg.lookahead_horizon)).exp().mean(0)
        return torch.log((1 - lam) * lb.exp() + lam * ahead).clamp_min(-1e4)

    def _emit(self, ex: Experts, log_gate: torch.Tensor) -> torch.Tensor:
        """Token logits from the gate (B, T, K): v1 the log of the gate-weighted mixture of the
        experts' distributions; v2 the gate-weighted mixture of the experts' logits."""
        if self.cfg.version == V1:
            return ex.mixture(log_gate)
        return ex.mix(log_gate.exp())

    # ------------------------------------------------------------------ training / scoring

    def forward_hidden(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> tuple[torch.Tensor, ModelOutput]:
        """input_ids, targets (B, T) -> hidden (B, T, D), logits (B, T, V) and, with targets,
        CE + weighted terms."""
        h = self._trunk(input_ids)
        ex = self._experts(h)
        state = PlannerState()
        trace = self.planner.filter(self.planner.context(h), ex.ell(input_ids[:, 1:]), state, self._filtering())
        trace.posteriors.append(self.planner.final_posterior(state))
        logits = self._emit(ex, self._gate(trace.log_belief))
        if targets is None:
            return h, ModelOutput(logits)
        ce = lm_loss(logits, targets, label_smoothing)
        terms = {"ce": ce.detach()}
        loss = ce
        for name, (weight, value) in self._aux_terms(h, ex, trace, input_ids).items():
            loss = loss + weight * value
            terms[name] = (weight * value).detach()
        return h, ModelOutput(logits, loss, terms)

    def _filtering(self) -> bool:
        return self.cfg.version == V1 or self.cfg.token_filtering

    def _aux_terms(self, h, ex: Experts, trace: PlannerTrace, input_ids) -> dict[str, tuple[float, torch.Tensor]]:
        """Named (weight, value) of every active auxiliary loss (docs/apelr.md, "Losses")."""
        cfg, out = self.cfg, {}
        w = cfg.weight
        lb = trace.log_belief  # (B, T, K)
        priors = torch.stack(trace.priors, dim=1)  # (B, nC, K)
        posts = torch.stack(trace.posteriors, dim=1)  # (B, nC, K)
        B, T, K = lb.shape
        C, nC = cfg.chunk_size, priors.size(1)
        if cfg.version == V1 and w("entropy_reg_weight"):
            out["entropy_reg"] = (w("entropy_reg_weight"), _entropy(lb).mean())
        if cfg.version != V1 and w("boundary_entropy"):
            out["boundary_entropy"] = (w("boundary_entropy"), _entropy(priors).mean())
        usage_w = w("usage_balance_weight") if cfg.version == V1 else w("usage_balance")
        if usage_w:
            usage = lb.exp().mean(dim=(0, 1))  # (K,)
            out["usage_balance"] = (usage_w, (usage * (usage * K).clamp_min(1e-12).log()).sum())
        if w("chunk_bow_weight"):
            ramp = min(1.0, (self.train_step + 1) / cfg.chunk_bow_warmup_steps) if cfg.chunk_bow_warmup_steps else 1.0
            bow = F.log_softmax(self.lm_head(self.plan_emb).float(), dim=-1)  # (K, V)
            chunk_of = torch.arange(T - 1, device=lb.device) // C  # target j+1 belongs to chunk of j
            tok_logp = bow[:, input_ids[:, 1:]].permute(1, 2, 0)  # (B, T-1, K)
            mixed = torch.logsumexp(priors[:, chunk_of] + tok_logp, dim=-1)  # (B, T-1)
            out["chunk_bow"] = (w("chunk_bow_weight") * ramp, -mixed.mean())
        if w("plan_mi_weight") or (cfg.version != V1 and w("plan_js_div")):
            # These two need whole distributions (a (B, T', K, V) table): evenly spaced positions.
            stride = max(1, -(-T // cfg.divergence_positions))
            hs = h[:, ::stride]  # heads recomputed on these rows: slicing ex.base costs more
            sub = Experts(self.lm_head(hs), self.expert_down(hs).unflatten(-1, (K, cfg.expert_rank)), ex.factor)
            if w("plan_mi_weight"):  # I(z; x) = H(sum_k b_k p_k) - sum_k b_k H(p_k)
                elogp = sub.logp()  # (B, T', K, V)
                lb_sub = lb[:, ::stride]
                mix = torch.logsumexp(lb_sub.unsqueeze(-1) + elogp, dim=-2)
                mi = _entropy(mix) - (lb_sub.exp() * _entropy(elogp)).sum(-1)
                out["plan_mi"] = (w("plan_mi_weight"), -mi.mean())
            if cfg.version != V1 and w("plan_js_div"):  # JS of the experts, equal weights
                js = expert_js_divergence(sub.base.flatten(0, 1), sub.z.flatten(0, 1), sub.factor)  # (B T',)
                out["plan_js_div"] = (w("plan_js_div"), -js.mean())
        if w("chunk_post_kl_weight") or (cfg.version != V1 and w("future_contrastive")):
            pad = nC * C - T
            hc = F.pad(h, (0, 0, 0, pad)).view(B, nC, C, -1)
            counts = torch.full((nC,), float(C), device=h.device)
            counts[-1] = C - pad
            summary = hc.sum(2) / counts[None, :, None]  # (B, nC, D): mean hidden state per chunk
            if w("chunk_post_kl_weight"):  # KL(recognizer || online-filtered posterior)
                q = F.log_softmax(self.recognizer(summary).float(), dim=-1)
                kl = (q.exp() * (q - posts)).sum(-1)
                out["chunk_post_kl"] = (w("chunk_post_kl_weight"), kl.mean())
            if cfg.version != V1 and w("future_contrastive"):  # prior of chunk c vs its content
                plan = F.normalize(self.future_proj(priors.exp().to(h.dtype) @ self.plan_emb), dim=-1)
                fut = F.normalize(summary, dim=-1)
                sim = plan.reshape(B * nC, -1) @ fut.reshape(B * nC, -1).T / cfg.contrastive_temperature
                labels = torch.arange(B * nC, device=h.device)
                out["future_contrastive"] = (w("future_contrastive"), F.cross_entropy(sim.float(), labels))
        return out

    def diagnostics(self, input_ids: torch.Tensor) -> dict:
        """Usage, belief entropy, transition and the intervention test on windows (N, T)."""
        return planner_diagnostics(self, input_ids)

    def recorded_plan(self) -> list[dict[str, Any]]:
        """Row 0's plan per decoded token (``record``): the gate's argmax, the belief, forecasts."""
        return [{"state": int(rec["gate"][0].argmax()), "belief": rec["belief"][0].tolist(),
                 "lookahead": [a[0].tolist() for a in rec["lookahead"]]} for rec in self.plan_history]

    # ------------------------------------------------------------------ decoding

    def set_generation_options(self, **options) -> None:
        """``force_state``, ``freeze_planner``, ``planner_temperature``, ``lookahead_feedback_scale``,
        ``async_planner``, ``record`` (see :class:`GenerationOptions`); unset ones reset."""
        opts = GenerationOptions(**options)
        if opts.force_state is not None and not 0 <= opts.force_state < self.cfg.num_plan_states:
            raise ValueError(f"force_state {opts.force_state} is not a plan state (0..{self.cfg.num_plan_states - 1})")
        if opts.planner_temperature <= 0:
            raise ValueError(f"planner_temperature must be > 0, got {opts.planner_temperature}")
        if not 0 <= opts.lookahead_steps <= MAX_LOOKAHEAD:
            raise ValueError(f"lookahead_steps must be 0..{MAX_LOOKAHEAD} chunks, got {opts.lookahead_steps}")
        if opts.lookahead_feedback_scale is not None and self.cfg.version == V1:
            raise ValueError(f"lookahead_feedback_scale acts on v2's gate only; this checkpoint is {V1} (its tokens "
                             "come from the belief mixture, which has no feedback), so drop it")
        self.gen = opts
        self.plan_history = []

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> ApelrState:
        return ApelrState(super().init_state(batch_size, device).caches, PlannerState())

    @staticmethod
    def _fold_pending(state: ApelrState, tokens: torch.Tensor) -> None:
        """Add the first new token's likelihood under each expert (scored at the previous
        position, kept in ``state.pending``) to the current chunk's evidence."""
        st = state.planner
        idx = tokens[:, :1, None].expand(-1, st.acc.size(1), 1)  # (B, K, 1)
        st.acc = st.acc + state.pending.gather(-1, idx).squeeze(-1)

    def _planner_step(self, state: ApelrState, tokens: torch.Tensor) -> torch.Tensor:
        """Single-token decoding: fold the new token into the belief, cross a boundary if due,
        advance the planner one position and return the log belief (B, K). Needs no hidden state
        of the new position, so it can run beside the trunk."""
        st = state.planner
        if state.frozen is not None:
            st.pos += 1
            return state.frozen
        self._fold_pending(state, tokens)
        # One position whose own token is not observed yet (likelihood 0); u_last stays as is.
        trace = self.planner.filter(st.u_last[:, None], torch.zeros_like(st.acc)[:, None], st, self._filtering())
        return trace.log_belief[:, -1]

    @torch.no_grad()
    def step_hidden(self, tokens: torch.Tensor, state: ApelrState) -> tuple[torch.Tensor, torch.Tensor, ApelrState]:
        """Feed tokens (B, n) after the cached positions -> the last one's trunk hidden (B, D)
        and its logits (B, V)."""
        n = tokens.size(1)
        single = n == 1 and state.pending is not None
        future = None
        if single:
            run_async = self.cfg.async_planner if self.gen.async_planner is None else self.gen.async_planner
            if run_async:
                self._pool = self._pool or ThreadPoolExecutor(max_workers=1, thread_name_prefix="apelr-planner")
                future = self._pool.submit(self._planner_step, state, tokens)
            else:
                lb_last = self._planner_step(state, tokens)
        h = self._trunk(tokens, state.caches, state.pos)
        ex = self._experts(h)
        if single:
            lb_last = future.result() if future is not None else lb_last
            st = state.planner
            st.u_last = self.planner.context(h[:, -1]).float()  # u at this position, for the next boundary
            log_belief = lb_last[:, None]
        else:
            if state.pending is not None:  # a multi-token call after decoding: fold, then filter
                self._fold_pending(state, tokens)
            trace = self.planner.filter(self.planner.context(h), ex.ell(tokens[:, 1:]), state.planner,
                                        self._filtering())
            log_belief = trace.log_belief
            if state.frozen is not None:
                log_belief = state.frozen[:, None].expand_as(log_belief)
        if self.gen.freeze_planner and state.frozen is None:
            state.frozen = log_belief[:, -1]
        last = ex.last()
        state.pending = last.logp()[:, 0]  # (B, K, V): scores the next token when it arrives
        state.pos += n
        gate = self._gate(log_belief[:, -1], self.gen.lookahead_feedback_scale)
        if self.gen.record:  # (B, K) each: the belief predicting the next token, and its forecasts
            ahead = self.planner.lookahead(log_belief[:, -1], self.gen.lookahead_steps)
            self.plan_history.append({"pos": state.pos - 1, "belief": log_belief[:, -1].exp().cpu(),
                                      "gate": gate.exp().cpu(), "lookahead": [a.exp().cpu() for a in ahead]})
        logits = self._emit(last, gate[:, None])[:, 0]
        return h[:, -1], logits, state

"""Abstractinator: one level of the pyramid (seed 003). It cuts its input into entropy patches,
pools each patch into a vector, quantises it to a code, and learns to expand codes back."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.models.abstractinator.compressor import SegmentCompressor
from lmlab.models.abstractinator.config import AbstractinatorConfig, LevelConfig
from lmlab.models.abstractinator.entropy import EntropyModel, segment_ids
from lmlab.models.abstractinator.expander import DecoderOnlyExpanderRVQ
from lmlab.models.abstractinator.vq import Prior, ResidualVQ, StepStatistics


@dataclass
class LevelOut:
    """What one level made of its input (B rows, T symbols, K = the most codes in a row)."""

    seg: torch.Tensor  # (B, T) code index covering each symbol (>= K for padding)
    n_codes: torch.Tensor  # (B,) codes per row
    code_valid: torch.Tensor  # (B, K)
    z_q: torch.Tensor  # (B, K, d_c) quantised vectors (straight-through in training)
    codes: torch.Tensor  # (B, K, S) code indices
    pooled: torch.Tensor  # (B, K, D) continuous pooled vectors (the next level's compression input)
    forced: torch.Tensor  # (B, K) codes whose patch opens a document (the next level must cut there)
    blank: torch.Tensor  # (B, K) codes of patches holding only eos (the next level pools them only alone)
    keep: torch.Tensor  # (B, T) symbols pooled into their code (not a closing eos or blank code)
    vq_loss: torch.Tensor
    entropy_loss: torch.Tensor
    # expander_prior: the entropy model's next-byte logits (B, T, V) at the byte level, its
    # hidden states (B, T, D) at a code level (position t predicts symbol t+1); else None
    prior: torch.Tensor | None
    perplexity: list[float]
    dead: list[int]
    # vq_rate in training: each stage's soft assignments of the codes (B, K, codebook_size), with
    # gradients to the encoder; else None
    soft: list[torch.Tensor] | None
    patch_loss: torch.Tensor | None  # w_patch_recon: the patch decoder's CE (nats per pooled symbol); else None


class PatchDecoder(nn.Module):
    """``w_patch_recon``'s probe: a code's vector alone (no other context) -> the symbols of its
    patch, position by position: logits_j = W gelu(A q + P_j), P_j the position in the patch.

    Nothing at inference reads it; it exists for its loss, whose gradient reaches the encoder
    through the straight-through code vector. Its best use of K codes is to tell patches apart
    by their content (a k-means of patches), which a loss that reads the codes only as the
    next patches' context does not ask for: there, codes collapse onto one or two (BENCHMARKS.md).
    """

    def __init__(self, d_c: int, max_len: int, n_out: int, stages: int):
        super().__init__()
        self.stages, self.n_out = stages, n_out
        self.inp = nn.Linear(d_c, d_c, bias=False)
        self.pos = nn.Embedding(max_len, d_c)
        self.out = nn.Linear(d_c, stages * n_out)

    def loss(self, z_q: torch.Tensor, seg: torch.Tensor, start: torch.Tensor, keep: torch.Tensor,
             sym: torch.Tensor) -> torch.Tensor:
        """z_q (B, K, d_c), seg (B, T) each symbol's code (>= K: none), start (B, T) where each
        symbol's patch begins, keep (B, T) the symbols pooled into their code, sym (B, T) bytes
        or (B, T, S) codes -> the mean CE (nats) over kept symbols (each stage of a code counts
        as its own symbol's worth: summed over stages)."""
        B, T = seg.shape
        q = z_q.gather(1, seg.clamp(max=z_q.size(1) - 1)[..., None].expand(B, T, z_q.size(-1)))  # (B, T, d_c)
        j = (torch.arange(T, device=seg.device)[None] - start).clamp(0, self.pos.num_embeddings - 1)
        logits = self.out(F.gelu(self.inp(q.to(self.inp.weight.dtype)) + self.pos(j)))  # (B, T, S * n_out)
        target = sym if sym.dim() == 3 else sym[..., None]  # (B, T, S)
        ce = F.cross_entropy(logits.view(B, T, self.stages, self.n_out).flatten(0, 2).float(),
                             target[..., : self.stages].flatten(), reduction="none").view(B, T, self.stages)
        return (ce.sum(-1) * keep).sum() / keep.sum().clamp(min=1)


class Abstractinator(StepStatistics):
    """Level ``index``: bytes at level 0, else the codes (and pooled vectors) of ``below``."""

    def __init__(self, cfg: AbstractinatorConfig, lcfg: LevelConfig, below: ResidualVQ | None):
        super().__init__()
        D, nh, form, backend, r = cfg.d_model, cfg.n_head, cfg.attn_form, cfg.attn_backend, cfg.mla_kv_rank
        V, T = cfg.vocab_size, cfg.block_size + 1  # positions: causal decoding appends a byte to the window
        self.lcfg = lcfg
        self.entropy = EntropyModel(lcfg.entropy, D, nh, form, backend, r, T, vocab=V if below is None else None,
                                    below=below)
        if below is None:
            self.embed = nn.Embedding(V, D)
        else:
            self.inp = nn.Linear(D if lcfg.compress_input == "pooled" else below.d_c, D, bias=False)
        self.compressor = SegmentCompressor(D, nh, lcfg.compressor_layers, lcfg.window, lcfg.n_queries, form,
                                            backend, r, T)
        self.down = nn.Linear(D, lcfg.d_c, bias=False)
        self.register_buffer("z_mean", torch.zeros(lcfg.d_c))
        self.register_buffer("z_var", torch.ones(lcfg.d_c))
        self.register_buffer("z_stats_set", torch.tensor(False))
        self.vq = ResidualVQ(lcfg.vq_stages, lcfg.codebook_size, lcfg.d_c, beta=lcfg.vq_beta, decay=lcfg.vq_decay,
                             ema=lcfg.vq_ema, dead_threshold=lcfg.dead_code_threshold,
                             diversity=lcfg.vq_diversity, rate=lcfg.vq_rate > 0, fsq_levels=lcfg.fsq_levels)
        causal = cfg.decoding == "causal"  # the expander reads the states above (D), not codes (d_c)
        self.expander = DecoderOnlyExpanderRVQ(D, nh, lcfg.expander_layers, form, backend, r, T,
                                               D if causal else lcfg.d_c, vocab=V if below is None else None,
                                               d_lo=lcfg.d_lo, below=below, context=lcfg.expander_context,
                                               head=not causal, d_low=D if cfg.causal_reads == "pooled" else None)
        self.patch_decoder = None
        if lcfg.w_patch_recon > 0:
            self.patch_decoder = PatchDecoder(lcfg.d_c, lcfg.entropy.max_patch_len, V if below is None else below.K,
                                              1 if below is None else len(below.stages))

    def compress(self, sym: torch.Tensor, valid: torch.Tensor, forced: torch.Tensor, blank: torch.Tensor,
                 cont: torch.Tensor | None) -> LevelOut:
        """sym (B, T) bytes or (B, T, S) codes, valid/forced/blank (B, T), cont the pooled vectors
        (B, T, D) or code vectors (B, T, d_c) of the level below (None at the byte level) -> LevelOut.

        ``forced``: symbols that open a document (the symbol before them closed one: known
        before they are decoded). ``blank``: symbols with no content of their own (an eos byte,
        a code of an eos-only patch); one always closes its patch, since what follows opens a
        document."""
        ent_loss, entropy, *prior = self.entropy(sym, valid, logits=self.lcfg.expander_prior)
        starts = self.entropy.cut(entropy, forced, valid)
        seg = segment_ids(starts)  # (B, T)
        B, T = seg.shape
        last = valid.long().sum(1).clamp(min=1) - 1  # the valid prefix of each row
        n_codes = seg.gather(1, last[:, None]).squeeze(1) + 1  # (B,)
        K = int(n_codes.max())
        seg = torch.where(valid, seg, torch.full_like(seg, K))  # padding belongs to no code
        # A blank symbol at the end of a patch is left out of its code, so an eos appended to a
        # row (right padding, or the end of a document) never changes the row's last code; alone
        # in its patch it is the code's only content.
        keep = valid & (~blank | starts)  # (B, T)
        x = self.embed(sym) if cont is None else self.inp(cont)
        pooled = self.compressor(x, torch.where(keep, seg, torch.full_like(seg, K)), K)  # (B, K, D)
        code_valid = torch.arange(K, device=seg.device)[None] < n_codes[:, None]
        q = self.vq(self.code_space(self.down(pooled)[code_valid]))
        z_q = pooled.new_zeros(B, K, q.z_q.size(-1), dtype=q.z_q.dtype).masked_scatter(code_valid[..., None], q.z_q)
        codes = torch.zeros(B, K, q.codes.size(-1), dtype=torch.long, device=seg.device)
        codes[code_valid] = q.codes
        soft = [pooled.new_zeros(B, K, p.size(-1), dtype=p.dtype).masked_scatter(code_valid[..., None], p)
                for p in q.soft] or None  # (B, K, codebook_size) per stage
        # Where each code's patch begins: a patch that opens a document forces a cut above (its
        # first symbol follows a closed document, so the decoder knows before decoding the code).
        pos = torch.arange(T, device=seg.device).expand(B, T)
        first = torch.full((B, K + 1), T - 1, dtype=torch.long, device=seg.device)
        first = first.scatter_reduce(1, seg, pos, reduce="amin")[:, :K]
        # A code is blank when its patch has no content symbol (an eos-only patch, and up).
        content = torch.zeros(B, K + 1, dtype=torch.long, device=seg.device)
        content = content.scatter_add(1, seg, (valid & ~blank).long())[:, :K]  # (B, K)
        patch_loss = None
        if self.patch_decoder is not None:
            start = first.gather(1, seg.clamp(max=K - 1))  # (B, T) where each symbol's patch begins
            patch_loss = self.patch_decoder.loss(z_q, seg, start, keep, sym)
        return LevelOut(seg, n_codes, code_valid, z_q, codes, pooled, forced.gather(1, first) & code_valid,
                        (content == 0) & code_valid, keep, q.loss, ent_loss, prior[0] if prior else None,
                        q.perplexity, q.dead, soft, patch_loss)

    def code_space(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder outputs (N, d_c) -> the vectors the quantiser sees: batch-normalised per
        feature (no affine), with running statistics at eval (so a code never depends on other
        rows there). A component every patch shares says nothing about any patch; left in, it
        dominates the vectors at init and they drift together onto one code. Unit variance per
        feature also bounds the codes, so the distance-based code scores -|u - c|^2 stay tame.
        ``code_norm: vector``: each vector normalised over its own features instead, the same
        in training and at eval (its scale never matters, so it cannot shrink out of reach).
        """
        z = z.float()
        if self.lcfg.code_norm == "vector":
            return F.layer_norm(z, z.shape[-1:], eps=1e-10)
        if self.training and z.size(0) > 1:
            mean, var = z.mean(0), z.var(0, unbiased=False)
            # the step's running estimate: the mean over micro-batches (and ranks) of these moments
            self.gather(moments=torch.stack([mean, var]).detach(), n=z.new_ones(()))
            self.applied()
        else:
            mean, var = self.z_mean, self.z_var
        return (z - mean) * torch.rsqrt(var + 1e-5)

    @torch.no_grad()
    def step_end(self) -> None:
        """The running code-space moments move toward the step's (the first step sets them)."""
        if not self.training:
            return
        stats = self.take(moments=torch.stack([self.z_mean, self.z_var]), n=self.z_stats_set.float())
        if stats["n"] == 0:
            return
        moments = stats["moments"] / stats["n"]
        if self.z_stats_set:
            self.z_mean.mul_(0.9).add_(0.1 * moments[0])
            self.z_var.mul_(0.9).add_(0.1 * moments[1])
        else:
            self.z_mean.copy_(moments[0])
            self.z_var.copy_(moments[1])
            self.z_stats_set.fill_(True)

    def target_seg(self, out: LevelOut) -> torch.Tensor:
        """(B, T) the code covering the symbol each expander position predicts: bytes predict
        the next byte (the last position reuses its own code), codes predict themselves."""
        if self.expander.byte_level:
            return torch.cat([out.seg[:, 1:], out.seg[:, -1:]], dim=1)
        return out.seg

    def byte_logits(self, h: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        """Byte level: the expander's hidden states (B, T, D) -> next-byte logits (B, T, V); with
        ``expander_prior`` the entropy model's logits for the same bytes (``prior``, from x_<=t
        alone) are added: a product of two experts, the byte LM the decoder already runs to
        cut patches and the expander that reads the codes, so the codes need only carry what
        the byte LM cannot guess. ``prior_dropout``: in training, that share of rows goes
        without it."""
        logits = self.expander.byte_logits(h)
        if prior is None:
            return logits
        if self.training and self.lcfg.prior_dropout > 0:  # whole rows without the prior
            prior = prior * (torch.rand(prior.size(0), 1, 1, device=prior.device) >= self.lcfg.prior_dropout)
        return logits + prior.to(logits.dtype)

    def reconstruct(self, sym: torch.Tensor, out: LevelOut, z_q: torch.Tensor | None = None,
                    soft: list[torch.Tensor] | None = None):
        """Teacher-forced expander over this level's input. Bytes: (logits (B, T, V), log p of
        x_{t+1} (B, T-1), None); codes: (None, log p(code_t) (B, T), rate (B, T) or None): with
        ``soft``, the level below's soft assignments of those codes (one (B, T, K) per stage),
        the rate is their expected code length under this expander (``CodeHead.log_prob``)."""
        h = self.expander.hidden(sym, self.target_seg(out), out.z_q if z_q is None else z_q, out.code_valid)
        if self.expander.byte_level:
            logits = self.byte_logits(h, out.prior)
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, sym[:, 1:, None]).squeeze(-1)
            return logits, logp, None
        lp, _, rate = self.expander.head.log_prob(h, sym, self.code_prior(out.prior), soft)
        return None, lp, rate

    def code_prior(self, hidden: torch.Tensor | None) -> Prior | None:
        """A code level with ``expander_prior``: the entropy model's states (B, T, D) over the
        symbols -> the prior of the codes they predict: code t is scored by the state at t-1
        (what the decoder has before it decodes code t); a row's first code has none."""
        if hidden is None:
            return None
        shifted = torch.cat([torch.zeros_like(hidden[:, :1]), hidden[:, :-1]], dim=1)
        has = torch.arange(hidden.size(1), device=hidden.device)[None].expand(hidden.shape[:2]) > 0
        return Prior(self.entropy.head, shifted, has)

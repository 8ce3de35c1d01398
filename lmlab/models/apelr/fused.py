"""Fused APEL-R kernels with their own backward, so the K experts' (N, K, V) logit tables are never
kept for autograd.

1. Expert log-likelihoods: ``log p_k(x) = base[x] + z_k . M_k[x] - logsumexp_v(base[v] + z_k . M_k[v])``
for every row and plan state, without the (N, K, V) logit table.

Shapes: N rows (positions), K plan states, V vocab, r expert rank; base (N, V), z (N, K, r),
factor M (K, V, r), ids (N,). Output (N, K) fp32.

Why: the belief filter needs each expert's probability of the observed token, and so each
expert's log-normaliser over the whole vocabulary. Materialised, that is a (N, K, V) table
(100 MB at N = 3056, K = 4, V = 2048) that forward and backward each stream several times; on a
CPU the step becomes memory-bound. Here rows go through in blocks small enough to stay in cache:
the forward keeps only the (N, K) log-normalisers, the backward recomputes each block's logits.

Gradient of ell_k = logit_k[x] - lse_k with respect to the logits is ``onehot(x) - p_k``, so for an
upstream gradient g (N, K): d base = (sum_k g_k) onehot(x) - sum_k g_k p_k,
d z_k = g_k (M_k[x] - p_k M_k), d M_k = sum_n g_k (onehot(x) - p_k) z_k.

2. The experts' Jensen-Shannon divergence ``JS = H(m) - mean_k H(p_k)``, m = mean_k p_k, per row
(v2's ``plan_js_div`` term, on a subset of positions), blockwise the same way. Its gradient with
respect to expert k's logits is ``(1/K) p_k (r_k - KL(p_k || m))`` with r_k = log p_k - log m: one
pass over a block instead of autograd's chain of log-softmax, exp, logsumexp and entropy backwards.

3. v1's mixture ``log sum_k g_k p_k(v)`` (N, V) from log gates (N, K), blockwise. With responsibilities
w_kv = g_k p_k(v) / mix(v) and upstream G (N, V): d logit_kv = G_v w_kv - p_k(v) sum_u G_u w_ku and
d log g_k = sum_v G_v w_kv.

All backwards end the same way: given a block's gradient with respect to its (K, R, V) logits,
accumulate it into base (sum over k), z (times M_k) and M (times z).
"""

from __future__ import annotations

import torch

# Rows per block: a (K, rows, V) fp32 block of ~4 MB, 128 rows at K = 4, V = 2048 (on 2 CPU cores
# 1-8 MB blocks were within noise of each other; 32 MB and whole-table blocks were 1.3-2x slower).
_BLOCK_BYTES = 4 << 20


def _blocks(N: int, K: int, V: int):
    """Row ranges [a, b) covering 0..N, each block's (K, b - a, V) fp32 logits ~_BLOCK_BYTES."""
    R = max(1, _BLOCK_BYTES // (4 * K * V))
    for a in range(0, N, R):
        yield a, min(N, a + R)


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    """fp32 for fp32 / bf16 / fp16 inputs, fp64 for fp64 (the exactness tests)."""
    return torch.promote_types(t.dtype, torch.float32)


def _no_autocast(fn):
    """Run a kernel's forward / backward in its own dtypes: under autocast, baddbmm would drop the
    logit blocks to bf16 and the normalisers would lose their precision."""

    def wrapped(ctx, *args):
        with torch.autocast(args[0].device.type, enabled=False):
            return fn(ctx, *args)

    return wrapped


class _Factored:
    """base (N, V), z (N, K, r), factor (K, V, r) in the accumulation dtype, with the gradient
    buffers a backward fills block by block."""

    def __init__(self, base: torch.Tensor, z: torch.Tensor, factor: torch.Tensor):
        self.dt = _acc_dtype(factor)
        self.base, self.z, self.factor = base, z.to(self.dt), factor.to(self.dt)
        self.factor_t = self.factor.transpose(1, 2).contiguous()  # (K, r, V)
        self.N, self.V = base.shape
        self.K, _, self.r = factor.shape

    def logits(self, a: int, b: int) -> torch.Tensor:
        """(K, R, V) logits of rows [a, b): base + z_k . M_k, as one batched GEMM."""
        init = self.base[a:b].to(self.dt).unsqueeze(0).expand(self.K, -1, -1)
        return torch.baddbmm(init, self.z[a:b].transpose(0, 1), self.factor_t)

    def start_backward(self) -> None:
        dev = self.base.device
        self.d_base = torch.empty(self.N, self.V, dtype=self.dt, device=dev)
        self.d_z = torch.empty(self.N, self.K, self.r, dtype=self.dt, device=dev)
        self.d_factor = torch.zeros(self.K, self.V, self.r, dtype=self.dt, device=dev)

    def accumulate(self, a: int, b: int, d_logits: torch.Tensor) -> None:
        """Chain a block's (K, R, V) logit gradient into base, z and M."""
        self.d_base[a:b] = d_logits.sum(0)
        self.d_z[a:b] = torch.bmm(d_logits, self.factor).transpose(0, 1)  # (R, K, r)
        self.d_factor.baddbmm_(d_logits.transpose(1, 2), self.z[a:b].transpose(0, 1))  # (K, V, r)

    def grads(self, base, z, factor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.d_base.to(base.dtype), self.d_z.to(z.dtype), self.d_factor.to(factor.dtype)


class _ExpertLogLik(torch.autograd.Function):
    @staticmethod
    @_no_autocast
    def forward(ctx, base, z, factor, ids):
        f = _Factored(base, z, factor)
        lse = base.new_empty(f.K, f.N, dtype=f.dt)
        for a, b in _blocks(f.N, f.K, f.V):
            blk = f.logits(a, b)  # (K, R, V)
            m = blk.amax(-1, keepdim=True)  # in place from here: no second block-sized buffer
            lse[:, a:b] = blk.sub_(m).exp_().sum(-1).log_() + m.squeeze(-1)
        # The observed token's logit: base[n, x_n] + z_nk . M_k[x_n] (gathers, no table).
        rows_of = torch.arange(f.N, device=base.device)
        observed = base[rows_of, ids].to(f.dt).unsqueeze(1) + (f.z * f.factor[:, ids].transpose(0, 1)).sum(-1)
        ctx.save_for_backward(base, z, factor, ids, lse)
        return observed - lse.t()

    @staticmethod
    @_no_autocast
    def backward(ctx, g):
        base, z, factor, ids, lse = ctx.saved_tensors
        f = _Factored(base, z, factor)
        f.start_backward()
        g = g.to(f.dt)
        gt = g.t().contiguous()  # (K, N)
        for a, b in _blocks(f.N, f.K, f.V):
            # -g_k p_k, in place on the block's recomputed logits
            p = f.logits(a, b).sub_(lse[:, a:b, None]).exp_().mul_(gt[:, a:b, None].neg())
            f.accumulate(a, b, p)
        # The g_k onehot(x) parts, as index adds of N (and N K r) entries: never a (N, V) onehot.
        rows_of = torch.arange(f.N, device=base.device)
        f.d_base[rows_of, ids] += g.sum(1)
        f.d_z += g.unsqueeze(-1) * f.factor[:, ids].transpose(0, 1)
        f.d_factor.index_add_(1, ids, gt.unsqueeze(-1) * f.z.transpose(0, 1))  # (K, N, r) into rows ids
        return (*f.grads(base, z, factor), None)


def expert_log_likelihoods(base: torch.Tensor, z: torch.Tensor, factor: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p_k(ids[n]) (N, K) for base (N, V), z (N, K, r), factor (K, V, r), ids (N,); fp32
    (fp64 for fp64 inputs)."""
    return _ExpertLogLik.apply(base.contiguous(), z.contiguous(), factor.contiguous(), ids.contiguous())


def _js_block(blk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """From a (K, R, V) logit block: log p_k (K, R, V), log m (R, V) and the per-row JS (R,)."""
    logp = torch.log_softmax(blk, dim=-1)
    p = logp.exp()
    m = p.mean(0)
    logm = m.clamp_min(torch.finfo(m.dtype).tiny).log()
    js = (p * logp).sum(-1).mean(0) - (m * logm).sum(-1)  # H(m) - mean_k H(p_k)
    return logp, logm, js


class _ExpertJS(torch.autograd.Function):
    # Used on a few rows (``divergence_positions`` per sequence), so the forward keeps log p_k and
    # log m for the backward (a (K, N, V) table at small N) instead of recomputing them.
    @staticmethod
    @_no_autocast
    def forward(ctx, base, z, factor):
        f = _Factored(base, z, factor)
        js = base.new_empty(f.N, dtype=f.dt)
        logp = base.new_empty(f.K, f.N, f.V, dtype=f.dt)
        logm = base.new_empty(f.N, f.V, dtype=f.dt)
        for a, b in _blocks(f.N, f.K, f.V):
            logp[:, a:b], logm[a:b], js[a:b] = _js_block(f.logits(a, b))
        ctx.save_for_backward(base, z, factor, logp, logm)
        return js

    @staticmethod
    @_no_autocast
    def backward(ctx, g):
        base, z, factor, logp, logm = ctx.saved_tensors
        f = _Factored(base, z, factor)
        f.start_backward()
        g = g.to(f.dt) / f.K
        for a, b in _blocks(f.N, f.K, f.V):
            p = logp[:, a:b].exp()
            r = logp[:, a:b] - logm[a:b]  # (K, R, V): log p_k - log m
            kl = (p * r).sum(-1, keepdim=True)  # (K, R, 1): KL(p_k || m)
            f.accumulate(a, b, r.sub_(kl).mul_(p).mul_(g[a:b, None]))
        return f.grads(base, z, factor)


def expert_js_divergence(base: torch.Tensor, z: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Per-row Jensen-Shannon divergence (equal weights) of the K experts' distributions
    softmax(base + z_k . M_k): base (N, V), z (N, K, r), factor (K, V, r) -> (N,)."""
    return _ExpertJS.apply(base.contiguous(), z.contiguous(), factor.contiguous())


class _ExpertMixture(torch.autograd.Function):
    @staticmethod
    @_no_autocast
    def forward(ctx, base, z, factor, log_gate):
        f = _Factored(base, z, factor)
        lg = log_gate.to(f.dt).t()  # (K, N)
        out = base.new_empty(f.N, f.V, dtype=f.dt)
        lse = base.new_empty(f.K, f.N, dtype=f.dt)
        for a, b in _blocks(f.N, f.K, f.V):
            blk = f.logits(a, b)  # (K, R, V)
            lse[:, a:b] = torch.logsumexp(blk, dim=-1)
            out[a:b] = torch.logsumexp(blk.add_((lg[:, a:b] - lse[:, a:b])[..., None]), dim=0)
        ctx.save_for_backward(base, z, factor, log_gate, lse, out)
        return out

    @staticmethod
    @_no_autocast
    def backward(ctx, G):
        base, z, factor, log_gate, lse, out = ctx.saved_tensors
        f = _Factored(base, z, factor)
        f.start_backward()
        G = G.to(f.dt)
        lg = log_gate.to(f.dt).t()  # (K, N)
        d_lg = torch.empty(f.K, f.N, dtype=f.dt, device=base.device)
        for a, b in _blocks(f.N, f.K, f.V):
            logp = f.logits(a, b).sub_(lse[:, a:b, None])  # (K, R, V)
            gw = (logp + lg[:, a:b, None] - out[a:b]).exp_().mul_(G[a:b])  # G_v w_kv
            s = gw.sum(-1)  # (K, R)
            d_lg[:, a:b] = s
            f.accumulate(a, b, gw.sub_(logp.exp_().mul_(s[..., None])))
        return (*f.grads(base, z, factor), d_lg.t().to(log_gate.dtype))


def expert_mixture(base: torch.Tensor, z: torch.Tensor, factor: torch.Tensor, log_gate: torch.Tensor) -> torch.Tensor:
    """log sum_k gate_k softmax(base + z_k . M_k) (N, V) for log_gate (N, K) (log-probabilities,
    -inf allowed for all but one state)."""
    return _ExpertMixture.apply(base.contiguous(), z.contiguous(), factor.contiguous(), log_gate.contiguous())

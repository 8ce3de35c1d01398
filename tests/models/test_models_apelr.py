"""APEL-R's math pinned: brute-force likelihood, Bayes filtering, chunk-only updates, decoding."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.configure import build_model_config
from lmlab.models.apelr import V1, V2, Apelr
from lmlab.models.apelr.planner import PlannerState
from lmlab.registry import build_model

ALL_LOSSES = {"entropy_reg_weight": 0.1, "usage_balance_weight": 0.1, "chunk_bow_weight": 0.1,
              "chunk_bow_warmup_steps": 10, "plan_mi_weight": 0.1, "chunk_post_kl_weight": 0.1,
              "loss_weights": {"future_contrastive": 0.1, "plan_js_div": 0.1}}


def _model(version: str = V2, vocab: int = 11, **kw) -> Apelr:
    raw = {"family": "apelr", "preset": "tiny", "vocab_size": vocab, "version": version, **kw}
    torch.manual_seed(0)
    model = build_model(build_model_config(raw)).eval()
    with torch.no_grad():  # a non-trivial planner: random transition, initial state and context
        model.planner.trans_logits.add_(torch.randn_like(model.planner.trans_logits))
        model.planner.init_logits.add_(torch.randn_like(model.planner.init_logits))
        model.expert_up.mul_(50)  # experts that really differ
    return model


@torch.no_grad()
def test_v1_likelihood_equals_brute_force_over_plan_paths():
    C, T = 3, 8
    model = _model(V1, vocab=5, chunk_size=C, num_plan_states=2, planner_context_scale=0.0)
    x = torch.randint(0, 5, (1, T), generator=torch.Generator().manual_seed(3))
    logp = torch.log_softmax(model(x).logits.double(), -1)[0, :-1].gather(-1, x[0, 1:, None]).sum()
    h = model._trunk(x)
    elogp = model._experts(h).logp().double()[0]  # (T, K, V)
    log_a = model.planner.log_transition().double()
    log_pi = F.log_softmax(model.planner.init_logits.double(), -1)
    n_chunks = (T - 2) // C + 1  # predictions at positions 0..T-2
    total = []
    for path in itertools.product(range(2), repeat=n_chunks):
        lp = log_pi[path[0]] + sum(log_a[a, b] for a, b in zip(path, path[1:]))
        lp = lp + sum(elogp[t, path[t // C], x[0, t + 1]] for t in range(T - 1))
        total.append(lp)
    assert float(logp) == pytest.approx(float(torch.logsumexp(torch.stack(total), 0)), abs=1e-4)


@torch.no_grad()
def test_factored_experts_equal_the_full_tables():
    model = _model(V2, expert_rank=4)
    x = torch.randint(0, 11, (2, 13), generator=torch.Generator().manual_seed(8))
    h = model._trunk(x)
    ex = model._experts(h)
    fast_ell = ex.ell(x[:, 1:])  # logit of the token minus the log-normaliser, no full table
    delta = torch.einsum("btkr,kvr->btkv", ex.z, ex.factor)
    full = torch.log_softmax(ex.base.unsqueeze(2) + delta, -1)  # (B, T, K, V)
    torch.testing.assert_close(ex.logp(), full)
    torch.testing.assert_close(fast_ell[:, :-1], full[:, :-1].gather(-1, x[:, 1:, None, None].expand(2, 12, 3, 1))[..., 0])
    assert torch.equal(ex.ell(x[:, 1:]), torch.cat([full[:, :-1].gather(-1, x[:, 1:, None, None].expand(2, 12, 3, 1))[..., 0],
                                                     torch.zeros(2, 1, 3)], 1))  # from the cached table now
    gate = torch.softmax(torch.randn(2, 13, 3), -1)
    torch.testing.assert_close(ex.mix(gate), ex.base + torch.einsum("btk,btkv->btv", gate, delta))


def _tables(base, z, factor):
    """Reference: the (N, K, V) log-softmax table the fused kernels avoid."""
    return torch.log_softmax(base.unsqueeze(1) + torch.einsum("nkr,kvr->nkv", z, factor), -1)


@pytest.mark.parametrize("block_bytes", [4 * 3 * 7 * 5, 1 << 22])  # 5 rows per block; one block
def test_fused_kernels_equal_the_full_tables_with_exact_gradients(monkeypatch, block_bytes):
    from lmlab.models.apelr import fused

    monkeypatch.setattr(fused, "_BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(5)
    N, K, V, r = 23, 3, 7, 4
    base, z, factor = (torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
                       for s in ((N, V), (N, K, r), (K, V, r)))
    ids = torch.randint(0, V, (N,), generator=g)
    logp = _tables(base, z, factor)
    torch.testing.assert_close(fused.expert_log_likelihoods(base, z, factor, ids),
                               logp.gather(-1, ids[:, None, None].expand(N, K, 1))[..., 0], rtol=0, atol=1e-12)
    m = logp.exp().mean(1)
    js = -(m * m.log()).sum(-1) + (logp.exp() * logp).sum(-1).mean(1)  # H(m) - mean_k H(p_k)
    torch.testing.assert_close(fused.expert_js_divergence(base, z, factor), js, rtol=0, atol=1e-12)
    log_gate = torch.log_softmax(torch.randn(N, K, generator=g, dtype=torch.float64), -1).requires_grad_()
    torch.testing.assert_close(fused.expert_mixture(base, z, factor, log_gate),
                               torch.logsumexp(log_gate[..., None] + logp, 1), rtol=0, atol=1e-12)
    forced = torch.full((N, K), -math.inf, dtype=torch.float64)
    forced[:, 1] = 0.0
    torch.testing.assert_close(fused.expert_mixture(base, z, factor, forced), logp[:, 1], rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda b, z, f: fused.expert_log_likelihoods(b, z, f, ids), (base, z, factor))
    assert torch.autograd.gradcheck(fused.expert_js_divergence, (base, z, factor))
    assert torch.autograd.gradcheck(fused.expert_mixture, (base, z, factor, log_gate))


def test_fused_kernels_are_stable_and_keep_input_dtypes():
    from lmlab.models.apelr.fused import (
        expert_js_divergence,
        expert_log_likelihoods,
        expert_mixture,
    )

    g = torch.Generator().manual_seed(6)
    base = 1000 * torch.randn(9, 50, generator=g)  # logits far outside exp's range
    z, factor = torch.randn(9, 2, 3, generator=g), 30 * torch.randn(2, 50, 3, generator=g)
    ids = torch.randint(0, 50, (9,), generator=g)
    ell = expert_log_likelihoods(base, z, factor, ids)
    ref = _tables(base.double(), z.double(), factor.double()).gather(-1, ids[:, None, None].expand(9, 2, 1))[..., 0]
    assert torch.isfinite(ell).all() and (ell <= 0).all()
    torch.testing.assert_close(ell.double(), ref, rtol=1e-5, atol=1e-2)
    js = expert_js_divergence(base, z, factor)
    assert torch.isfinite(js).all() and (js >= -1e-5).all() and (js <= math.log(2) + 1e-5).all()
    mix = expert_mixture(base, z, factor, torch.log_softmax(torch.randn(9, 2, generator=g), -1))
    assert torch.isfinite(mix).all()
    torch.testing.assert_close(mix.exp().sum(-1), torch.ones(9), rtol=0, atol=1e-3)  # fp32 at |logit| ~ 1000
    bf = [t.bfloat16().requires_grad_() for t in (base / 100, z, factor / 30)]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the kernels opt out: fp32 blocks
        out = expert_log_likelihoods(*bf, ids) + expert_js_divergence(*bf)[:, None]
    assert out.dtype == torch.float32
    out.sum().backward()
    assert all(t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad.float()).all() for t in bf)


def test_filtering_is_bayes_rule_and_boundaries_push_through_the_transition():
    model = _model(V1, chunk_size=4, num_plan_states=3)
    planner = model.planner
    g = torch.Generator().manual_seed(0)
    B, T, K = 2, 11, 3
    u, ell = torch.randn(B, T, K, generator=g), -3 * torch.rand(B, T, K, generator=g)
    with torch.no_grad():
        trace = planner.filter(u, ell, PlannerState())
        log_a = planner.log_transition()
        b = F.softmax(planner.init_logits, -1).expand(B, K)
        for t in range(T):
            if t and t % 4 == 0:  # boundary: (posterior A) * exp(s u_{t-1}), normalised
                pushed = b @ log_a.exp()
                b = pushed * torch.exp(planner.context_scale * u[:, t - 1])
                b = b / b.sum(-1, keepdim=True)
            torch.testing.assert_close(trace.log_belief[:, t].exp(), b, atol=1e-5, rtol=1e-5)
            b = b * ell[:, t].exp()  # Bayes: prior x likelihood of the observed token, normalised
            b = b / b.sum(-1, keepdim=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_belief_stays_a_distribution_on_long_sequences(dtype):
    model = _model(V1, chunk_size=16, num_plan_states=4)
    g = torch.Generator().manual_seed(1)
    T = 4096
    u = torch.randn(2, T, 4, generator=g).to(dtype)
    ell = (-40 * torch.rand(2, T, 4, generator=g)).to(dtype)  # very unlikely tokens too
    with torch.no_grad():
        lb = model.planner.filter(u, ell, PlannerState()).log_belief
    assert torch.isfinite(lb).all()
    torch.testing.assert_close(lb.exp().sum(-1), torch.ones(2, T), atol=1e-5, rtol=0)
    x = torch.randint(0, 11, (2, 64), generator=g)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x).logits
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float().exp().sum(-1), torch.ones(2, 64), atol=1e-3, rtol=0)


def test_without_token_filtering_beliefs_move_only_at_chunk_boundaries():
    model = _model(V2, chunk_size=4, token_filtering=False)
    x = torch.randint(0, 11, (2, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        h = model._trunk(x)
        trace = model.planner.filter(model.planner.context(h), model._experts(h).ell(x[:, 1:]),
                                     PlannerState(), token_filtering=False)
    lb = trace.log_belief
    for t in range(1, 17):
        same = torch.allclose(lb[:, t], lb[:, t - 1])
        assert same == (t % 4 != 0), t


@pytest.mark.parametrize("version,filtering", [(V1, True), (V2, True), (V2, False)])
@pytest.mark.parametrize("asynchronous", [False, True])
def test_cached_decoding_equals_recompute(version, filtering, asynchronous):
    model = _model(version, token_filtering=filtering)
    model.set_generation_options(async_planner=asynchronous)
    x = torch.randint(0, 11, (2, 30), generator=torch.Generator().manual_seed(4))
    full = model(x).logits  # (B, T, V)
    state = model.init_state(2)
    logits, state = model.step(x[:, :5], state)  # prefill, then one token at a time (crosses chunks)
    torch.testing.assert_close(logits, full[:, 4], atol=1e-4, rtol=1e-4)
    for t in range(5, 30):
        logits, state = model.step(x[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=1e-4)


def test_async_planner_output_identical_to_sync():
    from lmlab.config import DecodeSettings
    from lmlab.generate.decode import generate_ids

    model = _model(V2)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    s = DecodeSettings(max_new_tokens=40, temperature=1.0, top_k=None, seed=5, stop_on_eos=False)
    outs = []
    for asynchronous in (False, True):
        model.set_generation_options(async_planner=asynchronous)
        outs.append(generate_ids(model, prompts, s, eos_id=0))
    assert outs[0] == outs[1] and len(outs[0][0]) == 40


def test_forced_states_and_frozen_planner():
    model = _model(V2)
    x = torch.randint(0, 11, (1, 20), generator=torch.Generator().manual_seed(6))
    dists = []
    for k in range(model.cfg.num_plan_states):
        model.set_generation_options(force_state=k)
        logits, _ = model.step(x, model.init_state(1))
        dists.append(torch.log_softmax(logits, -1))
    kl = [float(F.kl_div(b, a, log_target=True, reduction="sum")) for a, b in itertools.combinations(dists, 2)]
    assert min(kl) > 1e-3  # each state is its own next-token distribution
    model.set_generation_options(freeze_planner=True, record=True)
    state = model.init_state(1)
    _, state = model.step(x[:, :6], state)
    for t in range(6, 20):
        _, state = model.step(x[:, t : t + 1], state)
    beliefs = torch.stack([h["belief"] for h in model.plan_history])
    assert torch.equal(beliefs, beliefs[:1].expand_as(beliefs))
    model.set_generation_options(record=True)  # unfrozen: the belief moves
    state = model.init_state(1)
    for t in range(20):
        _, state = model.step(x[:, t : t + 1], state)
    assert not torch.allclose(model.plan_history[3]["belief"], model.plan_history[12]["belief"])
    with pytest.raises(ValueError, match="force_state 9 is not a plan state"):
        model.set_generation_options(force_state=9)


def test_lookahead_feedback_on_a_v1_model_says_it_would_do_nothing():
    """v1's tokens come from the belief mixture: the v2 gate's feedback scale has no effect there,
    so it is refused rather than silently ignored (v2 takes it)."""
    with pytest.raises(ValueError, match="lookahead_feedback_scale acts on v2's gate only; this checkpoint is v1"):
        _model(V1).set_generation_options(lookahead_feedback_scale=0.5)
    _model(V2).set_generation_options(lookahead_feedback_scale=0.5)


@pytest.mark.parametrize("version", [V1, V2])
def test_every_loss_term_is_logged_finite_and_trains_its_modules(version):
    model = _model(version, **ALL_LOSSES).train()
    x = torch.randint(0, 11, (3, 41), generator=torch.Generator().manual_seed(7))
    out = model(x[:, :-1], targets=x[:, 1:])
    expected = {"ce", "usage_balance", "chunk_bow", "plan_mi", "chunk_post_kl"}
    expected |= {"entropy_reg"} if version == V1 else {"boundary_entropy", "future_contrastive", "plan_js_div"}
    assert set(out.terms) == expected
    assert all(torch.isfinite(v) for v in out.terms.values())
    total = sum(v for k, v in out.terms.items())
    torch.testing.assert_close(out.loss.detach(), total, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing
    model.set_train_step(0)  # chunk_bow ramps over its warmup
    early = model(x[:, :-1], targets=x[:, 1:]).terms["chunk_bow"]
    model.set_train_step(100)
    late = model(x[:, :-1], targets=x[:, 1:]).terms["chunk_bow"]
    torch.testing.assert_close(early * 10, late)


def test_v2_weights_fall_back_to_v1_names():
    cfg = build_model_config({"family": "apelr", "preset": "tiny", "entropy_reg_weight": 0.3,
                              "usage_balance_weight": 0.2, "loss_weights": {"usage_balance": 0.7}})
    assert cfg.version == V2
    assert cfg.weight("boundary_entropy") == 0.3 and cfg.weight("usage_balance") == 0.7
    assert cfg.weight("entropy_reg_weight") == 0.0 and cfg.weight("future_contrastive") == 0.0
    v1 = build_model_config({"family": "apelr", "preset": "tiny", "version": V1, "entropy_reg_weight": 0.3})
    assert v1.weight("entropy_reg_weight") == 0.3 and v1.weight("boundary_entropy") == 0.0
    fresh = build_model(build_model_config({"family": "apelr", "preset": "tiny", "vocab_size": 11,
                                            "planner_self_bias": 2.0}))
    stay = fresh.planner.log_transition().exp().diagonal()  # initialised toward staying
    torch.testing.assert_close(stay, torch.full((3,), math.exp(2) / (math.exp(2) + 2)))


def test_checkpoint_without_version_loads_as_v1_and_loading_is_tolerant(tmp_path):
    import json

    from lmlab import rundir, runs

    with_bow = _model(V2, chunk_bow_weight=0.1)
    cfg = {"model": {**with_bow.cfg.model_dump(), "vocab_size": 11}}
    del cfg["model"]["version"]  # written before versions existed
    snap = rundir.save_snapshot(tmp_path, with_bow, {"config": cfg, "step": 0})
    raw = runs.checkpoint_config(json.loads((snap / rundir.META).read_text()))
    assert raw["model"]["version"] == V1
    plain = _model(V2)  # no chunk_bow module: plan_emb is unexpected
    with pytest.warns(UserWarning, match=r"unexpected tensors \['plan_emb'\]"):
        rundir.latest_snapshot(tmp_path).load_weights(plain)
    torch.testing.assert_close(plain.expert_up, with_bow.expert_up)
    with pytest.warns(UserWarning, match=r"missing tensors \['plan_emb'\]"):
        rundir.save_snapshot(tmp_path / "b", plain, {"config": cfg, "step": 0})
        rundir.latest_snapshot(tmp_path / "b").load_weights(_model(V2, chunk_bow_weight=0.1))

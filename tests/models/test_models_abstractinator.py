"""Abstractinator components: the boundary rule, learned-query pooling, EMA VQ, the two-part code,
reconstruction, generation, attention backends and config checks (CPU, tiny shapes)."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.configure import build_model_config, validate_config
from lmlab.errors import ConfigError, LmlabError
from lmlab.models.abstractinator.attention import Attention, causal_mask
from lmlab.models.abstractinator.compressor import LearnedQueryAttention
from lmlab.models.abstractinator.entropy import patch_starts, segment_ids
from lmlab.models.abstractinator.vq import CodeHead, ResidualVQ, StepStatistics, VectorQuantizer
from lmlab.registry import build_model

TINY_LEVEL = {"compressor_layers": 1, "expander_layers": 1, "codebook_size": 32, "c_vq_d_c": 16, "d_lo_d_c": 16,
              "window": 8, "entropy": {"n_layer": 1, "threshold": 2.5, "max_patch_len": 8}}
LEVEL2 = {**TINY_LEVEL, "vq_stages": 2, "window": 4, "entropy": {"n_layer": 1, "threshold": 2.0, "max_patch_len": 4}}
TEXT = b"The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy cat."


def _model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    return build_model(build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257, **kw}))


def _bytes(rows: int = 2, T: int = 48) -> torch.Tensor:
    data = list(TEXT)
    return torch.tensor([[256] + data[i : i + T - 1] for i in range(rows)])


# ------------------------------------------------------------------------------ boundaries


def test_boundary_rule_on_a_hand_made_entropy_sequence():
    inf = float("inf")
    H = torch.tensor([[inf, 0.5, 3.0, 1.0, 1.0, 2.5, 0.1, 4.0]])
    assert patch_starts(H, 2.0)[0].tolist() == [1, 0, 1, 0, 0, 1, 0, 1]
    # max_len 2: a patch is cut after two symbols whatever the entropy.
    assert patch_starts(H, 2.0, max_len=2)[0].tolist() == [1, 0, 1, 0, 1, 1, 0, 1]
    # Monotonic (BLT): cut where entropy rises by more than the threshold over the previous one.
    assert patch_starts(H, 2.0, monotonic=True)[0].tolist() == [1, 0, 1, 0, 0, 0, 0, 1]
    forced = torch.zeros_like(H, dtype=torch.bool)
    forced[0, 3] = True
    assert patch_starts(H, 2.0, forced=forced)[0].tolist() == [1, 0, 1, 1, 0, 1, 0, 1]
    assert segment_ids(patch_starts(H, 2.0))[0].tolist() == [0, 0, 1, 1, 1, 2, 2, 3]


def test_target_patch_len_threshold_tracks_the_target_in_training_only():
    model = _model(levels=[{**TINY_LEVEL, "entropy": {"n_layer": 1, "target_patch_len": 4.0, "max_patch_len": 64,
                                                      "threshold_ema": 0.0}}])
    ent = model.levels[0].entropy
    H = torch.cat([torch.full((4, 1), math.inf), torch.rand(4, 399)], dim=1)
    forced = torch.zeros(4, 400, dtype=torch.bool)
    ent.train()
    starts = ent.cut(H, forced)
    assert 400 * 4 / starts.sum().item() == pytest.approx(4.0, rel=0.15)
    before = float(ent.threshold)
    ent.eval()
    ent.cut(H * 3, forced)
    assert float(ent.threshold) == before  # frozen at eval: cutting stays a function of the prefix


# --------------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("n_queries", [1, 3])
def test_learned_query_pooling_masks_each_segment(n_queries):
    torch.manual_seed(0)
    pool = LearnedQueryAttention(16, 2, n_queries, "regular", "sdpa", 8)
    h = torch.randn(2, 10, 16)
    seg = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2, 3]] * 2)
    base = pool(h, seg, 4)
    assert base.shape == (2, 4, 16)
    changed = h.clone()
    changed[:, 3:5] += torch.randn(2, 2, 16)  # only segment 1's positions
    out = pool(changed, seg, 4)
    torch.testing.assert_close(out[:, [0, 2, 3]], base[:, [0, 2, 3]])
    assert not torch.allclose(out[:, 1], base[:, 1])


# -------------------------------------------------------------------------------------- VQ


def test_ema_update_matches_a_hand_computation():
    vq = VectorQuantizer(K=3, d_c=2, beta=0.25, decay=0.5, dead_threshold=0.0)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
        vq.ema_sum.copy_(vq.codebook)
        vq.ema_count.fill_(1.0)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 1.0]])
    vq.train()
    q, idx, loss, perplexity, dead, _ = vq(z)
    assert idx.tolist() == [0, 0, 1]
    torch.testing.assert_close(q, torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0]]))
    assert loss.item() == pytest.approx(0.25 * (1 + 1 + 1 + 1) / 6)
    # counts: 0.5*1 + 0.5*[2, 1, 0] = [1.5, 1, 0.5]; sums: 0.5*old + 0.5*assigned sums
    torch.testing.assert_close(vq.ema_count, torch.tensor([1.5, 1.0, 0.5]))
    sums = torch.tensor([[0.5, 0.5], [9.5, 0.5], [0.0, 5.0]])
    n = vq.ema_count.sum()
    smoothed = (vq.ema_count + 1e-5) / (n + 3e-5) * n
    torch.testing.assert_close(vq.codebook, sums / smoothed[:, None])
    assert perplexity == pytest.approx(math.exp(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))), rel=1e-5)


def test_deferred_statistics_apply_once_per_step_as_one_batch():
    """Under the trainer (``deferred``) two micro-batches leave the codebook alone until
    ``step_end``, which then moves it exactly as one forward over both would."""
    torch.manual_seed(0)
    z1, z2 = torch.randn(6, 4), torch.randn(5, 4) + 1.0
    whole, parts = (VectorQuantizer(K=5, d_c=4, decay=0.8, dead_threshold=0.0) for _ in range(2))
    parts.load_state_dict(whole.state_dict())
    whole.train(), parts.train()
    parts.deferred = True
    before = parts.codebook.clone()
    parts(z1), parts(z2)
    assert torch.equal(parts.codebook, before)  # nothing moves inside the step
    parts.step_end()
    whole(torch.cat([z1, z2]))
    for name in ("codebook", "ema_count", "ema_sum"):
        torch.testing.assert_close(getattr(parts, name), getattr(whole, name), msg=name)


def test_dead_codes_are_reset_onto_batch_vectors():
    torch.manual_seed(0)
    vq = VectorQuantizer(K=4, d_c=2, decay=0.5, dead_threshold=0.3)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [60.0, 60.0], [70.0, 70.0]]))
        vq.ema_sum.copy_(vq.codebook)
        vq.ema_count.copy_(torch.tensor([1.0, 1.0, 0.5, 0.1]))
    z = torch.randn(8, 2) * 0.1
    vq.train()
    vq(z)  # all rows pick code 0; counts of 1..3 decay: [.., 0.5, 0.25, 0.05] -> codes 2, 3 dead
    rows = {tuple(r.tolist()) for r in z}
    for k in (2, 3):
        assert tuple(vq.codebook[k].tolist()) in rows
        assert vq.ema_count[k].item() == pytest.approx(0.6)  # twice the threshold
    assert tuple(vq.codebook[1].tolist()) not in rows


def test_untouched_codebook_starts_from_data():
    torch.manual_seed(0)
    vq = VectorQuantizer(K=8, d_c=4)
    z = torch.randn(32, 4) + 5.0
    vq.train()
    vq(z)
    assert (vq.codebook.mean(0) - 5.0).abs().max() < 1.5  # every code was moved onto the batch


def test_residual_vq_codes_and_vectors_agree():
    torch.manual_seed(0)
    rvq = ResidualVQ(3, 16, 4)
    rvq.train()
    z = torch.randn(64, 4)
    rvq(z)
    rvq.eval()
    out = rvq(z)
    torch.testing.assert_close(rvq.embed(out.codes), out.z_q.detach(), atol=1e-5, rtol=0)
    assert torch.equal(rvq.quantize(z), out.codes)
    # each stage shrinks the residual of the ones before
    err = [(z - sum(vq.codebook[out.codes[:, i]] for i, vq in enumerate(list(rvq.stages)[: s + 1]))).pow(2).mean()
           for s in range(3)]
    assert err[0] > err[1] > err[2]


def test_the_code_heads_rate_is_the_expected_length_of_soft_codes_stage_by_stage():
    """CodeHead.log_prob's rate: sum_s sum_k soft_s[k] * -log p_s(k | the true earlier stages),
    against log-probs of the stages recovered from the head's total log p(code) alone (stage 0
    by marginalising stage 1, stage 1 as the rest), with no gradient into the head."""
    torch.manual_seed(0)
    rvq = ResidualVQ(2, 5, 4)
    for vq in rvq.stages:
        vq.codebook.copy_(torch.randn(5, 4))
    head = CodeHead(8, rvq)
    with torch.no_grad():
        head.bias.normal_()
    h = torch.randn(3, 8)
    codes = torch.randint(0, 5, (3, 2))
    soft = [torch.softmax(torch.randn(3, 5), -1).requires_grad_() for _ in range(2)]
    lp, _, rate = head.log_prob(h, codes, soft=soft)
    torch.testing.assert_close(lp, head.log_prob(h, codes)[0])

    def total(c0: int | torch.Tensor, c1: int | torch.Tensor) -> torch.Tensor:  # (3,) log p(c0, c1)
        pair = torch.stack([torch.as_tensor(c0).expand(3), torch.as_tensor(c1).expand(3)], -1)
        return head.log_prob(h, pair)[0]

    with torch.no_grad():
        lp0 = torch.stack([torch.logsumexp(torch.stack([total(k, j) for j in range(5)]), 0) for k in range(5)], -1)
        own0 = lp0.gather(1, codes[:, :1])  # (3, 1) log p_0 of the true first stage
        lp1 = torch.stack([total(codes[:, 0], j) for j in range(5)], -1) - own0
    expected = -(soft[0] * lp0).sum(-1) - (soft[1] * lp1).sum(-1)
    torch.testing.assert_close(rate, expected, rtol=1e-5, atol=1e-5)
    rate.sum().backward()
    assert all(s.grad is not None for s in soft)
    assert all(p.grad is None for p in head.parameters())  # the scores are a constant to the rate


@pytest.mark.parametrize("levels", [1, 2])
def test_the_code_rate_prices_each_levels_soft_codes_under_the_model_above(levels):
    """vq_rate: level i's codes are priced by the model that pays for them (level i+1's expander,
    the top model at the top level): weight x the expected code length of the quantiser's soft
    assignments, softmax(-|u - c|^2 / sqrt(d_c)) of the vectors u it quantised, under that
    model's log-probs (recomputed here code by code), per byte. It moves the encoder only: its
    gradient reaches the compressor, not the model above. Off (the default) and at eval there
    is no such term."""
    x = _bytes(rows=3)
    weights = [0.5, 2.0][:levels]
    lv = [{**TINY_LEVEL, "vq_rate": weights[0]}, {**LEVEL2, "vq_stages": 1, "vq_rate": 2.0}][:levels]
    model = _model(levels=lv).train()
    for m in model.modules():  # as in the trainer: buffers move at step end, so forwards agree
        if isinstance(m, StepStatistics):
            m.deferred = True
    terms = model(x, x).terms
    assert sorted(k for k in terms if k.startswith("rate_")) == [f"rate_l{i + 1}" for i in range(levels)]
    outs = model.compress_all(x)
    n_bytes = x[:, 1:].numel()
    for i in range(levels):
        level, out = model.levels[i], outs[i]
        u = level.code_space(level.down(out.pooled)[out.code_valid]).detach()
        c = level.vq.stages[0].codebook
        soft = torch.softmax(-torch.cdist(u, c).pow(2) / math.sqrt(c.size(1)), -1)  # (N, K)
        # log p(k) of every code k at every position under the model above (one stage)
        if i + 1 < levels:  # the expander reads the true codes and scores code k at each position
            above, ab_out = model.levels[i + 1], outs[i + 1]
            h = above.expander.hidden(out.codes, above.target_seg(ab_out), ab_out.z_q, ab_out.code_valid)
            head = above.expander.head
        else:
            h, head = model.top.hidden(out.codes), model.top.head
        scores = [head.log_prob(h, torch.full_like(out.codes, k))[0] for k in range(c.size(0))]
        lp = torch.stack(scores, -1)[out.code_valid].detach()  # (N, K)
        expected = weights[i] * -(soft * lp).sum() / n_bytes
        torch.testing.assert_close(terms[f"rate_l{i + 1}"], expected, rtol=1e-4, atol=1e-5)
    # the rate's gradient: the loss with it less the same loss without it (the quantisers make
    # no soft assignments for it then; every other term is the same computation)
    model.zero_grad()
    with_rate = model(x, x).loss
    for vq in (vq for level in model.levels for vq in level.vq.stages):
        vq.rate = False
    (with_rate - model(x, x).loss).backward()
    grads = {n: 0.0 if p.grad is None else float(p.grad.abs().max()) for n, p in model.named_parameters()}
    assert max(g for n, g in grads.items() if ".compressor." in n) > 1e-4
    assert max(g for n, g in grads.items() if n.startswith("top.") or ".expander." in n) < 1e-8  # rounding only
    plain = _model(levels=[TINY_LEVEL, LEVEL2][:levels]).train()
    assert not any(k.startswith("rate_") for k in plain(x, x).terms)
    assert all(not out.soft for out in plain.compress_all(x))
    assert not any(k.startswith("rate_") for k in model.eval()(x, x).terms)


def test_the_code_rate_at_the_top_level_needs_a_discrete_top_model():
    for top in ({"top_transformer_config": None}, {"top_transformer_config": {"continuous": True}},
                {"top_lm_loss_weight": 0.0}):
        with pytest.raises(ConfigError, match=r"levels\[0\].vq_rate: the top level's codes are priced by the top"):
            _model(levels=[{**TINY_LEVEL, "vq_rate": 1.0}], **top)
    _model(levels=[{**TINY_LEVEL, "vq_rate": 1.0}, LEVEL2], top_transformer_config=None)  # level 2 prices level 1


# ------------------------------------------------------------------------------- two-part


@pytest.mark.parametrize("levels", [1, 2])
def test_two_part_code_length_adds_up_and_is_charged_at_span_ends(levels):
    model = _model(levels=[TINY_LEVEL, LEVEL2][:levels]).eval()
    x = _bytes()
    lp = model.log_probs(x)
    parts = model.code_lengths(x)
    torch.testing.assert_close(-lp.sum(1), sum(parts.values()), rtol=1e-5, atol=1e-3)
    outs = model.compress_all(x)
    top = outs[-1]
    expected_top = -(model.top.log_prob(top.codes) * top.code_valid).sum(1)
    torch.testing.assert_close(parts["top"], expected_top, rtol=1e-5, atol=1e-4)
    _, byte_lp, _ = model.levels[0].reconstruct(x, outs[0], model.levels[0].vq.embed(outs[0].codes))
    torch.testing.assert_close(parts["level1"], -byte_lp.sum(1), rtol=1e-5, atol=1e-4)
    # Every code's cost sits at the last byte of its span: the bytes of a patch's interior pay
    # only their own conditional bits.
    per = model.two_part(x)[0]["top"][0]
    seg = outs[0].seg[0]
    if levels == 2:
        seg = outs[1].seg[0][seg]
    ends = {int((seg == k).nonzero().max()) for k in range(int(top.n_codes[0]))}
    charged = {int(i) + 1 for i in per.nonzero()}
    assert charged <= {max(e, 1) for e in ends}


@pytest.mark.parametrize("levels", [1, 2])
def test_the_training_loss_per_byte_is_the_two_part_code(levels):
    """loss_per_byte (the default): the reconstruction and top-model terms of the training loss
    add up to the scored two-part code in nats per byte, so each part weighs what it costs. The
    seed's weighting averages each level over its own symbols and halves both with two levels."""
    x = _bytes(rows=3)
    n_bytes = x[:, 1:].numel()
    model = _model(levels=[TINY_LEVEL, LEVEL2][:levels]).eval()
    assert model.cfg.loss_per_byte
    terms = model(x, x).terms
    code = sum(v for k, v in terms.items() if k.startswith("recon_") or k == "top_lm")
    total = sum(p.sum() for p in model.code_lengths(x).values())
    torch.testing.assert_close(code, total / n_bytes, rtol=1e-5, atol=1e-5)
    seed = _model(levels=[TINY_LEVEL, LEVEL2][:levels], loss_per_byte=False).eval()
    terms, outs = seed(x, x).terms, seed.compress_all(x)
    parts = seed.code_lengths(x)
    torch.testing.assert_close(terms["recon_l1"], parts["level1"].sum() / n_bytes / levels, rtol=1e-5, atol=1e-5)
    top = outs[-1]
    torch.testing.assert_close(terms["top_lm"], parts["top"].sum() / top.code_valid.sum(), rtol=1e-5, atol=1e-5)
    if levels == 2:
        n_codes = outs[0].code_valid.sum()
        torch.testing.assert_close(terms["recon_l2"], parts["level2"].sum() / n_codes / 2, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_saved_before_loss_per_byte_keeps_the_seed_weighting():
    from lmlab.runs import checkpoint_config

    saved = {"config": {"tokenizer": {"type": "byte"},
                        "model": {"family": "abstractinator", "preset": "tiny", "levels": [TINY_LEVEL]}}}
    assert validate_config(checkpoint_config(saved)).model.loss_per_byte is False
    saved["config"]["model"]["loss_per_byte"] = True
    assert validate_config(checkpoint_config(saved)).model.loss_per_byte is True


def test_without_a_top_model_codes_cost_their_uniform_length():
    model = _model(top_transformer_config=None, top_lm_loss_weight=0.0).eval()
    x = _bytes()
    top = model.compress_all(x)[-1]
    torch.testing.assert_close(model.code_lengths(x)["top"], top.n_codes.float() * math.log(32))


def test_right_padding_with_eos_keeps_every_level_of_codes():
    model = _model(levels=[TINY_LEVEL, LEVEL2]).eval()
    x = _bytes(T=40)
    padded = torch.cat([x, torch.full((2, 20), 256)], dim=1)
    lp, lp_pad = model.log_probs(x), model.log_probs(padded)
    torch.testing.assert_close(lp_pad[:, :39], lp, atol=1e-5, rtol=0)


@pytest.mark.parametrize("compress_input", ["pooled", "codes"])
def test_the_level_above_reads_the_pooled_vectors_or_only_the_codes_below(compress_input):
    """``compress_input: codes`` cuts the continuous pass-through: level 2 reads nothing of
    level 1 but its quantised code vectors (what the code stream carries)."""
    model = _model(levels=[TINY_LEVEL, {**LEVEL2, "compress_input": compress_input}]).eval()
    seen = []
    model.levels[1].inp.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    below = model.compress_all(_bytes())[0]
    want = below.pooled if compress_input == "pooled" else below.z_q
    torch.testing.assert_close(seen[0], want, atol=0, rtol=0)
    assert model.levels[1].inp.in_features == want.size(-1)
    with pytest.raises(ConfigError, match="levels\\[1\\].expander_prior: a Gaussian-only entropy model"):
        build_model_config({"family": "abstractinator",
                            "levels": [{}, {"expander_prior": True, "entropy": {"loss": "gaussian"}}]})
    with pytest.raises(ConfigError, match="levels\\[0\\].expander_prior: a Gaussian-only entropy model"):
        build_model_config({"family": "abstractinator",
                            "levels": [{"expander_prior": True, "entropy": {"loss": "gaussian"}}]})
    with pytest.raises(ConfigError, match="levels\\[0\\].compress_input"):
        build_model_config({"family": "abstractinator", "levels": [{"compress_input": "codes"}]})


# -------------------------------------------------------------------------- reconstruction


def test_tiny_pyramid_overfits_one_batch_to_exact_reconstruction():
    model = _model(levels=[{**TINY_LEVEL, "codebook_size": 64}], top_lm_loss_weight=0.1)
    x = _bytes(rows=2, T=48)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        loss = model(x[:, :-1], x[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    diag = model.diagnostics(x, free_running_rows=2)
    assert diag["levels"][0]["recon_acc_teacher_forced"] == 1.0, diag
    assert diag["recon_acc_free_running"] == 1.0 and diag["recon_acc_free_running_aligned"] == 1.0, diag


def test_the_top_gain_is_the_codes_unigram_bits_less_the_top_models():
    """top_gain_bits: what the top model predicts of the code sequence beyond the codes'
    frequencies: the stages' plug-in entropies of the top codes less the top model's bits per
    code, both on the same windows."""
    model = _model(levels=[TINY_LEVEL, LEVEL2]).eval()
    x = _bytes(rows=3)
    top = model.compress_all(x)[-1]
    codes = top.codes[top.code_valid]  # (N, S): two stages
    unigram = 0.0
    for st in range(codes.size(1)):
        p = torch.bincount(codes[:, st]).float() / codes.size(0)
        p = p[p > 0]
        unigram -= float((p * p.log2()).sum())
    top_bits = float(model.code_lengths(x)["top"].sum()) / math.log(2) / codes.size(0)
    diag = model.diagnostics(x)
    assert diag["top_bits_per_code"] == pytest.approx(top_bits, rel=1e-5)
    assert diag["top_unigram_bits_per_code"] == pytest.approx(unigram, rel=1e-5)
    assert model.eval_diagnostics(x)["top_gain_bits"] == pytest.approx(unigram - top_bits, rel=1e-5, abs=1e-6)


def test_the_codes_gain_is_the_byte_lm_alone_less_the_two_part_code():
    """byte_lm_bpb: the byte level's entropy model alone (its next-byte CE, recomputed here from
    its trunk and head) over the bytes the two-part code scores, per byte of text (eos targets
    paid for, not counted, as val_bpb); codes_gain_bpb: it less the two-part code. Not reported
    for a Gaussian-only entropy model, which has no byte probabilities."""
    x = _bytes(rows=3)
    x[1, 20] = 256  # an eos inside a row: paid for by both, counted as no byte of text
    model = _model(levels=[TINY_LEVEL, LEVEL2]).eval()
    ent = model.levels[0].entropy
    h = ent.trunk(ent.embed(x), causal_mask())
    nats = torch.nn.functional.cross_entropy(ent.head(h[:, :-1]).flatten(0, 1), x[:, 1:].flatten(), reduction="sum")
    n_text = int((x[:, 1:] != 256).sum())
    diag = model.eval_diagnostics(x)
    assert diag["byte_lm_bpb"] == pytest.approx(float(nats) / math.log(2) / n_text, rel=1e-5)
    total = float(-model.log_probs(x).sum()) / math.log(2) / n_text
    assert diag["codes_gain_bpb"] == pytest.approx(diag["byte_lm_bpb"] - total, rel=1e-4, abs=1e-5)
    gaussian = {**TINY_LEVEL, "expander_prior": False, "entropy": {**TINY_LEVEL["entropy"], "loss": "gaussian"}}
    assert "byte_lm_bpb" not in _model(levels=[gaussian]).eval().eval_diagnostics(x)


def test_generate_bytes_returns_valid_bytes_and_is_seeded():
    model = _model(levels=[TINY_LEVEL, LEVEL2]).eval()
    out = model.generate_bytes(b"The quick", max_len=30, temperature=1.0, stop_on_eos=False, seed=3)
    assert len(out) == 30 and all(0 <= b <= 256 for b in out)
    assert out == model.generate_bytes(b"The quick", max_len=30, temperature=1.0, stop_on_eos=False, seed=3)
    stopped = model.generate_bytes(b"The quick", max_len=30, temperature=1.0, seed=3)
    assert all(0 <= b < 256 for b in stopped) and len(stopped) <= 30
    assert model.training is False


def test_a_stage_one_model_reconstructs_but_does_not_generate():
    model = _model(top_transformer_config=None, top_lm_loss_weight=0.0).eval()
    with pytest.raises(LmlabError, match="no top transformer"):
        model.generate_bytes(b"Hi", max_len=40, temperature=1.0, stop_on_eos=False)
    diag = model.diagnostics(_bytes())
    assert 0.0 <= diag["recon_acc_free_running"] <= diag["recon_acc_free_running_aligned"] <= 1.0


def test_continuous_top_model_trains_and_generates():
    model = _model(top_transformer_config={"n_layer": 1, "continuous": True})
    x = _bytes()
    out = model(x[:, :-1], x[:, 1:])
    assert "top_lm" in out.terms and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.top.out.weight.grad is not None
    model.eval()
    assert len(model.generate_bytes(b"The", max_len=10, stop_on_eos=False)) == 10
    # no discrete prior: the code stream is charged its uniform length
    top = model.compress_all(x)[-1]
    torch.testing.assert_close(model.code_lengths(x)["top"], top.n_codes.float() * math.log(32))


# ------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("form", ["regular", "mla"])
def test_flex_backend_matches_sdpa_forward(form):
    pytest.importorskip("torch.nn.attention.flex_attention")
    torch.manual_seed(0)
    sdpa = Attention(16, 2, form, "sdpa", kv_rank=8, rope=True)
    flex = Attention(16, 2, form, "flex", kv_rank=8, rope=True)
    flex.load_state_dict(sdpa.state_dict())
    x = torch.randn(2, 24, 16)
    seg = torch.tensor([[0] * 5 + [1] * 9 + [2] * 10, [0] * 12 + [1] * 12])
    masks = [causal_mask(), causal_mask(4), lambda b, q, k: (k <= q) & (seg[b, k] == seg[b, q])]
    with torch.no_grad():
        for mask in masks:
            torch.testing.assert_close(flex(x, mask), sdpa(x, mask), atol=1e-5, rtol=1e-4)


def test_flex_backend_refuses_cpu_training_with_the_fallback_named():
    pytest.importorskip("torch.nn.attention.flex_attention")
    model = _model(attn_backend="flex")
    x = _bytes()
    if torch.cuda.is_available():
        pytest.skip("this check is about CPU")
    with pytest.raises(LmlabError, match="attn_backend: sdpa"):
        model(x[:, :-1], x[:, 1:]).loss.backward()


def test_mla_form_trains():
    model = _model(attn_form="mla")
    assert any("kv_down" in n for n, _ in model.named_parameters())
    x = _bytes()
    out = model(x[:, :-1], x[:, 1:])
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------- config


def test_config_checks():
    with pytest.raises(ConfigError, match="tokenizer.type: byte"):
        validate_config({"tokenizer": {"type": "char"}, "model": {"family": "abstractinator", "preset": "tiny"}})
    validate_config({"tokenizer": {"type": "byte"}, "model": {"family": "abstractinator", "preset": "tiny"}})
    with pytest.raises(ConfigError, match="load_entropy_from"):
        build_model_config({"family": "abstractinator", "preset": "regular_flex_entropy_frozen"})
    with pytest.raises(ConfigError, match="only one of threshold and target_patch_len"):
        build_model_config({"family": "abstractinator", "levels": [{"entropy": {"threshold": 1.0,
                                                                                "target_patch_len": 4}}]})
    with pytest.raises(ConfigError, match="unknown key"):
        build_model_config({"family": "abstractinator", "levels": [{"entropy": {"treshold": 1.0}}]})
    for preset in ("regular_sdpa", "regular_flex", "mla_sdpa", "mla_flex", "regular_flex_512", "tiny"):
        cfg = build_model_config({"family": "abstractinator", "preset": preset, "vocab_size": 257})
        assert cfg.levels and cfg.levels[0].d_c > 0


def test_the_prior_is_on_by_default_and_off_for_a_checkpoint_saved_before_it():
    """expander_prior: null turns it on at the byte level only; a snapshot whose config predates
    the key decoded without it, and loads so (runs.checkpoint_config upgrades the saved config)."""
    from lmlab.runs import checkpoint_config

    cfg = build_model_config({"family": "abstractinator", "levels": [{}, {}]})
    assert [lv.expander_prior for lv in cfg.levels] == [True, False]
    gauss = build_model_config({"family": "abstractinator", "levels": [{"entropy": {"loss": "gaussian"}}]})
    assert gauss.levels[0].expander_prior is False
    saved = {"config": {"tokenizer": {"type": "byte"},
                        "model": {"family": "abstractinator", "preset": "tiny", "levels": [TINY_LEVEL]}}}
    old = validate_config(checkpoint_config(saved))
    assert old.model.levels[0].expander_prior is False
    saved["config"]["model"]["levels"] = [{**TINY_LEVEL, "expander_prior": True}]
    assert validate_config(checkpoint_config(saved)).model.levels[0].expander_prior is True


def test_aligned_free_running_accuracy_forgives_a_shift_the_positional_one_does_not(monkeypatch):
    """One byte dropped early: every later byte is off its position, yet aligned they all match."""
    from lmlab.models.abstractinator import generate

    row = torch.tensor([[104, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33]])

    class Shifted:  # what the expansion decodes: x_0, then the text with its 3rd byte lost and one made up
        def __init__(self, *a, **kw):
            decoded = torch.tensor([[104, 101, 108, 111, 32, 119, 111, 114, 108, 100, 33, 33]])
            self.seqs = [decoded, decoded]  # bytes, and (unused here) the codes
            self.covers = [[0]]

        def extend(self, level):
            return False

    monkeypatch.setattr(generate, "start", lambda *a, **kw: Shifted())
    monkeypatch.setattr(generate, "Expansion", Shifted)
    positional, aligned = generate.free_running_accuracy(None, row)
    assert positional == pytest.approx(3 / 11) and aligned == pytest.approx(10 / 11)

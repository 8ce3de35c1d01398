"""Auxiliary planning heads: each loss against a brute-force reference, finite, on alone, with
gradients only where they belong, on every family that exposes hidden states."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import AuxiliaryConfig
from lmlab.configure import build_model_config
from lmlab.errors import ConfigError
from lmlab.models.heads import AuxiliaryHeads
from lmlab.models.heads.heads import span_valid
from lmlab.registry import build_model

FAMILIES = ["transformer", "psann", "apelr"]
HEADS = {"enable_policy": "policy_kl", "enable_value": "value", "enable_dynamics": "dynamics",
         "enable_span_contrastive": "span_contrastive"}
V = 50


def _model(family="transformer", **aux):
    torch.manual_seed(0)
    return build_model(build_model_config({"family": family, "preset": "tiny", "vocab_size": V,
                                           "auxiliary": aux or None}))


def _batch(B=3, T=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, V, (B, T + 1), generator=g)
    return x[:, :-1].clone(), x[:, 1:].clone()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("flag", list(HEADS))
def test_each_head_alone(family, flag):
    """One head on: its term (weight * loss) is logged by name, finite, and the loss is CE + it;
    the head and the trunk get gradients."""
    model = _model(family, **{flag: True})
    x, y = _batch()
    out = model(x, y)
    name = HEADS[flag]
    base = {k for k in _model(family)(x, y).terms}
    assert set(out.terms) == base | {name}
    assert torch.isfinite(out.loss) and torch.isfinite(out.terms[name])
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.terms.values()), rel=1e-5)
    out.loss.backward()
    head = {"policy_kl": "policy", "value": "value", "dynamics": "dynamics", "span_contrastive": "span"}[name]
    for n, p in model.aux.named_parameters():
        if n.startswith(head):
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_all_heads_off_by_default():
    model = _model()
    assert model.auxiliary_heads is None
    assert not AuxiliaryConfig().any_enabled


@pytest.mark.parametrize("family", FAMILIES)
def test_all_heads_together_backward(family):
    model = _model(family, **{f: True for f in HEADS}, dynamics_rollout_steps=3)
    x, y = _batch()
    out = model(x, y)
    assert set(HEADS.values()) <= set(out.terms)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing  # DDP needs every parameter in the graph


def test_policy_teacher_is_detached():
    """The KL's gradient reaches the student and the trunk, never the LM's logits."""
    model = _model(enable_policy=True, policy_positions=None)
    x, y = _batch()
    h, out = model.forward_hidden(x, y)
    loss = model.aux.policy.loss(h, out.logits, y, None)
    g_logits, g_h = torch.autograd.grad(loss, [out.logits, h], allow_unused=True)
    assert g_logits is None
    assert g_h is not None and g_h.abs().sum() > 0


def test_policy_kl_matches_brute_force_and_masks_padding():
    heads = AuxiliaryHeads(AuxiliaryConfig(enable_policy=True), 8, 11)
    h, logits = torch.randn(2, 5, 8), torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    targets[1, 3] = -1
    got = heads.policy.loss(h, logits, targets, None)
    kls = []
    for b in range(2):
        for t in range(5):
            if targets[b, t] == -1:
                continue
            p = F.softmax(logits[b, t], -1)
            q = F.log_softmax(heads.policy(h[b, t]), -1)
            kls.append((p * (p.log() - q)).sum())
    assert got.item() == pytest.approx(torch.stack(kls).mean().item(), rel=1e-5)
    # A student equal to the teacher costs nothing.
    heads.policy.net[-1].weight.data.zero_()
    heads.policy.net[-1].bias.data.zero_()
    assert heads.policy.loss(h, torch.zeros(2, 5, 11), targets, 2).item() == pytest.approx(0.0, abs=1e-6)


def test_value_target_is_mean_future_nll():
    heads = AuxiliaryHeads(AuxiliaryConfig(enable_value=True, value_span=3), 8, 11)
    h, logits = torch.randn(2, 7, 8), torch.randn(2, 7, 11)
    targets = torch.randint(0, 11, (2, 7))
    targets[0, 5] = -1  # spans covering it are skipped
    got = heads.value.loss(h, logits, targets, 3)
    nll = -F.log_softmax(logits, -1).gather(-1, targets.clamp_min(0)[..., None]).squeeze(-1)
    errs = []
    for b in range(2):
        for t in range(7 - 3 + 1):
            if (targets[b, t : t + 3] == -1).any():
                continue
            errs.append((heads.value(h[b, t]) - nll[b, t : t + 3].mean()) ** 2)
    assert got.item() == pytest.approx(torch.stack(errs).mean().item(), rel=1e-5)
    # The target is detached: the LM's logits get no gradient from the value loss.
    logits.requires_grad_(True)
    assert torch.autograd.grad(heads.value.loss(h, logits, targets, 3), logits, allow_unused=True)[0] is None
    # An untrained head starts at the uniform NLL, log V.
    assert heads.value(torch.zeros(8)).item() == pytest.approx(math.log(11), rel=1e-5)


@pytest.mark.parametrize("steps", [1, 3])
def test_dynamics_rollout_matches_brute_force(steps):
    heads = AuxiliaryHeads(AuxiliaryConfig(enable_dynamics=True, dynamics_rollout_steps=steps), 8, 11)
    T = 9
    h = torch.randn(2, T, 8, requires_grad=True)
    ids = torch.randint(0, 11, (2, T))
    targets = torch.cat([ids[:, 1:], torch.randint(0, 11, (2, 1))], dim=1)
    got = heads.dynamics.loss(h, ids, targets, steps)
    target = h.detach().clone()
    per_k = []
    for k in range(1, steps + 1):
        errs = []
        for b in range(2):
            for t in range(T - steps):
                z = h[b, t]
                for j in range(1, k + 1):
                    z = heads.dynamics(z, ids[b, t + j])
                errs.append((z - target[b, t + k]).pow(2).sum() / target[b, t + k].pow(2).sum())
        per_k.append(torch.stack(errs).mean())
    want = torch.stack(per_k).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # Same gradient as the reference whose targets are detached copies: no gradient via targets.
    g_got = torch.autograd.grad(got, h)[0]
    g_want = torch.autograd.grad(want, h)[0]
    torch.testing.assert_close(g_got, g_want, rtol=1e-4, atol=1e-6)


def test_span_contrastive_corrupts_only_the_span_and_reruns_the_prefix(monkeypatch):
    model = _model(enable_span_contrastive=True, span_mask_fraction=0.25)
    x, y = _batch(B=2, T=16)
    seen = []
    real = model.hidden_states

    def spy(ids):
        seen.append(ids.clone())
        return real(ids)

    monkeypatch.setattr(model, "hidden_states", spy)
    h = real(x)
    loss = model.aux.span.loss(model, h, x, model.aux.cfg)
    assert torch.isfinite(loss)
    (masked,) = seen
    L = 4
    differs = (masked != x[:, : masked.size(1)]).any(0).nonzero().flatten()
    end = masked.size(1)
    assert end - L >= 0 and torch.equal(masked[:, : end - L], x[:, : end - L])  # the prefix is untouched
    assert all(end - L <= int(i) < end for i in differs)


def test_span_infonce_matches_brute_force():
    """With the rerun stubbed to a known tensor, the loss is the InfoNCE over span positions."""
    model = _model(enable_span_contrastive=True, span_mask_fraction=0.25)
    span, cfg = model.aux.span, model.aux.cfg
    B, T, C = 2, 8, model.cfg.d_model
    h, h_masked = torch.randn(B, T, C), torch.randn(B, T, C)
    model.hidden_states = lambda ids: h_masked[:, : ids.size(1)]
    ids = torch.randint(0, V, (B, T))
    torch.manual_seed(5)
    got = span.loss(model, h, ids, cfg)
    torch.manual_seed(5)
    L = 2
    start = int(torch.randint(0, T - L + 1, ()))
    a = F.normalize(span.proj(h_masked[:, start : start + L]).reshape(B * L, C), dim=-1)
    b = F.normalize(span.proj(h[:, start : start + L]).reshape(B * L, C), dim=-1)
    want = sum(-F.log_softmax(a[i] @ b.T / cfg.span_contrastive_temperature, -1)[i] for i in range(B * L)) / (B * L)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    # The clean states are a detached target: the loss reaches the trunk only through the rerun.
    h.requires_grad_(True)
    h_masked.requires_grad_(True)
    loss = span.loss(model, h, ids, cfg)
    g_clean, g_masked = torch.autograd.grad(loss, [h, h_masked], allow_unused=True)
    assert g_clean is None and g_masked is not None and g_masked.abs().sum() > 0


def test_span_l2_normalize_and_temperature_change_the_loss():
    torch.manual_seed(0)
    a = _model(enable_span_contrastive=True)
    b = _model(enable_span_contrastive=True, span_l2_normalize=False, span_contrastive_temperature=1.0)
    x, y = _batch()
    torch.manual_seed(3)
    la = a(x, y).terms["span_contrastive"]
    torch.manual_seed(3)
    lb = b(x, y).terms["span_contrastive"]
    assert torch.isfinite(la) and torch.isfinite(lb) and la.item() != pytest.approx(lb.item())


def test_span_valid():
    t = torch.tensor([[1, 2, -1, 3, 4]])
    assert span_valid(t, 2).tolist() == [[True, False, False, True]]


def test_padding_targets_keep_losses_finite():
    model = _model(**{f: True for f in HEADS}, dynamics_rollout_steps=2)
    x, y = _batch()
    y[:, 10:] = -1
    out = model(x, y)
    assert all(torch.isfinite(v) for v in out.terms.values())


def test_family_without_hidden_states_refuses_heads():
    with pytest.raises(ConfigError, match="does not expose hidden states.*transformer"):
        build_model_config({"family": "abstractinator", "preset": "tiny", "auxiliary": {"enable_value": True}})


def test_unknown_auxiliary_key_is_a_one_line_error():
    with pytest.raises(ConfigError, match="model.auxiliary.enable_polcy.*did you mean 'enable_policy'"):
        build_model_config({"preset": "tiny", "auxiliary": {"enable_polcy": True}})


def test_heads_do_not_change_scoring_or_decoding():
    """log_probs and step read only the LM: a model with heads scores exactly like one without."""
    plain, with_heads = _model(), _model(**{f: True for f in HEADS})
    with_heads.load_state_dict(plain.state_dict(), strict=False)
    x, _ = _batch()
    torch.testing.assert_close(plain.log_probs(x), with_heads.log_probs(x))
    s1, s2 = plain.init_state(3), with_heads.init_state(3)
    torch.testing.assert_close(plain.step(x, s1)[0], with_heads.step(x, s2)[0])


@pytest.mark.parametrize("pos", ["learned", "rope", "sinusoidal"])
def test_extend_max_seq_len_keeps_the_old_positions(pos):
    """A model grown to a longer context scores the old context exactly as before."""
    torch.manual_seed(0)
    model = build_model(build_model_config({"preset": "tiny", "vocab_size": V, "pos_encoding": pos,
                                            "block_size": 16}))
    x = torch.randint(0, V, (2, 16))
    before = model.log_probs(x)
    model.extend_max_seq_len(32)
    assert model.block_size == 32 and model.cfg.block_size == 32
    torch.testing.assert_close(model.log_probs(x), before)
    long = torch.randint(0, V, (2, 32))
    assert torch.isfinite(model(long, long).loss)
    with pytest.raises(ValueError, match="already has 32 positions"):
        model.extend_max_seq_len(8)


def test_trainer_logs_each_head_and_the_run_reloads(tiny_config):
    """Through the shared trainer: every term is logged by name each step, the checkpoint holds
    the heads and the run dir rebuilds with them."""
    import json

    import lmlab
    from lmlab import runs

    aux = {**{f: True for f in HEADS}, "dynamics_rollout_steps": 2}
    _, raw, run = tiny_config(model={"auxiliary": aux}, train={"max_steps": 4, "log_interval": 1})
    lmlab.train(raw)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert len(train_rows) == 4
    for r in train_rows:
        assert set(HEADS.values()) | {"ce"} <= set(r) and all(math.isfinite(r[k]) for k in HEADS.values())
    model, _, cfg, _ = runs.load_run(run)
    assert cfg.model.auxiliary.enable_span_contrastive and model.auxiliary_heads is not None

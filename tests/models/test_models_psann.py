"""The psann family: the sine activation's math and parameters, both bases x positions, the
waveresnet conv (causal, dilated, cached decoding), residual gates, config errors, training."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F

import lmlab
from lmlab.config import DecodeSettings, TrainConfig
from lmlab.configure import build_model_config
from lmlab.errors import ConfigError
from lmlab.generate.decode import generate_ids
from lmlab.models.common.layers import MLP
from lmlab.models.psann import PsannConfig, SineActivation, SineParams
from lmlab.models.psann.conv import TemporalConv
from lmlab.models.psann.sine import SineMLP, _DampedSineFn
from lmlab.registry import build_model
from lmlab.training.optim import build_optimizer

VOCAB = 43
POSITIONS = ["rope", "alibi", "sinusoidal", "learned"]


def _model(seed: int = 0, perturb: bool = True, **fields) -> torch.nn.Module:
    raw = {"family": "psann", "preset": "tiny", "vocab_size": VOCAB, "block_size": 32, **fields}
    torch.manual_seed(seed)
    model = build_model(build_model_config(raw)).eval()
    if perturb:  # move off the init (gates at 1, zero biases) so every parameter matters
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    return model


def _ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


def _formula(act: SineActivation, x: torch.Tensor) -> torch.Tensor:
    damping = F.softplus(act.damping_raw)
    return act.amplitude * torch.sin(act.frequency * x) * torch.exp(-damping * x.abs())


# ------------------------------------------------------------------------------ the activation


def test_activation_equals_the_formula_with_and_without_grad() -> None:
    torch.manual_seed(0)
    act = SineActivation(24, SineParams(amp_range=(-2, 2), freq_range=(0.5, 4), damp_range=(0.01, 1)))
    x = 3 * torch.randn(5, 7, 24)
    expected = _formula(act, x)
    with torch.no_grad():
        torch.testing.assert_close(act(x), expected, rtol=1e-6, atol=1e-6)
    xg = x.clone().requires_grad_()
    y = act(xg)
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    # The hand-written backward against autograd of the formula.
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [xg, act.amplitude, act.frequency, act.damping_raw], g)
    xr = x.clone().requires_grad_()
    want = torch.autograd.grad(_formula(act, xr), [xr, act.amplitude, act.frequency, act.damping_raw], g)
    for a, b, name in zip(got, want, ("x", "amplitude", "frequency", "damping_raw")):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("needs", [(True, True, True, True), (True, False, False, False), (False, True, True, True)])
def test_backward_passes_gradcheck(needs) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=g)
    x[0, 0, 0] = 0.0  # |x| at its kink: sign(0) = 0, as autograd's abs
    a, f = torch.randn(5, dtype=torch.float64, generator=g), torch.randn(5, dtype=torch.float64, generator=g)
    d = torch.rand(5, dtype=torch.float64, generator=g)
    inputs = tuple(t.requires_grad_(n) for t, n in zip((x, a, f, d), needs))
    assert torch.autograd.gradcheck(_DampedSineFn.apply, inputs)


def test_damping_starts_at_damp_init_and_stays_non_negative() -> None:
    act = SineActivation(16, SineParams(damp_init=0.03))
    torch.testing.assert_close(act.damping, torch.full((16,), 0.03), rtol=1e-6, atol=0)
    big = SineActivation(4, SineParams(damp_init=50.0))  # log(expm1(y)) without overflow
    torch.testing.assert_close(big.damping, torch.full((4,), 50.0))
    # The same step on the damping itself would take it to 0.03 - 10 x 100 < 0.
    plain = torch.nn.Parameter(torch.full((16,), 0.03))
    for p, value in ((plain, lambda: plain), (act.damping_raw, lambda: act.damping)):
        value().sum().mul(100).backward()
        torch.optim.SGD([p], lr=10.0).step()
    assert (plain < 0).all()
    assert (act.damping < 0.03).all(), "the step did push the damping down"
    assert (act.damping >= 0).all()


def test_init_ranges_are_uniform_per_channel_and_seeded() -> None:
    params = SineParams(amp_range=(0.5, 1.5), freq_range=(1.0, 30.0), damp_range=(0.1, 0.2))

    def build(seed: int) -> SineActivation:
        torch.manual_seed(seed)
        return SineActivation(4096, params)

    a, b, c = build(0), build(0), build(1)
    for name, (lo, hi) in (("amplitude", (0.5, 1.5)), ("frequency", (1.0, 30.0)), ("damping", (0.1, 0.2))):
        v = getattr(a, name).detach()
        assert v.shape == (4096,) and lo - 1e-6 <= v.min() and v.max() <= hi + 1e-6, name
        assert abs(v.mean().item() - (lo + hi) / 2) < 0.05 * (hi - lo), name  # uniform, not a constant
        assert v.std() > 0.25 * (hi - lo), name
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)
        assert not torch.equal(getattr(c, name), getattr(a, name))
    const = SineActivation(8, SineParams(amp_init=0.7, freq_init=2.5))
    assert torch.equal(const.amplitude.detach(), torch.full((8,), 0.7))
    assert torch.equal(const.frequency.detach(), torch.full((8,), 2.5))


def test_frozen_sine_params_never_move_and_trainable_ones_do() -> None:
    frozen = _model(perturb=False, sine_params={"trainable": False}, base="waveresnet").train()
    trainable = _model(perturb=False, base="waveresnet").train()
    sine_names = ("amplitude", "frequency", "damping_raw")
    assert not [n for n, _ in frozen.named_parameters() if n.endswith(sine_names)]
    frozen_sd = {n: t.clone() for n, t in frozen.state_dict().items() if n.endswith(sine_names)}
    assert len(frozen_sd) == 3 * 2 * 2  # saved (persistent buffers): MLP and conv, 2 layers
    train_names = [n for n, p in trainable.named_parameters() if n.endswith(sine_names)]
    assert len(train_names) == 3 * 2 * 2
    x = _ids(4, 33)
    for model in (frozen, trainable):
        opt = build_optimizer(model, TrainConfig(lr=1e-2), torch.device("cpu"))
        seen = {id(p) for group in opt.param_groups for p in group["params"]}
        before = {n: t.clone() for n, t in model.state_dict().items()}
        loss = model(x[:, :-1], x[:, 1:]).loss
        loss.backward()
        opt.step()
        after = model.state_dict()
        if model is frozen:
            assert all(id(t) not in seen for n, t in model.named_buffers() if n.endswith(sine_names))
            for n in frozen_sd:
                assert torch.equal(after[n], before[n]), n
        else:
            params = dict(model.named_parameters())
            for n in train_names:
                assert id(params[n]) in seen and params[n].grad is not None, n
                assert not torch.equal(after[n], before[n]), f"{n} did not move"


def test_gelu_toggle_and_psann_without_its_features_is_the_transformer() -> None:
    sine = _model(perturb=False)
    assert isinstance(sine.blocks[0].mlp, SineMLP)
    gelu = _model(perturb=False, activation="gelu")
    assert isinstance(gelu.blocks[0].mlp, MLP)
    assert not any(isinstance(m, SineActivation) for m in gelu.modules())
    # respsann with gelu and no gates is exactly the baseline: same weights, same logits.
    plain = _model(activation="gelu", residual_gating=False)
    base = build_model(build_model_config({"family": "transformer", "preset": "tiny", "vocab_size": VOCAB,
                                           "block_size": 32}))
    base.load_state_dict(plain.state_dict())
    x = _ids(2, 32)
    torch.testing.assert_close(base.eval()(x).logits, plain(x).logits, rtol=0, atol=0)


def test_residual_gates_are_per_channel_parameters() -> None:
    model = _model(perturb=False, base="waveresnet", residual_scale_init=0.5).train()
    gates = {n: p for n, p in model.named_parameters() if n.endswith("_scale")}
    assert sorted(gates) == sorted(f"blocks.{i}.{b}_scale" for i in range(2) for b in ("attn", "mlp", "conv"))
    for name, p in gates.items():
        assert p.shape == (64,) and torch.equal(p.detach(), torch.full((64,), 0.5)), name
    model(_ids(2, 17)[:, :-1], _ids(2, 17)[:, 1:]).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gates.values())
    assert not [n for n, _ in _model(residual_gating=False).named_parameters() if n.endswith("_scale")]


# ------------------------------------------------------------------------------ bases x positions


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("base", ["respsann", "waveresnet"])
def test_bases_and_positions_forward(base: str, pos: str) -> None:
    model = _model(base=base, pos_encoding=pos)
    x = _ids(2, 32)
    out = model(x[:, :-1], targets=x[:, 1:])
    assert out.logits.shape == (2, 31, VOCAB) and torch.isfinite(out.loss)
    assert isinstance(model.blocks[0].conv, TemporalConv) == (base == "waveresnet")


@pytest.mark.parametrize("trainable", [True, False])
@pytest.mark.parametrize("base", ["respsann", "waveresnet"])
def test_forward_backward_and_diagnostics_emit_no_warning(base: str, trainable: bool) -> None:
    """Every psann run used to print "Converting a tensor with requires_grad=True to a scalar"
    from diagnostics: a train step and the diagnostics now warn about nothing."""
    model = _model(base=base, sine_params={"trainable": trainable}).train()
    x = _ids(2, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(x[:, :-1], targets=x[:, 1:]).loss.backward()
        diag = model.diagnostics(x)
    assert set(diag["sine"]) >= {"amplitude", "d_amplitude"} and all(isinstance(v, float) for v in diag["sine"].values())


@pytest.mark.parametrize("base", ["respsann", "waveresnet"])
def test_alibi_with_an_odd_head_size_forward_and_cached(base: str) -> None:
    model = _model(base=base, pos_encoding="alibi", d_model=60, n_head=4)  # head size 15
    assert model.blocks[0].attn.head_dim == 15
    _check_cached_equals_recompute(model, _ids(2, 24))


# ------------------------------------------------------------------------------ waveresnet conv


def test_dilation_grows_per_layer_and_is_capped() -> None:
    cfg = build_model_config({"family": "psann", "preset": "tiny", "vocab_size": VOCAB, "base": "waveresnet",
                              "n_layer": 5, "conv_max_dilation": 4})
    assert [cfg.dilation(i) for i in range(5)] == [1, 2, 4, 4, 4]
    model = build_model(cfg)
    assert [(b.conv.dilation, b.conv.history) for b in model.blocks] == [(1, 2), (2, 4), (4, 8), (4, 8), (4, 8)]
    flat = build_model_config({**cfg.model_dump(), "conv_dilation_growth": 1})
    assert [flat.dilation(i) for i in range(5)] == [1] * 5


def test_conv_sees_exactly_its_dilated_causal_taps() -> None:
    torch.manual_seed(0)
    conv = TemporalConv(8, kernel_size=3, dilation=4, activation="gelu", sine_params=SineParams(),
                        bias=True, dropout=0.0)
    x = torch.randn(1, 20, 8, requires_grad=True)
    t = 13
    (grad,) = torch.autograd.grad(conv(x)[0, t].sum(), x)
    touched = (grad[0].abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert touched == [t - 8, t - 4, t]


@pytest.mark.parametrize("mode", ["interleave", "replace_mlp"])
def test_waveresnet_is_causal(mode: str) -> None:
    model = _model(base="waveresnet", conv_mode=mode, n_layer=3, conv_dilation_growth=3)
    x = _ids(2, 32)
    base = model(x).logits
    for t in (1, 9, 20, 31):
        y = x.clone()
        y[:, t:] = (y[:, t:] + 1) % VOCAB
        changed = model(y).logits
        torch.testing.assert_close(changed[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(changed[:, t], base[:, t], atol=1e-4)


def _check_cached_equals_recompute(model, x: torch.Tensor) -> None:
    full = model(x).logits
    state = model.init_state(x.size(0))
    logits, state = model.step(x[:, :3], state)  # a prompt shorter than the conv history
    torch.testing.assert_close(logits, full[:, 2], rtol=1e-4, atol=1e-4)
    for t in range(3, 8):  # single tokens
        logits, state = model.step(x[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-4, atol=1e-4, msg=f"position {t}")
    for a, b in ((8, 10), (10, 17), (17, x.size(1))):  # multi-token chunks after the cached prefix
        logits, state = model.step(x[:, a:b], state)
        torch.testing.assert_close(logits, full[:, b - 1], rtol=1e-4, atol=1e-4, msg=f"chunk {a}:{b}")


@pytest.mark.parametrize("mode", ["interleave", "replace_mlp"])
@pytest.mark.parametrize("conv_activation", ["sine", "gelu"])
def test_waveresnet_cached_decoding_equals_recompute(mode: str, conv_activation: str) -> None:
    # Dilations 1, 3, 6: histories 2, 6, 12, longer than the steps fed.
    model = _model(base="waveresnet", conv_mode=mode, conv_activation=conv_activation, n_layer=3,
                   conv_dilation_growth=3, conv_max_dilation=6, bias=conv_activation == "gelu")
    x = _ids(2, 32)
    _check_cached_equals_recompute(model, x)
    state = model.init_state(2)
    assert [tuple(c.hist.shape) for c in state.convs] == [(2, 64, 2), (2, 64, 6), (2, 64, 12)]


def _naive_greedy(model, prompt: list[int], n: int, eos: int, window: int | None = None) -> list[int]:
    """Re-run the full forward on the whole sequence for every token (the decoding loop's sliding
    window reproduced with ``window``: after a full window, restart from its last half)."""
    seq = [eos, *prompt]
    filled = len(seq)
    new: list[int] = []
    for i in range(n):
        ctx = torch.tensor([seq[-filled:]])
        nxt = int(model(ctx).logits[0, -1].argmax())
        new.append(nxt)
        seq.append(nxt)
        if i < n - 1:
            filled = window // 2 if window and filled + 1 > window else filled + 1
    return new


@pytest.mark.parametrize("base", ["waveresnet", "respsann"])
def test_generate_ids_cached_equals_naive_loop(base: str) -> None:
    model = _model(base=base, n_layer=3, conv_dilation_growth=3)
    settings = DecodeSettings(max_new_tokens=10, temperature=0, top_k=None, stop_on_eos=False)
    prompts = [[5, 9, 2], [7], [11, 3, 8, 1, 4, 6, 12], [1, 2, 3], [30, 31]]
    got = generate_ids(model, prompts, settings, eos_id=0)
    assert got == [_naive_greedy(model, p, 10, eos=0) for p in prompts]
    # Past block_size the loop rebuilds the state from the last half of the window.
    small = _model(base=base, block_size=12, n_layer=3, conv_dilation_growth=3)
    got = generate_ids(small, prompts[:3], settings.model_copy(update={"max_new_tokens": 20}), eos_id=0)
    assert got == [_naive_greedy(small, p, 20, eos=0, window=12) for p in prompts[:3]]


@pytest.mark.parametrize("mode", ["interleave", "replace_mlp"])
def test_waveresnet_grad_checkpointing_recomputes_each_block(mode: str) -> None:
    model = _model(base="waveresnet", conv_mode=mode, dropout=0.2).train()
    x = _ids(3, 24)
    calls: list[int] = []
    model.blocks[0].register_forward_pre_hook(lambda *_: calls.append(1))
    grads, counts = [], []
    for on in (False, True):
        model.set_grad_checkpointing(on)
        model.zero_grad(set_to_none=True)
        calls.clear()
        torch.manual_seed(7)
        model(x, x).loss.backward()
        counts.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert counts == [1, 2]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(("fields", "message"), [
    ({"mlp": "swiglu"}, "mlp: swiglu applies only with activation: gelu"),
    ({"sine_params": {"damp_init": 0}}, "model.sine_params.damp_init = 0: Input should be greater than 0"),
    ({"sine_params": {"freq_range": [3, 1]}}, "freq_range = [3.0, 1.0]: expected [lo, hi] with lo <= hi"),
    ({"sine_params": {"damp_range": [0, 1]}}, "damp_range = [0.0, 1.0]: lo must be > 0"),
    ({"sine_params": {"amp_int": 1}}, "unknown key (did you mean 'amp_init'?)"),
    ({"base": "wavenet"}, "model.base = 'wavenet': Input should be 'respsann' or 'waveresnet'"),
    ({"conv_mode": "parallel"}, "Input should be 'interleave' or 'replace_mlp'"),
    ({"pos_encoding": "rope", "d_model": 60, "n_head": 4}, "rope needs an even head size"),
])
def test_config_errors_are_one_line(fields: dict, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        build_model_config({"family": "psann", "preset": "tiny", **fields})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_seed_d_mlp_is_d_ff() -> None:
    """Seed 002's d_mlp is translated to d_ff (lmlab/compat); both, different, is a clash."""
    from lmlab.configure import validate_config

    assert validate_config({"model": {"family": "psann", "d_mlp": 100}}).model.ff_dim == 100
    with pytest.raises(ConfigError, match=r"seed 002 `model.d_mlp`: `model.d_ff` is set too \(128 vs 96\)"):
        validate_config({"model": {"family": "psann", "preset": "tiny", "d_mlp": 96, "d_ff": 128}})


def test_config_defaults_presets_and_d_ff() -> None:
    cfg = build_model_config({"family": "psann", "preset": "small"})
    assert isinstance(cfg, PsannConfig) and cfg.base == "respsann" and cfg.activation == "sine"
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.block_size, cfg.ff_dim) == (4, 4, 192, 192, 768)
    assert cfg.sine_params == SineParams(amp_init=1.0, freq_init=1.0, damp_init=0.01, trainable=True)
    assert build_model_config({"family": "psann", "d_ff": 100}).ff_dim == 100
    model = build_model(build_model_config({"family": "psann", "preset": "tiny", "vocab_size": VOCAB,
                                            "d_ff": 96}))
    assert model.blocks[0].mlp.up.out_features == 96 and model.blocks[0].mlp.act.dim == 96
    # The resolved config (what a checkpoint stores) validates again as it is.
    assert build_model_config(cfg.model_dump(mode="json")) == cfg


# ------------------------------------------------------------------------------ training


@pytest.mark.parametrize("base", ["respsann", "waveresnet"])
def test_training_reduces_the_loss_and_the_run_loads(base: str, tiny_config) -> None:
    _, raw, run = tiny_config(model={"family": "psann", "preset": "tiny", "block_size": 32, "base": base},
                              train={"max_steps": 30, "eval_interval": 30, "save_interval": 30, "log_interval": 5})
    lmlab.train(raw)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 0.5, losses
    lm = lmlab.load(run)
    assert lm.config.model.base == base
    assert isinstance(lm.generate("The ", max_new_tokens=8, seed=0), str)


def test_diagnostics_report_where_the_sine_parameters_went() -> None:
    """Mean amplitude / frequency / damping and their mean |change| since init: 0 before any
    step and when frozen, > 0 after a step of a trainable model; None without sines."""
    from lmlab.configure import validate_config
    from lmlab.training.optim import build_optimizer

    for trainable in (True, False):
        cfg = validate_config({"model": {"family": "psann", "preset": "tiny", "vocab_size": VOCAB,
                                         "base": "waveresnet", "sine_params": {"freq_init": 4.0,
                                                                               "trainable": trainable}}})
        torch.manual_seed(0)
        model = build_model(cfg.model)
        ids = torch.randint(0, VOCAB, (2, 16))
        d0 = model.diagnostics(ids)["sine"]
        assert d0["d_amplitude"] == d0["d_frequency"] == d0["d_damping"] == 0.0
        assert d0["frequency"] == pytest.approx(4.0) and d0["damping"] == pytest.approx(0.01, rel=1e-4)
        opt = build_optimizer(model, cfg.train, torch.device("cpu"))
        model(ids[:, :-1], ids[:, 1:]).loss.backward()
        opt.step()
        d1 = model.diagnostics(ids)
        moved = d1["sine"]["d_amplitude"] + d1["sine"]["d_frequency"]
        assert (moved > 0) == trainable and d1["sine_trainable"] == trainable
        assert "amplitude_init" not in model.state_dict() and not any("_init" in k for k in model.state_dict())
    gelu = validate_config({"model": {"family": "psann", "preset": "tiny", "vocab_size": VOCAB,
                                      "activation": "gelu", "conv_activation": "gelu"}})
    assert build_model(gelu.model).diagnostics(torch.zeros(1, 4, dtype=torch.long)) is None

"""The family contract, checked for every registered family with its ``tiny`` preset.

Parametrized over ``lmlab.registry.FAMILIES``, so a newly registered family is covered without
touching this file: shapes, loss and its terms, backward, causality, ``log_probs``, cached
decoding equals recompute, save/load round trip, overfitting one batch, one training step.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmlab.configure import build_model_config
from lmlab.models.base import ModelOutput
from lmlab.registry import FAMILIES, build_model
from lmlab.rundir import latest_snapshot, save_snapshot

VOCAB = 50
FAMILY_NAMES = sorted(FAMILIES)


def _build(family: str, seed: int = 0) -> torch.nn.Module:
    cfg = build_model_config({"family": family, "preset": "tiny", "vocab_size": VOCAB})
    torch.manual_seed(seed)
    return build_model(cfg)


def _tokens(model, B: int, T: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.cfg.vocab_size, (B, T), generator=g)


def _seq_len(model, want: int) -> int:
    return min(want, model.cfg.block_size)


@pytest.fixture(params=FAMILY_NAMES)
def family(request) -> str:
    return request.param


@pytest.fixture
def model(family: str) -> torch.nn.Module:
    m = _build(family)
    m.eval()
    return m


def _needs_next_token_logits(model) -> None:
    # A compressing family (abstractinator) reconstructs bytes given codes of whole patches:
    # its logits are not next-token predictions, and its log_probs is a two-part code length.
    # Its own tests check the equivalents (tests/models/test_models_abstractinator.py).
    if not getattr(model, "next_token_logits", True):
        pytest.skip(f"{type(model).__name__}: forward logits are not next-token predictions")


def _needs_step(model) -> None:
    if not (hasattr(model, "init_state") and hasattr(model, "step")):
        pytest.skip(f"{type(model).__name__} does not decode token by token (overrides generate)")


def test_tiny_preset_exists(family: str) -> None:
    cfg_cls, _ = FAMILIES[family]
    assert "tiny" in cfg_cls.presets, f"family {family!r} must ship a 'tiny' preset"


def test_forward_shapes_without_targets(model) -> None:
    B, T = 3, _seq_len(model, 16)
    out = model(_tokens(model, B, T))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (B, T, model.cfg.vocab_size)
    assert out.loss is None
    assert torch.isfinite(out.logits).all()


def test_loss_and_terms(model) -> None:
    _needs_next_token_logits(model)
    B, T = 2, _seq_len(model, 16)
    x = _tokens(model, B, T + 1)
    out = model(x[:, :-1], targets=x[:, 1:])
    assert out.logits.shape == (B, T, model.cfg.vocab_size)
    assert out.loss is not None and out.loss.dim() == 0 and torch.isfinite(out.loss)
    # An untrained model is close to uniform over the vocabulary.
    assert abs(out.loss.item() - torch.log(torch.tensor(float(model.cfg.vocab_size))).item()) < 1.0
    assert isinstance(out.terms, dict) and out.terms
    for name, term in out.terms.items():
        assert isinstance(term, torch.Tensor) and term.dim() == 0, name
        assert torch.isfinite(term), name


def test_ignored_targets_do_not_count(model) -> None:
    _needs_next_token_logits(model)
    B, T = 2, _seq_len(model, 12)
    x = _tokens(model, B, T + 1)
    targets = x[:, 1:].clone()
    targets[:, T // 2 :] = -1
    full = model(x[:, :-1], targets=targets).loss
    half = model(x[:, : T // 2], targets=x[:, 1 : T // 2 + 1]).loss
    torch.testing.assert_close(full, half, atol=1e-5, rtol=1e-5)


def test_backward_gives_finite_grads_on_all_params(family: str) -> None:
    model = _build(family)
    model.train()
    x = _tokens(model, 2, _seq_len(model, 16) + 1)
    model(x[:, :-1], targets=x[:, 1:]).loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


def test_causality(model) -> None:
    _needs_next_token_logits(model)
    B, T = 2, _seq_len(model, 16)
    x = _tokens(model, B, T)
    base = model(x).logits
    for t in (1, T // 2, T - 1):
        y = x.clone()
        y[:, t:] = (y[:, t:] + 1 + torch.arange(T - t)) % model.cfg.vocab_size
        changed = model(y).logits
        torch.testing.assert_close(changed[:, :t], base[:, :t], atol=1e-5, rtol=0)
        # The changed suffix does change the output (so the check above can fail).
        assert not torch.allclose(changed[:, t:], base[:, t:], atol=1e-5)


def test_log_probs(model) -> None:
    _needs_next_token_logits(model)
    B, T = 3, _seq_len(model, 16)
    x = _tokens(model, B, T)
    lp = model.log_probs(x)
    assert lp.shape == (B, T - 1)
    assert (lp <= 0).all() and torch.isfinite(lp).all()
    logp = torch.log_softmax(model(x).logits.float(), dim=-1)
    expected = logp[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(lp.float(), expected, atol=1e-5, rtol=1e-5)


def test_log_probs_greedy_and_right_padding(model) -> None:
    # lmlab eval scores right-padded batches through log_probs: padding must not move a row's scores.
    B, T = 2, _seq_len(model, 16)
    x = _tokens(model, B, T)
    lp, greedy = model.log_probs(x, return_greedy=True)
    assert lp.shape == greedy.shape == (B, T - 1) and greedy.dtype == torch.bool
    if not getattr(model, "next_token_logits", True):
        short = T // 2
        padded = x.clone()
        padded[:, short:] = model.eos_id
        torch.testing.assert_close(model.log_probs(padded)[:, : short - 1], lp[:, : short - 1], atol=1e-5, rtol=0)
        return
    argmax = model(x).logits[:, :-1].argmax(-1)
    assert torch.equal(greedy, argmax == x[:, 1:])
    x[1, 1] = argmax[1, 0]  # make at least one target greedy so both outcomes are exercised
    lp, greedy = model.log_probs(x, return_greedy=True)
    assert bool(greedy[1, 0]) and torch.equal(greedy, model(x).logits[:, :-1].argmax(-1) == x[:, 1:])
    short = T // 2
    padded = x.clone()
    padded[:, short:] = 0
    torch.testing.assert_close(model.log_probs(padded)[:, : short - 1], lp[:, : short - 1], atol=1e-5, rtol=0)


def test_cached_decoding_equals_recompute(model) -> None:
    _needs_step(model)
    B, T = 2, _seq_len(model, 20)
    x = _tokens(model, B, T)
    full = model(x).logits
    prompt = 5
    state = model.init_state(B)
    logits, state = model.step(x[:, :prompt], state)
    assert logits.shape == (B, model.cfg.vocab_size)
    torch.testing.assert_close(logits, full[:, prompt - 1], atol=1e-4, rtol=1e-4)
    for t in range(prompt, T):
        logits, state = model.step(x[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=1e-4, msg=f"position {t}")


def test_cached_chunk_after_prefix_equals_recompute(model) -> None:
    _needs_step(model)
    B, T = 2, _seq_len(model, 20)
    x = _tokens(model, B, T)
    full = model(x).logits
    state = model.init_state(B)
    logits, state = model.step(x[:, :4], state)
    torch.testing.assert_close(logits, full[:, 3], atol=1e-4, rtol=1e-4)
    # Multi-token chunks after a cached prefix, then single tokens, then a chunk again.
    logits, state = model.step(x[:, 4:9], state)
    torch.testing.assert_close(logits, full[:, 8], atol=1e-4, rtol=1e-4)
    logits, state = model.step(x[:, 9:10], state)
    torch.testing.assert_close(logits, full[:, 9], atol=1e-4, rtol=1e-4)
    logits, state = model.step(x[:, 10:T], state)
    torch.testing.assert_close(logits, full[:, T - 1], atol=1e-4, rtol=1e-4)


def _tied_groups(model) -> set[frozenset[str]]:
    """Names of parameters sharing one tensor (e.g. tied embedding and LM head)."""
    by_ptr: dict[int, set[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_ptr.setdefault(p.data_ptr(), set()).add(name)
    return {frozenset(names) for names in by_ptr.values() if len(names) > 1}


def test_save_load_round_trip(family: str, tmp_path: Path) -> None:
    model = _build(family, seed=0).eval()
    with torch.no_grad():  # move away from the init so a fresh model cannot match by chance
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = _tokens(model, 2, _seq_len(model, 16))
    expected = model(x).logits
    save_snapshot(tmp_path, model, {"family": family, "step": 7})

    fresh = _build(family, seed=123).eval()
    assert not torch.allclose(fresh(x).logits, expected)
    snap = latest_snapshot(tmp_path)
    assert snap.step == 7
    snap.load_weights(fresh)
    torch.testing.assert_close(fresh(x).logits, expected, atol=0, rtol=0)
    assert _tied_groups(fresh) == _tied_groups(model)
    for group in _tied_groups(fresh):  # still one tensor: an update to one moves the others
        params = dict(fresh.named_parameters(remove_duplicate=False))
        ptrs = {params[n].data_ptr() for n in group}
        assert len(ptrs) == 1


def test_overfits_one_batch(family: str) -> None:
    model = _build(family)
    model.train()
    T = _seq_len(model, 32)
    x = _tokens(model, 4, T + 1, seed=3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(50):  # the loss is well under 1 nat by step ~25
        loss = model(x[:, :-1], targets=x[:, 1:]).loss
        first = loss.item() if first is None else first
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = model(x[:, :-1], targets=x[:, 1:]).loss.item()
    assert final < 0.5 * first or final < 1.0, (first, final)


def test_one_training_step_on_cpu(family: str) -> None:
    model = _build(family)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = _tokens(model, 4, _seq_len(model, 32) + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model(x[:, :-1], targets=x[:, 1:]).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert moved, "no parameter changed after an optimizer step"


def test_grad_checkpointing_gives_the_same_gradients(family: str) -> None:
    _, model_cls = FAMILIES[family]
    if not model_cls.supports_grad_checkpointing:
        with pytest.raises(NotImplementedError):
            _build(family).set_grad_checkpointing(True)
        return
    raw = {"family": family, "preset": "tiny", "vocab_size": VOCAB}
    if "dropout" in FAMILIES[family][0].model_fields:
        raw["dropout"] = 0.2  # the recompute must replay the same dropout masks
    torch.manual_seed(0)
    model = build_model(build_model_config(raw)).train()
    x = _tokens(model, 3, _seq_len(model, 24))
    calls = []  # forward calls of the first checkpointed unit: 2 per step when recomputed
    unit = model.blocks[0] if hasattr(model, "blocks") else None
    if unit is not None:
        unit.register_forward_pre_hook(lambda *_: calls.append(1))
    grads, counts = [], []
    for on in (False, True):
        model.set_grad_checkpointing(on)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        calls.clear()
        model(x, x).loss.backward()
        counts.append(len(calls))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-6, msg=name)
    if unit is not None:
        assert counts == [1, 2], f"checkpointing should recompute the block once in backward: {counts}"
        with torch.no_grad():  # a training-time switch: no recompute without a graph
            calls.clear()
            model(x)
            assert len(calls) == 1


# ------------------------------------------------------------------------------ declared hooks

HOOKS = ("set_train_step", "on_train_start", "on_checkpoint", "diagnostics", "generate_ids",
         "set_generation_options", "extend_max_seq_len", "shard_units", "report_on_text", "recorded_plan")


def test_hooks_keep_the_base_signatures(family):
    """A family overrides a hook with the base's parameters (so the trainer's calls fit), and its
    declarations have the declared types."""
    import inspect

    from lmlab.models.base import LanguageModel

    cls = FAMILIES[family][1]
    assert issubclass(cls, LanguageModel)
    for name in HOOKS:
        base = list(inspect.signature(getattr(LanguageModel, name)).parameters)
        own = list(inspect.signature(getattr(cls, name)).parameters)
        assert own[: len(base)] == base or "options" in base, (family, name, own, base)
    assert isinstance(cls.generation_options, tuple) and isinstance(cls.diagnostics_file, str)
    assert set(cls.unsupported_parallel) <= {"ddp", "fsdp"}
    assert all(isinstance(v, str) and v for v in cls.unsupported_parallel.values())


def test_hooks_run_or_refuse_in_one_line(model, family):
    from lmlab.errors import LmlabError

    model.set_train_step(3)
    model.on_checkpoint()
    units = model.shard_units()
    assert all(isinstance(u, torch.nn.Module) for u in units)
    assert len({id(p) for u in units for p in u.parameters()}) == sum(p.numel() > 0 for u in units for p in u.parameters())
    diag = model.diagnostics(_tokens(model, 2, _seq_len(model, 16)))
    assert diag is None or isinstance(diag, dict)
    grow = model.cfg.block_size * 2
    try:
        model.extend_max_seq_len(grow)
    except LmlabError as e:
        assert "\n" not in str(e) and "block_size" in str(e)
    else:
        assert model.block_size == grow
    if not model.generation_options:
        with pytest.raises(LmlabError, match="no decoding options"):
            model.set_generation_options(force_state=1)
    assert model.recorded_plan() == []  # nothing decoded with record on
    if model.text_report is None:
        with pytest.raises(LmlabError, match="no report on a text"):
            model.report_on_text("hello", "run")
    else:
        page, summary = model.report_on_text("\x01\x02\x03\x04\x05", "run")  # bytes within the tiny vocab
        assert page.startswith("<!DOCTYPE html>") and summary and "\n" not in summary


def test_size_estimate_is_the_familys_own_and_near_the_built_model(family: str) -> None:
    """The schema cannot build a model (it sits below the registry), so every family gives its
    parameter formula; the memory check refuses sizes from it, so it must be within 2x."""
    from lmlab.config import ModelConfig

    cfg_cls = FAMILIES[family][0]
    assert cfg_cls.size_estimate is not ModelConfig.size_estimate
    cfg = build_model_config({"family": family, "preset": "tiny", "vocab_size": 257})
    built = sum(p.numel() for p in build_model(cfg).parameters())
    params, activations = cfg.size_estimate(64)
    assert 0.5 < params / built < 2 and activations > 0


def test_shared_layers_never_look_hooks_up_by_name():
    """The trainer, decoding, evaluation and the APIs call the hooks LanguageModel declares;
    they never probe a model with hasattr/getattr (a typo there would silently skip a hook)."""
    import re

    root = Path(__file__).resolve().parents[2] / "lmlab"
    shared = [*root.glob("training/*.py"), *root.glob("generate/*.py"), *root.glob("eval/*.py"),
              root / "api.py", root / "rundir.py", root / "cli.py"]
    probe = re.compile(r"(hasattr|getattr)\((self\.)?(model|lm\.model|fwd_model)\b")
    found = [f"{p.name}:{i}" for p in shared for i, line in enumerate(p.read_text().splitlines(), 1)
             if probe.search(line)]
    assert not found, found

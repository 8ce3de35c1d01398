"""The transformer family: architecture variants, config validation, ALiBi slopes, HF GPT-2 parity."""

from __future__ import annotations

import pytest
import torch

from lmlab.configure import build_model_config
from lmlab.errors import ConfigError
from lmlab.models.common.positions import alibi_slopes
from lmlab.registry import build_model

VOCAB = 61

# A covering subset of pos_encoding x norm x mlp: every pair of values of any two axes appears.
VARIANTS = [
    ("rope", "rmsnorm", "gelu"),
    ("rope", "layernorm", "gelu_tanh"),
    ("rope", "rmsnorm", "swiglu"),
    ("alibi", "layernorm", "gelu"),
    ("alibi", "rmsnorm", "gelu_tanh"),
    ("alibi", "layernorm", "swiglu"),
    ("sinusoidal", "rmsnorm", "gelu"),
    ("sinusoidal", "layernorm", "gelu_tanh"),
    ("sinusoidal", "layernorm", "swiglu"),
    ("learned", "layernorm", "gelu"),
    ("learned", "rmsnorm", "gelu_tanh"),
    ("learned", "rmsnorm", "swiglu"),
]


def _variant(pos: str, norm: str, mlp: str, **extra) -> torch.nn.Module:
    cfg = build_model_config(
        {
            "family": "transformer",
            "preset": "tiny",
            "vocab_size": VOCAB,
            "block_size": 24,
            "pos_encoding": pos,
            "norm": norm,
            "mlp": mlp,
            **extra,
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-zero biases and norm affines, so every parameter matters
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def _ids(B: int, T: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("pos", "norm", "mlp"), VARIANTS)
def test_variant_cached_equals_recompute(pos: str, norm: str, mlp: str) -> None:
    bias = norm == "layernorm"
    model = _variant(pos, norm, mlp, bias=bias, tie_weights=mlp != "swiglu")
    x = _ids(2, 24)  # the whole context: the last positions of the tables are used too
    full = model(x).logits
    state = model.init_state(2)
    logits, state = model.step(x[:, :3], state)
    torch.testing.assert_close(logits, full[:, 2], atol=1e-4, rtol=1e-4)
    for t in range(3, 10):
        logits, state = model.step(x[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=1e-4)
    logits, state = model.step(x[:, 10:17], state)  # a chunk after a cached prefix
    torch.testing.assert_close(logits, full[:, 16], atol=1e-4, rtol=1e-4)
    for t in range(17, 24):
        logits, state = model.step(x[:, t : t + 1], state)
        torch.testing.assert_close(logits, full[:, t], atol=1e-4, rtol=1e-4)
    assert state.pos == 24


@pytest.mark.parametrize(("pos", "norm", "mlp"), VARIANTS)
def test_variant_causality(pos: str, norm: str, mlp: str) -> None:
    model = _variant(pos, norm, mlp)
    x = _ids(2, 20)
    base = model(x).logits
    for t in (1, 7, 19):
        y = x.clone()
        y[:, t:] = (y[:, t:] + 1) % VOCAB
        changed = model(y).logits
        torch.testing.assert_close(changed[:, :t], base[:, :t], atol=1e-5, rtol=0)
        assert not torch.allclose(changed[:, t:], base[:, t:], atol=1e-5)


@pytest.mark.parametrize("pos", ["rope", "alibi", "sinusoidal", "learned"])
def test_positions_matter(pos: str) -> None:
    """Each positional scheme makes the output depend on order, not just on the bag of tokens."""
    model = _variant(pos, "rmsnorm", "gelu")
    x = torch.tensor([[3, 5, 7, 9, 11, 13]])
    y = torch.tensor([[5, 3, 7, 9, 11, 13]])  # swap the first two tokens
    # Position 2 onwards sees the same set of tokens; only order differs.
    assert not torch.allclose(model(x).logits[:, 2:], model(y).logits[:, 2:], atol=1e-5)


def test_step_past_block_size_raises() -> None:
    model = _variant("rope", "rmsnorm", "gelu")
    state = model.init_state(1)
    model.step(_ids(1, 24), state)
    with pytest.raises(ValueError, match="block_size"):
        model.step(_ids(1, 1), state)
    with pytest.raises(ValueError, match="block_size"):
        model(_ids(1, 25))


# ------------------------------------------------------------------------------- validation


def test_d_model_not_divisible_by_n_head() -> None:
    with pytest.raises(ConfigError) as e:
        build_model_config({"family": "transformer", "preset": "tiny", "d_model": 66, "n_head": 4})
    msg = str(e.value)
    assert "d_model" in msg and "n_head" in msg and "66" in msg and "model" in msg


def test_rope_with_odd_head_dim() -> None:
    with pytest.raises(ConfigError) as e:
        build_model_config(
            {
                "family": "transformer",
                "preset": "tiny",
                "d_model": 90,
                "n_head": 6,
                "pos_encoding": "rope",
            }
        )
    msg = str(e.value)
    assert "rope" in msg and "d_model" in msg and "n_head" in msg and "15" in msg
    # Same shape without rope is fine.
    cfg = build_model_config(
        {
            "family": "transformer",
            "preset": "tiny",
            "d_model": 90,
            "n_head": 6,
            "pos_encoding": "alibi",
        }
    )
    assert cfg.d_model == 90


def test_unknown_key_and_bad_value_name_the_key() -> None:
    with pytest.raises(ConfigError, match="n_heads"):
        build_model_config({"family": "transformer", "n_heads": 4})
    with pytest.raises(ConfigError, match="pos_encoding"):
        build_model_config({"family": "transformer", "pos_encoding": "xpos"})


def test_preset_values_can_be_overridden() -> None:
    cfg = build_model_config({"family": "transformer", "preset": "tiny", "n_layer": 3})
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.block_size) == (3, 2, 64, 64)


# ----------------------------------------------------------------------------------- ALiBi


def test_alibi_slopes_8_heads() -> None:
    expected = torch.tensor([2.0 ** -(i + 1) for i in range(8)])
    torch.testing.assert_close(alibi_slopes(8), expected)


def test_alibi_slopes_non_power_of_two() -> None:
    # ALiBi paper: the 4-head slopes, then every other slope of the 8-head sequence.
    expected = torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3])
    torch.testing.assert_close(alibi_slopes(6), expected)


# ------------------------------------------------------------------------------ HF parity


def _gpt2_pair():
    transformers = pytest.importorskip(
        "transformers", reason="HF parity needs transformers (pip install lmlab[hf])"
    )
    hf_cfg = transformers.GPT2Config(
        vocab_size=97,
        n_positions=64,
        n_embd=64,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():  # GPT-2 inits biases and LN to 0/1: randomize so the copy is fully tested
        for p in hf.parameters():
            p.add_(0.02 * torch.randn_like(p))
    cfg = build_model_config(
        {
            "family": "transformer",
            "preset": "tiny",
            "pos_encoding": "learned",
            "norm": "layernorm",
            "mlp": "gelu_tanh",
            "bias": True,
            "tie_weights": True,
            "norm_eps": 1e-5,
            "vocab_size": 97,
        }
    )
    ours = build_model(cfg).eval()
    sd = hf.transformer.state_dict()
    conv1d = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    names = {
        "attn.c_attn": "attn.qkv",
        "attn.c_proj": "attn.proj",
        "mlp.c_fc": "mlp.up",
        "mlp.c_proj": "mlp.down",
        "ln_1": "norm1",
        "ln_2": "norm2",
    }
    mapped = {
        "wte.weight": sd["wte.weight"],
        "wpe.weight": sd["wpe.weight"],
        "norm_f.weight": sd["ln_f.weight"],
        "norm_f.bias": sd["ln_f.bias"],
    }
    for i in range(hf_cfg.n_layer):
        for src, dst in names.items():
            for kind in ("weight", "bias"):
                t = sd[f"h.{i}.{src}.{kind}"]
                if kind == "weight" and src in conv1d:
                    t = t.t()  # HF Conv1D stores (in, out); nn.Linear wants (out, in)
                mapped[f"blocks.{i}.{dst}.{kind}"] = t
    missing, unexpected = ours.load_state_dict(mapped, strict=False)
    assert not unexpected
    assert set(missing) <= {"lm_head.weight"}  # tied to wte
    assert ours.lm_head.weight.data_ptr() == ours.wte.weight.data_ptr()
    return hf, ours


def test_hf_gpt2_logits_parity() -> None:
    hf, ours = _gpt2_pair()
    x = torch.randint(0, 97, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(x).logits
    torch.testing.assert_close(ours(x).logits, expected, atol=1e-5, rtol=1e-5)


def test_hf_gpt2_loss_parity() -> None:
    hf, ours = _gpt2_pair()
    x = torch.randint(0, 97, (3, 33), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        hf_loss = hf(x, labels=x).loss
    targets = torch.cat([x[:, 1:], torch.full_like(x[:, :1], -1)], dim=1)  # last position ignored
    ours_loss = ours(x, targets=targets).loss
    torch.testing.assert_close(ours_loss, hf_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        ours(x[:, :-1], targets=x[:, 1:]).loss, hf_loss, atol=1e-5, rtol=1e-5
    )

"""Causal decoding (``decoding: causal``, BLT's arrangement): no code is sent, the expanders read
the states of the level above over earlier patches, and the model is a causal byte LM. Checked
here: no prediction reads a later byte (one to three levels, with documents inside the window),
the last position gets its patch's state, loss / log_probs / code_lengths are one next-byte
score, every part trains, generation is that LM's, and the two-part knobs are refused. And the
patch probe (``w_patch_recon``, in either decoding): its loss is the cross-entropy of each
patch's symbols from its code alone, it trains every encoder, and nothing at inference reads it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.configure import build_model_config
from lmlab.errors import ConfigError
from lmlab.registry import build_model

LEVEL = {"compressor_layers": 1, "expander_layers": 1, "codebook_size": 32, "c_vq_d_c": 16, "d_lo_d_c": 16,
         "window": 8, "entropy": {"n_layer": 1, "target_patch_len": 3, "max_patch_len": 8}}
UPPER = {**LEVEL, "c_vq_d_c": 8, "window": 4, "entropy": {"n_layer": 1, "target_patch_len": 2, "max_patch_len": 4}}
STACKS = {1: [LEVEL], 2: [LEVEL, UPPER], 3: [{**LEVEL, "vq_stages": 2}, {**UPPER, "n_queries": 2}, UPPER]}
TEXT = b"The quick brown fox jumps over the lazy dog.\nThe quick brown fox jumps over the lazy cat."


def _model(levels: int | list[dict] = 2, steps: int = 3, **kw):
    """A tiny causal model (``levels``: a stack of STACKS, or the levels themselves) after a few
    training steps (tracked thresholds and code-space moments set, codebooks moved), in eval mode."""
    torch.manual_seed(0)
    cfg = build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257, "decoding": "causal",
                              "levels": STACKS[levels] if isinstance(levels, int) else levels, **kw})
    model = build_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = _bytes(4, 65)
    for _ in range(steps):
        model(x[:, :-1], x[:, 1:]).loss.backward()
        opt.step()
        opt.zero_grad()
        model.on_step_end()
    return model.eval()


def _bytes(rows: int = 3, T: int = 64) -> torch.Tensor:
    """Rows of text with an eos start id and one eos inside (two documents in a window)."""
    data = list(TEXT)
    x = torch.tensor([[256] + data[i : i + T - 1] for i in range(rows)])
    x[:, T // 3] = 256
    return x


@pytest.mark.parametrize("levels, reads", [(1, "codes"), (2, "codes"), (3, "codes"), (2, "pooled")])
def test_no_prediction_reads_a_later_byte(levels, reads):
    model = _model(levels, causal_reads=reads)
    x = _bytes()
    with torch.no_grad():
        base = model(x).logits
        for j in range(1, x.size(1), 3):
            y = x.clone()
            y[:, j:] = (y[:, j:] + 1 + torch.arange(x.size(1) - j)) % 257  # every byte from j on, eos among them
            changed = model(y).logits
            torch.testing.assert_close(changed[:, :j], base[:, :j], atol=1e-5, rtol=0)
            assert not torch.allclose(changed[:, j:], base[:, j:], atol=1e-4)  # so the check above can fail


@pytest.mark.parametrize("levels", [1, 2])
def test_the_last_position_predicts_as_it_would_inside_a_longer_window(levels):
    """A window's last byte may be followed by a new patch, whose state reads the code of the
    patch the byte ends: the appended byte gives it that state, so the prediction is the one the
    same byte gets inside a longer window (without it, the last position would read one patch
    fewer wherever the next byte opens a patch)."""
    model = _model(levels)
    x = _bytes(2)
    with torch.no_grad():
        full = model(x).logits
        for t in range(2, x.size(1)):
            torch.testing.assert_close(model(x[:, :t]).logits[:, -1], full[:, t - 1], atol=1e-5, rtol=0)


def test_loss_log_probs_and_code_lengths_are_one_next_byte_score():
    model = _model(2)
    x = _bytes(3, 64)
    inp, targets = x[:, :-1], x[:, 1:].clone()
    with torch.no_grad():
        out = model(inp, targets)
        # the window's last target is not scored (as in the two-part code)
        ce = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), targets[:, :-1].flatten())
        torch.testing.assert_close(out.terms["recon_l1"], ce)
        torch.testing.assert_close(out.logits[:, :-1], model(inp).logits[:, :-1], atol=1e-5, rtol=0)
        assert set(out.terms) == {"recon_l1", "vq_l1", "vq_l2", "entropy_l1", "entropy_l2"}
        torch.testing.assert_close(out.loss, sum(out.terms.values()))
        lp = model.log_probs(x)  # (B, T): x_1.. under the logits of x_<t
        expected = torch.log_softmax(model(x).logits[:, :-1], -1).gather(-1, x[:, 1:, None]).squeeze(-1)
        torch.testing.assert_close(lp, expected)
        torch.testing.assert_close(model.code_lengths(x)["bytes"], -lp.sum(1))
        # ignored targets drop out: the second half's -1 leave the first half's mean
        targets[:, 32:] = -1
        half = model(inp[:, :33], x[:, 1:34]).terms["recon_l1"]  # scores targets 0..31
        torch.testing.assert_close(model(inp, targets).terms["recon_l1"], half, atol=1e-5, rtol=1e-5)


def test_every_part_trains_and_no_code_is_scored():
    torch.manual_seed(0)
    model = build_model(build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257,
                                            "decoding": "causal", "levels": STACKS[2]})).train()
    assert not hasattr(model.top, "head") and not hasattr(model.levels[1].expander, "head")
    x = _bytes(4, 65)
    model(x[:, :-1], x[:, 1:]).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    # the byte loss alone reaches the top model and level 1's encoder through the states
    model.zero_grad()
    logits = model(x[:, :-1]).logits  # the logits alone, no quantiser or entropy term
    F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten()).backward()
    for part in (model.top.trunk, model.levels[1].expander.trunk, model.levels[0].compressor, model.levels[1].down):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_generation_is_the_next_byte_lm_and_slides_past_the_window():
    model = _model(2)
    prompt = list(b"The quick ")
    new = model.generate_bytes(prompt, 20, stop_on_eos=False)
    seq = torch.tensor([[256, *prompt, *new]])
    _, greedy = model.log_probs(seq, return_greedy=True)
    assert greedy[0, len(prompt):].all()  # each new byte is the argmax given the bytes before it
    a = model.generate_bytes(prompt, 30, temperature=1.0, seed=1, stop_on_eos=False)
    assert a == model.generate_bytes(prompt, 30, temperature=1.0, seed=1, stop_on_eos=False)
    assert a != model.generate_bytes(prompt, 30, temperature=1.0, seed=2, stop_on_eos=False)
    long = model.generate_bytes(prompt, model.block_size + 10, stop_on_eos=False)  # greedy, past the window
    assert len(long) == model.block_size + 10
    seq = torch.tensor([[256, *prompt, *long]])
    with torch.no_grad():  # the last byte is the argmax over the last block_size bytes before it
        assert int(model(seq[:, -model.block_size - 1 : -1]).logits[0, -1].argmax()) == long[-1]


def test_diagnostics_have_no_reconstruction_or_top_keys():
    model = _model(2)
    d = model.eval_diagnostics(_bytes(4))
    assert {"l1_code_usage", "l2_code_usage", "l1_bytes_per_code", "bytes_per_top_code", "bpb_bytes",
            "byte_lm_bpb", "codes_gain_bpb"} <= d.keys()
    assert not {k for k in d if "recon" in k or k.startswith("top_")}
    assert d["codes_gain_bpb"] == pytest.approx(d["byte_lm_bpb"] - d["bpb_bytes"])


@pytest.mark.parametrize("change, message", [
    ({"top_transformer_config": None}, "no top model"),
    ({"top_transformer_config": {"n_layer": 1, "continuous": True}}, "a continuous one"),
    ({"top_lm_loss_weight": 0.5}, "top_lm_loss_weight"),
    ({"levels": [{**LEVEL, "vq_rate": 1.0}]}, r"levels\[0\].vq_rate"),
    ({"levels": [LEVEL, {**UPPER, "expander_prior": True}]}, r"levels\[1\].expander_prior"),
    ({"load_base_from": "base.safetensors"}, "load_base_from"),
    ({"decoding": "two_part", "causal_reads": "pooled"}, "causal_reads"),
])
def test_the_two_part_knobs_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        build_model_config({"family": "abstractinator", "preset": "tiny", "decoding": "causal", **change})
    # a config without the key is the seed's two-part design (and so is every older checkpoint)
    assert build_model_config({"family": "abstractinator", "preset": "tiny"}).decoding == "two_part"


def test_vector_code_norm_quantises_alike_in_training_and_at_eval():
    """code_norm: vector: each encoder output is normalised over its own features, so a vector's
    code does not depend on the batch (training) or on running moments (eval), and its scale
    does not matter."""
    torch.manual_seed(0)
    model = build_model(build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257,
                                            "levels": [{**LEVEL, "code_norm": "vector"}]}))
    level = model.levels[0]
    z = torch.randn(12, 16) * 3 + 1
    expected = (z - z.mean(-1, keepdim=True)) / z.std(-1, unbiased=False, keepdim=True)
    for mode in (True, False):
        level.train(mode)
        torch.testing.assert_close(level.code_space(z), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(level.code_space(z[:1] * 1e-3), expected[:1], atol=1e-3, rtol=1e-3)
    # the batch form's eval uses the running moments: a rescaled vector is not normalised there
    batch = build_model(build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257,
                                            "levels": [LEVEL]})).levels[0]
    batch.train().code_space(z)  # sets the running moments (outside the trainer: at once)
    assert not torch.allclose(batch.eval().code_space(z[:1] * 1e-3), expected[:1], atol=1e-1)


def test_causal_reads_pooled_takes_the_pooled_vectors_past_the_quantiser():
    """causal_reads: pooled: the model above reads the continuous pooled vectors, not the codes:
    with one level, changing the codebook (so every code and code vector) changes no logit."""
    model = _model(1, causal_reads="pooled")
    x = _bytes()
    with torch.no_grad():
        base = model(x).logits
        for level in model.levels:
            for stage in level.vq.stages:
                stage.codebook.add_(torch.randn_like(stage.codebook))
        torch.testing.assert_close(model(x).logits, base)
        assert model.top.up.in_features == model.cfg.d_model


# ------------------------------------------------------------------- the patch probe

# level 1 a two-stage residual VQ: the probe at level 2 predicts both stages of each code
PROBED = [{**LEVEL, "vq_stages": 2, "w_patch_recon": 1.0}, {**UPPER, "w_patch_recon": 0.5}]


def test_the_probe_loss_is_the_cross_entropy_of_each_patchs_symbols_from_its_code_alone():
    model = _model(PROBED)
    x = _bytes()
    with torch.no_grad():
        outs = model.compress_all(x)
        sym = x[..., None]  # (B, T, 1) bytes, then each level's codes
        for level, out in zip(model.levels, outs):
            probe = level.patch_decoder
            total, n = 0.0, 0
            for b in range(x.size(0)):
                for t in range(sym.size(1)):
                    if not out.keep[b, t]:
                        continue
                    k = int(out.seg[b, t])
                    start = int((out.seg[b] == k).nonzero()[0])
                    j = min(t - start, probe.pos.num_embeddings - 1)
                    h = F.gelu(probe.inp(out.z_q[b, k]) + probe.pos.weight[j])
                    logits = probe.out(h).view(probe.stages, probe.n_out)
                    total += float(F.cross_entropy(logits, sym[b, t, : probe.stages], reduction="sum"))
                    n += 1
            assert n > 0 and out.patch_loss == pytest.approx(total / n, rel=1e-5)
            sym = out.codes
        assert model.levels[0].patch_decoder.n_out == 257 and model.levels[1].patch_decoder.stages == 2


@pytest.mark.parametrize("decoding", ["causal", "two_part"])
def test_the_probe_trains_every_encoder_and_nothing_at_inference_reads_it(decoding):
    model = _model(PROBED, decoding=decoding)
    x = _bytes(4, 65)
    model.train()
    terms = model(x[:, :-1], x[:, 1:]).terms
    assert {"patch_l1", "patch_l2"} <= set(terms)
    outs = model.compress_all(x)
    (outs[0].patch_loss + outs[1].patch_loss).backward()
    for level in model.levels:  # the probe's term alone reaches each encoder through the code vectors
        for part in (level.compressor, level.down, level.patch_decoder):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    model.eval()
    x = x[:, :-1]  # a window of block_size bytes
    with torch.no_grad():
        base, base_lp = model(x).logits, model.log_probs(x)
        for level in model.levels:
            for p in level.patch_decoder.parameters():
                p.add_(torch.randn_like(p))
        torch.testing.assert_close(model(x).logits, base)
        torch.testing.assert_close(model.log_probs(x), base_lp)


def test_no_probe_and_no_term_without_its_weight():
    model = _model(STACKS[2])
    x = _bytes(2, 33)
    assert all(level.patch_decoder is None for level in model.levels)
    assert not any(k.startswith("patch_") for k in model.train()(x[:, :-1], x[:, 1:]).terms)


def test_prior_dropout_drops_whole_rows_of_the_prior_in_training_only():
    torch.manual_seed(0)
    model = _model([{**LEVEL, "prior_dropout": 0.5}], steps=1)
    level = model.levels[0]
    h, prior = torch.randn(16, 5, model.cfg.d_model), torch.randn(16, 5, 257)
    with torch.no_grad():
        bare = level.expander.byte_logits(h)
        torch.testing.assert_close(level.eval().byte_logits(h, prior), bare + prior)  # scoring: always added
        out = level.train().byte_logits(h, prior)
    dropped = [torch.allclose(out[i], bare[i]) for i in range(16)]
    assert all(d or torch.allclose(out[i], bare[i] + prior[i]) for i, d in enumerate(dropped))
    assert 0 < sum(dropped) < 16
    for levels in ([{**LEVEL, "expander_prior": False, "prior_dropout": 0.5}],
                   [LEVEL, {**UPPER, "prior_dropout": 0.5}]):
        with pytest.raises(ConfigError, match=r"prior_dropout: it drops the byte level's expander prior"):
            build_model_config({"family": "abstractinator", "preset": "tiny", "levels": levels})

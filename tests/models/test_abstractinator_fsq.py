"""``fsq_levels``: finite scalar quantisation. Checked here: the grid is the codebook (each code's
vector quantises to its own index, K = prod(levels) distinct points in [-1, 1]); the code vector
is the grid point with the gradient through the bound; a model with FSQ levels trains, saves and
loads with no codebook in its state; the learnt codebook's knobs are refused."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.configure import build_model_config
from lmlab.errors import ConfigError
from lmlab.models.abstractinator.vq import FiniteScalarQuantizer, ResidualVQ
from lmlab.registry import build_model

LEVEL = {"compressor_layers": 1, "expander_layers": 1, "d_lo_d_c": 16, "window": 8,
         "entropy": {"n_layer": 1, "target_patch_len": 3, "max_patch_len": 8}}


@pytest.mark.parametrize("levels", [[4, 4, 4], [8, 5, 3], [3]])
def test_the_grid_is_the_codebook(levels):
    fsq = FiniteScalarQuantizer(levels)
    assert fsq.K == math.prod(levels) and fsq.d_c == len(levels)
    assert torch.unique(fsq.codebook, dim=0).size(0) == fsq.K and fsq.codebook.abs().max() <= 1
    # a point just inside each grid cell's centre: the bound's inverse of the rounded value
    L = torch.tensor(levels, dtype=torch.float32)
    half, offset = (L - 1) * (1 + 1e-3) / 2, (L % 2 == 0).float() * 0.5
    z = torch.atanh((fsq.codebook * (L // 2) + offset) / half) - torch.atanh(offset / half)
    assert torch.equal(fsq.nearest(z), torch.arange(fsq.K))
    q, idx, loss, *_ = fsq.eval()(z + 0.01 * torch.randn_like(z))
    assert torch.equal(idx, torch.arange(fsq.K)) and torch.equal(q, fsq.codebook) and float(loss) == 0


def test_the_code_vector_is_the_grid_point_with_the_gradient_through_the_bound():
    torch.manual_seed(0)
    rvq = ResidualVQ(1, 0, 0, fsq_levels=[5, 4, 3])
    z = torch.randn(4096, 3, requires_grad=True)
    out = rvq.train()(z)
    torch.testing.assert_close(out.z_q, rvq.embed(out.codes))
    torch.testing.assert_close(out.codes, rvq.quantize(z.detach()))
    assert out.codes.unique().numel() == rvq.K  # unit-variance inputs reach every point
    (out.z_q * torch.arange(3.0)).sum().backward()
    bound = FiniteScalarQuantizer([5, 4, 3]).bound
    z2 = z.detach().clone().requires_grad_(True)
    (bound(z2) / torch.tensor([2.0, 2.0, 1.0]) * torch.arange(3.0)).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)  # d(round(b)/(L//2))/dz = d(b)/dz / (L//2)
    assert float(rvq.stages[0].ema_count.sum()) == pytest.approx(4096 * 0.01)  # usage counted at once


@pytest.mark.parametrize("decoding", ["two_part", "causal"])
def test_a_model_with_fsq_levels_trains_and_reloads(decoding, tmp_path):
    torch.manual_seed(0)
    cfg = build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257, "decoding": decoding,
                              "levels": [{**LEVEL, "fsq_levels": [4, 4, 3]}, {**LEVEL, "fsq_levels": [3, 3]}]})
    model = build_model(cfg).train()
    assert model.levels[1].vq.K == 9 and cfg.levels[0].codebook_size == 48 and cfg.levels[0].vq_diversity == 0
    assert build_model_config(cfg.model_dump(mode="json")) == cfg  # a saved config reads back
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randint(0, 256, (4, 49))
    for _ in range(3):
        out = model(x[:, :-1], x[:, 1:])
        assert float(out.terms["vq_l1"]) == 0 and float(out.terms["vq_l2"]) == 0
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        model.on_step_end()
    state = model.state_dict()
    assert not any(k.endswith("codebook") for k in state) and "levels.0.vq.stages.0.ema_count" in state
    assert float(state["levels.0.vq.stages.0.ema_count"].sum()) > 0
    again = build_model(cfg)
    again.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x[:, :-1]).logits, model.eval()(x[:, :-1]).logits)


@pytest.mark.parametrize("change, message", [
    ({"codebook_size": 32}, "codebook_size = 32 but fsq_levels: the grid is the codebook \\(64\\)"),
    ({"c_vq_d_c": 8}, "c_vq_d_c = 8 but fsq_levels"),
    ({"vq_beta": 0.5}, "vq_beta = 0.5: fsq_levels: the grid is the codebook"),
    ({"vq_diversity": 0.1}, "vq_diversity = 0.1: fsq_levels"),
    ({"vq_stages": 2}, "vq_stages = 2: fsq_levels"),
    ({"fsq_levels": [4, 2, 4]}, "every feature needs 3 or more values"),
])
def test_the_learnt_codebooks_knobs_are_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        build_model_config({"family": "abstractinator", "preset": "tiny",
                            "levels": [{**LEVEL, "fsq_levels": [4, 4, 4], **change}]})

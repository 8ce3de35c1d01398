"""Planner-guided decoding: the pick against a brute-force score, the loop, the CLI flag."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import DecodeSettings
from lmlab.configure import build_model_config
from lmlab.errors import LmlabError
from lmlab.generate.decode import generate_ids
from lmlab.generate.planner import planner_pick
from lmlab.generate.sampling import banned_ngram_tokens
from lmlab.registry import build_model

V = 30
HEADS = {"enable_policy": True, "enable_value": True, "enable_dynamics": True}


def _model(**aux):
    torch.manual_seed(0)
    model = build_model(build_model_config({"preset": "tiny", "vocab_size": V, "auxiliary": aux or None}))
    return model.eval()


def _brute_force(model, h, logits, cand, depth, weight):
    """score of each candidate (B, N), one candidate at a time."""
    heads = model.aux
    logp = F.log_softmax(logits, -1)
    out = torch.empty(cand.shape)
    for b in range(cand.size(0)):
        for i, a in enumerate(cand[b].tolist()):
            z = heads.dynamics(h[b], torch.tensor(a))
            vals = [heads.value(z)]
            for _ in range(depth - 1):
                z = heads.dynamics(z, heads.policy(z).argmax())
                vals.append(heads.value(z))
            out[b, i] = logp[b, a] - weight * torch.stack(vals).mean()
    return out


@pytest.mark.parametrize("depth", [1, 3])
def test_greedy_pick_is_the_best_brute_force_score(depth):
    model = _model(**HEADS)
    h, logits = torch.randn(3, model.cfg.d_model), torch.randn(3, V)
    with torch.no_grad():
        got = planner_pick(model, h, logits, 5, depth, 2.0, temperature=0.0, top_k=None, top_p=1.0)
        cand = logits.topk(5, -1).indices  # temperature 0: the 5 most likely tokens
        want = cand.gather(1, _brute_force(model, h, logits, cand, depth, 2.0).argmax(-1, keepdim=True))
    assert got.tolist() == want.squeeze(1).tolist()


def test_value_weight_zero_is_the_lm_argmax():
    model = _model(**HEADS)
    h, logits = torch.randn(4, model.cfg.d_model), torch.randn(4, V)
    got = planner_pick(model, h, logits, 6, 2, 0.0, temperature=0.0, top_k=None, top_p=1.0)
    assert got.tolist() == logits.argmax(-1).tolist()


def test_the_value_head_can_overrule_the_lm():
    """A value head that calls one token's future hopeless makes the planner avoid it."""
    model = _model(enable_value=True, enable_dynamics=True)
    h = torch.randn(1, model.cfg.d_model)
    logits = torch.zeros(1, V)
    logits[0, 7], logits[0, 9] = 2.0, 1.9
    # The latent after token a is one-hot "a == 7"; the value head calls that future 10 nats a token.
    model.aux.dynamics.forward = lambda z, tok: (tok == 7).to(z.dtype)[..., None].expand_as(z)
    model.aux.value.forward = lambda z: 10.0 * z[..., 0]
    pick = planner_pick(model, h, logits, 2, 1, 1.0, temperature=0.0, top_k=None, top_p=1.0)
    assert pick.item() == 9
    assert planner_pick(model, h, logits, 2, 1, 0.0, temperature=0.0, top_k=None, top_p=1.0).item() == 7


def test_candidates_stay_inside_the_filtered_set():
    model = _model(**HEADS)
    logits = torch.randn(8, V)
    allowed = logits.topk(2, -1).indices
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        got = planner_pick(model, torch.randn(8, model.cfg.d_model), logits, 6, 2, 1.0, temperature=1.0,
                           top_k=2, top_p=1.0, generator=g)
        assert all(int(t) in allowed[i].tolist() for i, t in enumerate(got))


def test_decoding_loop_with_the_planner():
    model = _model(**HEADS)
    s = DecodeSettings(max_new_tokens=24, temperature=1.0, top_k=None, top_p=0.9, no_repeat_ngram_size=3,
                       planner_rerank=4, planner_depth=2, stop_on_eos=False, seed=3)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    a = generate_ids(model, prompts, s, eos_id=0)
    assert a == generate_ids(model, prompts, s, eos_id=0)  # seeded
    assert [len(x) for x in a] == [24, 24]
    for p, new in zip(prompts, a):
        seq = [0, *p, *new]
        for t in range(len(p) + 1, len(seq)):
            assert seq[t] not in banned_ngram_tokens(seq[:t], 3)
    plain = generate_ids(model, prompts, s.model_copy(update={"planner_rerank": 0}), eos_id=0)
    assert plain != a


def test_planner_needs_its_heads():
    with pytest.raises(LmlabError, match=r"value, dynamics.*enable_value: true"):
        generate_ids(_model(), [[1]], DecodeSettings(planner_rerank=2, max_new_tokens=2), eos_id=0)
    with pytest.raises(LmlabError, match=r"reads the policy head.*enable_policy: true"):
        generate_ids(_model(enable_value=True, enable_dynamics=True), [[1]],
                     DecodeSettings(planner_rerank=2, planner_depth=2, max_new_tokens=2), eos_id=0)


def test_cli_planner_rerank(tiny_config, run_cli, one_line_error):
    import lmlab

    _, raw, run = tiny_config(model={"auxiliary": HEADS}, train={"max_steps": 4})
    lmlab.train(raw)
    out = run_cli("sample", "--checkpoint", str(run), "--prompt", "The ", "--planner-rerank", "4",
                  "--max-new-tokens", "12")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("The ") >= 1
    _, raw2, run2 = tiny_config(train={"max_steps": 2, "out_dir": str(run.parent / "plain")})
    lmlab.train(raw2)
    bad = run_cli("sample", "--checkpoint", str(run.parent / "plain"), "--planner-rerank", "4")
    one_line_error(bad, "reads the value, dynamics, policy head(s)")

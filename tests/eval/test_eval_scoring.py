"""The Scorer against brute force: one unbatched ``log_probs`` call per request, by hand."""

from __future__ import annotations

import random

import pytest
import torch

import lmlab
from lmlab.errors import LmlabError
from lmlab.eval.scoring import Scorer


@pytest.fixture(scope="module")
def lm(eval_run):
    return lmlab.load(eval_run)


@torch.no_grad()
def _brute(lm, ctx: list[int], cont: list[int], max_len: int) -> tuple[float, bool]:
    full = [lm.tokenizer.eos_id, *ctx, *cont][-max_len:]
    ids = torch.tensor([full])
    logits = lm.model(ids[:, :-1]).logits[0]  # the last token is only a target
    logp = torch.log_softmax(logits.double(), -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    n = min(len(cont), len(full) - 1)
    greedy = bool((logits.argmax(-1)[-n:] == ids[0, -n:]).all())
    return float(logp[-n:].sum()), greedy


def _random_pairs(vocab: int, n: int, max_len: int, seed: int = 0):
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(rng.randrange(0, max_len))],
             [rng.randrange(vocab) for _ in range(rng.randrange(1, 6))]) for _ in range(n)]


@torch.no_grad()
def test_batched_scores_equal_unbatched_brute_force(lm):
    # Lengths up to 1.5 x the window: some requests are truncated from the left.
    pairs = _random_pairs(lm.tokenizer.vocab_size, 23, 96)
    for batch_size in (1, 5):
        scorer = Scorer(lm.model, lm.tokenizer, batch_size=batch_size)
        got = scorer.loglikelihood_tokens(pairs)
        for (ctx, cont), (ll, greedy) in zip(pairs, got):
            ref_ll, ref_greedy = _brute(lm, ctx, cont, scorer.max_input_len)
            assert ll == pytest.approx(ref_ll, abs=1e-4)
            assert greedy == ref_greedy


@torch.no_grad()
def test_greedy_flag_is_true_for_the_models_own_continuation(lm):
    scorer = Scorer(lm.model, lm.tokenizer)
    ctx = lm.tokenizer.encode("The value of the ")
    cont = []
    for _ in range(3):  # the argmax continuation, token by token
        ids = torch.tensor([[lm.tokenizer.eos_id, *ctx, *cont]])
        cont.append(int(lm.model(ids).logits[0, -1].argmax()))
    (ll, greedy), (_, other) = scorer.loglikelihood_tokens([(ctx, cont), (ctx, [*cont[:2], (cont[2] + 1) % 300])])
    assert greedy and not other and ll < 0


@torch.no_grad()
def test_eos_only_before_an_empty_context_when_asked(lm):
    # lm-eval's hf model on GPT-2: no start token unless the context is empty.
    scorer = Scorer(lm.model, lm.tokenizer, always_prefix=False)
    ctx, cont = lm.tokenizer.encode("The value"), lm.tokenizer.encode(" of x")
    ids = torch.tensor([[*ctx, *cont]])
    logp = torch.log_softmax(lm.model(ids).logits[0, :-1].double(), -1).gather(-1, ids[0, 1:, None])
    (ll, _), (ll_empty, _) = scorer.loglikelihood_tokens([(ctx, cont), ([], cont)])
    assert ll == pytest.approx(float(logp[-len(cont):].sum()), abs=1e-4)
    assert ll_empty == pytest.approx(_brute(lm, [], cont, 64)[0], abs=1e-4)
    assert ll != pytest.approx(_brute(lm, ctx, cont, 64)[0], abs=1e-4)


def test_max_input_len_truncates_and_is_checked(lm):
    pairs = _random_pairs(lm.tokenizer.vocab_size, 6, 40, seed=1)
    short = Scorer(lm.model, lm.tokenizer, max_input_len=16)
    assert short.max_length == 15
    for (ctx, cont), (ll, _) in zip(pairs, short.loglikelihood_tokens(pairs)):
        assert ll == pytest.approx(_brute(lm, ctx, cont, 16)[0], abs=1e-4)
    assert Scorer(lm.model, lm.tokenizer).max_length == 64  # block_size inputs, as lm-eval's max_length
    with pytest.raises(LmlabError, match=r"exceeds what the model scores at once \(65: block_size 64 inputs"):
        Scorer(lm.model, lm.tokenizer, max_input_len=66)
    with pytest.raises(LmlabError, match="empty continuation"):
        short.loglikelihood_tokens([([1, 2], [])])


def test_encode_pair_moves_trailing_spaces_like_lm_eval(lm):
    scorer = Scorer(lm.model, lm.tokenizer)
    ctx, cont = scorer.encode_pair("Answer: ", "yes")
    assert ctx == scorer.encode("Answer:") and ctx + cont == scorer.encode("Answer: yes")
    ctx, cont = scorer.encode_pair("", " hello")
    assert ctx == [] and cont == scorer.encode(" hello")


@pytest.mark.parametrize("stride", [None, 20, 1])
def test_rolling_windows_score_every_token_once(lm, stride):
    scorer = Scorer(lm.model, lm.tokenizer, max_input_len=32)
    ids = list(range(5, 105))
    windows = scorer.rolling_windows(ids, stride)
    assert [t for _, cont in windows for t in cont] == ids
    for ctx, cont in windows:
        assert len(ctx) + len(cont) <= scorer.max_length + 1  # with the eos of the first: max_input_len
        if stride is not None and ctx:  # later windows see as much context as fits
            assert len(ctx) + len(cont) == scorer.max_length + 1
    assert windows[0] == ([], ids[:31])


def test_rolling_windows_match_lm_eval(lm):
    utils = pytest.importorskip("lm_eval.utils", reason="needs lm-eval (pip install lmlab[eval])")
    scorer = Scorer(lm.model, lm.tokenizer, max_input_len=17)
    ids = list(range(3, 80))
    ours = scorer.rolling_windows(ids)
    theirs = [utils.make_disjoint_window(w) for w in utils.get_rolling_token_windows(
        token_list=ids, prefix_token=-1, max_seq_len=scorer.max_length, context_len=1)]
    assert [(c if c != [-1] else [], x) for c, x in theirs] == ours


@torch.no_grad()
def test_rolling_stride_one_is_a_sliding_window(lm):
    # stride 1: token t is scored with exactly the previous max_length tokens (eos at the start).
    scorer = Scorer(lm.model, lm.tokenizer, max_input_len=12)
    text = "def f(x):\n    return x * 2 + 1  # a comment that runs on"
    ids = scorer.encode(text)
    ref = 0.0
    for t in range(len(ids)):
        ref += _brute(lm, ids[max(0, t - 11) : t], [ids[t]], 12)[0]
    assert scorer.loglikelihood_rolling([text], stride=1)[0] == pytest.approx(ref, abs=1e-3)
    whole = scorer.loglikelihood_rolling([text])[0]  # disjoint windows: less context, other total
    assert whole != pytest.approx(ref, abs=1e-3)


def test_generate_until_stops_and_matches_plain_greedy(lm):
    scorer = Scorer(lm.model, lm.tokenizer)
    prompts = ["The ", "def f", "A list of"]
    free = scorer.generate_until([(p, {"until": [], "max_gen_toks": 12}) for p in prompts])
    reference = [lm.generate(p, greedy=True, max_new_tokens=12)[len(p):] for p in prompts]
    assert free == reference
    stops = []
    for text in free:  # a stop string that really occurs in each continuation
        stops.append(text.strip()[:1] or "x")
    cut = scorer.generate_until([(p, {"until": [s], "max_gen_toks": 12}) for p, s in zip(prompts, stops)])
    for c, f, s in zip(cut, free, stops):
        assert s not in c and f.startswith(c) and c == f.split(s, 1)[0]
    sampled = [(p, {"until": [], "max_gen_toks": 12, "do_sample": True, "temperature": 1.5, "top_k": 50,
                    "seed": 3}) for p in prompts]
    assert scorer.generate_until(sampled) == scorer.generate_until(sampled) != free  # seeded sampling
    assert scorer.generate_until([("The ", {"until": ["", s], "max_gen_toks": 12, "seed": None})
                                  for s in stops[:1]]) == cut[:1]  # "" is no stop string
    with pytest.raises(LmlabError, match="unsupported generation options"):
        scorer.generate_until([("The ", {"num_beams": 4})])

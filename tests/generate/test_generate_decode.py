"""The shared decoding loop (``generate_ids``) on a tiny random transformer."""

from __future__ import annotations

import torch
from torch import nn

from lmlab.config import DecodeSettings
from lmlab.configure import build_model_config
from lmlab.generate import generate_ids
from lmlab.registry import build_model

VOCAB = 40
EOS = 0


def _model(block_size: int = 64, tie_weights: bool = True, seed: int = 0) -> nn.Module:
    cfg = build_model_config(
        {
            "family": "transformer",
            "preset": "tiny",
            "vocab_size": VOCAB,
            "block_size": block_size,
            "tie_weights": tie_weights,
        }
    )
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():  # sharper, less repetitive distributions than the 0.02-std init
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(10.0)
    return model.eval()


def _greedy(**kw) -> DecodeSettings:
    return DecodeSettings(**{"temperature": 0.0, "top_k": None, "stop_on_eos": False, **kw})


def _naive_greedy(model, prompt: list[int], n: int, block_size: int | None = None) -> list[int]:
    """Full forward every step; with ``block_size``, decode.py's sliding window rule."""
    history = [EOS, *prompt]
    start = 0
    if block_size is not None and len(history) > block_size:
        start = len(history) - block_size
    keep = block_size // 2 if block_size else None
    new = []
    for _ in range(n):
        x = torch.tensor([history[start:]])
        nxt = int(model(x).logits[0, -1].argmax())
        new.append(nxt)
        history.append(nxt)
        if block_size is not None and len(history) - start > block_size:
            start = len(history) - keep
    return new


PROMPTS = [[5, 6, 7], [9], [11, 12, 13, 14, 15, 16, 17], [21, 22, 23], [3, 4]]


def test_greedy_equals_naive_argmax_loop() -> None:
    model = _model()
    out = generate_ids(model, PROMPTS, _greedy(max_new_tokens=12), EOS)
    assert len(out) == len(PROMPTS)
    for prompt, got in zip(PROMPTS, out):
        assert got == _naive_greedy(model, prompt, 12)


def test_empty_prompt_starts_from_eos() -> None:
    model = _model()
    (got,) = generate_ids(model, [[]], _greedy(max_new_tokens=6), EOS)
    assert got == _naive_greedy(model, [], 6)


def test_batched_mixed_lengths_equal_alone_greedy() -> None:
    model = _model()
    s = _greedy(max_new_tokens=15)
    batched = generate_ids(model, PROMPTS, s, EOS)
    alone = [generate_ids(model, [p], s, EOS)[0] for p in PROMPTS]
    assert batched == alone
    assert len({tuple(r) for r in batched}) > 1  # the prompts do steer the outputs


def test_batched_mixed_lengths_equal_alone_greedy_with_penalties() -> None:
    model = _model()
    s = _greedy(max_new_tokens=15, repetition_penalty=1.3, no_repeat_ngram_size=3)
    assert generate_ids(model, PROMPTS, s, EOS) == [
        generate_ids(model, [p], s, EOS)[0] for p in PROMPTS
    ]


def test_generate_restores_training_mode() -> None:
    model = _model().train()
    generate_ids(model, [[1, 2]], _greedy(max_new_tokens=2), EOS)
    assert model.training


def _force_eos_head(model, bias: float) -> None:
    """Give the LM head a bias towards EOS (the model must not tie weights)."""
    head = nn.Linear(model.cfg.d_model, VOCAB, bias=True)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight)
        head.bias.zero_()
        head.bias[EOS] = bias
    model.lm_head = head


def test_stop_on_eos_forced_gives_empty_outputs() -> None:
    model = _model(tie_weights=False)
    _force_eos_head(model, 1e4)
    s = _greedy(max_new_tokens=10, stop_on_eos=True)
    assert generate_ids(model, PROMPTS[:3], s, EOS) == [[], [], []]
    s = _greedy(max_new_tokens=10, stop_on_eos=False)
    assert generate_ids(model, PROMPTS[:3], s, EOS) == [[EOS] * 10] * 3


def test_stop_on_eos_truncates_before_first_eos() -> None:
    model = _model(tie_weights=False)
    _force_eos_head(model, 1.0)  # EOS likely but not certain: rows stop at different steps
    prompts = [[5, 6, 7], [9], [11, 12], [21, 22], [3, 4], [30, 31]]
    free = generate_ids(model, prompts, _greedy(max_new_tokens=25), EOS)
    stopped = generate_ids(model, prompts, _greedy(max_new_tokens=25, stop_on_eos=True), EOS)
    first_eos = [f.index(EOS) if EOS in f else None for f in free]
    for f, s, i in zip(free, stopped, first_eos):
        assert s == (f if i is None else f[:i])
        assert EOS not in s
    # The example exercises a row that never stops and one that stops after some tokens.
    assert None in first_eos
    assert any(i is not None and i > 0 for i in first_eos)


def _bigrams(seq: list[int]) -> list[tuple[int, int]]:
    return list(zip(seq, seq[1:]))


def test_no_repeat_ngram_size_2() -> None:
    model = _model()
    prompts = [[5, 6, 7], [9], [11, 12, 13]]
    n = 30
    plain = generate_ids(model, prompts, _greedy(max_new_tokens=n), EOS)
    blocked = generate_ids(model, prompts, _greedy(max_new_tokens=n, no_repeat_ngram_size=2), EOS)
    # Without blocking a random model loops, so the blocking is really exercised.
    assert any(len(set(_bigrams(r))) < len(_bigrams(r)) for r in plain)
    for prompt, row in zip(prompts, blocked):
        assert len(row) == n
        full = [EOS, *prompt, *row]  # decode.py blocks against the whole history
        assert len(set(_bigrams(full))) == len(_bigrams(full))


def test_long_generation_slides_the_window() -> None:
    block = 16
    model = _model(block_size=block)
    prompts = [[5, 6, 7], [9, 10, 11, 12, 13]]
    out = generate_ids(model, prompts, _greedy(max_new_tokens=60), EOS)
    assert [len(r) for r in out] == [60, 60]
    for prompt, got in zip(prompts, out):
        assert got == _naive_greedy(model, prompt, 60, block_size=block)


def test_prompt_longer_than_context_keeps_its_tail() -> None:
    block = 16
    model = _model(block_size=block)
    prompt = [(3 * i) % (VOCAB - 1) + 1 for i in range(25)]
    (got,) = generate_ids(model, [prompt], _greedy(max_new_tokens=20), EOS)
    assert got == _naive_greedy(model, prompt, 20, block_size=block)


def test_sliding_prefill_logits_equal_fresh_recompute() -> None:
    """Each re-prefill after the window slides feeds exactly the last block_size // 2 tokens."""
    block = 16
    model = _model(block_size=block)
    calls = []
    real_step = model.step

    def spy(tokens, state):
        start = state.pos
        logits, state = real_step(tokens, state)
        calls.append((start, tokens.clone(), logits.clone()))
        return logits, state

    model.step = spy
    prompt = [5, 6, 7]
    (got,) = generate_ids(model, [prompt], _greedy(max_new_tokens=60), EOS)
    history = [EOS, *prompt, *got]
    prefills = [(tokens, logits) for start, tokens, logits in calls if start == 0]
    assert len(prefills) > 3  # the first prefill, then several slides
    assert torch.equal(prefills[0][0], torch.tensor([[EOS, *prompt]]))
    seen = len(prompt) + 1
    for start, tokens, _ in calls:
        if start > 0:
            assert start + tokens.size(1) <= block
    for tokens, logits in prefills[1:]:
        assert tokens.shape == (1, block // 2)
        # The window ends at the token just generated: find where it sits in the history.
        end = next(
            i
            for i in range(seen, len(history) + 1)
            if history[i - block // 2 : i] == tokens[0].tolist()
        )
        seen = end
        fresh = model(torch.tensor([history[end - block // 2 : end]])).logits[:, -1]
        torch.testing.assert_close(logits, fresh, atol=1e-5, rtol=1e-5)


def test_sampling_is_reproducible_by_seed() -> None:
    model = _model()
    s = DecodeSettings(
        max_new_tokens=20, temperature=1.0, top_k=20, top_p=0.95, seed=3, stop_on_eos=False
    )
    a = generate_ids(model, PROMPTS, s, EOS)
    b = generate_ids(model, PROMPTS, s, EOS)
    c = generate_ids(model, PROMPTS, s.model_copy(update={"seed": 4}), EOS)
    assert a == b
    assert a != c
    assert all(len(r) == 20 for r in a)


def test_sampled_tokens_respect_top_k() -> None:
    """With top_k=1 sampling at any temperature is greedy."""
    model = _model()
    s = DecodeSettings(max_new_tokens=12, temperature=1.7, top_k=1, seed=0, stop_on_eos=False)
    assert generate_ids(model, PROMPTS, s, EOS) == generate_ids(
        model, PROMPTS, _greedy(max_new_tokens=12), EOS
    )

"""The pure functions on next-token logits: filters, penalties, n-gram blocking, sampling."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.generate.sampling import (
    apply_repetition_penalty,
    banned_ngram_tokens,
    block_repeated_ngrams,
    sample_next,
    top_k_filter,
    top_p_filter,
)

NEG_INF = float("-inf")


def _logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]])


# ----------------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("k", [1, 2, 5, 19])
def test_top_k_keeps_exactly_k_largest(k: int) -> None:
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(k))
    out = top_k_filter(logits, k)
    kept = torch.isfinite(out)
    assert (kept.sum(dim=-1) == k).all()
    top = torch.topk(logits, k, dim=-1).indices
    assert kept.gather(1, top).all()
    torch.testing.assert_close(out[kept], logits[kept])  # kept values untouched
    assert (out[~kept] == NEG_INF).all()


def test_top_k_none_or_large_is_identity() -> None:
    logits = torch.randn(2, 7)
    assert torch.equal(top_k_filter(logits, None), logits)
    assert torch.equal(top_k_filter(logits, 7), logits)
    assert torch.equal(top_k_filter(logits, 100), logits)


def test_top_k_keeps_ties_at_kth_value() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).tolist() == [[False, True, True, True, False]]


# ----------------------------------------------------------------------------------- top-p


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.3, {0}),  # 0.5 alone reaches 0.3
        (0.45, {0}),
        (0.75, {0, 1}),  # 0.5 < 0.75 <= 0.8
        (0.85, {0, 1, 2}),  # 0.8 < 0.85 <= 0.95
        (0.99, {0, 1, 2, 3}),
    ],
)
def test_top_p_keeps_minimal_nucleus(p: float, kept: set[int]) -> None:
    probs = [0.5, 0.3, 0.15, 0.05]
    # Shuffle the vocabulary order so the un-sorting is tested too: token id -> prob.
    perm = [2, 0, 3, 1]
    logits = _logits_of([probs[perm.index(i)] for i in range(4)])
    out = top_p_filter(logits, p)
    kept_ids = {i for i in range(4) if math.isfinite(out[0, i].item())}
    assert kept_ids == {perm[j] for j in kept}
    for i in kept_ids:
        assert out[0, i] == logits[0, i]


def test_top_p_one_is_identity_and_rows_are_independent() -> None:
    logits = torch.randn(2, 6)
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    two = torch.cat([_logits_of([0.5, 0.3, 0.15, 0.05]), _logits_of([0.05, 0.15, 0.3, 0.5])])
    out = torch.isfinite(top_p_filter(two, 0.75))
    assert out.tolist() == [[True, True, False, False], [False, False, True, True]]


# ----------------------------------------------------------------------- repetition penalty


def test_repetition_penalty_divides_positive_multiplies_negative_seen_only() -> None:
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.0, 4.0]])
    history = torch.tensor([[0, 1, 1, 4, 0]])  # duplicates are penalized once
    out = apply_repetition_penalty(logits, history, 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -4.0, 1.0, -1.0, 0.0, 4.0]]))
    assert torch.equal(logits, torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.0, 4.0]]))  # not in place


def test_repetition_penalty_per_row_and_identity() -> None:
    logits = torch.tensor([[3.0, -3.0, 1.0], [3.0, -3.0, 1.0]])
    history = torch.tensor([[0, 0], [1, 2]])
    out = apply_repetition_penalty(logits, history, 1.5)
    torch.testing.assert_close(out, torch.tensor([[2.0, -3.0, 1.0], [3.0, -4.5, 1.0 / 1.5]]))
    assert torch.equal(apply_repetition_penalty(logits, history, 1.0), logits)
    assert torch.equal(apply_repetition_penalty(logits, history[:, :0], 2.0), logits)


# --------------------------------------------------------------------------- n-gram blocking


@pytest.mark.parametrize(
    ("history", "n", "banned"),
    [
        ([5, 3, 5, 7], 1, {5, 3, 7}),
        ([], 1, set()),
        ([1, 2, 3, 1], 2, {2}),  # "1 2" seen; last token 1 -> 2 banned
        ([1, 2, 1, 3, 1], 2, {2, 3}),
        ([1, 2, 3, 4], 2, set()),  # 4 never seen before the end
        ([4, 4], 2, {4}),
        ([1, 2, 3, 9, 1, 2], 3, {3}),
        ([1, 2, 3, 1, 2, 4, 1, 2], 3, {3, 4}),
        ([1, 2, 3, 1, 3], 3, set()),
        ([1, 2], 3, set()),  # shorter than n
        ([1, 2, 3], 0, set()),
    ],
)
def test_banned_ngram_tokens(history: list[int], n: int, banned: set[int]) -> None:
    assert set(banned_ngram_tokens(history, n)) == banned


def test_block_repeated_ngrams_per_row() -> None:
    logits = torch.zeros(2, 6)
    out = block_repeated_ngrams(logits, [[1, 2, 3, 1], [5, 4, 5]], 2)
    expected = torch.zeros(2, 6)
    expected[0, 2] = NEG_INF
    expected[1, 4] = NEG_INF
    assert torch.equal(out, expected)
    assert torch.equal(logits, torch.zeros(2, 6))  # not in place
    assert torch.equal(block_repeated_ngrams(logits, [[1, 1], [2, 2]], 0), logits)


# --------------------------------------------------------------------------------- sampling


def test_temperature_zero_is_argmax() -> None:
    logits = torch.randn(8, 30, generator=torch.Generator().manual_seed(0))
    out = sample_next(logits, temperature=0.0, top_k=5, top_p=0.5)
    assert torch.equal(out, logits.argmax(dim=-1))


def test_sample_next_seeded_is_reproducible() -> None:
    logits = torch.randn(64, 30, generator=torch.Generator().manual_seed(1))
    a = sample_next(logits, 1.0, None, 1.0, torch.Generator().manual_seed(7))
    b = sample_next(logits, 1.0, None, 1.0, torch.Generator().manual_seed(7))
    c = sample_next(logits, 1.0, None, 1.0, torch.Generator().manual_seed(8))
    assert a.shape == (64,) and a.dtype == torch.long
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_next_draws_only_from_filtered_support() -> None:
    base = torch.randn(1, 40, generator=torch.Generator().manual_seed(2))
    logits = base.expand(4000, 40).clone()
    g = torch.Generator().manual_seed(3)
    draws = sample_next(logits, temperature=1.5, top_k=6, top_p=0.9, generator=g)
    support = torch.isfinite(top_p_filter(top_k_filter(base / 1.5, 6), 0.9))[0]
    allowed = set(support.nonzero().flatten().tolist())
    drawn = set(draws.tolist())
    assert drawn <= allowed
    assert 1 < len(allowed) <= 6
    assert drawn == allowed  # 4000 draws hit every token of the (small) nucleus


def test_sample_next_never_draws_blocked_tokens() -> None:
    logits = torch.zeros(2000, 10)
    logits[:, [0, 3, 9]] = NEG_INF
    draws = sample_next(logits, 1.0, None, 1.0, torch.Generator().manual_seed(0))
    assert set(draws.tolist()) == set(range(10)) - {0, 3, 9}


def test_low_temperature_concentrates_on_argmax() -> None:
    logits = torch.tensor([[1.0, 2.0, 1.5]]).expand(500, 3).clone()
    draws = sample_next(logits, 0.01, None, 1.0, torch.Generator().manual_seed(0))
    assert (draws == 1).all()

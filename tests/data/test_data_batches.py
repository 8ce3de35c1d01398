"""Windows and batches: determinism, resumability by step, equal global batches across splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.data.batches import WindowSampler, encode_documents, eval_windows
from lmlab.errors import LmlabError
from lmlab.tokenizers import ByteTokenizer


def test_encode_documents_separates_with_eos():
    tok = ByteTokenizer()
    ids = encode_documents(["ab", "c"], tok)
    assert ids.tolist() == [97, 98, tok.eos_id, 99, tok.eos_id]
    assert ids.dtype == np.uint16


def _all_rows(sampler, step):
    return torch.cat([x for x, _ in sampler.micro_batches(step)])


def test_targets_are_inputs_shifted():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = next(WindowSampler(tokens, 8, 4, 1, seed=1).micro_batches(0))
    assert x.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_same_global_batch_for_any_split_into_ranks_and_micro_batches():
    tokens = np.arange(5000, dtype=np.uint16)
    one = WindowSampler(tokens, 16, micro_batch=2, accum=2, world=1, rank=0, seed=3)
    ranks = [WindowSampler(tokens, 16, micro_batch=2, accum=1, world=2, rank=r, seed=3) for r in (0, 1)]
    for step in (0, 5, 40):
        a = list(one.micro_batches(step))
        assert torch.equal(a[0][0], next(ranks[0].micro_batches(step))[0])
        assert torch.equal(a[1][0], next(ranks[1].micro_batches(step))[0])


def test_epoch_covers_every_window_once_and_reshuffles():
    tokens = np.arange(16 * 40 + 1, dtype=np.int64)
    s = WindowSampler(tokens, 16, micro_batch=4, accum=1, seed=0)
    assert s.steps_per_epoch == 10
    starts = lambda step: (_all_rows(s, step)[:, 0] // 16).tolist()  # noqa: E731
    epoch0 = sum((starts(i) for i in range(10)), [])
    epoch1 = sum((starts(i) for i in range(10, 20)), [])
    assert sorted(epoch0) == list(range(40)) == sorted(epoch1)
    assert epoch0 != epoch1


def test_batches_depend_only_on_step_and_seed():
    tokens = np.arange(3000, dtype=np.uint16)
    a, b = WindowSampler(tokens, 8, 4, 1, seed=9), WindowSampler(tokens, 8, 4, 1, seed=9)
    for step in (0, 1, 2):
        _all_rows(a, step)
    assert torch.equal(_all_rows(a, 77), _all_rows(b, 77))
    assert not torch.equal(_all_rows(a, 3), _all_rows(WindowSampler(tokens, 8, 4, 1, seed=10), 3))


def test_too_small_corpus_is_a_clear_error():
    with pytest.raises(LmlabError, match="fewer than one global batch"):
        WindowSampler(np.arange(50, dtype=np.uint16), 16, 4, 1)


def test_eval_windows_score_each_token_once():
    tokens = np.arange(101)
    wins = eval_windows(tokens, block_size=11, max_windows=100)
    targets = np.concatenate([w[1:] for w in wins])
    assert targets.tolist() == list(range(1, 101))
    assert len(eval_windows(tokens, 11, 3)) == 3
    short = eval_windows(np.arange(5), 11, 4)
    assert len(short) == 1 and short[0].tolist() == [0, 1, 2, 3, 4]

"""Mixture sampler: strategies, per-source epochs, adaptive weights, resumable state, rank slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmlab.data.mixing import Adaptive, MixtureSampler
from lmlab.errors import LmlabError

B = 8  # block size


def _arrays(*n_windows: int) -> list[np.ndarray]:
    """Source s holds tokens 1000*s + arange, so a window's source and position are readable."""
    return [(1000 * s + np.arange(n * B + 1)).astype(np.int64) for s, n in enumerate(n_windows)]


def _sampler(arrays, **kw) -> MixtureSampler:
    kw.setdefault("micro_batch", 4)
    kw.setdefault("accum", 1)
    return MixtureSampler(arrays, [f"s{i}" for i in range(len(arrays))], B, **kw)


def _rows(sampler, step):
    xs, ys, srcs = zip(*sampler.micro_batches(step))
    return torch.cat(xs), torch.cat(ys), torch.cat(srcs)


def test_targets_shifted_and_source_ids_match_tokens():
    s = _sampler(_arrays(10, 10))
    x, y, src = _rows(s, 0)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert torch.equal(x[:, 0] // 1000, src)


def test_round_robin_alternates_and_covers_each_source_epoch():
    s = _sampler(_arrays(6, 10), micro_batch=4)
    seen = {0: [], 1: []}
    for step in range(6):  # 24 slots: 12 per source
        x, _, src = _rows(s, step)
        assert src.tolist() == [0, 1, 0, 1]
        for row, sid in zip(x, src):
            seen[int(sid)].append(int(row[0] % 1000) // B)
    assert sorted(seen[0][:6]) == list(range(6)) and sorted(seen[0][6:12]) == list(range(6))
    assert seen[0][:6] != seen[0][6:12]  # reshuffled each epoch
    assert sorted(seen[1][:10]) == list(range(10))


def test_sequential_exhausts_sources_in_order():
    s = _sampler(_arrays(4, 8), micro_batch=4, strategy="sequential")
    order = [src.tolist() for _, _, src in (_rows(s, i) for i in range(3))]
    assert order == [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    assert _rows(s, 3)[2].tolist() == [0, 0, 0, 0]  # next epoch starts over


def test_weighted_shares_follow_weights():
    s = _sampler(_arrays(50, 50, 50), micro_batch=16, strategy="weighted", weights=[1.0, 2.0, 5.0])
    counts = np.bincount(torch.cat([_rows(s, i)[2] for i in range(200)]).numpy(), minlength=3)
    np.testing.assert_allclose(counts / counts.sum(), [1 / 8, 2 / 8, 5 / 8], atol=0.02)
    assert s.weights() == pytest.approx({"s0": 1 / 8, "s1": 2 / 8, "s2": 5 / 8})


def test_adaptive_moves_weight_to_the_harder_source_and_clamps():
    ad = Adaptive(interval_tokens=100, smoothing=0.5, min_weight=0.5, max_weight=3.0)
    s = _sampler(_arrays(20, 20), adaptive=ad)
    assert not s.observe(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]), tokens=60)
    assert s.state.weights == [1.0, 1.0]
    assert s.observe(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]), tokens=60)
    # recent mean losses 1 and 3 (mean 2): targets 0.5 and 1.5; halfway from 1.0
    assert s.state.weights == pytest.approx([0.75, 1.25])
    counts = np.bincount(torch.cat([_rows(s, i)[2] for i in range(200)]).numpy(), minlength=2)
    assert counts[1] / counts.sum() == pytest.approx(1.25 / 2, abs=0.05)
    # Targets past the range are clamped: losses 1, 1, 1, 100 give targets ~0.04 and ~3.9.
    s4 = _sampler(_arrays(20, 20, 20, 20), adaptive=ad)
    for _ in range(30):
        s4.observe(torch.tensor([1.0, 1.0, 1.0, 100.0]), torch.ones(4), tokens=100)
    assert s4.state.weights == pytest.approx([0.5, 0.5, 0.5, 3.0])
    assert s4.weights()["s3"] == pytest.approx(3.0 / 4.5)


def test_state_dict_resumes_the_exact_batches():
    ad = Adaptive(interval_tokens=10, smoothing=0.5, min_weight=0.2, max_weight=5.0)
    a = _sampler(_arrays(7, 13, 5), strategy="weighted", weights=[1, 2, 1], adaptive=ad)
    b = _sampler(_arrays(7, 13, 5), strategy="weighted", weights=[1, 2, 1], adaptive=ad)
    saved = None
    ref = []
    for step in range(12):
        ref.append(_rows(a, step)[0])
        a.observe(torch.tensor([1.0, 2.0, 4.0]), torch.ones(3), tokens=8)
        if step == 4:
            saved = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in a.state_dict().items()}
    b.load_state_dict(saved)
    for step in range(5, 12):
        assert torch.equal(_rows(b, step)[0], ref[step])
        b.observe(torch.tensor([1.0, 2.0, 4.0]), torch.ones(3), tokens=8)


@pytest.mark.parametrize("strategy", ["round_robin", "sequential"])
def test_same_global_batch_for_any_split_into_ranks_and_micro_batches(strategy):
    one = _sampler(_arrays(20, 30), micro_batch=2, accum=2, strategy=strategy)
    ranks = [_sampler(_arrays(20, 30), micro_batch=2, accum=1, world=2, rank=r, strategy=strategy) for r in (0, 1)]
    for step in range(5):
        a = [x for x, _, _ in one.micro_batches(step)]
        assert torch.equal(a[0], next(ranks[0].micro_batches(step))[0])
        assert torch.equal(a[1], next(ranks[1].micro_batches(step))[0])


def test_too_small_and_empty_sources():
    with pytest.raises(LmlabError, match="fewer than one global batch"):
        _sampler(_arrays(1, 1), micro_batch=4)
    with pytest.warns(UserWarning, match="s1 has fewer than 9 training tokens"):
        s = _sampler([_arrays(10)[0], np.arange(3)])
    assert set(_rows(s, 0)[2].tolist()) == {0}


def test_segments_of_a_source_are_one_pool_of_windows():
    """A source split into shard segments: every window of every segment drawn once per epoch,
    none crossing a segment boundary."""
    segs = [np.arange(3 * B + 1) + 100, np.arange(5 * B + 1) + 500, np.arange(2) + 900]
    s = MixtureSampler([segs], ["s0"], B, micro_batch=4, accum=1)
    assert s.n_windows == [8]
    firsts = torch.cat([_rows(s, i)[0][:, 0] for i in range(2)]).tolist()
    assert sorted(firsts) == sorted([100 + B * i for i in range(3)] + [500 + B * i for i in range(5)])
    for step in range(2, 6):
        x, y, _ = _rows(s, step)
        assert torch.equal(y[:, -1] - x[:, 0], torch.full((4,), B))  # contiguous within a segment


def test_resume_onto_other_data_is_refused():
    a = _sampler(_arrays(10, 10))
    saved = a.state_dict()
    b = _sampler([_arrays(10, 10)[0], [_arrays(10, 10)[1][:41], _arrays(10, 10)[1][41:]]])
    with pytest.raises(LmlabError, match="the checkpoint was trained on other data"):
        b.load_state_dict(saved)


def test_later_epochs_move_every_window_by_one_seeded_offset():
    """Epoch 0 is the grid of block-size steps; each later epoch shifts it by one offset per
    epoch (windows held inside the array), still drawing every window once; a run saved before
    the shift existed resumes on the plain grid."""
    tokens = np.arange(12 * B + 5).astype(np.int64)  # 12 windows and 4 spare tokens at the end
    s = _sampler([tokens], micro_batch=4)
    starts = [int(x[0]) for step in range(12) for x in _rows(s, step)[0]]  # 4 epochs of 12 windows
    epochs = [sorted(starts[e * 12 : (e + 1) * 12]) for e in range(4)]
    assert epochs[0] == [w * B for w in range(12)]
    offsets = [e[0] for e in epochs[1:]]
    assert len(set(offsets)) > 1 and all(0 <= o < B for o in offsets)
    for e, o in zip(epochs[1:], offsets):
        assert e == [min(w * B + o, len(tokens) - B - 1) for w in range(12)]
    old = {k: v for k, v in s.state_dict().items() if k != "shift_epochs"}
    legacy = _sampler([tokens], micro_batch=4)
    legacy.load_state_dict(old)
    assert all(int(x[0]) % B == 0 for x in _rows(legacy, 12)[0])

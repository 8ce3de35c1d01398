"""Sharded token cache: the same split as an unsharded build, tiny shares allowed, exact budgets."""

from __future__ import annotations

import numpy as np

from lmlab.config import DataConfig, JsonlSource
from lmlab.data.cache import build_token_arrays
from lmlab.data.shards import split_budget
from lmlab.data.sources import source_streams
from lmlab.tokenizers import ByteTokenizer


def _doc_ids(arr: np.ndarray) -> list[str]:
    text = bytes(int(t) for t in arr if t < 256).decode()
    return [piece[:3] for piece in text.split("<doc ")[1:]]


def test_shards_split_like_the_unsharded_build_and_allow_tiny_shares(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(f'{{"text": "<doc {i:03d}> some words here"}}\n' for i in range(40)))
    cfg = DataConfig(sources=[JsonlSource(path=str(path))])
    tok = ByteTokenizer()
    whole = build_token_arrays(source_streams(cfg, [0]), tok, val_fraction=0.2)
    expected_val = sorted(_doc_ids(whole.val[0]))
    assert 0 < len(expected_val) < 40
    for n in (4, 32):  # 32 shards of 40 documents: many shares hold 1 document, some 2
        val, train = [], []
        for k in range(n):
            part = build_token_arrays(source_streams(cfg, [0], shard=(k, n)), tok, val_fraction=0.2,
                                      balance_split=False)
            val += _doc_ids(part.val[0])
            train += _doc_ids(part.train[0])
        assert sorted(val) == expected_val
        assert sorted(train + val) == [f"{i:03d}" for i in range(40)]


def test_split_budget_adds_up_exactly():
    assert [split_budget(10, 4, k) for k in range(4)] == [3, 3, 2, 2]
    assert sum(split_budget(1_000_003, 7, k) for k in range(7)) == 1_000_003
    assert split_budget(None, 3, 0) is None

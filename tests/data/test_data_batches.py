"""Token arrays from documents and validation windows."""

from __future__ import annotations

import numpy as np

from lmlab.data.batches import encode_documents, eval_windows
from lmlab.tokenizers import ByteTokenizer


def test_encode_documents_separates_with_eos():
    tok = ByteTokenizer()
    ids = encode_documents(["ab", "c"], tok)
    assert ids.tolist() == [97, 98, tok.eos_id, 99, tok.eos_id]
    assert ids.dtype == np.uint16


def test_eval_windows_score_each_token_once():
    tokens = np.arange(101)
    wins = eval_windows(tokens, block_size=11, max_windows=100)
    targets = np.concatenate([w[1:] for w in wins])
    assert targets.tolist() == list(range(1, 101))
    assert len(eval_windows(tokens, 11, 3)) == 3
    short = eval_windows(np.arange(5), 11, 4)
    assert len(short) == 1 and short[0].tolist() == [0, 1, 2, 3, 4]

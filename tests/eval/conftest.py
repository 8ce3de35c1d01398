"""A tiny trained bpe run shared by the eval tests, and the path of the shared eval data."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmlab

EVAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="session")
def eval_run(corpus_dir, tmp_path_factory, make_raw) -> Path:
    """A 20-step bpe transformer (block 64): trained enough that scores are not uniform."""
    raw = make_raw(corpus_dir, tmp_path_factory.mktemp("eval") / "run")
    raw["tokenizer"] = {"type": "bpe", "vocab_size": 320}
    raw["model"]["block_size"] = 64
    raw["train"]["max_steps"] = 20
    return lmlab.train(raw)


@pytest.fixture(scope="session")
def eval_data() -> Path:
    """``../shared/data`` (wikitext2/ and eval/); tests that need it skip when it is absent."""
    if not (EVAL_DATA / "eval").is_dir():
        pytest.skip(f"shared eval data not found at {EVAL_DATA} (see ../shared/data/MANIFEST.md)")
    return EVAL_DATA

"""lmlab eval on an HF GPT-2 folder scores as lm-eval's ``hf`` model does, requests longer than the
window included: the model reads ``max_length`` = n_positions tokens (the last one of a scored
sequence is only a target). The reference is lm-eval's own HFLM on the same folder."""

from __future__ import annotations

import pytest
import torch

import lmlab
from lmlab.configure import build_model_config
from lmlab.eval.runner import load_checkpoint
from lmlab.eval.scoring import Scorer
from lmlab.interop.gpt2 import export_hf_gpt2
from lmlab.registry import build_model


@pytest.fixture(scope="module")
def hf_folder(eval_run, tmp_path_factory):
    """A random GPT-2 (learned positions, n_positions 32) with the eval run's bpe tokenizer."""
    tok = lmlab.load(eval_run).tokenizer
    torch.manual_seed(0)
    model = build_model(build_model_config({
        "family": "transformer", "preset": "tiny", "vocab_size": tok.vocab_size, "block_size": 32,
        "pos_encoding": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True}))
    return export_hf_gpt2(model, tmp_path_factory.mktemp("hfctx") / "hf", tokenizer=tok)


def _requests(tok) -> list[tuple[str, str]]:
    """Contexts from a few tokens to well past the 32-token window; short and long continuations."""
    words = "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat".split()
    out = []
    for n in (3, 20, 31, 32, 33, 60):
        ctx = " ".join((words * 8)[:n])
        for cont in (" and", " then it runs far away from the dog"):
            out.append((ctx, cont))
    assert max(len(tok.encode(c + x)) for c, x in out) > 40  # some requests do not fit
    return out


def test_hf_gpt2_loglikelihoods_match_lm_evals_hf_model(hf_folder):
    hf_lm = pytest.importorskip("lm_eval.models.huggingface")
    # deferred: lm-eval is optional (the eval extra); the test skips without it
    from lm_eval.api.instance import Instance

    ref = hf_lm.HFLM(pretrained=str(hf_folder), device="cpu", batch_size=4)
    assert ref.max_length == 32
    model, tok, info = load_checkpoint(hf_folder)
    scorer = Scorer(model, tok, always_prefix=info["format"] == "lmlab")
    assert scorer.max_length == 32 and scorer.max_input_len == 33
    reqs = _requests(tok)
    want = ref.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(reqs)])
    got = scorer.loglikelihood(reqs)
    for (ll, greedy), (ref_ll, ref_greedy), r in zip(got, want, reqs):
        assert ll == pytest.approx(ref_ll, abs=2e-4), r
        assert greedy == ref_greedy, r


def test_the_window_reads_block_size_tokens(eval_run):
    """A sequence of block_size + 1 tokens is scored whole (block_size inputs); one more is refused."""
    loaded = lmlab.load(eval_run)
    block = loaded.model.block_size
    scorer = Scorer(loaded.model, loaded.tokenizer)
    assert scorer.max_input_len == block + 1
    ids = list(range(5, 5 + 2 * block))
    (ll, _), = scorer.loglikelihood_tokens([(ids[:block], ids[block:block + 1])])
    full = torch.tensor([[loaded.tokenizer.eos_id, *ids[:block + 1]][-(block + 1):]])
    assert ll == pytest.approx(float(loaded.model.log_probs(full)[0, -1]), abs=1e-5)
    with pytest.raises(lmlab.errors.LmlabError, match="exceeds what the model scores at once"):
        Scorer(loaded.model, loaded.tokenizer, max_input_len=block + 2)

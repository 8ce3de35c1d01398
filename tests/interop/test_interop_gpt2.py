"""HF GPT-2 interop: load, import into a run dir, export, round trips and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab import rundir
from lmlab.configure import build_model_config
from lmlab.errors import LmlabError
from lmlab.interop.gpt2 import export_hf_gpt2, gpt2_model_config, import_hf_gpt2, load_hf_gpt2
from lmlab.registry import build_model

HF_REASON = "GPT-2 parity needs transformers (pip install lmlab[hf])"
VOCAB = 300
BLOCK = 64


def _texts() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name][:2000] for name in sorted(topics)[:40]]


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE with <|endoftext|>, about VOCAB ids (the exact count is its vocab_size)."""
    pytest.importorskip("tokenizers", reason="bpe needs the tokenizers package")
    from lmlab.tokenizers.bpe import BPETokenizer

    return BPETokenizer.fit(_texts(), VOCAB)


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Non-zero biases and norm affines, so every parameter is really checked."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))


def _hf_model(vocab_size: int = VOCAB, **extra):
    transformers = pytest.importorskip("transformers", reason=HF_REASON)
    cfg = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=BLOCK, n_embd=64, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **extra,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    _randomize(hf, 1)
    return hf


def _lmlab_model(vocab_size: int = VOCAB, **extra) -> torch.nn.Module:
    cfg = build_model_config({
        "family": "transformer", "preset": "tiny", "vocab_size": vocab_size, "block_size": BLOCK,
        "pos_encoding": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True,
        "tie_weights": True, **extra,
    })
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    _randomize(model, 2)
    return model


def _ids(vocab_size: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 40), generator=torch.Generator().manual_seed(3))


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("layout", ["safetensors", "bin", "sharded"])
def test_load_hf_gpt2_matches_hf_logits(tmp_path: Path, layout: str) -> None:
    hf = _hf_model()
    kw = {"safe_serialization": layout != "bin"}
    if layout == "sharded":
        kw["max_shard_size"] = "200KB"
    hf.save_pretrained(tmp_path, **kw)
    expected_file = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin",
                     "sharded": "model.safetensors.index.json"}[layout]
    assert (tmp_path / expected_file).is_file()
    model, tok, model_dict = load_hf_gpt2(tmp_path)
    assert tok is None
    assert model_dict["block_size"] == BLOCK and model_dict["mlp"] == "gelu_tanh"
    x = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(x).logits, atol=1e-4, rtol=1e-4)
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()


def test_load_plain_gelu_and_n_inner(tmp_path: Path) -> None:
    hf = _hf_model(activation_function="gelu", n_inner=96)
    hf.save_pretrained(tmp_path)
    model, _, model_dict = load_hf_gpt2(tmp_path)
    assert model_dict["mlp"] == "gelu" and model_dict["d_ff"] == 96
    x = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, hf(x).logits, atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------ export


def test_export_loads_in_transformers(tmp_path: Path, bpe) -> None:
    transformers = pytest.importorskip("transformers", reason=HF_REASON)
    model = _lmlab_model(bpe.vocab_size)
    out = export_hf_gpt2(model, tmp_path / "hf", tokenizer=bpe)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    hf, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    # lm_head.weight is not in the file: HF ties it to wte and does not report it as missing.
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == [] and info["error_msgs"] == []
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    hf.eval()
    x = _ids(bpe.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x).logits, atol=1e-4, rtol=1e-4)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["eos_token_id"] == cfg["bos_token_id"] == bpe.eos_id
    assert cfg["activation_function"] == "gelu_new" and cfg["n_inner"] == 256
    hf_tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    assert hf_tok.encode("The quick fox") == bpe.encode("The quick fox")


def test_export_refuses_non_gpt2_model(tmp_path: Path) -> None:
    model = _lmlab_model(pos_encoding="rope", norm="rmsnorm", bias=False)
    with pytest.raises(LmlabError) as e:
        export_hf_gpt2(model, tmp_path / "hf")
    msg = str(e.value)
    assert "model.pos_encoding='rope' (GPT-2 needs learned)" in msg
    assert "model.norm='rmsnorm'" in msg and "model.bias=False" in msg
    assert not (tmp_path / "hf").exists()


def test_export_refuses_non_empty_out_dir(tmp_path: Path) -> None:
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LmlabError, match="not empty"):
        export_hf_gpt2(_lmlab_model(), out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temp dir left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    export_hf_gpt2(_lmlab_model(), empty)
    assert (empty / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------ import


def test_import_with_tokenizer_scores_like_hf(tmp_path: Path, bpe) -> None:
    hf = _hf_model(bpe.vocab_size)
    hf_dir = tmp_path / "hf"
    hf.save_pretrained(hf_dir)
    bpe.hf.save(str(hf_dir / "tokenizer.json"))
    run = import_hf_gpt2(hf_dir, tmp_path / "run")

    loaded = lmlab.load(run)
    assert loaded.snapshot.meta["imported_from"] == str(hf_dir)
    assert loaded.snapshot.step == 0
    text = "The quick brown fox jumps over the lazy dog."
    ids = torch.tensor([[bpe.eos_id, *bpe.encode(text)]])
    with torch.no_grad():
        logp = torch.log_softmax(hf(ids).logits[0, :-1], dim=-1)
    expected = logp.gather(-1, ids[0, 1:, None]).squeeze(-1)
    torch.testing.assert_close(loaded.log_probs(text), expected, atol=1e-4, rtol=1e-4)
    out = loaded.generate("The ", max_new_tokens=5, greedy=True)
    assert out.startswith("The ")
    assert rundir.config_path(run).is_file()
    assert lmlab.load(run).config.tokenizer.model_path == str(rundir.tokenizer_dir(run).resolve())


def test_imported_run_fine_tunes_in_place(tmp_path: Path, bpe) -> None:
    # The import has weights but no trainer state: training it starts a fresh optimizer at step 0.
    hf_dir = export_hf_gpt2(_lmlab_model(bpe.vocab_size), tmp_path / "hf", tokenizer=bpe)
    run = import_hf_gpt2(hf_dir, tmp_path / "run")
    before = lmlab.load(run).model.state_dict()["wte.weight"].clone()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, text in enumerate(_texts()[:12]):
        (corpus / f"{i}.txt").write_text(text, encoding="utf-8")
    lmlab.train(rundir.config_path(run), **{
        "train.max_steps": 2, "train.batch_size": 2, "train.eval_batches": 1, "train.warmup_steps": 0,
        "train.progress": False, "train.num_threads": 1, "train.seed": 3,  # data/seed may change
        "data.sources": [{"type": "text", "path": str(corpus)}]})
    after = lmlab.load(run)
    assert after.snapshot.step == 2 and (after.snapshot.path / rundir.TRAINER).is_file()
    assert not torch.equal(after.model.state_dict()["wte.weight"], before)
    prev = rundir.latest_snapshot(run).path.parent / "prev"
    assert json.loads((prev / rundir.META).read_text())["imported_from"] == str(hf_dir)  # kept


def test_import_tokenizer_from_vocab_and_merges(tmp_path: Path, bpe) -> None:
    hf_dir = export_hf_gpt2(_lmlab_model(bpe.vocab_size), tmp_path / "hf")
    bpe.hf.model.save(str(hf_dir))  # vocab.json + merges.txt, the older GPT-2 layout
    assert (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file()
    _, tok, _ = load_hf_gpt2(hf_dir)
    assert tok is not None and tok.vocab_size == bpe.vocab_size and tok.eos_id == bpe.eos_id
    text = "def f(x):\n    return x  # ünïcode"
    assert tok.encode(text) == bpe.encode(text)
    assert tok.decode(tok.encode(text) + [tok.eos_id]) == text


def test_round_trip_run_dir_export_import(tmp_path: Path, bpe) -> None:
    model = _lmlab_model(bpe.vocab_size)
    hf1 = export_hf_gpt2(model, tmp_path / "hf1", tokenizer=bpe)
    run1 = import_hf_gpt2(hf1, tmp_path / "run1")
    hf2 = export_hf_gpt2(run1, tmp_path / "hf2")  # the run dir's own tokenizer goes along
    assert (hf2 / "tokenizer.json").is_file()
    run2 = import_hf_gpt2(hf2, tmp_path / "run2")
    m1, m2 = lmlab.load(run1).model, lmlab.load(run2).model
    _assert_same_weights(m1, model)
    _assert_same_weights(m2, model)
    assert lmlab.load(run2).config.model == lmlab.load(run1).config.model


def test_import_tokenizer_from_other_run(tmp_path: Path, bpe) -> None:
    hf_dir = export_hf_gpt2(_lmlab_model(bpe.vocab_size), tmp_path / "hf", tokenizer=bpe)
    run1 = import_hf_gpt2(hf_dir, tmp_path / "run1")
    (hf_dir / "tokenizer.json").unlink()
    with pytest.raises(LmlabError) as e:
        import_hf_gpt2(hf_dir, tmp_path / "run2")
    assert str(e.value) == (
        f"no tokenizer in {hf_dir} (tokenizer.json or vocab.json+merges.txt); pass --tokenizer-from RUN_DIR"
    )
    assert not rundir.has_checkpoint(tmp_path / "run2")
    run2 = import_hf_gpt2(hf_dir, tmp_path / "run2", tokenizer_from=run1)
    assert lmlab.load(run2).tokenizer.encode("The end") == bpe.encode("The end")


def test_import_refuses_run_dir_with_checkpoint(tmp_path: Path, bpe) -> None:
    hf_dir = export_hf_gpt2(_lmlab_model(bpe.vocab_size), tmp_path / "hf", tokenizer=bpe)
    run = import_hf_gpt2(hf_dir, tmp_path / "run")
    before = (run / "checkpoints" / "current" / "model.safetensors").read_bytes()
    with pytest.raises(LmlabError, match="already holds a checkpoint"):
        import_hf_gpt2(hf_dir, run)
    assert (run / "checkpoints" / "current" / "model.safetensors").read_bytes() == before
    assert not (run / "checkpoints" / "prev").exists()


def test_import_refuses_vocab_mismatch(tmp_path: Path, bpe) -> None:
    hf_dir = export_hf_gpt2(_lmlab_model(bpe.vocab_size + 4), tmp_path / "hf")
    bpe.hf.save(str(hf_dir / "tokenizer.json"))
    with pytest.raises(LmlabError, match=f"{bpe.vocab_size} ids but the model's vocab_size is {bpe.vocab_size + 4}"):
        import_hf_gpt2(hf_dir, tmp_path / "run")
    assert not rundir.has_checkpoint(tmp_path / "run")


# ------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("scale_attn_by_inverse_layer_idx", True),
        ("reorder_and_upcast_attn", True),
        ("add_cross_attention", True),
        ("model_type", "gpt_neo"),
        ("activation_function", "relu"),
        ("tie_word_embeddings", False),
    ],
)
def test_unsupported_hf_config(key: str, value) -> None:
    with pytest.raises(LmlabError) as e:
        gpt2_model_config({"n_embd": 64, "n_head": 2, key: value})
    msg = str(e.value)
    assert key in msg and repr(value) in msg and "\n" not in msg


def test_hf_defaults_fill_missing_keys() -> None:
    d = gpt2_model_config({"model_type": "gpt2"})  # GPT-2 small
    assert (d["n_layer"], d["n_head"], d["d_model"], d["block_size"]) == (12, 12, 768, 1024)
    assert (d["vocab_size"], d["d_ff"], d["mlp"]) == (50257, 3072, "gelu_tanh")
    assert build_model_config(d).ff_dim == 3072


def test_load_refuses_bad_weights(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    hf_dir = export_hf_gpt2(_lmlab_model(), tmp_path / "hf")
    sd = load_file(str(hf_dir / "model.safetensors"))
    sd.pop("transformer.h.1.mlp.c_fc.bias")
    sd["transformer.h.0.attn.extra"] = torch.zeros(2)
    save_file(sd, str(hf_dir / "model.safetensors"))
    with pytest.raises(LmlabError) as e:
        load_hf_gpt2(hf_dir)
    assert "missing h.1.mlp.c_fc.bias" in str(e.value) and "unexpected h.0.attn.extra" in str(e.value)

    sd = load_file(str(hf_dir / "model.safetensors"))
    sd["transformer.h.1.mlp.c_fc.bias"] = torch.zeros(256)
    del sd["transformer.h.0.attn.extra"]
    sd["lm_head.weight"] = torch.zeros_like(sd["transformer.wte.weight"])
    save_file(sd, str(hf_dir / "model.safetensors"))
    with pytest.raises(LmlabError, match="lm_head.weight differs from wte.weight"):
        load_hf_gpt2(hf_dir)

    sd["lm_head.weight"] = sd["transformer.wte.weight"].clone()  # tied: accepted
    sd["transformer.h.0.mlp.c_fc.weight"] = sd["transformer.h.0.mlp.c_fc.weight"].t().contiguous()
    save_file(sd, str(hf_dir / "model.safetensors"))
    with pytest.raises(LmlabError, match="do not fit"):
        load_hf_gpt2(hf_dir)


def test_load_old_layout_bin_without_prefix(tmp_path: Path) -> None:
    """The original GPT-2 .bin: no ``transformer.`` prefix, causal-mask buffers stored per layer."""
    from safetensors.torch import load_file

    model = _lmlab_model()
    hf_dir = export_hf_gpt2(model, tmp_path / "hf")
    sd = {k.removeprefix("transformer."): v for k, v in load_file(str(hf_dir / "model.safetensors")).items()}
    for i in range(2):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, BLOCK, BLOCK))
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    (hf_dir / "model.safetensors").unlink()
    torch.save(sd, hf_dir / "pytorch_model.bin")
    loaded, _, _ = load_hf_gpt2(hf_dir)
    _assert_same_weights(loaded, model)


class _RunsCode:
    """A pickle that would write a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


@pytest.mark.parametrize("content", ["pickle", "garbage"])
def test_a_bad_bin_is_refused_in_one_line_without_advising_weights_only_false(tmp_path: Path, capsys,
                                                                             content: str) -> None:
    """A pickled object in pytorch_model.bin is refused unread, and the one line never passes on
    torch's hint to retry with ``weights_only=False`` (nor does a torn file's)."""
    from lmlab.cli import main

    hf_dir = export_hf_gpt2(_lmlab_model(), tmp_path / "hf")
    (hf_dir / "model.safetensors").unlink()
    marker = tmp_path / "ran.txt"
    if content == "pickle":
        torch.save({"wte.weight": torch.zeros(2), "x": _RunsCode(marker)}, hf_dir / "pytorch_model.bin")
    else:
        (hf_dir / "pytorch_model.bin").write_bytes(b"not a torch file at all")
    assert main(["import-gpt2", str(hf_dir), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pytorch_model.bin" in err and "model.safetensors" in err
    assert "weights_only" not in err and "False" not in err and not marker.exists()
    assert ("refused unread" in err) == (content == "pickle")
    assert not (tmp_path / "run").exists()

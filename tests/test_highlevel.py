"""The one-call API: TextData (documents, split, tokenizer, windows) and LM (fit, generate,
save/load) through the real trainer; seed 002's quickstart as written apart from the import."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from lmlab import LM, TextData, psannLM, psannLMDataPrep
from lmlab.configure import load_config
from lmlab.data.cache import build_token_arrays
from lmlab.data.sources import doc_hash_fraction, open_sources, source_streams
from lmlab.errors import LmlabError
from lmlab.highlevel import UNPACKED
from lmlab.registry import FAMILIES
from lmlab.rundir import latest_snapshot

QUIET = {"progress": False, "log_interval": 1, "sample__max_new_tokens": 4, "num_threads": 1}


def _docs(corpus_dir) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in sorted(corpus_dir.rglob("*.txt"))]


@pytest.mark.skipif("psann" not in FAMILIES, reason="the psann family is not registered")
def test_seed_002_quickstart_runs_as_written(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # fit's default run dir lands here
    texts = ["hello world", "goodnight moon"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two documents: no validation split (warned)
        dp = psannLMDataPrep(
            texts,
            tokenizer="auto",             # sentencepiece -> tokenizers -> char fallback
            tokenizer_model_path=None,
            max_length=256,
            pack_sequences=True,
        )
        model = psannLM(
            base="waveresnet",
            d_model=32,                   # the seed's 512 / 8 / 8, small for CPU
            n_layers=2,
            n_heads=2,
            vocab_size=dp.vocab_size,
            positional_encoding="rope",
            sine_params=dict(amp_init=1.0, freq_init=1.0, damp_init=0.01, trainable=True),
        )
        model.fit(dp, epochs=1, batch_tokens=65_536, lr=2e-4, amp="bf16")
    out = model.generate("Once upon a time", top_p=0.9, max_new_tokens=64)
    batch = model.generate_batch(["hello", "goodnight"], max_new_tokens=32)
    assert out.startswith("Once upon a time") and isinstance(out, str)
    assert [b[: len(p)] for b, p in zip(batch, ["hello", "goodnight"])] == ["hello", "goodnight"]
    assert dp.tokenizer_backend == "sentencepiece"
    assert model.run_dir.parent == tmp_path
    cfg = model.model.cfg
    assert (cfg.family, cfg.base, cfg.pos_encoding) == ("psann", "waveresnet", "rope")
    # save / load restores the architecture, positions and sine settings from the run dir.
    greedy = model.generate("hello", max_new_tokens=8, temperature=0)
    again = LM.load(model.save(tmp_path / "saved"))
    cfg2 = again.model.cfg
    assert (cfg2.base, cfg2.pos_encoding, cfg2.sine_params) == ("waveresnet", "rope", cfg.sine_params)
    assert again.base == "waveresnet" and again.generate("hello", max_new_tokens=8, temperature=0) == greedy
    # The run's config names its data: the in-memory texts are kept beside it.
    sources = again._model().config.data.sources
    kept = [json.loads(line)["text"] for line in open(sources[-1].path, encoding="utf-8")]
    assert kept == texts


def test_textdata_reads_texts_and_files_splits_by_document_and_exposes_the_seed_properties(corpus_dir, tmp_path):
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"record number {i} says hi"}) for i in range(5)) + "\n")
    data = TextData([str(corpus_dir), jsonl, "an in-memory document"], tokenizer="simple", max_length=32,
                    val_split=0.2, seed=3)
    n_docs = len(data.train_texts) + len(data.val_texts)
    assert n_docs == 41 + 5 + 1  # 40 .txt + notes.md (text source reads both), 5 records, 1 text
    assert "an in-memory document" in data.train_texts + data.val_texts
    assert data.tokenizer_backend == "char" and data.vocab_size == data.tokenizer.vocab_size
    assert data.pad_id == data.tokenizer.eos_id  # char has no pad: packed windows need none
    # The split of every run: a document is held out when the hash of its source type and name
    # falls under val_split; the seed orders the windows, it does not move the split.
    docs = [d for _, ds in data._streams for d in ds]
    assert sorted(data.val_texts) == sorted(d.text for d in docs if doc_hash_fraction(d) < 0.2)
    other = TextData([str(corpus_dir), jsonl, "an in-memory document"], tokenizer="char", max_length=32,
                     val_split=0.2, seed=4)
    assert other.val_texts == data.val_texts
    # ... and the arrays are what `lmlab train` builds from the same sources: token for token.
    cfg = data.data_config
    run_arrays = build_token_arrays(source_streams(cfg, [o.index for o in open_sources(cfg)]), data.tokenizer,
                                    val_fraction=cfg.val_fraction)
    for a, b in zip(data.arrays.train + data.arrays.val, run_arrays.train + run_arrays.val, strict=True):
        assert np.array_equal(a, b)
    # Windows: (x, y) of max_length, y shifted by one, from each source's packed stream (docs + EOS).
    assert "dataset" not in vars(data)  # lazy
    x, y = data.dataset[3]
    assert x.shape == y.shape == (32,) and torch.equal(x[1:], y[:-1])
    assert len(data) == sum((len(seg) - 1) // 32 for seg in data.train_segments)
    first = data.train_segments[0]
    assert torch.equal(x, torch.from_numpy(first[3 * 32 : 4 * 32].astype(np.int64)))
    assert len(data.val_dataset) > 0


def test_pack_sequences_false_is_refused_as_the_yaml_refuses_it(tmp_path):
    """One behaviour: a run dir's config cannot say "unpacked" (a resume would pack), so the
    API refuses ``pack_sequences=False`` with the words a seed 002 YAML gets."""
    with pytest.raises(LmlabError) as api:
        TextData(["a" * 50, "b" * 10], tokenizer="char", pack_sequences=False)
    (tmp_path / "c.yaml").write_text("data: {pack_sequences: false}\n")
    with pytest.raises(LmlabError) as yaml_file:
        load_config(tmp_path / "c.yaml")
    for line in (str(api.value), str(yaml_file.value)):
        assert UNPACKED in line and "\n" not in line
    assert "pack_sequences=False" in str(api.value) and "drop the argument" in str(api.value)
    assert TextData(["a" * 50], tokenizer="char", pack_sequences=True, val_split=0).pack_sequences


def test_fit_on_a_text_of_few_distinct_characters_trains(tmp_path):
    """Six distinct characters give a char vocabulary under 16: fit trains it (it used to blame
    ``tokenizer.vocab_size``, a key nobody set), and the run dir loads and samples."""
    data = TextData(["abcabc abc", "cab bac"], tokenizer="char", val_split=0)
    assert data.vocab_size < 16
    model = LM(base="transformer", d_model=16, n_layers=1, n_heads=2, vocab_size=data.vocab_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no validation split (warned)
        model.fit(data, max_steps=1, out_dir=tmp_path / "run", **QUIET)
    assert model.model.cfg.vocab_size == data.vocab_size
    assert LM.load(tmp_path / "run").generate("ab", max_new_tokens=3, temperature=0).startswith("ab")


def test_tokenizer_choices_and_prebuilt_models(tmp_path, corpus_dir):
    docs = _docs(corpus_dir)
    bpe = TextData(docs, tokenizer="tokenizers", vocab_size=300, val_split=0.1)
    assert bpe.tokenizer_backend == "bpe" and bpe.vocab_size == 300
    sp = TextData(docs, tokenizer="sentencepiece", vocab_size=400, val_split=0.1)
    assert sp.tokenizer_backend == "sentencepiece"
    # Prebuilt: an lmlab tokenizer dir, the raw HF .json and the raw SentencePiece .model.
    bpe.tokenizer.save(tmp_path / "tok_bpe")
    sp.tokenizer.save(tmp_path / "tok_sp")
    text = docs[0][:200]
    for path, ref in ((tmp_path / "tok_bpe", bpe), (tmp_path / "tok_bpe" / "tokenizer.json", bpe),
                      (tmp_path / "tok_sp" / "tokenizer.model", sp)):
        loaded = TextData(docs[:5], tokenizer_model_path=path, val_split=0.0)
        assert loaded.tokenizer.encode(text) == ref.tokenizer.encode(text), path
    with pytest.raises(LmlabError, match="tokenizer .*nope"):
        TextData(docs[:5], tokenizer_model_path=tmp_path / "nope")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LmlabError, match="bad.json: cannot read it"):
        TextData(docs[:5], tokenizer_model_path=tmp_path / "bad.json")


@pytest.mark.parametrize("kwargs, match", [
    ({"tokenizer": "wordpiece"}, "tokenizer 'wordpiece' is not one of"),
    ({"val_split": 1.0}, "val_split must be in"),
    ({"max_length": 0}, "max_length must be >= 1"),
])
def test_textdata_rejects_bad_arguments(kwargs, match):
    with pytest.raises(LmlabError, match=match):
        TextData(["some text"], **kwargs)


def test_textdata_rejects_empty_input_and_missing_paths(tmp_path):
    with pytest.raises(LmlabError, match="no text"):
        TextData(["", "   "])
    with pytest.raises(LmlabError, match="no such file"):
        TextData([tmp_path / "missing.txt"])


def test_fit_generate_save_load_and_continue(corpus_dir, tmp_path):
    data = TextData(_docs(corpus_dir), tokenizer="char", max_length=32, val_split=0.1, seed=1)
    model = LM(base="transformer", d_model=32, n_layers=1, n_heads=2, vocab_size=data.vocab_size)
    with pytest.raises(LmlabError, match="no weights yet"):
        model.generate("x")
    model.fit(data, epochs=0.5, batch_tokens=8 * 32, lr=3e-3, out_dir=tmp_path / "run", **QUIET)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    steps = max(m["step"] for m in metrics if "loss" in m)
    assert steps == -(-(len(data) // 8) // 2)  # half an epoch of 8-window batches
    assert losses[-1] < losses[0]
    assert any("val_loss" in m for m in metrics)
    greedy = model.generate("The ", max_new_tokens=12, temperature=0)
    saved = model.save(tmp_path / "saved")
    again = LM.load(saved)
    assert again.generate("The ", max_new_tokens=12, temperature=0) == greedy
    assert again.model_section["n_layer"] == 1 and again.base == "transformer"
    with pytest.raises(LmlabError, match="already holds a checkpoint"):
        model.save(saved)
    # A second fit continues from the current weights (a new run, fresh optimizer).
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    model.fit(data, epochs=0.5, batch_tokens=8 * 32, lr=3e-3, out_dir=tmp_path / "run2", **QUIET)
    first = [json.loads(line) for line in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    assert min(m["step"] for m in first if "loss" in m) == 1
    assert max(m["step"] for m in first if "loss" in m) == steps
    assert abs([m["loss"] for m in first if "loss" in m][0] - losses[-1]) < 0.5  # not from scratch
    assert any(not torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    # fit into the same dir again resumes its whole checkpoint and trains as many steps more.
    model.fit(data, epochs=0.5, batch_tokens=8 * 32, lr=3e-3, out_dir=tmp_path / "run2", **QUIET)
    assert latest_snapshot(tmp_path / "run2").meta["step"] == 2 * steps


def test_fit_checks_its_arguments(corpus_dir, tmp_path, monkeypatch):
    data = TextData(_docs(corpus_dir)[:10], tokenizer="char", max_length=16, val_split=0.1)
    model = LM(base="transformer", d_model=32, n_layers=1, n_heads=2, vocab_size=data.vocab_size + 1)
    with pytest.raises(LmlabError, match="vocab_size"):
        model.fit(data, out_dir=tmp_path / "a")
    model = LM(base="transformer", d_model=32, n_layers=1, n_heads=2)
    with pytest.raises(LmlabError, match=r"LM.fit: train.learning_rate = 1.0: unknown key"):
        model.fit(data, learning_rate=1.0, out_dir=tmp_path / "b")
    with pytest.raises(LmlabError, match="ddp='on' needs a distributed launch"):
        model.fit(data, ddp="on", out_dir=tmp_path / "c")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LmlabError, match="ddp='off'"):
        model.fit(data, ddp="off", out_dir=tmp_path / "d")
    with pytest.raises(LmlabError, match="needs out_dir="):
        model.fit(data)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(LmlabError, match="amp must be"):
        model.fit(data, amp="fp8", out_dir=tmp_path / "e")
    assert not any((tmp_path / d).exists() for d in "abcde")  # refused before anything was written
    with pytest.raises(LmlabError, match="unknown base 'mamba'"):
        LM(base="mamba")
    with pytest.raises(LmlabError, match=r"model.sine_params = .*unknown key \(it is model.sine_params of the psann family\)"):
        LM(base="transformer", sine_params={"amp_init": 1.0})
    # its depth is per level (compat now says where n_layer lives; before, an unknown key)
    with pytest.raises(LmlabError, match=r"model.n_layer`?[ =:].*(unknown key|not a key here)"):
        LM(base="abstractinator", n_layers=2)
    with pytest.raises(LmlabError, match="n_head"):
        LM(base="transformer", d_model=30, n_heads=4)


def test_val_data_and_family_options(corpus_dir, tmp_path):
    docs = _docs(corpus_dir)
    train = TextData(docs[:30], tokenizer="char", max_length=32, val_split=0.0)
    val = TextData(docs[30:], tokenizer="char", max_length=32, val_split=0.0)
    model = LM(base="apelr", d_model=32, n_layers=1, n_heads=2, num_plan_states=2, chunk_size=8)
    model.fit(train, val_data=val, epochs=0.3, batch_tokens=4 * 32, lr=3e-3, out_dir=tmp_path / "run", **QUIET)
    assert model.model.cfg.num_plan_states == 2
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["val_tokens"] == len(np.concatenate(train.segments(val.train_texts)))


def test_fit_trains_sharded_with_parallel_fsdp(corpus_dir, tmp_path):
    """Seed 002's ``ddp`` switch picks DDP or none; ``parallel="fsdp"`` shards instead (here on one
    process), and the saved run loads and generates like any other."""
    data = TextData(_docs(corpus_dir)[:10], tokenizer="char", max_length=16, val_split=0.1, seed=1)
    model = LM(base="transformer", d_model=32, n_layers=1, n_heads=2, vocab_size=data.vocab_size)
    model.fit(data, epochs=0.2, batch_tokens=4 * 16, lr=3e-3, out_dir=tmp_path / "run", ddp="off", parallel="fsdp",
              **QUIET)
    snap = latest_snapshot(tmp_path / "run")
    assert snap.meta["config"]["train"]["parallel"] == "fsdp" and "dcp/.metadata" in snap.meta["sha256"]
    assert model.generate("The ", max_new_tokens=4, temperature=0).startswith("The ")


def test_every_family_builds_through_lm_with_its_own_defaults(corpus_dir, tmp_path):
    """LM injects nothing: an argument left unset is the family's default, so the abstractinator
    (no n_layer, no pos_encoding) builds and trains like the others."""
    for base in sorted(FAMILIES):
        lm = LM(base=base)
        assert lm.model_section["family"] == base and "n_layer" not in lm.model_section
    data = TextData(_docs(corpus_dir)[:12], tokenizer="byte", max_length=64, val_split=0.2)
    model = LM(base="abstractinator", preset="tiny", vocab_size=data.vocab_size)
    model.fit(data, epochs=0.05, batch_tokens=4 * 64, lr=3e-3, out_dir=tmp_path / "abs", **QUIET)
    assert model.model.cfg.family == "abstractinator" and latest_snapshot(tmp_path / "abs").meta["step"] >= 1


def test_checkpoint_dir_is_the_run_dir(corpus_dir, tmp_path):
    """Seed 002's checkpoint_dir trains into that folder, loads from it, and its config names it."""
    data = TextData(_docs(corpus_dir)[:10], tokenizer="char", max_length=16, val_split=0.2)
    model = LM(base="transformer", d_model=32, n_layers=1, n_heads=2)
    run = tmp_path / "wrn"
    model.fit(data, epochs=0.1, batch_tokens=4 * 16, lr=3e-3, checkpoint_dir=str(run), **QUIET)
    assert model.run_dir == run and latest_snapshot(run).meta["step"] >= 1
    saved = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
    assert saved["train"]["out_dir"] == str(run)
    assert saved["data"]["sources"][-1]["path"] == str((run / "data" / "texts.jsonl").resolve())
    assert model.generate("The ", max_new_tokens=4, temperature=0).startswith("The ")
    with pytest.raises(LmlabError, match="name two run dirs"):
        model.fit(data, out_dir=tmp_path / "a", checkpoint_dir=str(tmp_path / "b"))


def test_a_run_of_textdata_resumes_through_the_pipeline(corpus_dir, tmp_path):
    """The run dir LM.fit writes is an ordinary one: lmlab train --resume re-reads its sources
    (the kept texts.jsonl) through the pipeline and gets the same split and tokens."""
    from lmlab.cli import main as cli

    data = TextData(_docs(corpus_dir)[:20], tokenizer="char", max_length=16, val_split=0.2)
    model = LM(base="transformer", d_model=32, n_layers=1, n_heads=2)
    model.fit(data, epochs=0.1, batch_tokens=4 * 16, lr=3e-3, out_dir=tmp_path / "run", **QUIET)
    step = latest_snapshot(tmp_path / "run").meta["step"]
    assert cli(["train", "--resume", str(tmp_path / "run"), "--set", f"train.max_steps={step + 2}"]) == 0
    assert latest_snapshot(tmp_path / "run").meta["step"] == step + 2

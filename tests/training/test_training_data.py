"""The trainer on issue-3 data: token cache (sharded, reused, refused), mixing, sources, DDP shards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import lmlab
from lmlab.errors import LmlabError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def qa_jsonl(tmp_path_factory) -> Path:
    """60 distinct Q/A records: a second source for mixing."""
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    rng = np.random.default_rng(0)
    words = "river stone light window garden number music letter answer question".split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(60):
            q = " ".join(rng.choice(words, 8))
            f.write(json.dumps({"question": f"q{i} {q}?", "answer": " ".join(rng.choice(words, 30))}) + "\n")
    return path


def test_token_cache_is_built_reused_refused_and_rebuilt(tiny_config, tmp_path):
    _, raw, run = tiny_config(data={"token_cache": True, "num_workers": 2})
    lmlab.train(raw)
    cache = run / "token_cache"
    shards = sorted(p.name for p in cache.iterdir() if p.is_dir())
    assert shards == ["shard-000-of-002", "shard-001-of-002"]
    assert (cache / "shards.json").is_file() and list((cache / shards[0]).glob("train_*.bin"))
    index = json.loads((cache / shards[0] / "index.json").read_text())
    assert index["dtype"] in ("uint16", "<u2")
    # A second run on the same cache reuses it: the shard files are not rewritten.
    stamp = (cache / shards[0] / "index.json").stat().st_mtime_ns
    raw2 = json.loads(json.dumps(raw))
    raw2["train"]["out_dir"] = str(tmp_path / "second")
    raw2["data"]["token_cache_dir"] = str(cache)
    lmlab.train(raw2)
    assert (cache / shards[0] / "index.json").stat().st_mtime_ns == stamp
    # Other sources: refused while reuse_token_cache is on, rebuilt when it is off.
    raw2["train"]["out_dir"] = str(tmp_path / "third")
    raw2["data"]["min_text_length"] = 50
    with pytest.raises(LmlabError, match=r"cannot be reused: it was built with another data.*reuse_token_cache: false"):
        lmlab.train(raw2)
    raw2["data"]["reuse_token_cache"] = False
    lmlab.train(raw2)
    assert (cache / shards[0] / "index.json").stat().st_mtime_ns != stamp
    # Another tokenizer: refused too (the fingerprint hashes the tokenizer's files).
    raw2["train"]["out_dir"] = str(tmp_path / "fourth")
    raw2["data"]["reuse_token_cache"] = True
    raw2["tokenizer"]["type"] = "byte"
    with pytest.raises(LmlabError, match=r"cannot be reused: it was built with another tokenizer"):
        lmlab.train(raw2)


def test_cache_and_memory_paths_train_identically(tiny_config, tmp_path):
    _, raw, run = tiny_config(data={"token_cache": True})
    lmlab.train(raw)
    raw["data"]["token_cache"] = False
    raw["train"]["out_dir"] = str(tmp_path / "mem")
    lmlab.train(raw)
    a = load_file(run / "checkpoints/current/model.safetensors")
    b = load_file(tmp_path / "mem/checkpoints/current/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_sources_adaptive_mixing_reports_losses_and_weights(tiny_config, qa_jsonl):
    sources = [{"type": "text", "path": str(Path(tiny_config()[1]["data"]["sources"][0]["path"]))},
               {"type": "jsonl", "path": str(qa_jsonl), "fields": ["question", "answer"],
                "format": "Q: {question}\nA: {answer}"}]
    _, raw, run = tiny_config(data={"sources": sources, "adaptive": True, "adaptive_interval_tokens": 256,
                                    "adaptive_smoothing": 0.5},
                              train={"max_steps": 30, "log_interval": 5, "eval_interval": 30})
    lmlab.train(raw)
    rows = [r for r in _metrics(run) if "loss" in r]
    names = json.loads((run / "metrics.json").read_text())["sources"]
    assert len(names) == 2 and names[1].startswith("data.sources[1] jsonl:")
    assert set(rows[-1]["source_loss"]) == set(names) and set(rows[-1]["source_weights"]) == set(names)
    weights = [r["source_weights"][names[1]] for r in rows]
    assert weights[0] != weights[-1] and sum(rows[-1]["source_weights"].values()) == pytest.approx(1.0)
    val = [r for r in _metrics(run) if "val_loss" in r][-1]
    assert set(val["val_loss_by_source"]) == set(names)


def test_hf_source_through_the_trainer(tiny_config, qa_jsonl):
    pytest.importorskip("datasets")
    _, raw, run = tiny_config(data={"sources": [{"type": "hf", "dataset": "json", "data_files": str(qa_jsonl),
                                                 "fields": ["question", "answer"], "format": "{question} {answer}"}]})
    lmlab.train(raw)
    assert json.loads((run / "metrics.json").read_text())["train_tokens"] > 1000


@pytest.mark.skipif(not (SHARED / "pdf").is_dir(), reason="../shared/data/pdf is absent")
def test_pdf_source_through_the_trainer(tiny_config):
    pytest.importorskip("pypdf")
    _, raw, run = tiny_config(data={"sources": [{"type": "pdf", "path": str(SHARED / "pdf" / "dmca.pdf")}]},
                              tokenizer={"type": "byte"})
    lmlab.train(raw)
    assert json.loads((run / "metrics.json").read_text())["train_tokens"] > 20_000


def test_every_source_failing_is_one_error_listing_each(tiny_config, tmp_path):
    _, raw, _ = tiny_config(data={"sources": [{"type": "text", "path": str(tmp_path / "a")},
                                              {"type": "jsonl", "path": str(tmp_path / "b.jsonl")}]})
    with pytest.raises(LmlabError) as e:
        lmlab.train(raw)
    msg = str(e.value)
    assert "no data source could be read" in msg and "data.sources[0]" in msg and "data.sources[1]" in msg


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_ranks_two_workers_read_every_document_once(tiny_config, run_cli, tmp_path):
    """torchrun x2 with 2 cache workers each: 4 shards, disjoint, together exactly the corpus."""
    docs = tmp_path / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as f:
        for i in range(80):
            f.write(json.dumps({"text": f"<doc {i:03d}> " + "words of text " * 10}) + "\n")
    path, raw, run = tiny_config(data={"sources": [{"type": "jsonl", "path": str(docs)}], "token_cache": True,
                                       "num_workers": 2, "val_fraction": 0.1},
                                 tokenizer={"type": "byte"}, train={"batch_size": 2, "max_steps": 4})
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config",
                           str(path)], env=run_cli.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    from lmlab.data.shards import open_sharded_cache
    from lmlab.training.data import fingerprint

    cache = open_sharded_cache(run / "token_cache", fingerprint(lmlab.configure.load_config(run / "config.yaml"), run), 4)
    seen: list[str] = []
    for segments, val in zip(cache.train, cache.val):
        for arr in [*segments, val]:
            text = bytes(int(t) for t in arr if t < 256).decode()
            seen += [piece[:3] for piece in text.split("<doc ")[1:]]
    assert sorted(seen) == [f"{i:03d}" for i in range(80)]  # every document once, none twice
    assert len(cache.train[0]) == 4  # one segment per shard


def test_seed000_fit_bound_spellings_bound_the_tokenizer_fit(tiny_config, tmp_path):
    """data.tokenizer_fit_max_chars stands in for tokenizer.fit_max_chars: a char tokenizer fitted
    on 40 characters knows far fewer characters than one fitted on everything."""
    _, raw, run = tiny_config(data={"tokenizer_fit_max_chars": 40})
    lmlab.train(raw)
    small = json.loads((run / "metrics.json").read_text())["vocab_size"]
    raw["data"].pop("tokenizer_fit_max_chars")
    raw["train"]["out_dir"] = str(tmp_path / "full")
    lmlab.train(raw)
    full = json.loads((tmp_path / "full" / "metrics.json").read_text())["vocab_size"]
    assert small <= 40 + 2 < full


def test_weights_follow_the_sources_that_opened(tiny_config, corpus_dir, tmp_path):
    """A skipped source must not shift source_weights onto its neighbours."""
    md = tmp_path / "md"
    md.mkdir()
    (md / "n.md").write_text("\n\n".join(f"Note {i}: the garden light is on." * 20 for i in range(40)))
    sources = [{"type": "text", "path": str(tmp_path / "missing")}, {"type": "text", "path": str(corpus_dir)},
               {"type": "text", "path": str(md)}]
    _, raw, run = tiny_config(data={"sources": sources, "mix_strategy": "weighted", "source_weights": [1, 1, 8]})
    with pytest.warns(UserWarning, match=r"skipping data.sources\[0\]"):
        lmlab.train(raw)
    weights = [r for r in _metrics(run) if "source_weights" in r][-1]["source_weights"]
    assert weights == pytest.approx({f"data.sources[1] text:{corpus_dir}": 1 / 9, f"data.sources[2] text:{md}": 8 / 9})


def test_an_incomplete_cache_is_rebuilt(tiny_config):
    _, raw, run = tiny_config(data={"token_cache": True})
    lmlab.train(raw)
    (run / "token_cache" / "shards.json").unlink()  # as if the build had crashed before the end
    raw["train"]["max_steps"] = 14
    lmlab.train(raw)
    assert (run / "token_cache" / "shards.json").is_file()

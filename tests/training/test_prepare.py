"""``lmlab prepare``: the tokenizer and token cache built without training, reused by the training
run that follows (one process or torchrun at another world size), its progress, and its refusals."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmlab
from lmlab.configure import load_config
from lmlab.errors import LmlabError
from lmlab.training.prepare import prepare

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")


def _stamps(run: Path, cache: Path | None = None) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of the tokenizer, its fit record and the token cache: a
    rebuild replaces the files (new inodes) or rewrites them (new mtimes)."""
    cache = cache or run / "token_cache"
    files = [*(run / "tokenizer").iterdir(), run / "tokenizer_fit.json", *cache.rglob("*")]
    return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files if f.is_file()}


@pytest.fixture
def two_sources(tiny_config, corpus_dir, tmp_path):
    """A tiny config with a token cache over two sources (the corpus and 30 Q/A records)."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"text": f"question {i}: " + "why is the sky blue " * 8}) + "\n"
                          for i in range(30)), encoding="utf-8")
    sources = [{"type": "text", "path": str(corpus_dir)}, {"type": "jsonl", "path": str(qa)}]
    return tiny_config(data={"sources": sources, "token_cache": True})


def test_prepare_then_train_reuses_both(two_sources, capsys):
    from lmlab.cli import main

    path, raw, run = two_sources
    assert main(["prepare", str(path), "--set", "train.progress=true"]) == 0
    out, err = capsys.readouterr()
    assert "tokenizer: fitted (char, " in out and f"in {run / 'tokenizer'}" in out
    assert f"token cache: built (1 shard) in {run / 'token_cache'}" in out
    # Not a terminal: plain progress lines, no bar.
    assert "tokenizer fit: " in out and " chars in " in out and "\r" not in err
    assert "token cache: " in out and " tokens in " in out and "(done)" in out
    rows = [line.split() for line in out.splitlines() if "data.sources[" in line or "all sources" in line]
    assert [r[4] for r in rows] == ["data.sources[0]", "data.sources[1]", "all"]
    counts = [[int(x.replace(",", "")) for x in r[:4]] for r in rows]
    assert all(c[0] > 0 and c[2] > 0 for c in counts[:2])
    assert counts[2] == [a + b for a, b in zip(counts[0], counts[1])]
    stamps = _stamps(run)

    lmlab.train(raw)  # the same config: nothing is fitted or built again, and it says so
    assert _stamps(run) == stamps
    assert f"lmlab: reusing the tokenizer in {run / 'tokenizer'}, fitted before" in capsys.readouterr().out
    summary = json.loads((run / "metrics.json").read_text())
    assert (summary["train_tokens"], summary["val_tokens"]) == (counts[2][0], counts[2][1])
    # A second prepare (here through --config) finds both reusable, and says so.
    capsys.readouterr()
    assert main(["prepare", "--config", str(path)]) == 0
    again = capsys.readouterr().out
    assert "tokenizer: kept (char" in again and "token cache: reused (1 shard)" in again
    assert "tokenizer fit:" not in again and _stamps(run) == stamps


def test_a_cache_of_any_shard_count_is_reused(tiny_config, tmp_path):
    """World x workers decides how a cache is built, not which caches are read: one built in one
    shard serves a run that would build two, and that run trains on the same tokens."""
    _, raw, run = tiny_config(data={"token_cache": True})
    report = prepare(load_config(None, raw=raw))
    assert report.built and report.shards == 1 and report.tokenizer == "fitted"
    stamps = _stamps(run)
    raw["data"]["num_workers"] = 2  # 2 shards if it built: it must not
    lmlab.train(raw)
    assert _stamps(run) == stamps
    assert sorted(p.name for p in (run / "token_cache").iterdir()) == ["shard-000-of-001", "shards.json"]


def test_the_tokenizer_is_fitted_again_when_its_settings_or_files_change(tiny_config):
    _, raw, run = tiny_config(data={"token_cache": True})
    prepare(load_config(None, raw=raw))
    record = (run / "tokenizer_fit.json").read_text()
    # Other fit settings: fitted again (a new record), so the cache is another tokenizer's: refused.
    changed = load_config(None, ["tokenizer.fit_max_chars=500"], raw=raw)
    with pytest.raises(LmlabError, match=r"cannot be reused: it was built with another tokenizer"):
        prepare(changed)
    assert (run / "tokenizer_fit.json").read_text() != record
    # Back to the first settings: fitted again, to the same files, so the first cache is reused.
    report = prepare(load_config(None, raw=raw))
    assert (report.tokenizer, report.built) == ("fitted", False)
    assert (run / "tokenizer_fit.json").read_text() == record
    # The files edited behind the record's back: not reused either.
    vocab = run / "tokenizer" / "vocab.json"
    vocab.write_text(vocab.read_text() + " ")  # still valid JSON, other bytes
    assert prepare(load_config(None, raw=raw)).tokenizer == "fitted"
    assert prepare(load_config(None, raw=raw)).tokenizer == "reused"
    report = lmlab.prepare(raw)  # the Python API: the same function
    assert (report.tokenizer, report.built) == ("reused", False)


def test_a_run_with_snapshots_keeps_its_tokenizer_and_a_torn_cache_is_refused(tiny_config):
    _, raw, run = tiny_config(data={"token_cache": True})
    lmlab.train(raw)
    tokenizer = {f.name: f.read_bytes() for f in (run / "tokenizer").iterdir()}
    shutil.rmtree(run / "token_cache")
    report = prepare(load_config(None, raw=raw))
    assert (report.tokenizer, report.built) == ("kept", True)
    assert {f.name: f.read_bytes() for f in (run / "tokenizer").iterdir()} == tokenizer
    (run / "token_cache" / "shard-000-of-001" / "train_0.bin").unlink()
    with pytest.raises(LmlabError, match=r"cannot be reused: token cache file .*train_0.bin is missing"):
        prepare(load_config(None, raw=raw))


def test_progress_is_a_bar_on_a_terminal(tiny_config, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    _, raw, run = tiny_config(data={"token_cache": True}, train={"progress": True})
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    prepare(load_config(None, raw=raw))
    assert "tokenizer fit" in term.getvalue() and "token cache" in term.getvalue() and "\r" in term.getvalue()
    assert capsys.readouterr().out == ""  # no plain lines beside the bar
    # progress: false shows nothing at all (a fresh run dir: both are built again).
    monkeypatch.setattr(sys, "stderr", Terminal())
    report = prepare(load_config(None, ["train.progress=false", f"train.out_dir={run}-quiet"], raw=raw))
    assert (report.tokenizer, report.built) == ("fitted", True)
    assert sys.stderr.getvalue() == "" and capsys.readouterr().out == ""


def test_bad_input_is_one_line(tiny_config, tmp_path, capsys, monkeypatch):
    """Through ``lmlab.cli.main`` in this process (a subprocess per case costs ~3 s of imports)."""
    from lmlab.cli import main

    def refused(*argv: str) -> str:
        assert main(["prepare", *argv]) == 2
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in lines[0], lines
        return lines[0]

    path, raw, run = tiny_config(data={"token_cache": True})
    assert "missing.yaml" in refused(str(tmp_path / "missing.yaml"))
    line = refused(str(path), "--set", f"data.sources=[{{type: text, path: {tmp_path / 'nope'}}}]")
    assert "no data source could be read" in line and "data.sources[0]" in line
    line = refused(str(path), "--set", "data.token_cache=false")
    assert "data.token_cache is false" in line and "data.token_cache: true" in line
    assert "give the config once" in refused(str(path), "--config", str(path))
    assert not run.exists()  # a refused prepare leaves no run dir behind
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "not under torchrun" in refused(str(path))


@pytest.mark.slow
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
def test_a_cache_prepared_by_one_process_serves_two_ranks(tiny_config, run_cli):
    """prepare in one process (1 shard), then torchrun x2 with 2 cache workers each (a build would
    make 4 shards): the tokenizer and the cache are reused as they are."""
    path, raw, run = tiny_config(data={"token_cache": True, "num_workers": 2}, train={"batch_size": 2, "max_steps": 4})
    proc = run_cli("prepare", str(path), "--set", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr
    stamps = _stamps(run)
    train = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config",
                            str(path)], env=run_cli.env, capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["world"] == 2
    assert _stamps(run) == stamps
    assert sorted(p.name for p in (run / "token_cache").iterdir()) == ["shard-000-of-001", "shards.json"]

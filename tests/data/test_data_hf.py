"""Hugging Face sources, offline through the local json/text/csv builders (nothing is downloaded)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from lmlab.config import DataConfig, HFSource, NamedSource, TextSource  # noqa: E402
from lmlab.data.sources import iter_documents, open_sources  # noqa: E402
from lmlab.errors import LmlabError  # noqa: E402

pytest.importorskip("datasets", reason="hf sources need the datasets package")


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline even if datasets was imported before the environment was set."""
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


QA = [{"question": f"What is {i}?", "answer": i * 2, "id": i} for i in range(7)]


@pytest.fixture
def qa_jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in QA), encoding="utf-8")
    return path


def test_json_builder_multi_field_format(qa_jsonl: Path) -> None:
    src = HFSource(dataset="json", data_files=str(qa_jsonl), fields=["question", "answer"],
                   format="Q: {question}\nA: {answer}")
    docs = list(iter_documents(src))
    assert [d.text for d in docs] == [f"Q: What is {i}?\nA: {i * 2}" for i in range(7)]
    assert [d.name for d in docs] == [f"train:0:{i}" for i in range(7)]
    assert docs[0].source == f"hf:json[{qa_jsonl}]"
    for n in (2, 3):
        shards = [list(iter_documents(src, shard=(k, n))) for k in range(n)]
        assert all(part == docs[k::n] for k, part in enumerate(shards))


def test_text_and_csv_builders(tmp_path: Path) -> None:
    txt = tmp_path / "lines.txt"
    txt.write_text("first line\nsecond line\n\nfourth line\n", encoding="utf-8")
    docs = list(iter_documents(HFSource(dataset="text", data_files=str(txt))))
    assert [d.text for d in docs] == ["first line", "second line", "", "fourth line"]
    table = tmp_path / "rows.csv"
    table.write_text("body,n\nalpha,1\nbeta,2\n", encoding="utf-8")
    src = HFSource(dataset="csv", data_files=[str(table)], text_field="body")
    assert [d.text for d in iter_documents(src)] == ["alpha", "beta"]
    # blank records are dropped when the source is opened
    (opened,) = open_sources(DataConfig(sources=[HFSource(dataset="text", data_files=str(txt))]))
    assert [d.text for d in opened.documents] == ["first line", "second line", "fourth line"]


def test_missing_field_names_dataset_and_record(qa_jsonl: Path) -> None:
    with pytest.raises(LmlabError) as e:
        list(iter_documents(HFSource(dataset="json", data_files=str(qa_jsonl)), index=3))
    msg = str(e.value)
    assert "dataset 'json' split 'train' file shard 0 record 0" in msg and "no field 'text'" in msg
    assert "fields: question, answer, id" in msg and "data.sources[3]" in msg and "\n" not in msg
    with pytest.raises(LmlabError, match="field 'answer' is int, not a string"):
        list(iter_documents(HFSource(dataset="json", data_files=str(qa_jsonl), text_field="answer")))


def test_unloadable_datasets_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(LmlabError) as e:
        list(iter_documents(HFSource(dataset="lmlab-tests/no-such-dataset"), index=1))
    msg = str(e.value)
    assert msg.startswith("data.sources[1]: cannot load dataset 'lmlab-tests/no-such-dataset'")
    assert "\n" not in msg
    # a packaged builder's local data_files are checked as paths before the builder runs
    with pytest.raises(LmlabError, match=r"data.sources\[0\].data_files .*nope\.jsonl: no such file or folder"):
        list(iter_documents(HFSource(dataset="json", data_files=str(tmp_path / "nope.jsonl"))))


def test_failing_hf_source_is_skipped(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("local text", encoding="utf-8")
    cfg = DataConfig(sources=[HFSource(dataset="lmlab-tests/no-such-dataset"), TextSource(path=str(good))])
    with pytest.warns(UserWarning, match=r"skipping data.sources\[0\] hf:lmlab-tests/no-such-dataset: cannot load"):
        (opened,) = open_sources(cfg)
    assert opened.label == f"data.sources[1] text:{good}"


def test_missing_datasets_package(qa_jsonl: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(LmlabError, match=r"pip install 'lmlab\[data\]'"):
        list(iter_documents(HFSource(dataset="json", data_files=str(qa_jsonl))))


def test_multi_file_datasets_shard_by_file_with_stable_names(tmp_path: Path) -> None:
    """3 data files: 2 or 3 shards take whole files, 5 shards take every 5th record; names (and so
    the train/val split) are the same however the stream is sharded."""
    files = []
    for f in range(3):
        path = tmp_path / f"part{f}.jsonl"
        path.write_text("".join(json.dumps({"text": f"file {f} record {j}"}) + "\n" for j in range(5)))
        files.append(str(path))
    src = HFSource(dataset="json", data_files=files)
    full = list(iter_documents(src))
    assert [d.name for d in full[:6]] == ["train:0:0", "train:0:1", "train:0:2", "train:0:3", "train:0:4", "train:1:0"]
    for n in (2, 3, 5):
        parts = [list(iter_documents(src, shard=(k, n))) for k in range(n)]
        assert sorted(d.name for p in parts for d in p) == sorted(d.name for d in full)
        assert {d.text for d in full} == {d.text for p in parts for d in p}
        if n <= 3:  # whole files: a file's records all land in one shard
            owners = {d.name.split(":")[1]: k for k, p in enumerate(parts) for d in p}
            assert all(owners[d.name.split(":")[1]] == k for k, p in enumerate(parts) for d in p)
        else:
            assert parts[1] == full[1::5]


class _Calls:
    """Counts calls and does what it is told: raise ``error``, or return ``value``."""

    def __init__(self, error: BaseException | None = None, value: object = None) -> None:
        self.n, self.error, self.value = 0, error, value

    def __call__(self, *args: object, **kwargs: object) -> object:
        self.n += 1
        if self.error is not None:
            raise self.error
        return self.value


class _Socket:
    def close(self) -> None:
        pass


def _hub_and_local(tmp_path: Path) -> DataConfig:
    good = tmp_path / "good.txt"
    good.write_text("local text", encoding="utf-8")
    return DataConfig(sources=[NamedSource(name="tinystories"), TextSource(path=str(good))])


def _patch_hub(monkeypatch: pytest.MonkeyPatch, connect: _Calls, load: _Calls) -> None:
    import datasets

    from lmlab.data import hf

    monkeypatch.setattr(hf.socket, "create_connection", connect)
    monkeypatch.setattr(datasets, "load_dataset", load)


def _online(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_offline_env_skips_a_hub_corpus_without_any_call(tmp_path: Path, monkeypatch, capfd) -> None:
    """HF_HUB_OFFLINE=1: a named hub corpus is skipped in one line, and neither the hub client
    nor a connection is tried (no retries, no backoff)."""
    connect, load = _Calls(), _Calls()
    _patch_hub(monkeypatch, connect, load)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.warns(UserWarning) as caught:
        (opened,) = open_sources(_hub_and_local(tmp_path))
    (line,) = [str(w.message) for w in caught]
    assert "data.sources[0] named:tinystories" in line and "HF_HUB_OFFLINE=1 is set" in line and "\n" not in line
    assert (connect.n, load.n) == (0, 0) and opened.index == 1
    assert capfd.readouterr().err == ""


def test_a_first_connection_error_is_one_line_and_never_retried(tmp_path: Path, monkeypatch, capfd) -> None:
    """Online by the environment but the hub unreachable: one connection attempt, no call of the
    hub client (whose retries took half a minute of tracebacks), one line."""
    import socket

    _online(monkeypatch)
    connect, load = _Calls(socket.gaierror(-2, "Name or service not known")), _Calls()
    _patch_hub(monkeypatch, connect, load)
    with pytest.warns(UserWarning) as caught:
        open_sources(_hub_and_local(tmp_path))
    (line,) = [str(w.message) for w in caught]
    assert "cannot reach the Hugging Face hub at huggingface.co:443" in line and "HF_HUB_OFFLINE=1" in line
    assert "\n" not in line and (connect.n, load.n) == (1, 0)
    assert capfd.readouterr().err == ""
    # The hub reachable but the client failing with a connection error: called once, one line.
    connect, load = _Calls(value=_Socket()), _Calls(ConnectionError("Couldn't reach 'x' on the Hub\nretry"))
    _patch_hub(monkeypatch, connect, load)
    with pytest.raises(LmlabError) as e:
        list(iter_documents(NamedSource(name="tinystories")))
    assert (connect.n, load.n) == (1, 1) and "\n" not in str(e.value) and "Couldn't reach" in str(e.value)


def test_ctrl_c_is_never_swallowed_while_a_hub_source_opens(tmp_path: Path, monkeypatch) -> None:
    """A KeyboardInterrupt from the hub client stops open_sources (it is not a source to skip),
    and Ctrl-C during a connection attempt that hangs arrives at once."""
    import signal
    import threading

    _online(monkeypatch)
    _patch_hub(monkeypatch, _Calls(value=_Socket()), _Calls(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        open_sources(_hub_and_local(tmp_path))
    release = threading.Event()
    _patch_hub(monkeypatch, lambda *a, **k: release.wait(60) and _Socket(), _Calls())
    old = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):  # without it, the probe returns after 60 s and no error
            open_sources(_hub_and_local(tmp_path))
    finally:
        timer.cancel()
        release.set()
        signal.signal(signal.SIGINT, old)

"""Run the bad-input catalogue (``catalogue.py``): every case fails in one line naming what was
wrong, exit 2 (``LmlabError`` from the API), no traceback, and the trained run dir present
before it is byte-identical after it. The CLI runs in this process (``lmlab.cli.main``): a
subprocess per case would cost ~3 s of imports each."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

import lmlab
from lmlab import rundir
from lmlab.errors import LmlabError

# The rows are data beside this file (tests run with --import-mode=importlib: no sys.path entry).
CASES = __import__("runpy").run_path(str(Path(__file__).with_name("catalogue.py")))["CASES"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus_dir, make_raw) -> Path:
    """A finished tiny transformer run (two snapshots)."""
    run = tmp_path_factory.mktemp("catalogue") / "run"
    lmlab.train(make_raw(corpus_dir, run, train={"max_steps": 4, "save_interval": 2}))
    return run


def _digest(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def _meta(snap: Path) -> dict:
    return json.loads((snap / rundir.META).read_text())


def _damage(kind: str, run: Path, reseal) -> None:
    import argparse

    import torch

    snap = run / "checkpoints" / "current"
    weights, meta = snap / rundir.WEIGHTS, snap / rundir.META
    if kind == "weights-torn":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif kind == "meta-not-json":
        meta.write_text("{not json")
    elif kind == "old-meta-not-json":  # a snapshot from before SHA256SUMS
        (snap / rundir.SUMS).unlink()
        meta.write_text("{not json")
    elif kind == "meta-edited":
        meta.write_text(meta.read_text().replace('"step": 4', '"step": 5'))
    elif kind == "meta-missing":
        meta.unlink()
    elif kind == "sums-garbage":
        (snap / rundir.SUMS).write_text("garbage\n")
    elif kind == "format-99":
        m = _meta(snap)
        m["format_version"] = 99
        meta.write_text(json.dumps(m))
        reseal(snap)
    elif kind == "not-safetensors":
        torch.save({"w": torch.zeros(3)}, weights)
        reseal(snap)
    elif kind == "trainer-pickle":
        torch.save({"step": 4, "x": argparse.Namespace(a=1)}, snap / rundir.TRAINER)
        reseal(snap)
    elif kind == "trainer-torn":
        data = (snap / rundir.TRAINER).read_bytes()
        (snap / rundir.TRAINER).write_bytes(data[: len(data) // 2])
    elif kind == "config-weights-disagree":
        m = _meta(snap)
        m["config"]["model"]["n_layer"] = 3
        meta.write_text(json.dumps(m))
        reseal(snap)
    elif kind == "no-tokenizer":
        shutil.rmtree(run / "tokenizer")
    elif kind == "no-best":
        shutil.rmtree(run / "checkpoints" / "best", ignore_errors=True)
    elif kind == "tokenizer-meta-corrupt":
        (run / "tokenizer" / "tokenizer_meta.json").write_text("{")
    else:
        raise AssertionError(f"unknown damage {kind!r}")


@pytest.fixture
def places(trained, tmp_path, corpus_dir, make_raw) -> dict[str, str]:
    tmp = tmp_path / "case"
    tmp.mkdir()
    (tmp_path / "file.txt").write_text("The quick brown fox jumps over the lazy dog.\n" * 20)
    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)) * 8)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "emptydir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(make_raw(corpus_dir, tmp / "new")))
    return {"cfg": str(cfg), "run": str(trained), "copy": str(tmp_path / "copy"), "tmp": str(tmp),
            "corpus": str(corpus_dir), "file": str(tmp_path / "file.txt"), "fifo": str(tmp_path / "fifo"),
            "binary": str(tmp_path / "binary.txt"), "empty": str(tmp_path / "empty.txt"),
            "emptydir": str(tmp_path / "emptydir"), "loop": str(tmp_path / "loop"),
            "unreachable": "/proc/lmlab-unreachable/sub"}


def _fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def _call_api(case, places: dict[str, str], corpus: Path, tiny_raw) -> None:
    from lmlab.configure import load_config

    name, *pairs = [_fill(a, places) for a in case.argv]
    kw = {k: yaml.safe_load(v) if k not in ("run_dir", "path", "checkpoints", "tasks", "device") else v
          for k, v in (p.split("=", 1) for p in pairs)}
    if name == "load":
        lmlab.load(**kw)
    elif name == "train":
        out = kw.pop("train.out_dir", places["tmp"] + "/new")
        lmlab.train(tiny_raw(corpus, Path(out)), **kw)
    elif name == "generate":
        lmlab.load(kw.pop("run_dir")).generate("The ", **kw)
    elif name == "evaluate":
        lmlab.evaluate(kw.pop("checkpoints", []), **kw)
    elif name == "load_config":
        load_config(kw["path"])
    else:
        raise AssertionError(f"unknown api call {name!r}")


def test_the_catalogue_has_at_least_100_distinct_cases():
    assert len(CASES) >= 100 and len({c.id for c in CASES}) == len(CASES)


def test_every_class_file_adds_its_rows():
    """The classes (issue 28): each file is read, and each row's id names its class."""
    catalogue = __import__("runpy").run_path(str(Path(__file__).with_name("catalogue.py")))
    counts = catalogue["CLASS_COUNTS"]
    assert set(counts) == set(catalogue["CLASSES"]) and all(n > 0 for n in counts.values()), counts
    prefixes = {"class_paths.py": "path-", "class_integers.py": "int-", "class_readers.py": "reader-"}
    for name, prefix in prefixes.items():
        assert sum(c.id.startswith(prefix) for c in CASES) == counts[name], name


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line_and_changes_nothing(case, places, trained, corpus_dir, make_raw, reseal,
                                                         capsys):
    from lmlab.cli import main

    if case.damage:
        shutil.copytree(trained, places["copy"])
        shutil.rmtree(Path(places["copy"]) / "checkpoints" / "prev")  # nothing to fall back to
        _damage(case.damage, Path(places["copy"]), reseal)
    for name, text in case.files.items():
        target = Path(places["tmp"]) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):  # a file that is not UTF-8 (the readers class)
            target.write_bytes(text)
        else:
            target.write_text(text)
    before = _digest(trained)
    capsys.readouterr()
    if case.api:
        with pytest.raises(LmlabError) as e:
            _call_api(case, places, corpus_dir, make_raw)
        line = str(e.value)
        assert "\n" not in line, line
    else:
        try:
            code = main([_fill(a, places) for a in case.argv])
        except SystemExit as e:  # argparse
            code = e.code
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.strip()]
        assert code == 2, (code, err)
        assert len(lines) == 1 and "Traceback" not in err, err
        line = lines[0]
    if os.environ.get("LMLAB_SHOW_CATALOGUE"):  # read the messages: LMLAB_SHOW_CATALOGUE=1 pytest -s ...
        print(f"\n{case.id}: {line.replace(places['tmp'], '{tmp}').replace(places['run'], '{run}')}")
    for needle in case.needles:
        assert _fill(needle, places) in line, (needle, line)
    assert _digest(trained) == before

"""Paths a user gives (issue 28): run dirs that nest, resume that would move a run, empty and
unreadable inputs, device and seed flags, a full disk's path, --help and --version. The path
class x kind matrix is tests/reliability/class_paths.py; these are what its shape does not fit."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

import lmlab
from lmlab import rundir
from lmlab.cli import main
from lmlab.devices import resolve_device
from lmlab.errors import LmlabError
from lmlab.fsio import (
    atomic_write_text,
    check_input,
    check_output,
    check_writable,
    user_error_line,
    user_io,
)


@pytest.fixture(scope="module")
def run(corpus_dir, tmp_path_factory, make_raw) -> Path:
    return lmlab.train(make_raw(corpus_dir, tmp_path_factory.mktemp("paths") / "run", train={"max_steps": 2}))


def _digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _one_line(capsys, argv: list[str], *needles: str) -> str:
    """``lmlab ARGV`` in this process: exit 2 and one stderr line holding every needle."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------- 1. a run inside another run dir


@pytest.mark.parametrize("inside", ["checkpoints", "checkpoints/current", "a/b/c/d/e"])
def test_a_run_inside_another_run_dir_is_refused_from_the_api(run, corpus_dir, make_raw, inside):
    before = _digest(run)
    with pytest.raises(LmlabError, match=f"is inside run dir {run}"):
        lmlab.train(make_raw(corpus_dir, run / inside))
    assert _digest(run) == before and not (run / "a").exists()


def test_an_empty_out_dir_is_refused_and_the_working_directory_untouched(corpus_dir, make_raw, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LmlabError, match="train.out_dir is empty"):
        lmlab.train(make_raw(corpus_dir, Path("x")), **{"train.out_dir": ""})
    assert list(tmp_path.iterdir()) == []


def test_the_run_dir_itself_and_a_path_back_up_to_it_are_not_inside_it(run):
    assert rundir.check_out_dir(run) == run
    assert rundir.check_out_dir(run / "checkpoints" / "..") == run / "checkpoints" / ".."


# ----------------------------------------------------------------- 2. resume keeps the run in place


def test_resume_with_another_out_dir_is_refused(run, tmp_path, capsys):
    before = _digest(run)
    _one_line(capsys, ["train", "--resume", str(run), "--set", f"train.out_dir={tmp_path / 'other'}"],
              "continues that run in place", f"cp -r {run} NEW_DIR")
    assert not (tmp_path / "other").exists() and _digest(run) == before


# ------------------------------------------------------------------------------- 3. prompts files


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_an_empty_prompts_file_is_refused(run, tmp_path, capsys, text):
    (tmp_path / "p.txt").write_text(text)
    _one_line(capsys, ["sample", "--checkpoint", str(run), "--prompts-file", str(tmp_path / "p.txt")],
              "--prompts-file", "has no prompts")


def test_a_fifo_prompts_file_is_refused_without_opening_it(run, tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo")  # opening it would block: nothing writes to it
    _one_line(capsys, ["sample", "--checkpoint", str(run), "--prompts-file", str(tmp_path / "fifo")],
              "--prompts-file", "is not a regular file (a pipe")


# -------------------------------------------------------------------------------- 5. device names


@pytest.mark.parametrize("name", ["meta", "lazy", "hpu"])
def test_devices_that_do_not_compute_are_refused(name):
    with pytest.raises(LmlabError, match=f"lmlab does not run on {name} devices"):
        resolve_device(name)


def test_sample_on_the_meta_device_is_one_line(run, capsys):
    _one_line(capsys, ["sample", "--checkpoint", str(run), "--device", "meta"], "device 'meta'")


# ----------------------------------------------------------------------------------------- 6. seed


@pytest.mark.parametrize("seed", ["99999999999999999999999", str(2**63), "-1"])
def test_a_seed_numpy_or_torch_cannot_take_is_refused(run, capsys, seed):
    _one_line(capsys, ["sample", "--checkpoint", str(run), "--seed", seed],
              "argument --seed: must be from 0 to 2**63 - 1", f"got {seed}")


def test_the_largest_seed_samples(run, capsys):
    assert main(["sample", "--checkpoint", str(run), "--seed", str(2**63 - 1), "--max-new-tokens", "3"]) == 0
    assert "--- sample 1 ---" in capsys.readouterr().out


# --------------------------------------------------------------------------------- 7. symlink loops


def test_a_symlink_loop_is_named_a_loop(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for path in (tmp_path / "a", tmp_path / "a" / "sub"):
        with pytest.raises(LmlabError, match="a symlink loop"):
            check_input(path, "data.sources[0].path", "any")
        with pytest.raises(LmlabError, match="a symlink loop"):
            check_output(path, "train.out_dir")


def test_checking_an_output_makes_nothing_and_the_write_makes_its_folder(tmp_path):
    assert check_output(tmp_path / "new" / "deeper", "train.out_dir") == tmp_path / "new" / "deeper"
    check_writable(tmp_path / "eval" / "out.json", "--output")  # lmlab eval, before it scores anything
    assert list(tmp_path.iterdir()) == []
    atomic_write_text(tmp_path / "eval" / "out.json", "{}")
    assert (tmp_path / "eval" / "out.json").read_text() == "{}"


# ------------------------------------------------------------------------- 8. a full disk's path


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("how", ["open-write", "write_text"])
def test_a_full_disk_names_the_file_being_written(how):
    with pytest.raises(LmlabError) as e, user_io("training"):
        if how == "open-write":
            with open("/dev/full", "a", encoding="utf-8") as f:
                f.write("row\n")
        else:
            Path("/dev/full").write_text("row\n")
    assert str(e.value) == "training: /dev/full: No space left on device; free some space or write somewhere else"


def test_an_error_without_a_file_and_no_file_in_reach_says_no_path():
    line = user_error_line(OSError(errno.ENOSPC, "No space left on device"), "training")
    assert line == "training: No space left on device; free some space or write somewhere else"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_disk_full_mid_run_names_the_metrics_file(tmp_path, corpus_dir, make_raw, capsys):
    import yaml

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").symlink_to("/dev/full")  # every append meets a full disk
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(make_raw(corpus_dir, out)))
    _one_line(capsys, ["train", "--config", str(tmp_path / "cfg.yaml")],
              f"training: {out / 'metrics.jsonl'}: No space left on device")


# ----------------------------------------------------------------------- 9. a resumed run's family


def test_resume_refuses_another_family_before_reading_its_keys(corpus_dir, make_raw, tmp_path, capsys):
    apelr = lmlab.train(make_raw(corpus_dir, tmp_path / "apelr", model={"family": "apelr", "preset": "tiny",
                                                                         "block_size": 32},
                                 train={"max_steps": 1}))
    line = _one_line(capsys, ["train", "--resume", str(apelr), "--set", "model.family=transformer"],
                     "family transformer != apelr", "a run's family cannot change")
    assert "unknown" not in line


# ----------------------------------------------------------------------------- 10. --help, --version


def test_help_lists_every_command_and_nothing_suppressed(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "==SUPPRESS==" not in out
    for command in ("train", "prepare", "run", "sample", "eval", "config", "import-hf (import-gpt2)",
                    "export-hf (export-gpt2)", "doctor", "compare", "report"):
        assert f"    {command} " in out or f"    {command}\n" in out, command


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"lmlab {lmlab.__version__}\n"


def test_the_python_api_s_import_and_compare_spec_check_their_paths(run, tmp_path):
    """What the CLI checks before a command, the library calls check themselves."""
    from lmlab.compare.spec import load_spec
    from lmlab.interop.gpt2 import import_hf_gpt2
    from lmlab.interop.hf import import_hf

    for do in (import_hf, import_hf_gpt2):
        with pytest.raises(LmlabError, match="inside run dir"):
            do(tmp_path / "no-hf", run / "checkpoints" / "imported")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: c\nout_dir: {run / 'cmp'}\narms: [{{name: a, model: {{preset: tiny}}}}]\n")
    with pytest.raises(LmlabError, match="out_dir .* is inside run dir"):
        load_spec(spec)
    spec.write_text(f"name: c\nout_dir: {tmp_path / 'cmp'}\neval: {{data_dir: {tmp_path / 'nodata'}}}\n"
                    "arms: [{name: a, model: {preset: tiny}}]\n")
    with pytest.raises(LmlabError, match="eval.data_dir .*no such file or folder"):
        load_spec(spec)

"""The abstractinator's report on a text (its patches): byte offsets per level, the HTML page, and
``lmlab report RUN --text``, the family report the model declares (``text_report``)."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from lmlab.models.abstractinator.report import patch_boundaries, render_html, stats_line


def _model(*levels: dict):
    """An untrained tiny abstractinator; each dict updates one copy of the tiny level's entropy settings."""
    from lmlab.configure import build_model_config
    from lmlab.models.abstractinator.config import AbstractinatorConfig
    from lmlab.registry import build_model

    tiny = AbstractinatorConfig.presets["tiny"]["levels"][0]
    lvls = []
    for entropy in levels:
        lv = copy.deepcopy(tiny)
        lv["entropy"].update(entropy)
        lvls.append(lv)
    cfg = build_model_config({"family": "abstractinator", "preset": "tiny", "vocab_size": 257, "levels": lvls})
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _markers(page: str, level: int) -> int:
    return len(re.findall(rf'<span class="patch [^"]*\bL{level}\b', page))


def _shown_text(page: str) -> str:
    import html

    body = page.split('<div class="text">', 1)[1].rsplit("</div>", 1)[0]
    return html.unescape(re.sub(r"<[^>]+>", "", body))


TEXT = "The quick brown fox jumps over the lazy dog. <b>é → ü</b>\nSecond line, 12345!".encode()


def _uneven_model():
    """Level 1 cuts at about half the bytes of TEXT (the threshold is the median byte entropy:
    an untrained model's are all near log 257); level 2 cuts every 3 codes. TEXT spans 2 windows."""
    model = _model({}, {"threshold": 100.0, "max_patch_len": 3})
    with torch.no_grad():
        _, ent = model.levels[0].entropy(torch.tensor([[model.eos_id, *TEXT[:63]]]))
    model.levels[0].entropy.threshold.fill_(float(ent[0, 1:].median()))
    return model


def test_boundaries_of_two_levels_are_sorted_nested_and_in_range():
    model = _uneven_model()
    l1, l2 = patch_boundaries(model, TEXT)
    for starts in (l1, l2):
        assert starts == sorted(set(starts)) and starts[0] == 0 and starts[-1] < len(TEXT)
    assert set(l2) <= set(l1)
    assert len(l2) < len(l1) < len(TEXT)
    assert not model.training


def test_windows_cover_a_text_longer_than_the_context():
    # Only max_patch_len cuts (8 bytes, then 2 codes); windows hold eos + 63 bytes, and the byte
    # after the eos opens a patch (the eos closes its own), so cuts fall every 8 bytes from it.
    model = _model({"threshold": 100.0}, {"threshold": 100.0, "max_patch_len": 2})
    assert model.block_size == 64
    data = bytes(range(32, 132))  # 100 bytes: windows at data offsets 0 and 63
    l1, l2 = patch_boundaries(model, data)
    assert l1 == [0, 8, 16, 24, 32, 40, 48, 56, 63, 71, 79, 87, 95]
    assert l2 == [0, 16, 32, 48, 63, 79, 95]
    assert stats_line(len(data), [l1, l2]) == ("level 1: 13 patches (7.69 bytes/patch); "
                                               "level 2: 7 patches (14.29 bytes/patch)")
    assert patch_boundaries(model, b"") == [[], []]


def test_html_escapes_text_and_marks_each_boundary():
    model = _uneven_model()
    bounds = patch_boundaries(model, TEXT)
    page = render_html(TEXT, bounds, title="tiny <run>")
    assert "&lt;" in page and "&gt;" in page and "tiny &lt;run&gt;" in page
    assert "<b>" not in page and "</b>" not in page
    assert "<script" not in page and "http" not in page  # self-contained
    assert "white-space: pre-wrap" in page
    assert _shown_text(page) == TEXT.decode()
    # One marker per boundary unless two starts fall inside the same multi-byte character.
    chars = {len(TEXT[:b].decode("utf-8", "ignore")) for b in bounds[0]}
    assert _markers(page, 1) == len(chars)
    assert _markers(page, 2) == len({len(TEXT[:b].decode("utf-8", "ignore")) for b in bounds[1]})
    ascii_text = b"a < b & c"
    assert _markers(render_html(ascii_text, [[0, 2, 4, 6], [0, 4]]), 1) == 4
    assert _markers(render_html(ascii_text, [[0, 2, 4, 6], [0, 4]]), 2) == 2
    assert "<td>1</td><td>4</td><td>2.25</td>" in render_html(ascii_text, [[0, 2, 4, 6], [0, 4]])


def test_multibyte_characters_are_never_split():
    data = "é→x".encode()  # 2 + 3 + 1 bytes
    page = render_html(data, [list(range(len(data)))])
    assert _shown_text(page) == "é→x"
    assert _markers(page, 1) == 3  # starts inside a character move to its first byte
    assert 'title="byte 2">→' in page
    # From a model that cuts (nearly) every byte.
    model = _model({"threshold": 0.0})
    text = "naïve → café".encode()
    bounds = patch_boundaries(model, text)
    assert any(b > 0 and (text[b] & 0xC0) == 0x80 for b in bounds[0])  # some starts inside characters
    assert _shown_text(render_html(text, bounds)) == "naïve → café"
    # Invalid UTF-8 shows as U+FFFD, as bytes.decode(errors="replace") does.
    bad = b"a\xffb\xe2\x86"
    assert _shown_text(render_html(bad, [[0, 1, 2, 3, 4]])) == bad.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def abstractinator_run(corpus_dir, tmp_path_factory, make_raw):
    import lmlab

    raw = make_raw(corpus_dir, tmp_path_factory.mktemp("abs") / "run",
                   train={"max_steps": 3, "eval_interval": 3, "save_interval": 3, "log_interval": 1})
    raw["tokenizer"] = {"type": "byte"}
    raw["model"] = {"family": "abstractinator", "preset": "tiny"}
    raw["sample"] = {"prompts": [], "max_new_tokens": 4}
    return lmlab.train(raw)


def test_cli_writes_the_report(abstractinator_run, run_cli, tmp_path):
    res = run_cli("report", str(abstractinator_run), "--text", "Hello <world> → done")
    assert res.returncode == 0, res.stderr
    out = abstractinator_run / "patches.html"
    assert f"wrote {out}" in res.stdout and "level 1: " in res.stdout and "bytes/patch" in res.stdout
    page = out.read_text(encoding="utf-8")
    assert "&lt;" in page and _shown_text(page) == "Hello <world> → done"
    src = tmp_path / "in.txt"
    src.write_text("line one\nline two\n", encoding="utf-8")
    res = run_cli("report", str(abstractinator_run), "--file", str(src), "--out", str(tmp_path / "p.html"))
    assert res.returncode == 0, res.stderr
    assert "line one\nline two" in _shown_text((tmp_path / "p.html").read_text(encoding="utf-8"))


def test_cli_bad_inputs_are_one_line_errors(abstractinator_run, tmp_path, capsys):
    from lmlab.cli import main

    # In-process (no subprocess start-up per case); main() is what ``python -m lmlab`` runs.
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    cases = [([str(abstractinator_run), "--file", str(tmp_path / "missing.txt")], "missing.txt: no such file or folder"),
             ([str(abstractinator_run), "--file", str(bad)], "UnicodeDecodeError"),
             ([str(abstractinator_run), "--text", ""], "the text is empty"),
             ([str(tmp_path / "nope"), "--text", "x"], "nope: no such file or folder")]
    for args, needle in cases:
        capsys.readouterr()
        assert main(["report", *args]) == 2, needle
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and err[0].startswith("lmlab report: error: ") and needle in err[0], err


def test_cli_refuses_a_run_of_another_family(corpus_dir, tmp_path, make_raw, run_cli, one_line_error):
    import lmlab

    run = lmlab.train(make_raw(corpus_dir, tmp_path / "tf", train={"max_steps": 2, "eval_interval": 2,
                                                                    "save_interval": 2}))
    res = run_cli("report", str(run), "--text", "The ")
    one_line_error(res, "the transformer family has no report on a text; families with one: abstractinator (patches)")
    assert not (run / "patches.html").exists()

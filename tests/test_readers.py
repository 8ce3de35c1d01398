"""The one safe reader of config, spec and preset files and ``--set`` values (``lmlab.safeload``):
duplicate keys, alias bombs, deep nesting, empty files and bytes that are not UTF-8 are one line
naming the file and the line. The same cases through each command are catalogue rows
(tests/reliability/class_readers.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmlab.compat.seed001 import read_preset
from lmlab.errors import ConfigError
from lmlab.safeload import MAX_DEPTH, MAX_VALUES, load_file, read_text, safe_json, safe_yaml

REPO = Path(__file__).resolve().parents[1]


def _refused(call, *args) -> str:
    with pytest.raises(ConfigError) as e:
        call(*args)
    line = str(e.value)
    assert "\n" not in line, line
    return line


def _bomb(levels: int, width: int = 10) -> str:
    """A billion laughs: each list holds ``width`` aliases of the one before (width**levels values)."""
    out = ["x0: &x0 [" + ", ".join(["lol"] * width) + "]"]
    out += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(out) + "\n"


def test_a_yaml_key_given_twice_is_refused_with_its_line():
    assert _refused(safe_yaml, "train:\n  lr: 1\nmodel: {}\ntrain:\n  lr: 2\n", "c.yaml") == \
        "c.yaml: line 4: duplicate key 'train' (first at line 1); keep one of them"
    assert "line 3: duplicate key 'lr'" in _refused(safe_yaml, "train:\n  lr: 1\n  lr: 2\n", "c.yaml")
    assert "duplicate key '0x1'" in _refused(safe_yaml, "1: a\n0x1: b\n", "c.yaml")  # one int key, two spellings
    assert safe_yaml("a: {k: 1}\nb: {k: 2}\n", "c.yaml") == {"a": {"k": 1}, "b": {"k": 2}}  # other mappings


def test_a_merge_key_may_be_overridden_but_not_given_twice():
    text = "base: &b {lr: 1, seed: 2}\ntrain:\n  <<: *b\n  lr: 3\n"
    assert safe_yaml(text, "c.yaml")["train"] == {"lr": 3, "seed": 2}
    assert "line 4: duplicate key '<<'" in _refused(safe_yaml, "b: &b {lr: 1}\nt:\n  <<: *b\n  <<: *b\n", "c.yaml")


def test_a_json_key_given_twice_is_refused_with_its_line():
    assert _refused(safe_json, '{"train": {"lr": 1},\n "model": {},\n "train": {}}', "c.json") == \
        "c.json: line 3: duplicate key 'train' (first at line 1); keep one of them"
    assert "duplicate key 'a'" in _refused(safe_json, '{"a": 1, "\\u0061": 2}', "c.json")  # one key, escaped
    # The same key in sibling objects, and braces and quotes inside strings, are not repeats.
    text = '{"a": {"k": 1}, "b": [{"k": 2}, {"k": 3}], "c": "x\\"{[\\"k\\": "}'
    assert safe_json(text, "c.json") == json.loads(text)


def test_an_alias_bomb_is_refused_without_expanding_it():
    small = _bomb(9)  # 10^9 values in ~500 bytes: the kind
    assert len(small) < 800
    assert "c.yaml: its aliases expand to more than 100,000 values (an alias bomb)" in _refused(safe_yaml, small, "c.yaml")
    # 10^30 values: expanding any real part of it would never end, so returning at all shows the
    # loader measures the alias graph instead of walking the tree it stands for.
    assert "alias bomb" in _refused(safe_yaml, _bomb(30), "c.yaml")
    assert "alias bomb" in _refused(safe_yaml, _bomb(40, width=2), "c.yaml")


def test_aliases_within_the_bound_load_and_a_recursive_one_is_refused():
    data = safe_yaml("p: &p ['The ', 'Q: ']\na: {prompts: *p}\nb: {prompts: *p}\n", "c.yaml")
    assert data["a"]["prompts"] == data["b"]["prompts"] == ["The ", "Q: "]
    assert MAX_VALUES >= 10_000
    assert safe_yaml(_bomb(3), "c.yaml")["x2"][0][0] == ["lol"] * 10  # 1,111 values: fine
    assert "line 1: an alias is used inside the collection it names" in _refused(safe_yaml, "a: &a [1, *a]\n", "c.yaml")
    assert "recursive" in _refused(safe_yaml, "a: &a {b: {c: *a}}\n", "c.yaml")


@pytest.mark.parametrize("parse,wrap", [(safe_yaml, "x: {}\n"), (safe_json, '{{"x": {}}}')])
def test_nesting_up_to_the_bound_loads_and_beyond_it_is_one_line(parse, wrap):
    inside = MAX_DEPTH - 1  # the top-level mapping is the first level
    assert parse(wrap.format("[" * inside + "]" * inside), "c") is not None
    for depth in (inside + 1, 3000):  # 3000: the RecursionError
        line = _refused(parse, wrap.format("[" * depth + "]" * depth), "c")
        assert line.startswith("c: line 1: nested deeper than 100 levels"), line


def test_nesting_through_aliases_counts_too():
    text = "a: &a " + "[" * 60 + "1" + "]" * 60 + "\nb: " + "[" * 50 + "*a" + "]" * 50 + "\n"
    assert "nested deeper than 100 levels" in _refused(safe_yaml, text, "c.yaml")


def test_a_yaml_syntax_error_stays_a_yaml_error():
    with pytest.raises(yaml.YAMLError):
        safe_yaml("[a", "--set x")


def test_files_that_are_empty_not_utf8_or_a_loop_are_one_line(tmp_path):
    (tmp_path / "e.yaml").write_text("\n  \n")
    assert _refused(load_file, tmp_path / "e.yaml").endswith("e.yaml: the config file is empty; write the config in it")
    (tmp_path / "c.yaml").write_text("# train:\n#   lr: 1\n")
    assert "c.yaml: the config file is empty (only comments or null)" in _refused(load_file, tmp_path / "c.yaml")
    (tmp_path / "b.yaml").write_bytes(b"train:\n  out_dir: ok\n  name: caf\xe9\n")
    assert "b.yaml: cannot read config: not UTF-8 text (byte 0xe9 at line 3, column 12); save it as UTF-8" in \
        _refused(load_file, tmp_path / "b.yaml")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert "loop: a symlink loop" in _refused(read_text, tmp_path / "loop")
    (tmp_path / "bom.json").write_bytes(b'\xef\xbb\xbf{"train": {"lr": 1}}')  # a BOM is UTF-8
    assert load_file(tmp_path / "bom.json") == {"train": {"lr": 1}}


def test_a_json_file_is_read_as_json(tmp_path):
    (tmp_path / "c.json").write_text("train: {lr: 1}\n")  # YAML, not JSON
    assert "c.json: line 1, column 1: cannot parse config" in _refused(load_file, tmp_path / "c.json")


def test_a_preset_is_read_through_the_safe_reader(tmp_path):
    good = REPO / "configs" / "presets" / "00_best_general.json"
    assert read_preset(good).model.hidden_size > 0
    text = good.read_text()
    assert text.count('"hidden_size"') == 1
    dup = _write(tmp_path / "dup.json", text.replace('"hidden_size"', '"hidden_size": 8, "hidden_size"'))
    line = _refused(read_preset, dup)
    assert "dup.json: line" in line and "duplicate key 'hidden_size'" in line
    assert "empty.json: the preset file is empty" in _refused(read_preset, _write(tmp_path / "empty.json", ""))
    assert "a preset must be a JSON object" in _refused(read_preset, _write(tmp_path / "list.json", "[1]"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

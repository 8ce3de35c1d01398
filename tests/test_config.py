"""Strict config loading: files, --set overrides, presets, one-line errors."""

from __future__ import annotations

import json

import pytest
import yaml

from lmlab.configure import load_config, parse_override, save_config, validate_config
from lmlab.errors import ConfigError
from lmlab.models.transformer import TransformerConfig


def test_defaults_are_pydocs_transformer():
    cfg = load_config()
    assert cfg.data.sources[0].type == "builtin" and cfg.data.sources[0].name == "pydocs"
    assert isinstance(cfg.model, TransformerConfig)
    assert cfg.train.max_steps == 1000


def test_overrides_parse_as_yaml():
    assert parse_override("train.lr=3e-4") == (["train", "lr"], 3e-4)
    assert parse_override("sample.prompts=[a, b]") == (["sample", "prompts"], ["a", "b"])
    assert parse_override("data.sources=[{type: text, path: x}]")[1] == [{"type": "text", "path": "x"}]
    cfg = load_config(overrides=["train.lr=0.01", "model.n_layer=3", "train.compile=true"])
    assert cfg.train.lr == 0.01 and cfg.model.n_layer == 3 and cfg.train.compile is True


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  batch_size: 3\nmodel:\n  preset: tiny\n")
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"train": {"batch_size": 5}, "model": {"preset": "tiny", "d_model": 32}}))
    assert load_config(y).train.batch_size == 3
    cfg = load_config(j)
    assert cfg.train.batch_size == 5 and cfg.model.d_model == 32 and cfg.model.n_layer == 2


def test_preset_then_explicit_keys_win():
    cfg = load_config(raw={"model": {"preset": "tiny", "n_layer": 5}})
    assert cfg.model.n_layer == 5 and cfg.model.d_model == 64


def test_unknown_key_suggests_and_names_source(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  max_step: 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "train.max_step = 10" in msg and "did you mean 'max_steps'" in msg
    assert "\n" not in msg


def test_unknown_key_in_family_and_source_sections():
    with pytest.raises(ConfigError, match=r"--set model.n_layerz: model.n_layerz = 2: unknown key \(did you mean 'n_layer'\?\)"):
        load_config(overrides=["model.n_layerz=2"])
    with pytest.raises(ConfigError, match=r"data.sources\[0\].pth = 'x': unknown key \(did you mean 'path'\?\)"):
        load_config(raw={"data": {"sources": [{"type": "text", "pth": "x"}]}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(raw={"trian": {}})


def test_wrong_type_and_bad_value_name_what_is_allowed():
    with pytest.raises(ConfigError, match=r"train.lr = 'fast': Input should be a valid number"):
        load_config(overrides=["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"train.precision = 'fp8': Input should be 'fp32', 'bf16' or 'fp16'"):
        load_config(overrides=["train.precision=fp8"])
    with pytest.raises(ConfigError, match=r"model.pos_encoding = 'xpos'.*'rope', 'alibi', 'sinusoidal' or 'learned'"):
        load_config(overrides=["model.pos_encoding=xpos"])
    with pytest.raises(ConfigError, match="greater than 0"):
        load_config(overrides=["data.val_fraction=0"])
    with pytest.raises(ConfigError, match="does not match any of the expected tags: 'builtin', 'text', 'jsonl', 'csv', 'pdf', 'hf', 'named'"):
        load_config(raw={"data": {"sources": [{"type": "parquet", "path": "x"}]}})


def test_family_and_preset_misses_list_valid_names():
    with pytest.raises(ConfigError, match="valid families: abstractinator, apelr, psann, transformer"):
        load_config(overrides=["model.family=gpt9"])
    with pytest.raises(ConfigError, match="allowed: gpt2, small, tiny"):
        load_config(overrides=["model.preset=huge"])


def test_budget_exclusive_and_max_tokens_replaces_default_steps():
    cfg = load_config(overrides=["train.max_tokens=5000"])
    assert cfg.train.max_steps is None and cfg.train.max_tokens == 5000
    with pytest.raises(ConfigError, match="set only one of max_tokens and epochs"):
        load_config(overrides=["train.max_tokens=5000", "train.epochs=3"])
    # max_steps beside a token or epoch budget caps it (seed 003: num_epochs with max_steps)
    cfg = load_config(overrides=["train.max_tokens=5000", "train.max_steps=3"])
    assert (cfg.train.max_tokens, cfg.train.max_steps) == (5000, 3)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="config file .*: no such file or folder"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "broken.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse config"):
        load_config(p)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(overrides=["train.lr"])


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(raw={"model": {"preset": "tiny", "vocab_size": 77}}, overrides=["train.lr=0.002"])
    save_config(cfg, tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert raw["model"]["n_layer"] == 2 and raw["model"]["vocab_size"] == 77
    again = validate_config(raw)
    assert again.to_dict() == cfg.to_dict()


def test_unreadable_config_file_is_one_line(tmp_path):
    p = tmp_path / "latin.yaml"
    p.write_bytes(b"train:\n  out_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin.yaml: cannot read config: not UTF-8 text \(byte 0xe9 at line 2, "
                                          r"column 15\); save it as UTF-8"):
        load_config(p)


def test_a_key_given_twice_in_a_config_file_is_refused(tmp_path):
    # The case: the second `train:` silently replaced the first, and the run used defaults.
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_steps: 5\nmodel:\n  preset: tiny\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: line 5: duplicate key 'train' \(first at line 1\)"):
        load_config(p)
    j = tmp_path / "c.json"
    j.write_text('{"train": {"max_steps": 5,\n  "max_steps": 6}}')
    with pytest.raises(ConfigError, match=r"c.json: line 2: duplicate key 'max_steps' \(first at line 1\)"):
        load_config(j)


def test_an_empty_config_file_is_refused_not_read_as_the_defaults(tmp_path):
    for name, text in (("e.yaml", ""), ("c.yaml", "# all commented out\n"), ("n.yaml", "null\n"), ("e.json", " \n")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=f"{name}: the config file is empty"):
            load_config(tmp_path / name)


def test_set_values_are_read_safely():
    with pytest.raises(ConfigError, match=r"--set train.lr: line 1: duplicate key 'a'"):
        load_config(overrides=["train.lr={a: 1, a: 2}"])
    # The 3000-deep list was a RecursionError traceback.
    with pytest.raises(ConfigError, match=r"--set sample.prompts: line 1: nested deeper than 100 levels"):
        parse_override("sample.prompts=" + "[" * 3000 + "]" * 3000)
    assert parse_override("sample.prompts=[a") == (["sample", "prompts"], "[a")  # not YAML: a string, as before


def test_budget_override_replaces_the_files_budget(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  max_tokens: 5000\n")
    cfg = load_config(p, ["train.max_steps=7"])
    assert cfg.train.max_steps == 7 and cfg.train.max_tokens is None
    cfg = load_config(p, ["train.epochs=2"])
    assert cfg.train.epochs == 2 and cfg.train.max_tokens is None and cfg.train.max_steps is None


def test_num_epochs_is_the_seed_spelling_of_epochs():
    cfg = load_config(overrides=["train.num_epochs=2"])
    assert cfg.train.epochs == 2 and cfg.train.max_steps is None
    cfg = load_config(raw={"train": {"num_epochs": 2}}, overrides=["train.max_steps=5"])
    assert cfg.train.max_steps == 5 and cfg.train.epochs is None
    with pytest.raises(ConfigError, match=r"seed 003 `train.num_epochs`: `train.epochs` is set too \(3 vs 2\)"):
        load_config(raw={"train": {"num_epochs": 2, "epochs": 3}})
    # an override in the seed's spelling replaces the file's key
    assert load_config(raw={"train": {"epochs": 3}}, overrides=["train.num_epochs=2"]).train.epochs == 2

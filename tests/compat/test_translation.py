"""The seed dialects (lmlab/compat): every config example in the seeds loads, translated key by
key with a note each; what no table knows still fails, every bad key at once, a moved key saying
where it lives; older run dirs still read; ``lmlab config convert / show``."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from lmlab import compat
from lmlab.cli import main as cli
from lmlab.configure import load_config
from lmlab.errors import ConfigError

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"
# The seeds' examples are data beside this file (--import-mode=importlib: no sys.path entry).
_EX = __import__("runpy").run_path(str(Path(__file__).with_name("seed_examples.py")))
EXAMPLES, ALREADY_LMLAB, _write = _EX["EXAMPLES"], _EX["ALREADY_LMLAB"], _EX["write"]

def _dotted(cfg, key: str):
    node = cfg.to_dict()
    for part in key.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_seed_example_loads_with_a_note_per_key(name, tmp_path):
    path = _write(tmp_path, name)
    notes: list[str] = []
    cfg = load_config(path, notes=notes.append)
    for key, want in EXAMPLES[name][2].items():
        assert _dotted(cfg, key) == want, (key, _dotted(cfg, key), notes)
    assert notes or name in ALREADY_LMLAB, "a seed file says what it translated"
    assert all(line.startswith("seed 0") for line in notes), notes


def test_notes_name_the_seed_the_key_and_where_it_went(tmp_path):
    notes: list[str] = []
    load_config(_write(tmp_path, "seed000-knobs"), notes=notes.append)
    assert "seed 000 `train.plan_mi_weight` -> `model.plan_mi_weight`" in notes
    assert "seed 000 `train.num_workers` -> `data.num_workers`" in notes
    assert any(n.startswith("seed 000 `train.prefetch_factor` -> ignored: ") for n in notes)
    # one note per translated key: nothing translated twice
    assert len(notes) == len(set(notes))


def test_every_config_block_of_the_seeds_is_an_example_here():
    """The examples above are the seeds' own: each YAML/JSON config block and exp_config dict in
    ../shared/seeds matches one of them (so a seed block added later fails here until it is)."""
    if not SEEDS.is_dir():
        pytest.skip(f"{SEEDS} is absent (the seeds sit beside the checkout)")
    ours = [textwrap.dedent(text) for text, _, _ in EXAMPLES.values()]
    ours_norm = {" ".join(t.split()) for t in ours}
    blocks = []
    for path in sorted(SEEDS.glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S):
            body = re.sub(r"^> ?", "", body, flags=re.M)
            if lang == "yaml" or (lang == "json" and '"model"' in body) or "exp_config = {" in body:
                blocks.append((path.name, body))
    assert len(blocks) >= 6, blocks
    for name, body in blocks:
        assert " ".join(body.split()) in ours_norm, f"{name}: a config block with no example here:\n{body}"


# ------------------------------------------------------------------------------------- errors


def test_a_moved_key_says_where_it_lives():
    with pytest.raises(ConfigError, match=r"model.num_plan_states = 4: unknown key \(it is model.num_plan_states of the apelr family\)"):
        load_config(raw={"model": {"family": "transformer", "num_plan_states": 4}})
    with pytest.raises(ConfigError, match=r"train.val_fraction = 0.1: unknown key \(it is data.val_fraction\)"):
        load_config(raw={"train": {"val_fraction": 0.1}})


def test_every_bad_key_at_once_in_one_line():
    with pytest.raises(ConfigError) as e:
        load_config(raw={"train": {"plan_mi_weightt": 1, "foo": 2, "lr": 1e-3},
                         "data": {"streamng": True}, "model": {"family": "apelr", "lr": 3}})
    line = str(e.value)
    assert "\n" not in line and "4 unknown keys" in line
    assert "train.plan_mi_weightt (did you mean model.plan_mi_weight?)" in line
    assert "model.lr (it is train.lr)" in line and "train.foo" in line and "data.streamng" in line


def test_no_misleading_hints():
    """The issue's three: a distant close match is no hint (the table or a home says it instead)."""
    with pytest.raises(ConfigError) as e:
        load_config(raw={"sample": {"num_workers": 2, "chunk_bow_warmup_steps": 3, "matmul_precision": "high"}})
    line = str(e.value)
    assert "num_threads" not in line and "'warmup_steps'" not in line and "'precision'" not in line
    assert "sample.num_workers (it is data.num_workers)" in line
    assert "sample.matmul_precision (it is train.matmul_precision)" in line


def test_a_key_no_table_knows_still_fails(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("model: {base: waveresnet, n_layers: 2, wobble: 3}\n")
    with pytest.raises(ConfigError, match=r"model.wobble = 3: unknown key"):
        load_config(p)


def test_a_dialect_key_and_its_lmlab_key_clash():
    with pytest.raises(ConfigError, match=r"seed 000 `train.plan_mi_weight`: `model.plan_mi_weight` is set too"):
        load_config(raw={"model": {"family": "apelr", "plan_mi_weight": 0.1}, "train": {"plan_mi_weight": 0.2}})
    cfg = load_config(raw={"model": {"family": "apelr", "plan_mi_weight": 0.1}, "train": {"plan_mi_weight": 0.1}})
    assert cfg.model.plan_mi_weight == 0.1  # the same value twice is no clash


def test_refused_spellings_say_what_to_do(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("data: {pack_sequences: false}\nmodel: {rope: false}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    line = str(e.value)
    assert "seed 002 `data.pack_sequences`: false: lmlab packs" in line
    assert "seed 002 `model.rope`: False: without rope, say which positions" in line


def test_python_config_is_read_never_run(tmp_path):
    marker = tmp_path / "ran"
    p = tmp_path / "exp.py"
    p.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
                 "exp_config = {'learning_rate': 5e-4, 'batch_size': 4}\n")
    cfg = load_config(p, notes=lambda _: None)
    assert not marker.exists()
    assert (cfg.train.lr, cfg.train.batch_size, cfg.model.family) == (5e-4, 4, "abstractinator")


def test_python_config_names_every_value_it_cannot_read(tmp_path):
    p = tmp_path / "exp.py"
    p.write_text("import os\nDEVICE = 'cuda'\nexp_config = {\n  'device': DEVICE,\n  'batch_size': os.cpu_count(),\n"
                 "  'learning_rate': 1e-3,\n}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    line = str(e.value)
    assert "2 value(s) of exp_config are not literals" in line
    assert "'device' (line 4: DEVICE)" in line and "'batch_size' (line 5: os.cpu_count())" in line
    p.write_text("config = {}\n")
    with pytest.raises(ConfigError, match="no `exp_config = {...}`"):
        load_config(p)


def test_python_config_refuses_a_key_twice_deep_nesting_and_an_empty_file(tmp_path):
    p = tmp_path / "exp.py"
    cases = {  # ast.literal_eval keeps the last of two keys, silently, at any depth
        "exp_config = {\n  'lr': 1e-3,\n  'lr': 3e-4,\n}\n": "exp.py: line 3: duplicate key 'lr' (first at line 2)",
        "exp_config = {'a': {'b': 1,\n  'b': 2}}\n": "exp.py: line 2: duplicate key 'b' (first at line 1)",
        "exp_config = {'x': " + "[" * 150 + "]" * 150 + "}\n": "exp.py: line 1: nested deeper than 100 levels",
        "exp_config = {'x': " + "[" * 3000 + "]" * 3000 + "}\n": "not valid Python (too many nested parentheses)",
        "exp_config = {'x': " + "-" * 100_000 + "1}\n": "exp.py: nested too deeply for Python to parse",
        "": "exp.py: the config file is empty",
    }
    for text, needle in cases.items():
        p.write_text(text)
        with pytest.raises(ConfigError) as e:
            compat.read_python_dict(p, "exp_config")
        assert needle in str(e.value) and "\n" not in str(e.value), (needle, str(e.value))
    p.write_text("exp_config = {'a': {'b': 1}, 'c': {'b': 2}, 1: 0, 2: [" + "[" * 90 + "]" * 90 + "]}\n")
    assert compat.read_python_dict(p, "exp_config")["c"] == {"b": 2}


def test_a_seed001_preset_given_as_config_is_read_safely(tmp_path, capsys):
    p = tmp_path / "p.json"
    p.write_text('{"model": {"hidden_size": 8, "num_layers": 1,\n "hidden_size": 16}}')
    assert cli(["config", "convert", str(p)]) == 2
    assert "p.json: line 2: duplicate key 'hidden_size' (first at line 1)" in capsys.readouterr().err


def test_seed001_corpus_names():
    cfg = load_config(raw={"data": {"sources": ["c4", {"type": "named", "name": "c4"}]}}, notes=lambda _: None)
    assert [s.name for s in cfg.data.sources] == ["c4_en", "c4_en"]


def test_family_alias():
    cfg = load_config(raw={"model": {"family": "waveresnet", "preset": "tiny"}})
    assert (cfg.model.family, cfg.model.base) == ("psann", "waveresnet")
    with pytest.raises(ConfigError, match="contradicts"):
        load_config(raw={"model": {"family": "waveresnet", "base": "respsann"}})


def test_an_old_run_dirs_saved_keys_still_load():
    """Run dirs saved before the table held these keys wrote them as null: they load as before."""
    raw = {"data": {"tokenizer_fit_max_examples": None, "tokenizer_fit_max_chars": None},
           "tokenizer": {"fit_max_examples": 123}, "train": {"num_epochs": None, "max_steps": 7}}
    notes: list[str] = []
    cfg = load_config(raw=raw, notes=notes.append)
    assert (cfg.tokenizer.fit_max_examples, cfg.train.max_steps, cfg.train.epochs) == (123, 7, None)
    assert notes == []


# ------------------------------------------------------------------------------- config command


def test_config_convert_prints_yaml_that_loads_the_same(tmp_path, capsys):
    for name in ("seed002-waveresnet-small", "seed003-stage1", "seed000-knobs"):
        src = _write(tmp_path, name)
        assert cli(["config", "convert", str(src)]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"# {src} in lmlab's spelling") and "# seed 0" in out
        converted = tmp_path / f"{name}.converted.yaml"
        converted.write_text(out)
        notes: list[str] = []
        assert load_config(converted, notes=notes.append).to_dict() == \
            load_config(src, notes=lambda _: None).to_dict()
        assert notes == []  # already lmlab's spelling


def test_config_show_a_run_and_a_file(tmp_path, capsys, tiny_config):
    path, raw, run = tiny_config(train={"max_steps": 2})
    assert cli(["train", "--config", str(path)]) == 0
    capsys.readouterr()
    for target in (run, run / "checkpoints" / "current", run / "checkpoints" / "current" / "meta.json"):
        assert cli(["config", "show", str(target)]) == 0
        shown = yaml.safe_load(capsys.readouterr().out)
        assert shown["train"]["max_steps"] == 2 and shown["model"]["n_layer"] == 2
    assert cli(["config", "show", str(path), "--set", "train.lr=0.5"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["lr"] == 0.5


def test_tables_are_data_every_rule_is_well_formed():
    for table in compat.tables():
        for rule in (*table.keys.values(), *table.in_dialect.values()):
            kinds = [rule.to is not None, rule.ignore is not None, rule.refuse is not None]
            assert sum(kinds) == 1, rule
            assert rule.transform is None or rule.transform in compat.TRANSFORMS, rule



def test_a_run_dir_saved_with_the_old_fit_spelling_resumes(tiny_config, reseal):
    """Before the tables, data.tokenizer_fit_max_chars sat in the schema and won over
    tokenizer.fit_max_chars; a run dir saved then (config.yaml and meta.json) still resumes."""
    import lmlab
    from lmlab import rundir

    _, raw, run = tiny_config(train={"max_steps": 2})
    lmlab.train(raw)
    cfg_file, snap = rundir.config_path(run), run / "checkpoints" / "current"
    saved = yaml.safe_load(cfg_file.read_text())
    meta = json.loads((snap / "meta.json").read_text())
    for conf in (saved, meta["config"]):  # as an older lmlab wrote them
        conf["data"].update(tokenizer_fit_max_chars=40, tokenizer_fit_max_examples=None)
        conf["train"]["num_epochs"] = None
    cfg_file.write_text(yaml.safe_dump(saved))
    (snap / "meta.json").write_text(json.dumps(meta))
    reseal(snap)
    assert load_config(cfg_file, notes=lambda _: None).tokenizer.fit_max_chars == 40
    assert cli(["train", "--resume", str(run), "--set", "train.max_steps=3"]) == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3

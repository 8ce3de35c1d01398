"""The seeds' configs that train do, at a tiny size, and the seeds' command lines run as
written (lmlab's spelling of the command, the seed's flags and paths)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmlab.cli import main as cli
from lmlab.configure import load_config
from lmlab.errors import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# The seeds' examples are data beside this file (--import-mode=importlib: no sys.path entry).
_EX = __import__("runpy").run_path(str(Path(__file__).with_name("seed_examples.py")))
EXAMPLES, ALREADY_LMLAB, _write = _EX["EXAMPLES"], _EX["ALREADY_LMLAB"], _EX["write"]

# ---------------------------------------------------------------------------- training for real


@pytest.fixture
def in_tmp(tmp_path, monkeypatch, corpus_dir):
    """Run in an empty folder holding the seed 002 corpus at data/sample_texts.txt."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    text = "\n\n".join(p.read_text() for p in sorted(corpus_dir.rglob("*.txt"))[:12])
    (tmp_path / "data" / "sample_texts.txt").write_text(text, encoding="utf-8")
    return tmp_path


TINY = ["train.progress=false", "train.eval_batches=1", "train.eval_interval=2", "sample.max_new_tokens=4"]


def _train(path: Path, *sets: str) -> int:
    argv = ["train", "--config", str(path)]
    for s in (*TINY, *sets):
        argv += ["--set", s]
    return cli(argv)


def test_seed002_yaml_trains_at_a_tiny_size(in_tmp):
    path = _write(in_tmp, "seed002-waveresnet-small")
    assert _train(path, "model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.d_mlp=64",
                  "model.block_size=32", "tokenizer.vocab_size=300", "train.precision=fp32", "train.epochs=null",
                  "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=1") == 0
    run = in_tmp / "runs" / "lm" / "wrn_small"
    assert (run / "checkpoints" / "current").is_dir()
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["family"] == "psann" and saved["model"]["base"] == "waveresnet"


def test_seed002_keys_train_with_their_own_batch_tokens(in_tmp):
    """Nothing overridden but the size: seed 002's batch_tokens, epochs and char tokenizer as written."""
    path = _write(in_tmp, "seed002-keys")
    assert _train(path) == 0
    m = json.loads((in_tmp / "runs" / "lm" / "respsann" / "metrics.json").read_text())
    assert m["vocab_size"] < 120  # the char ("simple") tokenizer


def test_seed000_knobs_train(in_tmp, corpus_dir):
    path = _write(in_tmp, "seed000-knobs")
    assert _train(path, f"data.sources=[{{type: text, path: {corpus_dir}}}]", "model.preset=tiny",
                  "model.n_layer=1", "model.block_size=32", "model.chunk_size=8", "tokenizer.vocab_size=300",
                  "train.max_steps=2", "train.batch_size=2", "train.out_dir=runs/apelr", "train.warmup_steps=1",
                  "train.allow_tf32=false") == 0
    cfg = load_config(in_tmp / "runs" / "apelr" / "config.yaml")
    assert cfg.model.plan_mi_weight == 0.02 and cfg.data.num_workers == 2


def test_seed003_two_stages_train_as_written(in_tmp):
    """Stage 1 (no top model) saves its base; stage 2's `{...}` top model loads it with
    --load_base_from and trains on the frozen levels. Neither file names a run dir: each stage
    trains in its own (runs/<file>), not in stage 1's or `make train`'s runs/default."""
    tiny = ["model.preset=tiny", "train.max_steps=2", "train.batch_size=2", "train.warmup_steps=1"]
    stage1 = _write(in_tmp, "seed003-stage1")
    assert _train(stage1, *tiny) == 0
    assert (in_tmp / "stage1_base.pt").is_file()
    stage2 = _write(in_tmp, "seed003-stage2")
    argv = ["train", "--config", str(stage2), "--load_base_from", "./stage1_base.pt"]
    for s in (*TINY, *tiny):
        argv += ["--set", s]
    assert cli(argv) == 0
    assert sorted(p.name for p in (in_tmp / "runs").iterdir()) == ["seed003-stage1", "seed003-stage2"]
    first = load_config(in_tmp / "runs" / "seed003-stage1" / "config.yaml")
    assert first.model.top_transformer_config is None and first.train.out_dir == "runs/seed003-stage1"
    cfg = load_config(in_tmp / "runs" / "seed003-stage2" / "config.yaml")
    assert cfg.model.load_base_from == "./stage1_base.pt" and cfg.model.top_transformer_config is not None
    assert cfg.train.out_dir == "runs/seed003-stage2"


def test_seed003_one_file_edited_between_the_stages_gets_a_run_dir_per_stage(tmp_path):
    """The seed runs both stages from experiments/exp_config.py, edited in between: the stage
    goes after the file's name. A file that names its checkpoint_dir keeps it."""
    path = tmp_path / "exp_config.py"
    out_dirs = []
    for name in ("seed003-stage1", "seed003-stage2"):
        path.write_text(EXAMPLES[name][0])
        notes: list[str] = []
        out_dirs.append(load_config(path, notes=notes.append).train.out_dir)
        assert any(f"it trains in its own, {out_dirs[-1]}" in n for n in notes), notes
    assert out_dirs == ["runs/exp_config-stage1", "runs/exp_config-stage2"]
    path.write_text("exp_config = {'learning_rate': 1e-3}\n")  # neither stage: the file's name alone
    assert load_config(path, notes=lambda _: None).train.out_dir == "runs/exp_config"
    raw = {"model": {"load_base_from": "./stage1_base.pt"}}  # --load_base_from with a full top model
    assert load_config(path, raw=raw, notes=lambda _: None).train.out_dir == "runs/exp_config"  # not stage 1's
    path.write_text("exp_config = {'checkpoint_dir': './ckpt', 'top_transformer_config': None}\n")
    assert load_config(path, notes=lambda _: None).train.out_dir == "./ckpt"


def _nested_fields() -> dict[str, str]:
    """Every field of the abstractinator's levels, entropy models and top model (and the heads)
    that is neither the model's own nor a section's, with a place it lives."""
    from lmlab.config import AuxiliaryConfig, RunConfig
    from lmlab.models.abstractinator.config import (
        AbstractinatorConfig,
        EntropyModelConfig,
        LevelConfig,
        TopConfig,
    )

    own = set(AbstractinatorConfig.model_fields)
    for f in RunConfig.model_fields.values():
        own |= set(getattr(f.annotation, "model_fields", {}))
    places = {"model.levels[*]": LevelConfig, "model.levels[*].entropy": EntropyModelConfig,
              "model.top_transformer_config": TopConfig, "model.auxiliary": AuxiliaryConfig}
    return {name: f"{where}.{name}" for where, cls in places.items() for name in cls.model_fields if name not in own}


def test_seed003_keys_at_the_wrong_level_say_where_they_live(tmp_path):
    """w_entropy_ce, c_vq_d_c and d_lo_d_c at the top of exp_config (issue 28), and every other
    key of the levels, entropy models and top model, at the top or directly under model."""
    path = tmp_path / "exp_config.py"
    path.write_text("exp_config = {'w_entropy_ce': 0.5, 'c_vq_d_c': 32, 'd_lo_d_c': 16}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, notes=lambda _: None)
    for key, value in (("w_entropy_ce", 0.5), ("c_vq_d_c", 32), ("d_lo_d_c", 16)):
        assert f"`{key}`: not a key here: it is model.levels[*].{key} (one per level); write model.levels: " \
               f"[{{{key}: {value}}}]" in str(e.value)
    # what the line says to write loads
    path.write_text("exp_config = {'model': {'levels': [{'w_entropy_ce': 0.5, 'c_vq_d_c': 32, 'd_lo_d_c': 16}]}}\n")
    assert load_config(path, notes=lambda _: None).model.levels[0].c_vq_d_c == 32
    fields = _nested_fields()
    assert {"w_entropy_ce", "threshold", "vq_beta", "continuous", "value_weight"} <= set(fields)
    for key, home in fields.items():
        for where in ("top", "model"):
            text = f"exp_config = {{'{key}': 1}}\n" if where == "top" else f"exp_config = {{'model': {{'{key}': 1}}}}\n"
            path.write_text(text)
            with pytest.raises(ConfigError) as e:
                load_config(path, notes=lambda _: None)
            line = str(e.value)
            assert "\n" not in line and ": not a key here: it is " in line and home in line, (where, key, line)


def test_a_known_key_in_its_own_place_is_never_refused(tmp_path):
    """The located keys stay valid where they live, and other families are left alone."""
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"model": {"family": "abstractinator", "levels": [
        {"window": 8, "entropy": {"threshold": 2.5}}], "top_transformer_config": {"n_layer": 2}},
        "tokenizer": {"type": "byte"}, "train": {"out_dir": str(tmp_path / "run")}}))
    cfg = load_config(path, notes=lambda _: None)
    assert cfg.model.levels[0].entropy.threshold == 2.5 and cfg.model.top_transformer_config.n_layer == 2
    path.write_text(yaml.safe_dump({"model": {"family": "transformer", "window": 8}}))
    with pytest.raises(ConfigError) as e:  # not the abstractinator's: the schema's own unknown-key line
        load_config(path, notes=lambda _: None)
    assert "not a key here" not in str(e.value) and "model.window" in str(e.value)


def test_seed003_max_steps_caps_num_epochs(in_tmp):
    path = _write(in_tmp, "seed003-training")
    assert _train(path, "model.preset=tiny", "train.batch_size=2", "train.warmup_steps=1") == 0
    m = json.loads((in_tmp / "checkpoints" / "metrics.json").read_text())
    assert m["steps"] == 3  # two epochs of the pydocs corpus are far more than 3 steps


def test_seed003_resume_from_checkpoint_continues_that_run(in_tmp):
    path = _write(in_tmp, "seed003-training")
    tiny = ["model.preset=tiny", "train.batch_size=2", "train.warmup_steps=1"]
    assert _train(path, *tiny, "train.max_steps=2") == 0
    text = path.read_text().replace("'resume_from_checkpoint': None", "'resume_from_checkpoint': './checkpoints/checkpoints/current/model.safetensors'")
    text = text.replace("'checkpoint_dir': './checkpoints',", "")
    path.write_text(text)
    notes: list[str] = []
    cfg = load_config(path, notes=notes.append)
    assert Path(cfg.train.out_dir).resolve() == (in_tmp / "checkpoints").resolve(), notes


# ------------------------------------------------------------------------ the seeds' command lines


@pytest.fixture(scope="module")
def apelr_run(tmp_path_factory, make_raw, corpus_dir):
    """A tiny APEL-R v2 run, as seed 000's quick start trains one."""
    run = tmp_path_factory.mktemp("seedcmd") / "tinystories_smoke"
    raw = make_raw(corpus_dir, run, model={"family": "apelr", "preset": "tiny", "block_size": 96},
                   train={"max_steps": 4, "eval_interval": 4, "save_interval": 4})
    path = run.parent / "tinystories_smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert cli(["train", "--config", str(path)]) == 0  # python -m apelr.train --config configs/...
    return run


SEED000_SAMPLE_COMMANDS = [
    # python -m apelr.sample --checkpoint runs/tinystories_smoke/checkpoint.pt --prompt "Once upon a time"
    ["--prompt", "Once upon a time"],
    # "Sampling Options" 1-9
    ["--prompt", "The ", "--temperature", "0.8", "--top-k", "20", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--lookahead-steps", "2", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--force-state", "1", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--freeze-planner", "--planner-temperature", "0.7", "--max-new-tokens", "8"],
    ["--prompt", "The ", "--lookahead-feedback-scale", "0.1", "--no-async-planner", "--max-new-tokens", "8"],
]


@pytest.mark.parametrize("flags", SEED000_SAMPLE_COMMANDS, ids=lambda f: " ".join(f[2:]) or "quick-start")
def test_seed000_sample_commands(apelr_run, flags, capsys):
    # seed 000's checkpoint path: a file inside the run dir (lmlab reads the run dir's newest snapshot)
    assert cli(["sample", "--checkpoint", str(apelr_run / "checkpoint.pt"), *flags]) == 0
    assert "--- sample 1 ---" in capsys.readouterr().out


def test_seed000_eval_command(apelr_run, tmp_path, capsys):
    """python -m apelr.eval_standard --checkpoints RUN/checkpoint.pt --tasks wikitext2,... --max-examples N
    --max-input-len 96 --output runs/eval_compare.json"""
    data = SHARED_DATA
    if not (data / "eval").is_dir():
        pytest.skip(f"shared eval data not found at {data} (see ../shared/data/MANIFEST.md)")
    out = tmp_path / "eval_compare.json"
    tasks = "wikitext2,lambada_openai,hellaswag,arc_easy,arc_challenge,winogrande_xl,openbookqa,boolq"
    assert cli(["eval", "--checkpoints", str(apelr_run / "checkpoint.pt"), "--tasks", tasks, "--max-examples", "2",
                "--max-input-len", "96", "--output", str(out), "--data-dir", str(data)]) == 0
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["name"] == "tinystories_smoke" and len(run["tasks"]) == 8
    assert "wikitext2" in json.loads((apelr_run / "eval_results.json").read_text())["tasks"]


def test_seed003_resume_flag(in_tmp):
    """python train.py --config experiments/exp_config.py --resume_from_checkpoint <path>"""
    path = _write(in_tmp, "seed003-training")
    tiny = ["model.preset=tiny", "train.batch_size=2", "train.warmup_steps=1"]
    assert _train(path, *tiny, "train.max_steps=2") == 0
    argv = ["train", "--resume_from_checkpoint", str(in_tmp / "checkpoints" / "checkpoints" / "current"),
            "--set", "train.max_steps=3"]
    assert cli(argv) == 0
    assert json.loads((in_tmp / "checkpoints" / "metrics.json").read_text())["steps"] == 3



"""The zero-flag continuous trainer: presets, the picker (through a pseudo-terminal), cycles,
always-resume, rotation with the legacy mirror, tolerant loads, and the real-data-only rule."""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmlab import rundir, runs
from lmlab.configure import validate_config
from lmlab.continuous import run
from lmlab.continuous.picker import choose
from lmlab.continuous.presets import (
    TARGET_TOKENS,
    list_presets,
    load_preset,
    presets_dir,
    to_run_config,
)
from lmlab.errors import ConfigError, LmlabError
from lmlab.training.process import Interrupt

REPO = Path(__file__).resolve().parents[2]


def _preset(corpus: Path, **sections) -> dict:
    raw = {
        "description": "a tiny test preset",
        "model": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "seq_length": 16},
        "train": {"per_gpu_batch_size": 4, "eval_tokens": 256, "eval_interval_tokens": 512,
                  "save_interval_tokens": 256, "log_interval_steps": 4, "warmup_steps": 2, "lr": 3e-3},
        "data": {"sources": [{"type": "text", "path": str(corpus)}], "val_fraction": 0.1, "token_cache": False},
        "tokenizer": {"type": "char"},
        "sample": {"prompts": ["The "], "max_new_tokens": 8},
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return raw


@pytest.fixture
def home(tmp_path, corpus_dir, monkeypatch):
    """A working directory with configs/presets (a default and a second preset); returns a
    writer ``home(name, **sections)`` for more presets, with ``home.dir`` the folder."""
    folder = tmp_path / "configs" / "presets"
    folder.mkdir(parents=True)

    def write(name: str, **sections) -> Path:
        path = folder / f"{name}.json"
        path.write_text(json.dumps(_preset(corpus_dir, **sections)), encoding="utf-8")
        return path

    write("00_best_general", description="the default")
    write("01_best_qa", description="the second one", train={"seed": 3})
    monkeypatch.chdir(tmp_path)
    write.dir = tmp_path
    return write


def _meta(run_dir: Path, name: str = "lm_current") -> dict:
    return json.loads((run_dir / "checkpoints" / name / "meta.json").read_text())


# ------------------------------------------------------------------------------------ presets


def test_curated_presets_validate_and_map():
    folder = REPO / "configs" / "presets"
    names = [n for n, _ in list_presets(folder)]
    assert names[:2] == ["00_best_general", "01_best_qa"]
    for name in names:
        cfg = validate_config(to_run_config(load_preset(folder / f"{name}.json"), name), name)
        assert cfg.train.max_tokens == TARGET_TOKENS and cfg.data.sources


def test_mapping_onto_the_lmlab_config(corpus_dir, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_preset(
        corpus_dir, model={"hidden_size": 48, "num_layers": 3, "num_heads": 4, "seq_length": 64,
                           "options": {"pos_encoding": "rope"}},
        train={"per_gpu_batch_size": 8, "accumulation_steps": 2, "eval_tokens": 5000, "train_tokens": 123,
               "eval_interval_tokens": 10240, "save_interval_tokens": 20480},
        data={"mix_strategy": "adaptive", "sources": [{"type": "text", "path": str(corpus_dir)}] * 2,
              "source_weights": [1.0, 2.0]},
        auxiliary={"enable_value": True, "value_weight": 0.2, "adaptive_min_weight": 0.25})))
    cfg = validate_config(to_run_config(load_preset(path), "p", world=2), str(path))
    m, t, d = cfg.model, cfg.train, cfg.data
    assert (m.d_model, m.n_layer, m.n_head, m.block_size, m.pos_encoding) == (48, 3, 4, 64, "rope")
    assert (t.batch_size, t.grad_accum_steps, t.seq_len, t.max_tokens) == (8, 2, 64, TARGET_TOKENS)
    assert t.eval_batches == 10  # ceil(5000 / (8 * 64))
    assert (t.eval_interval, t.save_interval) == (5, 10)  # 2048 tokens a step with 2 processes
    assert d.adaptive and d.mix_strategy == "weighted" and d.adaptive_min_weight == 0.25
    assert m.auxiliary.enable_value and m.auxiliary.value_weight == 0.2 and not m.auxiliary.enable_policy


def test_auxiliary_may_sit_in_train(corpus_dir, tmp_path):
    path = tmp_path / "p.json"
    raw = _preset(corpus_dir)
    raw["train"]["auxiliary"] = {"enable_policy": True}
    path.write_text(json.dumps(raw))
    assert load_preset(path).auxiliary.enable_policy
    raw["auxiliary"] = {"enable_value": True}
    path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="auxiliary is given twice"):
        load_preset(path)


@pytest.mark.parametrize("edit, match", [
    ({"model": {"hidden_sise": 3}}, r"p.json: model.hidden_sise = 3: unknown key \(did you mean 'hidden_size'\?\)"),
    ({"train": {"per_gpu_batch_size": "big"}}, r"p.json: train.per_gpu_batch_size = 'big': .*integer"),
    ({"data": {"mix_strategy": "random"}}, r"p.json: data.mix_strategy = 'random': .*'adaptive'"),
    ({"auxiliary": {"enable_dynamic": True}}, r"auxiliary.enable_dynamic = True: unknown key"),
    ({"extra": {}}, r"p.json: extra = \{\}: unknown key"),
])
def test_bad_preset_is_a_one_line_error(corpus_dir, tmp_path, edit, match):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(_preset(corpus_dir, **edit)))
    with pytest.raises(ConfigError, match=match) as e:
        load_preset(path)
    assert "\n" not in str(e.value)


def test_unparsable_preset_is_listed_and_refused(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    assert list_presets(tmp_path) == [("a", "(unreadable: JSONDecodeError)")]
    with pytest.raises(ConfigError, match="a.json: line 1, column 2: cannot parse preset"):
        load_preset(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"model": {}, "model": {}}')
    with pytest.raises(ConfigError, match="b.json: line 1: duplicate key 'model'"):
        load_preset(tmp_path / "b.json")


def test_presets_dir_prefers_the_working_directory(tmp_path):
    assert presets_dir(tmp_path) == REPO / "configs" / "presets"
    (tmp_path / "configs" / "presets").mkdir(parents=True)
    assert presets_dir(tmp_path) == tmp_path / "configs" / "presets"


# ------------------------------------------------------------------------------------- picker


def _pick(answers: list[str]) -> tuple[str, str]:
    out, it = io.StringIO(), iter(answers)
    got = choose([("00_a", "first"), ("01_b", "second"), ("02_c", "third")], "00_a",
                 ask=lambda prompt: next(it), out=out, interactive=True)
    return got, out.getvalue()


def test_picker_choices():
    assert _pick([""])[0] == "00_a"
    assert _pick(["2"])[0] == "01_b"
    assert _pick(["02_c"])[0] == "02_c"
    got, shown = _pick(["x", "9", "0", "3"])
    assert got == "02_c" and shown.count("is not a preset") == 3
    assert "[default]" in shown and "second" in shown


def test_picker_without_a_terminal_takes_the_default():
    out = io.StringIO()
    got = choose([("00_a", ""), ("01_b", "")], "00_a", ask=None, out=out, interactive=False)
    assert got == "00_a" and "no terminal attached" in out.getvalue()


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _wait_for(ready, proc, timeout: float = 120) -> None:
    """Poll ``ready()`` while the process (Popen or pexpect child) runs."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.isalive() if hasattr(proc, "isalive") else proc.poll() is None, "the trainer exited early"
        assert time.time() < deadline, "the trainer wrote no snapshot in time"
        time.sleep(0.05)


def _tokens(run_dir: Path) -> int:
    """tokens_seen of lm_current, 0 while there is none (or it is being swapped in)."""
    try:
        return _meta(run_dir)["tokens_seen"]
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("keys, chosen", [([""], "00_best_general"), (["2"], "01_best_qa"),
                                          (["junk", "7", ""], "00_best_general")])
def test_main_py_in_a_terminal(home, keys, chosen):
    """python main.py in a pseudo-terminal: the list, Enter / a number / junk then Enter; it trains
    the chosen preset until Ctrl-C, which keeps the snapshot (exit 130)."""
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, [str(REPO / "main.py")], cwd=str(home.dir), env=_env(),
                          encoding="utf-8", timeout=120)
    child.expect(r"Choose a preset \[1-2, Enter = 00_best_general\]: ")
    assert "the default" in child.before and "the second one" in child.before
    for i, key in enumerate(keys):
        child.sendline(key)
        if i < len(keys) - 1:
            child.expect("is not a preset")
            child.expect("Choose a preset")
    child.expect(f"preset {chosen}: a new model in runs/main")
    _wait_for(lambda: _tokens(home.dir / "runs/main") > 0, child)
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    assert f"resume with: LMLAB_PRESET={chosen} python main.py" in child.before  # the same preset, no question
    run_dir = home.dir / "runs/main"
    meta = _meta(run_dir)
    assert meta["continuous"]["preset"] == chosen and meta["continuous"]["target_tokens"] == TARGET_TOKENS
    assert rundir.latest_snapshot(run_dir).path.name == "lm_current"


def test_main_py_without_a_terminal_takes_the_default_then_resumes(home):
    """No TTY (stdin from /dev/null): the default preset, said so; a second start continues the
    unfinished run at its snapshot (same cycle), via ``lmlab run``."""
    run_dir, first = home.dir / "runs/main", 0
    for i, cmd in enumerate(([sys.executable, str(REPO / "main.py")], [sys.executable, "-m", "lmlab", "run"])):
        proc = subprocess.Popen(cmd, cwd=home.dir, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        need = first + 256 if first else 1  # the second start must go on from the first one's snapshot
        _wait_for(lambda need=need: _tokens(run_dir) >= need, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        assert "no terminal attached: training the default preset 00_best_general" in out
        assert "resume with: LMLAB_PRESET=00_best_general python main.py" in out + err
        if i == 0:
            first = _meta(run_dir)["tokens_seen"]  # the snapshot the interrupt saved
    assert f"continuing cycle 1 at {first:,} of {TARGET_TOKENS:,} tokens" in out
    assert _meta(run_dir)["continuous"]["cycle"] == 1 and _meta(run_dir)["tokens_seen"] > first


# ------------------------------------------------------------------------------------- cycles


def test_cycles_rotate_three_snapshots_and_the_mirror(home, capsys):
    run_dir = run(target_tokens=1024, interactive=False)
    assert _meta(run_dir)["continuous"] == {"preset": "00_best_general", "cycle": 1, "target_tokens": 1024,
                                            "tokens_before": 0}
    first = load_file(run_dir / "checkpoints/lm_current/model.safetensors")
    run(target_tokens=1024, interactive=False)
    assert "cycle 2 from lm_current (1,024 tokens so far), 1,024 more tokens" in capsys.readouterr().out
    ckpt = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["lm_best", "lm_current", "lm_prev", "lm_prev2", "simple_lm_trained"]
    meta = _meta(run_dir)
    assert meta["continuous"] == {"preset": "00_best_general", "cycle": 2, "target_tokens": 1024,
                                  "tokens_before": 1024}
    assert meta["tokens_seen"] == 1024 and meta["config"]["train"]["seed"] == 1338  # a new data order
    for name in ("model.safetensors", "meta.json"):
        assert (ckpt / "simple_lm_trained" / name).read_bytes() == (ckpt / "lm_current" / name).read_bytes()
    assert (run_dir / "history/cycle-001-metrics.jsonl").is_file()
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 4  # the new cycle's own log
    # Cycle 2 started from cycle 1's weights: its first loss is cycle 1's last, not a fresh start.
    hist = [json.loads(x) for x in (run_dir / "history/cycle-001-metrics.jsonl").read_text().splitlines()]
    first_losses = [r["loss"] for r in hist if "loss" in r]
    assert rows[0]["loss"] < first_losses[0] - 0.3
    assert not all(torch.equal(first[k], load_file(ckpt / "lm_current/model.safetensors")[k]) for k in first)


class _StopAfter(Interrupt):
    """The trainer's signal flag, 'interrupted' after ``n`` checks (no signal sent)."""

    def __init__(self, *args, n: int = 12):  # args: the trainer's (resume command, announce)
        super().__init__(*args)
        self.n = n

    @property
    def hit(self) -> bool:
        self.n -= 1
        return self.n < 0

    @hit.setter
    def hit(self, value) -> None:
        pass


def test_an_unfinished_cycle_continues_exactly(home, monkeypatch, capsys):
    import lmlab.training.trainer as loop

    with monkeypatch.context() as m:
        m.setattr(loop, "Interrupt", _StopAfter)
        with pytest.raises(KeyboardInterrupt, match="resume with: LMLAB_PRESET=00_best_general python main.py"):
            run(target_tokens=2048, interactive=False)
    run_dir = home.dir / "runs/main"
    stopped = _meta(run_dir)["tokens_seen"]
    assert 0 < stopped < 2048
    run(target_tokens=2048, interactive=False)
    assert f"continuing cycle 1 at {stopped:,} of 2,048 tokens" in capsys.readouterr().out
    meta = _meta(run_dir)
    assert meta["tokens_seen"] == 2048 and meta["continuous"]["cycle"] == 1
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == list(range(4, 33, 4))  # one unbroken log: 32 steps of 64 tokens


def test_new_cycle_loads_tolerantly_and_extends_positions(home):
    learned = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "options": {"pos_encoding": "learned"}}
    home("00_best_general", model={**learned, "seq_length": 16})
    run_dir = run(target_tokens=512, interactive=False)
    old = load_file(run_dir / "checkpoints/lm_current/model.safetensors")
    home("00_best_general", model={**learned, "seq_length": 32},
         auxiliary={"enable_value": True, "enable_dynamics": True})
    with pytest.warns(UserWarning, match=r"missing tensors \['aux.dynamics"):
        run(target_tokens=512, interactive=False)
    model, _, cfg, _ = runs.load_run(run_dir)
    assert cfg.model.block_size == 32 and model.wpe.weight.shape[0] == 32
    assert cfg.model.auxiliary.enable_value and model.auxiliary_heads is not None
    # Shrinking seq_length later keeps the model's 32 positions and trains on 16-token windows.
    home("00_best_general", model={**learned, "seq_length": 16})
    run(target_tokens=512, interactive=False)
    _, _, cfg, _ = runs.load_run(run_dir)
    assert (cfg.model.block_size, cfg.train.seq_len) == (32, 16)
    assert old["wpe.weight"].shape[0] == 16  # cycle 1's model had 16 positions


def test_another_shape_is_refused_and_keeps_the_model(home):
    run_dir = run(target_tokens=512, interactive=False)
    before = (run_dir / "checkpoints/lm_current/model.safetensors").read_bytes()
    home("00_best_general", model={"hidden_size": 64, "num_layers": 2, "num_heads": 2, "seq_length": 16})
    with pytest.raises(LmlabError, match=r"00_best_general.json: model.hidden_size = 64 but the model in "
                                         r"runs/main has 32; keep the model's shape"):
        run(target_tokens=512, interactive=False)
    assert (run_dir / "checkpoints/lm_current/model.safetensors").read_bytes() == before


def test_every_source_failing_halts_with_the_list(home, tmp_path):
    home("00_best_general", data={"sources": [{"type": "text", "path": str(tmp_path / "nope")},
                                              {"type": "pdf", "path": str(tmp_path / "none")}]})
    with pytest.raises(LmlabError, match=r"no data source could be read: data.sources\[0\] text:.*nope.*; "
                                         r"data.sources\[1\] pdf:.*none"):
        run(target_tokens=512, interactive=False)
    assert not rundir.has_checkpoint(home.dir / "runs/main")


def test_a_core_run_dir_is_not_taken_over(home, tiny_config):
    import lmlab

    _, raw, run_dir = tiny_config(train={"max_steps": 2, "out_dir": str(home.dir / "runs/main")})
    lmlab.train(raw)
    with pytest.raises(LmlabError, match=r"holds the snapshots of lmlab train \(current\)"):
        run(target_tokens=512, interactive=False)


def test_lmlab_train_does_not_take_over_the_continuous_model(home, run_cli, one_line_error):
    run_dir = run(target_tokens=512, interactive=False)
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    out = run_cli("train", "--resume", str(run_dir))
    one_line_error(out, "holds the snapshots of python main.py (lmlab run) (lm_current)")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun is not installed")
def test_torchrun_rank0_asks_and_every_rank_trains_the_choice(home):
    """Two processes: rank 0 asks in the terminal, the answer is broadcast, both train it."""
    pexpect = pytest.importorskip("pexpect")
    script = home.dir / "go.py"
    script.write_text("from lmlab.continuous import run\nrun(target_tokens=1024)\n")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    child = pexpect.spawn(torchrun, ["--nproc_per_node=2", str(script)], cwd=str(home.dir), env=_env(),
                          encoding="utf-8", timeout=240)
    child.expect("Choose a preset")
    child.sendline("2")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert child.before.count("Choose a preset") == 0  # asked once, by rank 0
    assert "world 2" in child.before
    assert _meta(home.dir / "runs/main")["continuous"]["preset"] == "01_best_qa"


# ------------------------------------------------------------------------------- CPU-only picker


def test_cpu_estimates_of_the_curated_presets():
    """On 2 cores the default (8 x 512, 512 tokens) takes weeks per run; the laptop preset fits."""
    from lmlab.continuous.presets import cpu_estimate

    folder = REPO / "configs" / "presets"
    hours, need, fits = cpu_estimate(load_preset(folder / "00_best_general.json"), "00_best_general", 2, 24 << 30)
    assert not fits and hours > 24 * 7 and need < 24 << 30  # too slow, not too big
    hours, need, fits = cpu_estimate(load_preset(folder / "10_cpu_pydocs.json"), "10_cpu_pydocs", 2, 24 << 30)
    assert fits and hours < 24


def test_cpu_picker_marks_presets_and_defaults_to_one_that_fits(home, capsys, monkeypatch):
    run_mod = importlib.import_module("lmlab.continuous.run")  # the package's run() hides the module

    home("00_best_general", description="big", model={"hidden_size": 768, "num_layers": 12, "num_heads": 12,
                                                      "seq_length": 512})
    folder = home.dir / "configs" / "presets"
    assert run_mod._ask(folder, torch.device("cpu"), interactive=False) == "01_best_qa"
    line = capsys.readouterr().out
    assert "training the default preset 01_best_qa (this machine has no GPU; 00_best_general is too slow" in line
    assert "LMLAB_PRESET=00_best_general python main.py" in line
    # in a terminal: every preset marked, Enter takes the one that fits
    out = io.StringIO()

    def in_terminal(presets, default, **kw):
        return choose(presets, default, ask=lambda prompt: "", out=out, **{**kw, "interactive": True})

    monkeypatch.setattr(run_mod, "choose", in_terminal)
    assert run_mod._ask(folder, torch.device("cpu"), interactive=True) == "01_best_qa"
    shown = out.getvalue()
    assert "(too slow for this CPU: ~" in shown and "(fits this CPU: " in shown
    assert "01_best_qa       the second one  (fits this CPU: " in shown and shown.rstrip().endswith("[default]")
    # with a GPU, Enter takes 00_best_general and nothing is marked
    out.truncate(0)
    assert run_mod._ask(folder, torch.device("cuda"), interactive=True) == "00_best_general"
    assert "this CPU" not in out.getvalue()


def test_lmlab_preset_picks_without_a_question(home, monkeypatch):
    monkeypatch.setenv("LMLAB_PRESET", "01_best_qa")
    run_dir = run(target_tokens=256, interactive=True)  # no question asked: stdin is never read
    assert _meta(run_dir)["continuous"]["preset"] == "01_best_qa"
    monkeypatch.setenv("LMLAB_PRESET", "nope")
    with pytest.raises(LmlabError, match="no preset 'nope'"):
        run(target_tokens=256, interactive=True)


def test_the_resume_hint_names_the_preset(home, monkeypatch):
    """LMLAB_PRESET picked it: the hint keeps it, so the resume continues that preset (Enter at
    the picker would take the default and start a new cycle). Under torchrun, torchrun's line."""
    run_mod = importlib.import_module("lmlab.continuous.run")
    plans = []
    monkeypatch.setattr(run_mod, "train", lambda plan: plans.append(plan) or home.dir / "runs/main")
    monkeypatch.setenv("LMLAB_PRESET", "01_best_qa")
    run(target_tokens=256, interactive=True)
    assert plans[0].resume_command == "LMLAB_PRESET=01_best_qa python main.py (or LMLAB_PRESET=01_best_qa lmlab run)"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert run_mod.resume_hint("01_best_qa", 8) == "LMLAB_PRESET=01_best_qa torchrun --nproc_per_node=4 main.py"


def test_a_log_interval_of_one_step_prints_a_line_per_interval_of_time(home, capsys):
    """log_interval_steps: 1 (the seed's default) keeps every row in metrics.jsonl, but the plain
    log (no terminal) has the first step, a line per EVERY_S seconds and the cycle's last step,
    with the time left in the cycle."""
    home("00_best_general", train={"log_interval_steps": 1})
    run_dir = run(target_tokens=1024, interactive=False)
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 17))  # 16 steps of 64 tokens, every one logged
    lines = [line for line in capsys.readouterr().out.splitlines() if " | loss " in line]
    assert lines[0].startswith("step 1/16 | loss ") and " | ETA " in lines[0]
    assert lines[-1].startswith("step 16/16 | loss ") and "ETA" not in lines[-1]
    assert len(lines) < len(steps)  # a line per 30 s, not per step


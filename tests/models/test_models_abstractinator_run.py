"""The abstractinator through the shared trainer, CLI, sampler and evaluation: the two-stage
workflow (stage 2 leaves the base bit-identical), diagnostics, sampling, scoring."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmlab
from lmlab import rundir
from lmlab.configure import build_model_config
from lmlab.errors import ConfigError

LEVEL = {"compressor_layers": 1, "expander_layers": 1, "codebook_size": 32, "c_vq_d_c": 16, "d_lo_d_c": 16,
         "window": 8, "entropy": {"n_layer": 1, "threshold": 2.5, "max_patch_len": 8}}


def _raw(make_raw, corpus_dir, out_dir, **model):
    raw = make_raw(corpus_dir, out_dir)
    raw["tokenizer"] = {"type": "byte"}
    raw["model"] = {"family": "abstractinator", "preset": "tiny", "block_size": 48, "levels": [LEVEL, LEVEL],
                    **model}
    raw["train"].update({"max_steps": 16, "eval_interval": 8, "save_interval": 8})
    raw["sample"] = {"prompts": ["The "], "max_new_tokens": 12}
    return raw


@pytest.fixture(scope="module")
def stages(corpus_dir, tmp_path_factory, make_raw):
    root = tmp_path_factory.mktemp("abstractinator")
    base = root / "stage1_base.safetensors"
    stage1 = lmlab.train(_raw(make_raw, corpus_dir, root / "stage1", top_transformer_config=None,
                              top_lm_loss_weight=0.0, save_base_components_path=str(base)))
    return root, base, stage1


def test_stage_one_writes_the_base_and_logs_every_term(stages):
    root, base, stage1 = stages
    assert base.is_file()
    tensors = load_file(str(base))
    assert tensors and all(k.startswith("levels.") for k in tensors)
    assert any(".entropy." in k for k in tensors) and any(".expander." in k for k in tensors)
    rows = [json.loads(x) for x in (stage1 / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    assert {"recon_l1", "recon_l2", "vq_l1", "vq_l2", "entropy_l1", "entropy_l2"} <= set(train_rows[-1])
    assert "top_lm" not in train_rows[-1]
    assert "val_bpb" in rows[-1] or any("val_bpb" in r for r in rows)
    diag = json.loads((stage1 / "diagnostics.json").read_text())["final"]
    assert [lv["level"] for lv in diag["levels"]] == [1, 2]
    assert diag["bytes_per_top_code"] >= diag["levels"][0]["bytes_per_code"] >= 1.0
    assert 0.0 <= diag["recon_acc_free_running"] <= 1.0
    # the stage-1 base equals the run's own final weights
    own = load_file(str(rundir.latest_snapshot(stage1).path / rundir.WEIGHTS))
    assert all(torch.equal(own[k], v) for k, v in tensors.items())


def test_stage_two_trains_the_top_and_leaves_the_base_bit_identical(stages, make_raw, corpus_dir, run_cli):
    root, base, _ = stages
    raw = _raw(make_raw, corpus_dir, root / "stage2")
    cfg_path = root / "stage2.json"
    cfg_path.write_text(json.dumps(raw), encoding="utf-8")
    res = run_cli("train", "--config", str(cfg_path), "--load-base-from", str(base))
    assert res.returncode == 0, res.stderr
    assert "base tensors from" in res.stdout
    weights = load_file(str(rundir.latest_snapshot(root / "stage2").path / rundir.WEIGHTS))
    before = load_file(str(base))
    for k, v in before.items():
        assert torch.equal(weights[k], v), k  # weights and buffers (EMA codebooks) alike
    assert any(k.startswith("top.") for k in weights)
    rows = [json.loads(x) for x in (root / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert "top_lm" in [r for r in rows if "loss" in r][-1]
    # the config keeps the base path; sampling and eval need no config and no base file
    lm = lmlab.load(root / "stage2")
    assert lm.config.model.load_base_from == str(base)
    text = lm.generate("The ", max_new_tokens=12, temperature=1.0, seed=1, stop_on_eos=False)
    assert text.startswith("The ") and len(text.encode("utf-8", "surrogateescape")) >= 4
    res = run_cli("sample", "--checkpoint", str(root / "stage2"), "--prompt", "The ", "--max-new-tokens", "8")
    assert res.returncode == 0, res.stderr
    # resuming stage 2 keeps the base frozen and does not need to re-read the base file
    moved = root / "moved_base.safetensors"
    base.rename(moved)
    try:
        res = run_cli("train", "--resume", str(root / "stage2"), "--set", "train.max_steps=20")
        assert res.returncode == 0, res.stderr
    finally:
        moved.rename(base)
    weights = load_file(str(rundir.latest_snapshot(root / "stage2").path / rundir.WEIGHTS))
    assert all(torch.equal(weights[k], v) for k, v in before.items())


def test_missing_base_file_is_one_line_error(stages, make_raw, corpus_dir, run_cli, tmp_path, one_line_error):
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(_raw(make_raw, corpus_dir, tmp_path / "r")), encoding="utf-8")
    res = run_cli("train", "--config", str(cfg_path), "--load-base-from", str(tmp_path / "nope.safetensors"))
    one_line_error(res, "--load-base-from")
    res = run_cli("train", "--config", str(cfg_path), "--set", "tokenizer.type=char")
    one_line_error(res, "tokenizer.type: byte")


def test_a_run_from_before_loss_per_byte_resumes_with_the_seed_weighting(stages, make_raw, corpus_dir, run_cli,
                                                                          tmp_path, one_line_error):
    """A run dir written before ``loss_per_byte`` existed (no key in config.yaml or any snapshot's
    meta.json, as an older lmlab wrote them: no SHA256SUMS over meta.json) continues with
    ``--resume`` under the weighting it trained with, and ``config show`` says so; its old config
    file fed to ``--config`` again asks for the new default and is refused in one line."""
    old = tmp_path / "old"
    shutil.copytree(stages[2], old)
    cfg_path = rundir.config_path(old)
    cfg_path.write_text("\n".join(x for x in cfg_path.read_text().splitlines() if "loss_per_byte" not in x) + "\n")
    for meta_path in (old / "checkpoints").glob("*/meta.json"):
        meta = json.loads(meta_path.read_text())
        del meta["config"]["model"]["loss_per_byte"], meta["checksums"]
        meta_path.write_text(json.dumps(meta))
        (meta_path.parent / "SHA256SUMS").unlink()
    shown = run_cli("config", "show", str(old))
    assert shown.returncode == 0, shown.stderr
    assert "loss_per_byte: false" in shown.stdout
    res = run_cli("train", "--config", str(cfg_path), "--set", f"train.out_dir={old}", "--set", "train.max_steps=24")
    one_line_error(res, "model.loss_per_byte = False but the config asks for True")
    res = run_cli("train", "--resume", str(old), "--set", "train.max_steps=24")
    assert res.returncode == 0, res.stderr
    assert rundir.latest_snapshot(old).step == 24


def test_entropy_stack_loads_frozen_from_a_run_dir(stages, make_raw, corpus_dir, tmp_path):
    _, _, stage1 = stages
    raw = _raw(make_raw, corpus_dir, tmp_path / "ent", load_entropy_from=str(stage1))
    raw["train"]["max_steps"] = 4
    run = lmlab.train(raw)
    first = load_file(str(rundir.latest_snapshot(stage1).path / rundir.WEIGHTS))
    now = load_file(str(rundir.latest_snapshot(run).path / rundir.WEIGHTS))
    ent = [k for k in first if ".entropy." in k]
    assert ent and all(torch.equal(now[k], first[k]) for k in ent)
    moved = [k for k in first if k.startswith("levels.") and ".compressor." in k and not torch.equal(now[k], first[k])]
    assert moved  # the rest of the base trains


def test_eval_scores_two_part_bits_per_byte(stages, tmp_path):
    _, _, stage1 = stages
    doc = tmp_path / "doc.txt"
    doc.write_text("The quick brown fox jumps over the dog.", encoding="utf-8")  # one window of 48
    report = lmlab.evaluate(stage1, f"file:{doc}")
    assert report["runs"][0]["checkpoint"]["family"] == "abstractinator"
    bpb = report["runs"][0]["tasks"][f"file:{doc}"]["metrics"]["bits_per_byte"]["value"]
    data = doc.read_bytes()
    lm = lmlab.load(stage1)
    nats = -float(lm.model.log_probs(torch.tensor([[256, *data]])).sum())
    assert bpb == pytest.approx(nats / math.log(2) / len(data), rel=1e-4)


# Run under torchrun: trains, and after every step gathers each rank's buffers (codebooks, EMA
# counts and sums, code-space moments, thresholds) and records the largest difference to rank 0.
_RANKS_AGREE = """
import json, os, sys
from pathlib import Path
import torch, torch.distributed as dist
import lmlab
from lmlab.models.abstractinator.model import AbstractinatorPyramid

apply, worst = AbstractinatorPyramid.on_step_end, [0.0, 0]

def checked(self):
    apply(self)
    for name, buf in sorted(self.named_buffers()):
        got = [torch.zeros_like(buf) for _ in range(dist.get_world_size())]
        dist.all_gather(got, buf.contiguous())
        worst[0] = max([worst[0]] + [float((g.double() - got[0].double()).abs().max()) for g in got])
    worst[1] += 1

AbstractinatorPyramid.on_step_end = checked
lmlab.train(json.loads(Path(sys.argv[1]).read_text()))
Path(sys.argv[2] + "." + os.environ["RANK"]).write_text(json.dumps(worst))
"""


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_ranks_equal_one_process_with_accumulation(make_raw, corpus_dir, run_cli, tmp_path):
    """torchrun x2 (a micro-batch of 2 each) == one process taking the same two micro-batches
    with 2 accumulation steps, to 1e-5: the quantisers' EMA counts and sums, dead-code resets, FSQ's usage counts,
    tracked thresholds and code-space moments move once per step by the whole step's statistics.
    Every rank holds the same buffers after every step."""
    level = {**LEVEL, "entropy": {"n_layer": 1, "target_patch_len": 3, "max_patch_len": 8}}
    fsq = {k: v for k, v in level.items() if k not in ("codebook_size", "c_vq_d_c")}
    # level 1 a learnt codebook (EMA sums, resets), level 2 FSQ (usage counts)
    raw = _raw(make_raw, corpus_dir, tmp_path / "ddp", levels=[level, {**fsq, "fsq_levels": [4, 4, 3]}])
    raw["train"].update({"max_steps": 8, "batch_size": 2, "eval_interval": 8, "save_interval": 8, "log_interval": 1})
    path = tmp_path / "ddp.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    script = tmp_path / "ranks_agree.py"
    script.write_text(_RANKS_AGREE, encoding="utf-8")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), str(path),
                           str(tmp_path / "worst")], env=run_cli.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        worst, steps = json.loads((tmp_path / f"worst.{rank}").read_text())
        assert steps == 8 and worst == 0.0  # identical codebooks, counts, moments, thresholds
    one = {**raw, "train": {**raw["train"], "out_dir": str(tmp_path / "one"), "grad_accum_steps": 2}}
    lmlab.train(one)
    torch.testing.assert_close(torch.tensor(_losses(tmp_path / "ddp")), torch.tensor(_losses(tmp_path / "one")),
                               atol=1e-5, rtol=1e-5)
    a = load_file(str(rundir.latest_snapshot(tmp_path / "ddp").path / rundir.WEIGHTS))
    b = load_file(str(rundir.latest_snapshot(tmp_path / "one").path / rundir.WEIGHTS))
    assert a.keys() == b.keys() and a["levels.0.entropy.tracked"].item() is True
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)
    diag = json.loads((tmp_path / "ddp" / "diagnostics.json").read_text())["final"]
    assert diag["levels"][0]["symbols_per_code"] > 1.0


def test_levels_train_in_stages_with_base_levels(make_raw, corpus_dir, tmp_path):
    """Level 1 alone, then level 2 on the frozen level 1 (base_levels: 1), then the top model."""
    base1, base2 = tmp_path / "base1.safetensors", tmp_path / "base2.safetensors"
    raw = _raw(make_raw, corpus_dir, tmp_path / "l1", levels=[LEVEL], top_transformer_config=None,
               top_lm_loss_weight=0.0, save_base_components_path=str(base1))
    raw["train"]["max_steps"] = 4
    lmlab.train(raw)
    raw = _raw(make_raw, corpus_dir, tmp_path / "l2", top_transformer_config=None, top_lm_loss_weight=0.0,
               load_base_from=str(base1), base_levels=1, save_base_components_path=str(base2))
    raw["train"]["max_steps"] = 4
    lmlab.train(raw)
    first, both = load_file(str(base1)), load_file(str(base2))
    assert first and all(k.startswith("levels.0.") for k in first)
    assert all(torch.equal(both[k], v) for k, v in first.items())  # level 1 frozen, bit-identical
    assert any(k.startswith("levels.1.") for k in both)
    with pytest.raises(ConfigError, match="base_levels = 3"):
        build_model_config({"family": "abstractinator", "levels": [LEVEL], "load_base_from": "x",
                                         "base_levels": 3})


def test_every_eval_logs_per_level_diagnostics(stages):
    """Each eval row (metrics.jsonl) and metrics.json carry the per-level numbers: code usage and
    perplexity, bytes per code, reconstruction (teacher-forced, free-running) and the two-part
    bits by part, which add up to the run's held-out bits per byte on the same windows."""
    _, _, stage1 = stages
    rows = [json.loads(line) for line in (stage1 / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [8, 16]
    keys = {f"l{i}_{k}" for i in (1, 2) for k in ("code_usage", "code_perplexity", "bytes_per_code", "recon_acc_tf")}
    keys |= {"bytes_per_top_code", "recon_acc_free_running", "recon_acc_free_running_aligned", "bpb_level1",
             "bpb_level2", "bpb_top", "top_bits_per_code", "top_gain_bits", "byte_lm_bpb", "codes_gain_bpb"}
    summary = json.loads((stage1 / "metrics.json").read_text())
    for row in (*evals, summary):
        assert keys <= row.keys()
        assert 0 < row["l1_code_usage"] <= 1 and 1 <= row["l1_code_perplexity"] <= 32
        assert row["bytes_per_top_code"] == row["l2_bytes_per_code"] >= row["l1_bytes_per_code"] >= 1
        assert 0 <= row["recon_acc_free_running"] <= 1
    parts = summary["bpb_level1"] + summary["bpb_level2"] + summary["bpb_top"]
    assert parts == pytest.approx(summary["val_bpb"], rel=1e-4)


REPO = Path(__file__).resolve().parents[2]


def test_the_stack_smoke_recipe_trains_two_levels_and_logs_both(tmp_path, monkeypatch):
    """configs/abstractinator/stack_smoke.yaml (shortened): two jointly trained levels whose
    per-level diagnostics reach metrics.json, every level using codes on held-out data."""
    if not (REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip("../shared/data/tinyshakespeare is absent (the recipe trains on it)")
    monkeypatch.chdir(REPO)
    lmlab.train(str(REPO / "configs" / "abstractinator" / "stack_smoke.yaml"),
                **{"train.out_dir": str(tmp_path / "run"), "train.max_steps": 6, "train.eval_interval": 6,
                   "train.eval_batches": 2, "train.num_threads": 1, "sample.max_new_tokens": 4})
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for i in (1, 2):
        assert 0 < summary[f"l{i}_code_usage"] <= 1 and summary[f"l{i}_bytes_per_code"] >= 1
    parts = summary["bpb_level1"] + summary["bpb_level2"] + summary["bpb_top"]
    assert parts == pytest.approx(summary["val_bpb"], rel=1e-4)


def test_causal_decoding_trains_samples_and_scores_through_the_shared_layers(make_raw, corpus_dir, tmp_path):
    """decoding: causal through the trainer, sampler and eval: its eval rows carry the code
    statistics and one part (the bytes' own cost, which is the run's val_bpb), no reconstruction
    or top-model keys; samples are written; lmlab eval scores the next-byte log-probs."""
    raw = _raw(make_raw, corpus_dir, tmp_path / "causal", decoding="causal",
               levels=[{**LEVEL, "entropy": {"n_layer": 1, "target_patch_len": 3, "max_patch_len": 8}}, LEVEL])
    run = lmlab.train(raw)
    summary = json.loads((run / "metrics.json").read_text())
    assert {"l1_code_usage", "l2_code_usage", "l2_bytes_per_code", "bpb_bytes", "byte_lm_bpb"} <= summary.keys()
    assert not {k for k in summary if "recon_acc" in k or k.startswith("top_") or k == "bpb_top"}
    assert summary["bpb_bytes"] == pytest.approx(summary["val_bpb"], rel=1e-4)
    assert (run / "samples.txt").is_file() and "--- sample 1 ---" in (run / "samples.txt").read_text()
    doc = tmp_path / "doc.txt"
    doc.write_text("The quick brown fox jumps over the dog.", encoding="utf-8")
    report = lmlab.evaluate(run, f"file:{doc}")
    bpb = report["runs"][0]["tasks"][f"file:{doc}"]["metrics"]["bits_per_byte"]["value"]
    lm = lmlab.load(run)
    ids = torch.tensor([[256, *doc.read_bytes()]])
    logits = lm.model(ids).logits[:, :-1]
    nats = -float(torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).sum())
    assert bpb == pytest.approx(nats / math.log(2) / (ids.size(1) - 1), rel=1e-4)

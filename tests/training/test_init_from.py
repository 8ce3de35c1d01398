"""``train.init_from``: a new run from a run dir's, a snapshot's or an HF folder's weights, on other
data, with a fresh optimizer, schedule and data position; the model config and tokenizer come with
the weights; shape-changing keys and other tokenizers are refused by name; seed 000's
``resume_from`` beside ``out_dir`` is it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from lmlab import rundir
from lmlab.cli import main
from lmlab.configure import load_config
from lmlab.errors import LmlabError
from lmlab.runs import load_run
from lmlab.training.loop import train

TEXT = "A new corpus about ships and harbours. The ship sails at dawn; the harbour sleeps.\n" * 40


@pytest.fixture(scope="module")
def base_run(corpus_dir, make_raw, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    train(load_config(None, raw=make_raw(corpus_dir, run), notes=lambda _: None))
    return run


@pytest.fixture
def new_text(tmp_path) -> Path:
    """A folder of a dozen short documents (a corpus the base run never saw)."""
    path = tmp_path / "ships"
    path.mkdir()
    for i in range(12):
        (path / f"{i}.txt").write_text(f"Log {i}. " + TEXT, encoding="utf-8")
    return path


def _raw(new_text: Path, out: Path, init_from: Path, **train) -> dict:
    """A config as a user writes it: data and budget, no model or tokenizer section."""
    return {
        "data": {"sources": [{"type": "text", "path": str(new_text)}], "val_fraction": 0.1},
        "train": {"out_dir": str(out), "init_from": str(init_from), "batch_size": 4, "max_steps": 4, "lr": 1e-3,
                  "warmup_steps": 1, "log_interval": 2, "eval_interval": 4, "eval_batches": 1, "save_interval": 4,
                  "progress": False, "num_threads": 1, **train},
        "sample": {"prompts": ["The "], "max_new_tokens": 4},
    }


def test_a_new_run_starts_from_the_weights_on_new_data(base_run: Path, new_text: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    cfg = load_config(None, raw=_raw(new_text, out, base_run, lr=1e-9, min_lr=0.0, max_steps=2),
                      notes=lambda _: None)
    base_model, base_tok, base_cfg, _ = load_run(base_run)
    assert cfg.model.model_dump() == base_cfg.model.model_dump()  # the model config came with the weights
    train(cfg)
    model, tok, run_cfg, snap = load_run(out)
    assert snap.step == 2 and snap.meta["tokens_seen"] == 2 * 4 * 32  # a fresh schedule and data position
    assert rundir.TRAINER in snap.meta["sha256"]  # a run of its own, resumable bit-exactly from here
    assert run_cfg.data.sources[0].path == str(new_text)
    for name in ("tokenizer_meta.json", "vocab.json"):  # the tokenizer came with the weights
        a, b = rundir.tokenizer_dir(base_run) / name, rundir.tokenizer_dir(out) / name
        assert not a.exists() or a.read_bytes() == b.read_bytes()
    assert tok.vocab_size == base_tok.vocab_size
    base = base_model.state_dict()
    for k, v in model.state_dict().items():  # lr 1e-9: still the base run's weights
        assert torch.allclose(v, base[k], atol=1e-6), k
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert min(r["step"] for r in rows if "step" in r) >= 1


def test_the_run_continues_from_its_own_snapshot(base_run: Path, new_text: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    raw = _raw(new_text, out, base_run, max_steps=4, stop_at_step=2)
    train(load_config(None, raw=raw, notes=lambda _: None))
    assert rundir.latest_snapshot(out).step == 2
    raw["train"].pop("stop_at_step")
    raw["train"]["init_from"] = str(tmp_path / "gone")  # the weights it began from are not read again
    train(load_config(None, raw=raw, notes=lambda _: None))
    assert rundir.latest_snapshot(out).step == 4


def test_keys_that_keep_the_shapes_stay_and_others_are_refused_by_name(base_run: Path, new_text: Path,
                                                                        tmp_path: Path) -> None:
    raw = _raw(new_text, tmp_path / "ft", base_run)
    kept = load_config(None, raw={**raw, "model": {"dropout": 0.1, "block_size": 48}}, notes=lambda _: None)
    assert kept.model.dropout == 0.1 and kept.model.block_size == 48 and kept.model.n_layer == 2
    with pytest.raises(LmlabError, match=r"model.d_model = 96: .* has model.d_model = 64, and the change reshapes"):
        load_config(None, raw={**raw, "model": {"d_model": 96}}, notes=lambda _: None)
    with pytest.raises(LmlabError, match=r"model.preset = 'small': .* drop model.preset"):
        load_config(None, raw={**raw, "model": {"preset": "small"}}, notes=lambda _: None)
    with pytest.raises(LmlabError, match=r"model.family = 'psann': .* holds a transformer model"):
        load_config(None, raw={**raw, "model": {"family": "psann"}}, notes=lambda _: None)
    with pytest.raises(LmlabError, match=r"tokenizer.type = 'byte': .* brings its own tokenizer"):
        load_config(None, raw={**raw, "tokenizer": {"type": "byte"}}, notes=lambda _: None)
    with pytest.raises(LmlabError, match=r"train.init_from = .*nowhere: not found; give a run dir"):
        load_config(None, raw=_raw(new_text, tmp_path / "ft", tmp_path / "nowhere"), notes=lambda _: None)


def test_a_snapshot_folder_and_the_cli(base_run: Path, new_text: Path, tmp_path: Path, one_line_error, run_cli) -> None:
    snap = base_run / "checkpoints" / "prev"  # an older snapshot than the newest
    step = rundir.named_snapshot(snap).step
    assert step < rundir.latest_snapshot(base_run).step
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(_raw(new_text, tmp_path / "ft", snap, max_steps=2)))
    assert main(["train", "--config", str(path)]) == 0
    assert rundir.latest_snapshot(tmp_path / "ft").step == 2
    proc = run_cli("train", "--config", str(path), "--set", "train.out_dir=" + str(tmp_path / "ft2"),
                   "--set", "model.n_layer=3")
    one_line_error(proc, "model.n_layer = 3", "reshapes its weights", "drop it")
    assert not (tmp_path / "ft2").exists()


def test_seed000_resume_from_beside_out_dir_is_init_from(base_run: Path, tmp_path: Path) -> None:
    from lmlab import compat

    done = compat.translate({"train": {"resume_from": str(base_run), "out_dir": str(tmp_path / "new")}}, "cfg.yaml")
    assert done.raw["train"] == {"init_from": str(base_run), "out_dir": str(tmp_path / "new")}
    assert any("`train.init_from` (a new run in train.out_dir" in n for n in done.notes)
    same = compat.translate({"train": {"resume_from": str(base_run), "out_dir": str(base_run)}}, "cfg.yaml")
    assert same.raw["train"] == {"out_dir": str(base_run)}  # its own run: continued in place
    alone = compat.translate({"train": {"resume_from": str(base_run)}}, "cfg.yaml")
    assert alone.raw["train"] == {"out_dir": str(base_run)}


def test_an_hf_llama_folder_fine_tunes_and_exports_back(new_text: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    helper = __import__("runpy").run_path(str(Path(__file__).parents[1] / "interop" / "llama_folder.py"))
    hf = helper["llama_folder"](tmp_path / "hf", 2, True)
    out = tmp_path / "ft"
    train(load_config(None, raw=_raw(new_text, out, hf, max_steps=2, seq_len=32), notes=lambda _: None))
    model, tok, cfg, snap = load_run(out)
    assert tok.backend == "hf" and cfg.model.n_kv_head == 2 and snap.step == 2
    assert (rundir.tokenizer_dir(out) / "tokenizer.json").read_bytes() == (hf / "tokenizer.json").read_bytes()
    assert main(["export-hf", str(out), str(tmp_path / "back")]) == 0
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor([tok.encode(TEXT[:80])])
    with torch.no_grad():
        assert (back(ids).logits - model(ids).logits).abs().max().item() < 1e-5


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_import_fine_tune_watch_a_benchmark_export(new_text: Path, tmp_path: Path, monkeypatch) -> None:
    """Issue 30's whole path: import a Llama folder, fine-tune it on one's own text with HellaSwag
    scored during training and logged to MLflow, export it back and load it in transformers with
    the same logits."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("mlflow")
    if not (SHARED / "eval" / "hellaswag").is_dir():
        pytest.skip(f"HellaSwag is read from {SHARED}/eval/hellaswag, which is absent")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("LMLAB_EVAL_DATA", str(SHARED))
    helper = __import__("runpy").run_path(str(Path(__file__).parents[1] / "interop" / "llama_folder.py"))
    hf = helper["llama_folder"](tmp_path / "hf", 2, False)
    assert main(["import-hf", str(hf), str(tmp_path / "imported")]) == 0
    out = tmp_path / "ft"
    raw = _raw(new_text, out, tmp_path / "imported", max_steps=4, seq_len=32, eval_tasks=["hellaswag"],
               eval_tasks_interval=2, eval_tasks_max_examples=4, trackers=["jsonl", "mlflow"])
    train(load_config(None, raw=raw, notes=lambda _: None))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "acc_norm" in r.get("tasks", {}).get("hellaswag", {})]
    assert steps == [2, 4]
    client = MlflowClient(tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}")
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "tasks.hellaswag.acc_norm")] == [2, 4]  # MLflow: dots
    assert main(["export-hf", str(out), str(tmp_path / "back")]) == 0
    model, tok, _, _ = load_run(out)
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
    ids = torch.tensor([tok.encode(TEXT[:80].lower())])
    with torch.no_grad():
        assert (back(ids).logits - model(ids).logits).abs().max().item() < 1e-5


def test_resume_of_an_init_from_run_and_config_show(base_run: Path, new_text: Path, tmp_path: Path, capsys) -> None:
    """The run's own config.yaml names the source's tokenizer: --resume and config show read it."""
    out = tmp_path / "ft"
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(_raw(new_text, out, base_run, max_steps=4, stop_at_step=2)))
    assert main(["train", "--config", str(path)]) == 0
    assert main(["config", "show", str(out)]) == 0
    assert "init_from: " + str(base_run) in capsys.readouterr().out
    assert main(["train", "--resume", str(out)]) == 0
    assert rundir.latest_snapshot(out).step == 4


def test_prepare_places_the_weights_tokenizer_and_train_reuses_the_cache(new_text: Path, tmp_path: Path) -> None:
    """lmlab prepare on an init_from config (an HF Llama folder with a padded vocabulary) keeps the
    tokenizer train uses, so train reuses the cache it built."""
    pytest.importorskip("transformers")
    helper = __import__("runpy").run_path(str(Path(__file__).parents[1] / "interop" / "llama_folder.py"))
    hf = helper["llama_folder"](tmp_path / "hf", 2, True, pad_vocab=8)
    out = tmp_path / "ft"
    raw = _raw(new_text, out, hf, max_steps=2, seq_len=32)
    raw["data"]["token_cache"] = True
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["prepare", "--config", str(path)]) == 0
    stamp = {f: f.stat().st_mtime_ns for f in (out / "token_cache").rglob("*") if f.is_file()}
    assert stamp
    assert main(["train", "--config", str(path)]) == 0
    assert {f: f.stat().st_mtime_ns for f in (out / "token_cache").rglob("*") if f.is_file()} == stamp
    _, tok, cfg, _ = load_run(out)
    assert tok.backend == "hf" and tok.vocab_size == cfg.model.vocab_size == helper["tokenizer_files"](tmp_path) + 8

"""``train.eval_tasks``: ``lmlab eval``'s benchmarks scored while training, logged as rows of
metrics.jsonl (``tasks/<task>/<metric>`` to the trackers), kept in metrics.json, charted by
``lmlab report RUN``; the numbers are the runner's for the same snapshot and examples, under
torchrun too; bad names and missing data are one-line refusals before the first step."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lmlab
from lmlab.compare.report import collect_dirs, write_reports
from lmlab.configure import validate_config
from lmlab.errors import ConfigError, LmlabError
from lmlab.eval.runner import evaluate
from lmlab.eval.tasks import ALIASES, GROUPS, TASKS
from lmlab.eval.tasks.wikitext import WikiText2
from lmlab.runs import load_run
from lmlab.train_config import TrainConfig
from lmlab.training import eval_tasks
from lmlab.training.distributed import DistInfo
from lmlab.training.eval_tasks import TaskEval
from lmlab.training.trackers import scalars

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED / "eval" / "hellaswag").is_dir(),
                                  reason=f"shared eval data not found at {SHARED} (see ../shared/data/MANIFEST.md)")
TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ROLLING = ["word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"]


def _text_file(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("The quick brown fox jumps over the lazy dog. " * 12 + "\n", encoding="utf-8")
    return path


def _task_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r for r in rows if "tasks" in r]


def _runner_numbers(run: Path, tasks: list[str], max_examples: int, data_dir: Path | None = None) -> dict:
    """What ``lmlab eval`` gives for the run's latest snapshot: {task: {metric: value}}."""
    report = evaluate([str(run)], tasks, data_dir=data_dir, max_examples=max_examples, log=lambda *_: None)
    return {t: {k: m["value"] for k, m in res["metrics"].items()} for t, res in report["runs"][0]["tasks"].items()}


def _train_quietly(raw: dict) -> tuple[Path, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        run = lmlab.train(raw)
    return run, out.getvalue()


@pytest.fixture(scope="module")
def file_run(corpus_dir, make_raw, tmp_path_factory):
    """5 steps, val at 5, a text file's rolling scores every 2 steps (and at the last one);
    progress on with a non-terminal stderr: the console tracker prints the task lines."""
    tmp = tmp_path_factory.mktemp("eval_tasks")
    task = f"file:{_text_file(tmp)}"
    raw = make_raw(corpus_dir, tmp / "run", train={"max_steps": 5, "eval_interval": 5, "save_interval": 5,
                                                   "eval_tasks": [task], "eval_tasks_interval": 2,
                                                   "eval_tasks_max_examples": 8, "progress": True})
    run, printed = _train_quietly(raw)
    return run, task, printed


def test_config_names_are_checked_as_lmlab_eval_checks_them(corpus_dir, make_raw, tmp_path):
    raw = make_raw(corpus_dir, tmp_path / "run", train={"eval_tasks": "titans, piqa,file:notes.txt"})
    cfg = validate_config(raw)
    assert cfg.train.eval_tasks == ["titans", "piqa", "file:notes.txt"]  # a string splits at commas
    assert (cfg.train.eval_tasks_interval, cfg.train.eval_tasks_max_examples) == (None, 500)
    raw["train"]["eval_tasks"] = ["hellaswag", "no_such_task"]
    with pytest.raises(ConfigError) as e:
        validate_config(raw, source="cfg.yaml")
    line = str(e.value)
    assert "\n" not in line and "train.eval_tasks" in line and "'no_such_task'" in line
    for known in [*GROUPS, *TASKS, "file:PATH"]:
        assert known in line
    assert validate_config({**raw, "train": {**raw["train"], "eval_tasks": [next(iter(ALIASES))]}})


def test_rows_at_the_interval_and_the_last_step(file_run):
    run, task, printed = file_run
    rows = _task_rows(run)
    assert [r["step"] for r in rows] == [2, 4, 5]
    for r in rows:
        assert set(r) == {"step", "tokens", "train_s", "tasks"} and list(r["tasks"][task]) == ROLLING
        # what every tracker gets: tasks/<task>/<metric>
        assert {f"tasks/{task}/{m}" for m in ROLLING} <= set(scalars(r))
    assert rows[0]["tasks"] != rows[-1]["tasks"]  # the model moved between them
    summary = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert summary["tasks"] == rows[-1]["tasks"] and summary["tasks_step"] == 5
    assert f"step 4: tasks: {task} word_perplexity " in printed


def test_training_numbers_are_lmlab_eval_numbers(file_run):
    """The last row scored the weights the final snapshot holds: the runner's numbers, exactly."""
    run, task, _ = file_run
    assert _runner_numbers(run, [task], 8) == _task_rows(run)[-1]["tasks"]


def test_report_charts_the_tasks_over_steps(file_run, tmp_path):
    run, task, _ = file_run
    results = collect_dirs([run])
    write_reports(tmp_path, results, single_run=True)
    series = results["arms"][0]["runs"][0]["tasks_over_time"]
    assert [e["step"] for e in series] == [2, 4, 5]
    assert set(series[-1]) == {"step", *(f"{task}/{m}" for m in ROLLING)}
    assert (tmp_path / "tasks.png").read_bytes().startswith(b"\x89PNG")
    assert "train.eval_tasks" in (tmp_path / "report.html").read_text(encoding="utf-8")


def test_ranks_score_strided_shares_put_back_in_order(file_run, tmp_path, monkeypatch):
    """World 2 in one process: each rank scores documents rank, rank + 2, ... (a spy records
    them), the gathered shares are put back in document order, and the metrics are one rank's."""
    pages = [f" = Article {i} = \n The fox number {i} jumps over {i} dogs .\n" for i in range(5)]
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.test.tokens").write_text("".join(pages), encoding="utf-8")
    monkeypatch.setenv("LMLAB_EVAL_DATA", str(tmp_path))
    model, tokenizer, _, _ = load_run(file_run[0])
    model.train()  # as the trainer holds it
    train = TrainConfig(eval_tasks=["wikitext2"])

    def task_eval(rank: int, world: int) -> TaskEval:
        return TaskEval(train, model, tokenizer, DistInfo(rank, world, rank, torch.device("cpu")), False)

    one = task_eval(0, 1).score()["wikitext2"]
    assert one.n == 5
    scored: list[list[str]] = []
    spy = WikiText2.score_examples

    def recording(self, scorer, docs, stride=None):
        scored.append([d["page"] for d in docs])
        return spy(self, scorer, docs, stride)

    monkeypatch.setattr(WikiText2, "score_examples", recording)
    # rank 0 first, handed rank 1's share as one process scored it; then rank 1, handed rank 0's
    shares: list = []
    monkeypatch.setattr(eval_tasks, "all_gather_objects", lambda obj, info: shares.append(obj) or
                        [obj, one.samples[1::2]])
    rank0 = task_eval(0, 2).score()["wikitext2"]
    monkeypatch.setattr(eval_tasks, "all_gather_objects", lambda obj, info: [shares[0], obj])
    rank1 = task_eval(1, 2).score()["wikitext2"]
    assert scored == [pages[0::2], pages[1::2]]
    assert [s["bytes"] for s in rank1.samples] == [len(p.encode()) for p in pages]  # document order
    assert rank1.metrics.keys() == one.metrics.keys()
    for k, (value, stderr) in one.metrics.items():
        assert rank1.metrics[k] == (pytest.approx(value, rel=1e-9), pytest.approx(stderr, rel=1e-9))
    assert rank0.metrics == rank1.metrics  # every rank aggregates the same scores
    assert model.training  # the scorer's eval mode is undone


@pytest.mark.parametrize("family", ["apelr", "psann", "abstractinator"])
def test_every_family_scores_during_training(family, corpus_dir, make_raw, tmp_path):
    """Every family scores through log_probs: the runner's numbers at the last step."""
    task = f"file:{_text_file(tmp_path)}"
    raw = make_raw(corpus_dir, tmp_path / "run", train={"max_steps": 2, "eval_interval": 2, "save_interval": 2,
                                                        "eval_tasks": [task]})
    raw["model"] = {"family": family, "preset": "tiny", **({} if family == "abstractinator" else {"block_size": 32})}
    if family == "abstractinator":
        raw["tokenizer"] = {"type": "byte"}
    raw["sample"] = {"prompts": [], "max_new_tokens": 4}
    run, _ = _train_quietly(raw)
    assert _runner_numbers(run, [task], 500) == _task_rows(run)[-1]["tasks"]


@needs_shared
def test_shared_benchmarks_match_lmlab_eval(corpus_dir, make_raw, tmp_path, monkeypatch):
    """Multiple-choice and loglikelihood tasks from $LMLAB_EVAL_DATA: the runner's numbers."""
    monkeypatch.setenv("LMLAB_EVAL_DATA", str(SHARED))
    tasks = ["hellaswag", "piqa", "lambada_openai"]
    raw = make_raw(corpus_dir, tmp_path / "run", train={"max_steps": 2, "eval_interval": 2, "save_interval": 2,
                                                        "eval_tasks": tasks, "eval_tasks_max_examples": 8})
    run, _ = _train_quietly(raw)
    (row,) = _task_rows(run)
    assert list(row["tasks"]) == tasks and set(row["tasks"]["piqa"]) == {"acc", "acc_norm"}
    assert _runner_numbers(run, tasks, 8, SHARED) == row["tasks"]


def test_missing_data_is_refused_before_the_first_step(corpus_dir, make_raw, tmp_path, monkeypatch):
    raw = make_raw(corpus_dir, tmp_path / "run", train={"eval_tasks": [f"file:{tmp_path / 'absent.txt'}"]})
    with pytest.raises(LmlabError) as e:
        _train_quietly(raw)
    line = str(e.value)
    assert "\n" not in line and line.startswith("train.eval_tasks: file:") and "no such file" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    monkeypatch.setenv("LMLAB_EVAL_DATA", str(tmp_path))  # a folder without the task's files
    raw["train"]["eval_tasks"] = ["piqa"]
    with pytest.raises(LmlabError) as e:
        _train_quietly(raw)
    line = str(e.value)
    assert "\n" not in line and "eval data file not found" in line and "$LMLAB_EVAL_DATA" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
@needs_shared
@pytest.mark.skipif(not Path(TORCHRUN).exists(), reason="torchrun not installed")
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_give_one_process_numbers(parallel, tiny_config, run_cli, tmp_path):
    """torchrun x2: DDP splits each task's examples between the ranks and gathers the scores,
    FSDP (a collective forward) scores them all on every rank; either way the logged numbers
    are one process's (lmlab eval's) for the final snapshot. Accuracies agree exactly; the
    log-likelihoods to rounding (a document is batched with other documents than in one process)."""
    tasks = ["hellaswag", "lambada_openai", f"file:{_text_file(tmp_path)}"]
    path, _, run = tiny_config(train={"batch_size": 2, "max_steps": 2, "eval_interval": 2, "save_interval": 2,
                                      "eval_tasks": tasks, "eval_tasks_max_examples": 7, "parallel": parallel})
    env = {**run_cli.env, "LMLAB_EVAL_DATA": str(SHARED)}
    proc = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "lmlab", "train", "--config",
                           str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = _task_rows(run)
    one = _runner_numbers(run, tasks, 7, SHARED)
    assert row["tasks"].keys() == one.keys()
    for task, metrics in one.items():
        for k, v in metrics.items():
            got = row["tasks"][task][k]
            assert got == v if k.startswith("acc") else got == pytest.approx(v, rel=1e-9), (task, k)

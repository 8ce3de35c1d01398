"""The lm-eval adapter: lm-eval-harness, driving a tiny run through ``LmlabLM`` on local slices of
the shared eval data, gets exactly the scores lmlab's own ``Scorer`` gives (its split, its
rolling windows, its metrics), for every request type. Offline: local task YAMLs only."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="the lm-eval adapter test needs lm-eval (pip install lmlab[eval])")

import datasets
import lm_eval
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

import lmlab
from lmlab.eval.lm_eval_adapter import LmlabLM
from lmlab.eval.scoring import Scorer

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
PIQA, LAMBADA, WIKITEXT, GENERATE = (
    "lmlab_test_piqa", "lmlab_test_lambada", "lmlab_test_wikitext", "lmlab_test_generate")
OFFLINE = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
GEN_KWARGS = {"until": ["\n", "."], "max_gen_toks": 8, "do_sample": False, "temperature": 0.0}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _slices(eval_data: Path, out: Path) -> dict[str, list[dict]]:
    """Small jsonl slices of the shared eval data, one per task, written under ``out``."""
    ev = eval_data / "eval"
    with open(ev / "piqa" / "valid.jsonl", encoding="utf-8") as f:
        goals = [json.loads(line) for _, line in zip(range(24), f)]
    labels = (ev / "piqa" / "valid-labels.lst").read_text().split()[:24]
    piqa = [{"goal": g["goal"], "sol1": g["sol1"], "sol2": g["sol2"], "label": int(y)}
            for g, y in zip(goals, labels)]
    with open(ev / "lambada" / "lambada_test.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(24), f)]
    lambada = [{"text": t} for t in texts[:16]]
    generate = [{"prompt": t.rsplit(" ", 1)[0], "answer": t.rsplit(" ", 1)[1]} for t in texts[16:]]
    # Paragraphs of very different lengths: one window, a few, and a partial last window.
    paras = [p.strip() for p in (eval_data / "wikitext2" / "wiki.valid.tokens").read_text(
        encoding="utf-8").splitlines() if len(p) > 600]
    wikitext = [{"page": paras[0][:60]}, {"page": paras[1][:250]}, {"page": paras[2][:600]}]
    data = {PIQA: piqa, LAMBADA: lambada, WIKITEXT: wikitext, GENERATE: generate}
    for task, rows in data.items():
        _write_jsonl(out / f"{task.removeprefix('lmlab_test_')}.jsonl", rows)
    return data


@pytest.fixture(scope="module")
def lm_eval_run(eval_run, eval_data, tmp_path_factory):
    """One ``simple_evaluate`` of the four local tasks through ``LmlabLM``: its results, the
    slices' rows, the adapter, a reference Scorer on the same run and the rendered task folder."""
    root = tmp_path_factory.mktemp("lm_eval")
    rows = _slices(eval_data, root)
    tasks = root / "tasks"
    shutil.copytree(TASKS_DIR, tasks)
    for yaml_file in tasks.glob("*.yaml"):
        yaml_file.write_text(yaml_file.read_text(encoding="utf-8").replace("@DATA@", str(root)),
                             encoding="utf-8")
    lm = LmlabLM(pretrained=str(eval_run), batch_size=8)
    with pytest.MonkeyPatch.context() as mp:  # belt and braces: the json builder needs no hub
        for flag in OFFLINE:
            mp.setenv(flag, "1")
            if hasattr(datasets.config, flag):
                mp.setattr(datasets.config, flag, True)
        results = lm_eval.simple_evaluate(
            model=lm, tasks=[PIQA, LAMBADA, WIKITEXT, GENERATE],
            task_manager=TaskManager(include_path=str(tasks), include_defaults=False),
            log_samples=True, bootstrap_iters=0,
        )
    loaded = lmlab.load(eval_run)
    return SimpleNamespace(results=results, rows=rows, lm=lm, tasks=tasks, run=eval_run,
                           scorer=Scorer(loaded.model, loaded.tokenizer))


def _samples(results, task: str) -> list[dict]:
    return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def test_multiple_choice_matches_scorer(lm_eval_run):
    results, rows, scorer = lm_eval_run.results, lm_eval_run.rows, lm_eval_run.scorer
    docs = rows[PIQA]
    samples = _samples(results, PIQA)
    assert len(samples) == len(docs)
    choices = [[d["sol1"], d["sol2"]] for d in docs]
    ours = scorer.loglikelihood(
        [("Question: " + d["goal"] + "\nAnswer:", " " + c) for d, cs in zip(docs, choices) for c in cs])
    lls = np.array([ll for ll, _ in ours]).reshape(len(docs), 2)
    for s, row in zip(samples, lls):
        theirs = [r[0][0] for r in s["resps"]]
        assert [f[0] for f in s["filtered_resps"]] == theirs
        np.testing.assert_allclose(theirs, row, rtol=0, atol=1e-5)
    gold = np.array([d["label"] for d in docs])
    lens = np.array([[len(c) for c in cs] for cs in choices], dtype=float)
    metrics = results["results"][PIQA]
    assert metrics["acc,none"] == np.mean(lls.argmax(1) == gold)
    assert metrics["acc_norm,none"] == np.mean((lls / lens).argmax(1) == gold)
    assert [s["acc"] for s in samples] == [float(p == g) for p, g in zip(lls.argmax(1), gold)]


def test_loglikelihood_matches_scorer(lm_eval_run):
    results, rows, scorer = lm_eval_run.results, lm_eval_run.rows, lm_eval_run.scorer
    texts = [d["text"] for d in rows[LAMBADA]]
    samples = _samples(results, LAMBADA)
    assert len(samples) == len(texts)
    ours = scorer.loglikelihood([(t.rsplit(" ", 1)[0], " " + t.rsplit(" ", 1)[1]) for t in texts])
    for s, (ll, greedy) in zip(samples, ours):
        (their_ll, their_greedy), = s["resps"][0]
        assert their_ll == pytest.approx(ll, abs=1e-5) and their_greedy == greedy
    metrics = results["results"][LAMBADA]
    assert metrics["acc,none"] == np.mean([g for _, g in ours])
    assert metrics["perplexity,none"] == pytest.approx(math.exp(-np.mean([ll for ll, _ in ours])),
                                                       rel=1e-6)


def test_rolling_matches_scorer(lm_eval_run):
    results, rows, scorer = lm_eval_run.results, lm_eval_run.rows, lm_eval_run.scorer
    pages = [d["page"] for d in rows[WIKITEXT]]
    n_tokens = [len(scorer.encode(p)) for p in pages]
    # One document fits one window; the others need several, the last one partial.
    assert n_tokens[0] <= scorer.max_length < 3 * scorer.max_length < n_tokens[2]
    assert n_tokens[2] % scorer.max_length
    samples = _samples(results, WIKITEXT)
    theirs = [s["resps"][0][0] for s in samples]
    np.testing.assert_allclose(theirs, scorer.loglikelihood_rolling(pages), rtol=0, atol=1e-5)
    # bits per byte over the documents, from our scores
    metrics = results["results"][WIKITEXT]
    bpb = -sum(theirs) / sum(len(p.encode()) for p in pages) / math.log(2)
    assert metrics["bits_per_byte,none"] == pytest.approx(bpb, rel=1e-9)


def test_generate_until_matches_scorer(lm_eval_run):
    results, rows, scorer = lm_eval_run.results, lm_eval_run.rows, lm_eval_run.scorer
    docs = rows[GENERATE]
    samples = _samples(results, GENERATE)
    assert len(samples) == len(docs)
    requests = [(d["prompt"], dict(GEN_KWARGS)) for d in docs]
    for s, (context, kwargs) in zip(samples, requests):
        assert list(s["arguments"][0]) == [context, kwargs]  # what the adapter was handed
    outputs = [s["resps"][0][0] for s in samples]
    assert outputs == scorer.generate_until(requests)
    assert all("\n" not in o and "." not in o for o in outputs)
    assert any(outputs)  # the model does generate something
    assert [s["filtered_resps"][0] for s in samples] == outputs
    assert results["results"][GENERATE]["exact_match,none"] == np.mean(
        [o == d["answer"] for o, d in zip(outputs, docs)])


def test_stop_strings_cut_generation(lm_eval_run):
    """The tiny model's greedy text is mostly spaces, so the task above never meets its stop
    strings: here a space is one, given as a plain string as lm-eval allows."""
    prompts = [d["prompt"] for d in lm_eval_run.rows[GENERATE][:4]]
    free = lm_eval_run.scorer.generate_until([(p, {"until": [], "max_gen_toks": 8}) for p in prompts])
    assert any(" " in o for o in free)
    kwargs = {"until": " ", "max_gen_toks": 8}
    requests = [Instance("generate_until", {}, (p, dict(kwargs)), i) for i, p in enumerate(prompts)]
    outputs = lm_eval_run.lm.generate_until(requests)
    assert outputs == [o.split(" ", 1)[0] for o in free]
    assert outputs == lm_eval_run.scorer.generate_until([(p, dict(kwargs)) for p in prompts])


def test_cli_runs_lmlab_model(lm_eval_run, tmp_path):
    """``python -m lmlab.eval.lm_eval_cli`` is lm-eval's CLI with ``--model lmlab`` registered."""
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **dict.fromkeys(OFFLINE, "1"),
           "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "lmlab.eval.lm_eval_cli", "--model", "lmlab",
         "--model_args", f"pretrained={lm_eval_run.run}", "--tasks", PIQA,
         "--include_path", str(lm_eval_run.tasks), "--limit", "6", "--batch_size", "4",
         "--output_path", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = out.rglob("results_*.json")
    acc = json.loads(path.read_text())["results"][PIQA]["acc,none"]
    first = _samples(lm_eval_run.results, PIQA)[:6]
    assert acc == pytest.approx(np.mean([s["acc"] for s in first]))

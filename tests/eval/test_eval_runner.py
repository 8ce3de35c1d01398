"""``lmlab eval`` end to end: metrics from the per-example scores, reports, several checkpoints."""

from __future__ import annotations

import json
import math
import re
import shutil

import numpy as np
import pytest

import lmlab
from lmlab.configure import build_model_config
from lmlab.errors import LmlabError
from lmlab.eval import runner
from lmlab.eval import tasks as T
from lmlab.eval.scoring import Scorer
from lmlab.interop.gpt2 import export_hf_gpt2
from lmlab.registry import build_model


def test_metrics_follow_from_per_example_scores(eval_run, eval_data):
    lm = lmlab.load(eval_run)
    scorer = Scorer(lm.model, lm.tokenizer, batch_size=7)

    docs = T.load_docs("arc_easy", eval_data, 40)
    res = runner.run_task(scorer, "arc_easy", docs)
    flat = [p for d in docs for p in T.multiple_choice("arc_easy", d).pairs]
    lls = iter(ll for ll, _ in scorer.loglikelihood(flat))
    acc, norm = [], []
    for d in docs:
        ex = T.multiple_choice("arc_easy", d)
        ll = [next(lls) for _ in ex.pairs]
        acc.append(int(np.argmax(ll)) == ex.gold)
        norm.append(int(np.argmax([x / len(c) for x, c in zip(ll, ex.choices)])) == ex.gold)
    assert res.metrics["acc"][0] == pytest.approx(np.mean(acc))
    assert res.metrics["acc_norm"][0] == pytest.approx(np.mean(norm))
    assert res.metrics["acc"][1] == pytest.approx(np.std(acc, ddof=1) / math.sqrt(40))

    lam = runner.run_task(scorer, "lambada_openai", T.load_docs("lambada_openai", eval_data, 12))
    lls = np.array([s["ll"] for s in lam.samples])
    assert lam.metrics["perplexity"][0] == pytest.approx(math.exp(-lls.mean()))
    assert lam.metrics["acc"][0] == np.mean([s["is_greedy"] for s in lam.samples])

    wiki_docs = T.load_docs("wikitext2", eval_data, 3)
    wiki = runner.run_task(scorer, "wikitext2", wiki_docs, stride=32)
    total = sum(s["ll"] for s in wiki.samples)
    nbytes = sum(len(d["page"].encode()) for d in wiki_docs)
    assert wiki.metrics["bits_per_byte"][0] == pytest.approx(-total / nbytes / math.log(2))
    assert wiki.metrics["byte_perplexity"][0] == pytest.approx(2 ** wiki.metrics["bits_per_byte"][0])
    words = sum(len(d["page"].split()) + 1 for d in wiki_docs)  # re.split counts the edge pieces too
    assert wiki.metrics["word_perplexity"][0] == pytest.approx(math.exp(-total / words), rel=1e-2)
    assert total == pytest.approx(sum(scorer.loglikelihood_rolling(
        [T.wikitext_detokenizer(d["page"]) for d in wiki_docs], stride=32)))


def test_evaluate_two_checkpoints_writes_json_markdown_and_run_files(eval_run, eval_data, tmp_path):
    # The same run under two paths: two columns, identical numbers.
    other = tmp_path / "copy" / eval_run.name
    shutil.copytree(eval_run, other)
    text = tmp_path / "notes.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 30, encoding="utf-8")
    out = tmp_path / "out" / "report.json"
    logs = []
    report = runner.evaluate([str(eval_run), str(other)], f"piqa,lambada_openai,file:{text}", data_dir=eval_data,
                             max_examples=10, output=out, log=logs.append)
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["runs"]] == [str(eval_run), str(other)]  # same dir name: full paths
    a, b = (r["tasks"] for r in saved["runs"])
    assert {k: v["metrics"] for k, v in a.items()} == {k: v["metrics"] for k, v in b.items()}
    assert set(a) == {"piqa", "lambada_openai", f"file:{text}"} and a["piqa"]["n"] == 10
    assert saved["runs"][0]["checkpoint"]["tokenizer"] == "bpe"
    table = out.with_suffix(".md").read_text()
    assert table == report["table"]
    header, rule, *rows = table.strip().splitlines()
    assert header.count("|") == 6 and len(rows) == 2 + 2 + 4
    assert " ± " in rows[0] and len(logs) == 6

    # Per run: a later evaluation of other tasks adds to eval_results.json, a repeated one replaces.
    runner.evaluate([str(other)], "boolq", data_dir=eval_data, max_examples=4)
    per_run = json.loads((other / runner.RESULTS_FILE).read_text())
    assert set(per_run["tasks"]) == {"piqa", "lambada_openai", f"file:{text}", "boolq"}


def test_hf_gpt2_folder_is_a_checkpoint(eval_run, eval_data, tmp_path):
    tok = lmlab.load(eval_run).tokenizer
    model = build_model(build_model_config({
        "family": "transformer", "preset": "tiny", "vocab_size": tok.vocab_size, "block_size": 64,
        "pos_encoding": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True}))
    hf = export_hf_gpt2(model, tmp_path / "hf", tokenizer=tok)
    report = lmlab.evaluate(hf, "piqa", data_dir=eval_data, max_examples=6)  # the Python API
    run = report["runs"][0]
    assert run["checkpoint"]["format"] == "hf-gpt2" and run["tasks"]["piqa"]["n"] == 6
    assert run["settings"]["eos_prefix"] == "empty context only"  # as lm-eval's hf model scores GPT-2
    assert run["tasks"]["piqa"]["data"] == f"local:{eval_data}"
    assert not (hf / runner.RESULTS_FILE).exists()  # an HF folder is not ours to write into


def test_cli_eval(eval_run, eval_data, tmp_path, run_cli):
    out = tmp_path / "r.json"
    res = run_cli("eval", "--checkpoints", str(eval_run), "--tasks", "winogrande_xl,siqa", "--data-dir",
                  str(eval_data), "--max-examples", "5", "--batch-size", "4", "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert "| winogrande | acc | 5 |" in res.stdout and "| siqa | acc | 5 |" in res.stdout
    assert json.loads(out.read_text())["runs"][0]["settings"]["batch_size"] == 4
    bad = run_cli("eval", "--checkpoints", str(eval_run), "--tasks", "titanz", "--data-dir", str(eval_data))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown task 'titanz'" in bad.stderr
    missing = run_cli("eval", "--checkpoints", str(tmp_path / "nope"), "--tasks", "piqa",
                      "--data-dir", str(eval_data), "--max-examples", "2")
    assert missing.returncode == 2 and "run dir not found" in missing.stderr


def test_bad_stride_fails_before_any_task_is_scored(eval_run, eval_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(eval_run, run)
    (run / runner.RESULTS_FILE).unlink(missing_ok=True)
    logs = []
    with pytest.raises(LmlabError, match=r"--stride must be in 1..64"):
        runner.evaluate([str(run)], "piqa,wikitext2", data_dir=eval_data, max_examples=2, stride=5000,
                        log=logs.append)
    assert not any(line.startswith("[") for line in logs) and not (run / runner.RESULTS_FILE).exists()


def test_every_checkpoint_and_max_input_len_is_checked_before_any_scoring(eval_run, eval_data, tmp_path):
    """A bad last checkpoint, or a --max-input-len only the first model takes, is refused (naming
    that checkpoint) before the first one is scored: no log line, no report, no eval_results.json."""
    run = tmp_path / "run"
    shutil.copytree(eval_run, run)
    (run / runner.RESULTS_FILE).unlink(missing_ok=True)
    tok = lmlab.load(eval_run).tokenizer
    short = build_model(build_model_config({
        "family": "transformer", "preset": "tiny", "vocab_size": tok.vocab_size, "block_size": 32,
        "pos_encoding": "learned", "norm": "layernorm", "mlp": "gelu_tanh", "bias": True}))
    hf = export_hf_gpt2(short, tmp_path / "hf", tokenizer=tok)
    out = tmp_path / "out.json"
    for second, needle in ((hf, f"{hf}: --max-input-len 60 exceeds what the model scores at once (33"),
                           (tmp_path / "nope", "run dir not found")):
        logs = []
        with pytest.raises(LmlabError, match=re.escape(needle)):
            runner.evaluate([str(run), str(second)], "piqa", data_dir=eval_data, max_examples=2,
                            max_input_len=60, output=out, log=logs.append)
        assert not any(line.startswith("[") for line in logs)
        assert not out.exists() and not (run / runner.RESULTS_FILE).exists()
    # The same two with a length both take: both scored, the first model's window unchanged.
    report = runner.evaluate([str(run), str(hf)], "piqa", data_dir=eval_data, max_examples=2, max_input_len=30)
    assert [r["settings"]["max_input_len"] for r in report["runs"]] == [30, 30]

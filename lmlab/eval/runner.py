"""``lmlab eval``: score checkpoints on tasks, write one JSON per run and a markdown table.

Metrics follow lm-eval: ``acc`` picks the choice with the highest log-likelihood, ``acc_norm``
the highest log-likelihood per character of the choice; lambada's ``perplexity`` is
exp(-mean log-likelihood of the last word) and its ``acc`` whether that word is the greedy
continuation; the rolling tasks report word and byte perplexity and bits-per-byte with lm-eval's
word and byte counts (of the document before detokenization), plus token perplexity.
Standard errors: of a mean, sample std / sqrt(n) (lm-eval's ``mean_stderr``); of a perplexity,
the delta method (lm-eval bootstraps lambada's and leaves the rolling ones blank).
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.errors import LmlabError
from lmlab.eval import tasks as T
from lmlab.eval.scoring import Scorer
from lmlab.fsio import atomic_write_text, check_writable, user_io, user_os_error

RESULTS_FILE = "eval_results.json"


@dataclass
class TaskResult:
    """Metrics of one task as {name: (value, stderr or None)}, and the per-example scores."""

    task: str
    n: int
    metrics: dict[str, tuple[float, float | None]]
    seconds: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "seconds": round(self.seconds, 3),
                "examples_per_s": round(self.n / self.seconds, 2) if self.seconds > 0 else None,
                "metrics": {k: {"value": v, "stderr": s} for k, (v, s) in self.metrics.items()}}


# ------------------------------------------------------------------------------ statistics


def mean_stderr(xs: np.ndarray) -> float | None:
    """Sample standard deviation / sqrt(n): lm-eval's ``mean_stderr``."""
    return float(np.std(xs, ddof=1) / math.sqrt(len(xs))) if len(xs) > 1 else None


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def ratio_perplexity(lls: np.ndarray, counts: np.ndarray) -> tuple[float, float | None]:
    """exp(-sum ll / sum counts) and its delta-method stderr over documents (ratio estimator)."""
    r = -lls.sum() / counts.sum()
    ppl = _exp(r)
    if len(lls) < 2:
        return ppl, None
    resid = -lls - r * counts
    se_r = math.sqrt((resid**2).sum() / (len(lls) * (len(lls) - 1))) / counts.mean()
    return ppl, ppl * se_r


# ------------------------------------------------------------------------------ one task


def run_task(scorer: Scorer, task: str, docs: list[T.Doc], stride: int | None = None) -> TaskResult:
    """Score ``docs`` of ``task`` with ``scorer``."""
    if not docs:
        raise LmlabError(f"{task}: no examples to score")
    t0 = time.perf_counter()
    kind = "rolling" if T.is_rolling(task) else T.TASKS[task].kind
    if kind == "rolling":
        res = _rolling(scorer, task, docs, stride)
    elif kind == "loglikelihood":
        res = _lambada(scorer, task, docs)
    else:
        res = _multiple_choice(scorer, task, docs)
    res.seconds = time.perf_counter() - t0
    return res


def _rolling(scorer: Scorer, task: str, docs: list[T.Doc], stride: int | None) -> TaskResult:
    pages = [d["page"] for d in docs]
    # lm-eval detokenizes WikiText's tokenized layout but counts words and bytes of the original.
    texts = [T.wikitext_detokenizer(p) for p in pages] if task == "wikitext2" else pages
    lls = np.array(scorer.loglikelihood_rolling(texts, stride))
    words = np.array([len(re.split(r"\s+", p)) for p in pages], dtype=np.float64)
    nbytes = np.array([len(p.encode("utf-8")) for p in pages], dtype=np.float64)
    tokens = np.array([len(scorer.encode(t)) for t in texts], dtype=np.float64)
    bpb, bpb_se = -lls.sum() / nbytes.sum() / math.log(2), None
    byte_ppl, byte_se = ratio_perplexity(lls, nbytes)
    if byte_se is not None:
        bpb_se = byte_se / byte_ppl / math.log(2)  # d(log2 ppl) = d(ppl) / (ppl ln 2)
    metrics = {"word_perplexity": ratio_perplexity(lls, words), "byte_perplexity": (byte_ppl, byte_se),
               "bits_per_byte": (bpb, bpb_se), "token_perplexity": ratio_perplexity(lls, tokens)}
    samples = [{"ll": float(ll), "tokens": int(t), "words": int(w), "bytes": int(b)}
               for ll, t, w, b in zip(lls, tokens, words, nbytes)]
    return TaskResult(task, len(docs), metrics, 0.0, samples)


def _lambada(scorer: Scorer, task: str, docs: list[T.Doc]) -> TaskResult:
    scored = scorer.loglikelihood([T.lambada_request(d) for d in docs])
    lls = np.array([ll for ll, _ in scored])
    hits = np.array([float(g) for _, g in scored])
    ppl = _exp(-lls.mean())
    se = mean_stderr(lls)
    metrics = {"perplexity": (ppl, None if se is None else ppl * se), "acc": (float(hits.mean()), mean_stderr(hits))}
    samples = [{"ll": float(ll), "is_greedy": bool(g)} for ll, g in scored]
    return TaskResult(task, len(docs), metrics, 0.0, samples)


def _multiple_choice(scorer: Scorer, task: str, docs: list[T.Doc]) -> TaskResult:
    examples = [T.multiple_choice(task, d) for d in docs]
    flat = [p for ex in examples for p in ex.pairs]
    lls = [ll for ll, _ in scorer.loglikelihood(flat)]
    acc, acc_norm, samples, k = [], [], [], 0
    for ex in examples:
        ll = np.array(lls[k : k + len(ex.pairs)])
        k += len(ex.pairs)
        lengths = np.array([len(c) for c in ex.choices], dtype=np.float64)
        acc.append(float(np.argmax(ll) == ex.gold))
        acc_norm.append(float(np.argmax(ll / lengths) == ex.gold))
        samples.append({"lls": ll.tolist(), "gold": ex.gold})
    metrics = {"acc": (float(np.mean(acc)), mean_stderr(np.array(acc)))}
    if "acc_norm" in T.TASKS[task].metrics:
        metrics["acc_norm"] = (float(np.mean(acc_norm)), mean_stderr(np.array(acc_norm)))
    return TaskResult(task, len(docs), metrics, 0.0, samples)


# ------------------------------------------------------------------------------ checkpoints


def load_checkpoint(path: str | Path, device: str = "cpu", snapshot: str = "latest"):
    """(model, tokenizer, description dict) of an lmlab run dir or an HF GPT-2 folder."""
    path = Path(path)
    if (path / "config.json").is_file() and not (path / "checkpoints").is_dir():
        from lmlab.interop.gpt2 import load_hf_gpt2

        model, tokenizer, model_cfg = load_hf_gpt2(path)
        if tokenizer is None:
            raise LmlabError(f"{path}: HF GPT-2 folder without tokenizer.json or vocab.json + merges.txt")
        return model.to(device).eval(), tokenizer, {"path": str(path), "format": "hf-gpt2",
                                                    "family": "transformer", "params": model.num_params()}
    from lmlab.runs import load_run

    model, tokenizer, cfg, snap = load_run(path, device, snapshot)
    return model, tokenizer, {"path": str(path), "format": "lmlab", "family": cfg.model.family,
                              "snapshot": snap.path.name, "step": snap.step, "params": model.num_params(),
                              "tokenizer": tokenizer.backend, "vocab_size": tokenizer.vocab_size}


# ------------------------------------------------------------------------------ reports


def _fmt(value: float, stderr: float | None) -> str:
    digits = 4 if abs(value) < 10 else 2
    return f"{value:.{digits}f}" + ("" if stderr is None else f" ± {stderr:.{digits}f}")


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One row per (task, metric), one column per checkpoint: value ± stderr."""
    names = [r["name"] for r in runs]
    lines = ["| task | metric | n | " + " | ".join(names) + " |",
             "|---|---|---:|" + "---:|" * len(names)]
    rows: dict[tuple[str, str], dict[int, str]] = {}
    counts: dict[str, int] = {}
    for j, run in enumerate(runs):
        for task, res in run["tasks"].items():
            counts.setdefault(task, res["n"])
            for metric, m in res["metrics"].items():
                rows.setdefault((task, metric), {})[j] = _fmt(m["value"], m["stderr"])
    for (task, metric), cells in rows.items():
        cols = [cells.get(j, "—") for j in range(len(runs))]
        lines.append(f"| {task} | {metric} | {counts[task]} | " + " | ".join(cols) + " |")
    return "\n".join(lines) + "\n"


def _run_dir_of(path: str | Path) -> Path:
    """The run dir a checkpoint argument names (``rundir.resolve_run_path``; an HF folder is itself)."""
    from lmlab import rundir

    return rundir.resolve_run_path(path, quiet=True)[0]


def _run_names(paths: list[str]) -> list[str]:
    """Column names: each run dir's name (its path where two share one)."""
    dirs = [_run_dir_of(p) for p in paths]
    names = [d.name or str(d) for d in dirs]
    return [str(d) if names.count(n) > 1 else n for d, n in zip(dirs, names)]


def _merge_run_file(path: Path, run: dict[str, Any]) -> None:
    """Update ``path`` with this evaluation: new tasks replace the same tasks, others are kept."""
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            backup = path.with_suffix(".json.corrupt")
            path.replace(backup)  # keep what was there, never overwrite it blindly
            old = {}
    merged = {**old, **{k: v for k, v in run.items() if k != "tasks"},
              "tasks": {**old.get("tasks", {}), **run["tasks"]}}
    atomic_write_text(path, json.dumps(merged, indent=2) + "\n")


def evaluate(
    checkpoints: list[str],
    tasks: str | list[str],
    *,
    data_dir: str | Path | None = None,
    max_examples: int | None = None,
    max_input_len: int | None = None,
    batch_size: int = 32,
    stride: int | None = None,
    output: str | Path | None = None,
    device: str = "cpu",
    snapshot: str = "latest",
    progress: bool = False,
    log=print,
) -> dict[str, Any]:
    """Evaluate each checkpoint on each task; returns the combined report (also written to
    ``output`` as JSON, with the markdown table beside it as ``.md``, and merged into each run
    dir's ``eval_results.json``)."""
    from lmlab.training.distributed import resolve_device

    if not checkpoints:
        raise LmlabError("--checkpoints: name at least one run dir")
    device = str(resolve_device(device))
    out = Path(output) if output is not None else None
    if out is not None:
        check_writable(out, "--output")  # before minutes of scoring, not after
    names = T.resolve_tasks(tasks)
    data = Path(data_dir) if data_dir is not None else None
    docs = {t: T.load_docs(t, data, max_examples) for t in names}  # fail on data before any scoring
    if data is not None and "wikitext2" in names:
        log("note: local wikitext2 is the tokenized WikiText-2 (wiki.test.tokens, with <unk>), not the raw "
            "text lm-eval reads from the hub: compare its perplexities between lmlab runs only")
    settings = {"max_examples": max_examples, "max_input_len": max_input_len, "batch_size": batch_size,
                "stride": stride, "data": str(data) if data else "hf-hub", "device": device}
    runs = []
    for path, name in zip(checkpoints, _run_names(checkpoints)):
        model, tokenizer, info = load_checkpoint(path, device, snapshot)
        # lmlab runs are trained with eos before every document; HF GPT-2 folders are scored as
        # lm-eval's hf model scores GPT-2 (eos only before an empty context).
        scorer = Scorer(model, tokenizer, max_input_len=max_input_len, batch_size=batch_size, progress=progress,
                        always_prefix=info["format"] == "lmlab")
        if any(T.is_rolling(t) for t in names):
            scorer.check_stride(stride)  # before any task is scored
        run = {"name": name, "checkpoint": info,
               "settings": {**settings, "max_input_len": scorer.max_input_len, "eos_prefix":
                            "always" if scorer.always_prefix else "empty context only"},
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tasks": {}}
        for task in names:
            res = run_task(scorer, task, docs[task], stride)
            run["tasks"][task] = {**res.to_json(), "data": T.data_source(task, data)}
            shown = ", ".join(f"{k} {_fmt(v, s)}" for k, (v, s) in res.metrics.items())
            log(f"[{name}] {task} (n={res.n}, {res.seconds:.1f}s): {shown}")
        runs.append(run)
    report = {"runs": runs, "table": markdown_table(runs)}
    if out is not None:  # the asked-for output first: nothing after it can lose the scores
        with user_io("--output"):
            atomic_write_text(out, json.dumps({"runs": runs}, indent=2) + "\n")
            atomic_write_text(out.with_suffix(".md"), report["table"])
    for path, run in zip(checkpoints, runs):
        if run["checkpoint"]["format"] == "lmlab":
            try:
                _merge_run_file(_run_dir_of(path) / RESULTS_FILE, run)
            except OSError as e:  # e.g. a read-only run dir: the scores are in --output already
                if not user_os_error(e):
                    raise
                where = f"; the results are in {out}" if out is not None else ""
                warnings.warn(f"{_run_dir_of(path) / RESULTS_FILE} not updated ({e.strerror}){where}", stacklevel=2)
    return report

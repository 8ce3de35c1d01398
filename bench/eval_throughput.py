"""Evaluation throughput: examples/s of ``lmlab eval``'s own path vs lm-eval through ``LmlabLM``.

One checkpoint, one task, the same first ``--examples`` documents (``lmlab.eval.tasks.load_docs``
on the local data), scored two ways in one process:
  (a) lmlab: ``lmlab.load`` once, ``Scorer(model, tokenizer, batch_size=B)``, then the timed call
      is ``lmlab.eval.runner.run_task(scorer, task, docs)`` (requests, scoring, metrics);
  (b) lm-eval: one ``LmlabLM(pretrained=RUN_DIR, batch_size=B)`` built once, then the timed call
      is ``lm_eval.simple_evaluate(model=lm, tasks=[...], bootstrap_iters=0, log_samples=False)``
      end to end: lm-eval's task building (dataset load from a jsonl), prompt rendering,
      request building, tokenization and metric code, plus its result bookkeeping.
The documents are written to a temporary jsonl and run through a task YAML generated here
(``dataset_path: json``, the templates of lm-eval's own task YAML), so lm-eval stays offline.
Both models score the same token sequences with the same Scorer code; the script fails unless
both report the same metrics (acc, acc_norm / perplexity) to 1e-9. One untimed warm-up call per
side pays one-off costs (task indexing, dataset cache, first-call allocations), then the timed
calls alternate lmlab, lm-eval, lmlab, lm-eval, ...; the median of ``--repeats`` is reported.

Run: .venv/bin/python bench/eval_throughput.py --checkpoint RUN_DIR [--task hellaswag]
     [--examples 256] [--batch-size 32] [--repeats 3] [--threads N] [--data-dir DIR]
     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

# lm-eval and datasets must never reach the hub: set before either is imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's and datasets' progress bars

import torch  # noqa: E402
import yaml  # noqa: E402
from _common import interleaved, machine, median, print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lmlab  # noqa: E402
from lmlab.eval import tasks as T  # noqa: E402
from lmlab.eval.runner import run_task  # noqa: E402
from lmlab.eval.scoring import Scorer  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TASK_CHOICES = ("hellaswag", "piqa", "arc_easy", "lambada_openai")
ACC_METRICS = ("acc", "acc_norm")  # compared exactly (to 1e-9); perplexity relatively


def _mc_metrics() -> list[dict]:
    return [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ACC_METRICS]


def task_spec(task: str, docs: list[dict]) -> tuple[list[dict], dict]:
    """(jsonl rows, YAML fields) of ``task``: lm-eval's own templates over ``docs``."""
    if task == "hellaswag":  # docs are already lm-eval's processed hellaswag docs
        rows = [{"query": d["query"], "choices": d["choices"], "gold": d["gold"]} for d in docs]
        return rows, {"output_type": "multiple_choice", "doc_to_text": "{{query}}",
                      "doc_to_choice": "choices", "doc_to_target": "{{gold}}",
                      "metric_list": _mc_metrics()}
    if task == "piqa":  # lm-eval's piqa.yaml
        rows = [{k: d[k] for k in ("goal", "sol1", "sol2", "label")} for d in docs]
        return rows, {"output_type": "multiple_choice", "doc_to_text": "Question: {{goal}}\nAnswer:",
                      "doc_to_choice": "{{[sol1, sol2]}}", "doc_to_target": "label",
                      "metric_list": _mc_metrics()}
    if task == "arc_easy":  # lm-eval's arc_easy.yaml, with the gold index precomputed
        rows = [{"question": d["question"], "choices": d["choices"], "answerKey": d["answerKey"],
                 "gold": T.multiple_choice(task, d).gold} for d in docs]
        return rows, {"output_type": "multiple_choice",
                      "doc_to_text": "Question: {{question}}\nAnswer:",
                      "doc_to_choice": "{{choices.text}}", "doc_to_target": "{{gold}}",
                      "metric_list": _mc_metrics()}
    if task == "lambada_openai":  # lm-eval's lambada_openai.yaml
        rows = [{"text": d["text"]} for d in docs]
        return rows, {"output_type": "loglikelihood",
                      "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
                      "doc_to_target": "{{' '+text.split(' ')[-1]}}",
                      "metric_list": [
                          {"metric": "perplexity", "aggregation": "perplexity",
                           "higher_is_better": False},
                          {"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}
    raise SystemExit(f"unsupported task {task}")


def write_task(task: str, docs: list[dict], root: Path) -> str:
    """Write the docs' jsonl and a task YAML under ``root``; -> the lm-eval task name."""
    name = f"lmlab_bench_{task}"
    rows, fields = task_spec(task, docs)
    data = root / f"{task}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(root / "hf_cache")},
        "test_split": "test",
        **fields,
        "metadata": {"version": 1.0},
    }
    tasks_dir = root / "tasks"
    tasks_dir.mkdir()
    (tasks_dir / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return name


def compare(ours: dict[str, float], theirs: dict[str, float]) -> list[str]:
    """Mismatches between lmlab's and lm-eval's metrics (acc-like to 1e-9, perplexity relative)."""
    bad = []
    for metric, value in ours.items():
        other = theirs.get(metric)
        if other is None:
            bad.append(f"{metric}: lm-eval reported none")
        elif metric in ACC_METRICS and abs(value - other) > 1e-9:
            bad.append(f"{metric}: lmlab {value!r} vs lm-eval {other!r}")
        elif metric not in ACC_METRICS and not math.isclose(value, other, rel_tol=1e-9):
            bad.append(f"{metric}: lmlab {value!r} vs lm-eval {other!r}")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="an lmlab run dir")
    ap.add_argument("--data-dir", type=Path, default=DATA, help="local eval data (shared/data)")
    ap.add_argument("--task", choices=TASK_CHOICES, default="hellaswag")
    ap.add_argument("--examples", type=int, default=256, help="the first N documents")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import datasets
    import lm_eval
    from lm_eval.loggers.utils import add_env_info, get_git_commit_hash
    from lm_eval.tasks import TaskManager

    from lmlab.eval.lm_eval_adapter import LmlabLM

    datasets.disable_progress_bars()
    docs = T.load_docs(args.task, args.data_dir, args.examples)
    n = len(docs)

    loaded = lmlab.load(args.checkpoint)
    scorer = Scorer(loaded.model, loaded.tokenizer, batch_size=args.batch_size)
    lm = LmlabLM(pretrained=args.checkpoint, batch_size=args.batch_size)

    with tempfile.TemporaryDirectory(prefix="lmlab_eval_bench_") as tmp:
        root = Path(tmp)
        name = write_task(args.task, docs, root)
        manager = TaskManager(include_path=str(root / "tasks"), include_defaults=False)
        last: dict[str, dict[str, float]] = {}

        def lmlab_side() -> float:
            t0 = time.perf_counter()
            res = run_task(scorer, args.task, docs)
            seconds = time.perf_counter() - t0
            last["lmlab"] = {k: v for k, (v, _) in res.metrics.items()}
            return seconds

        def lm_eval_side() -> float:
            t0 = time.perf_counter()
            out = lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager,
                                          bootstrap_iters=0, log_samples=False)
            seconds = time.perf_counter() - t0
            got = out["n-samples"][name]["effective"]
            if got != n:
                raise SystemExit(f"lm-eval scored {got} examples, lmlab {n}")
            last["lm-eval"] = {k.split(",")[0]: v for k, v in out["results"][name].items()
                               if k.endswith(",none") and "_stderr" not in k}
            return seconds

        fns = {"lmlab eval (run_task)": lmlab_side, "lm-eval + LmlabLM": lm_eval_side}
        warmup = {k: round(fn(), 3) for k, fn in fns.items()}  # untimed: one-off costs
        times = interleaved(fns, args.repeats)
        # What simple_evaluate spends on environment bookkeeping per call (inside its time).
        t0 = time.perf_counter()
        add_env_info({})
        get_git_commit_hash()
        env_info_s = time.perf_counter() - t0

    ours, theirs = last["lmlab"], last["lm-eval"]
    print(f"{args.task}, {n} examples, batch {args.batch_size}, {args.repeats} repeats, "
          f"checkpoint {args.checkpoint}")
    for metric in ours:
        print(f"  {metric}: lmlab {ours[metric]!r}  lm-eval {theirs.get(metric)!r}")
    mismatches = compare(ours, theirs)
    if mismatches:
        raise SystemExit("lmlab and lm-eval disagree: " + "; ".join(mismatches))

    rows = []
    for side, ts in times.items():
        s = median(ts)
        rows.append({"side": side, "seconds": round(s, 3), "examples_per_s": round(n / s, 1),
                     "all_seconds": [round(t, 3) for t in ts], "warmup_seconds": warmup[side]})
    ratio = rows[0]["examples_per_s"] / rows[1]["examples_per_s"]
    print_table(["side", "s (median)", "examples/s", "all s", "warm-up s"],
                [list(r.values()) for r in rows])
    print(f"lmlab / lm-eval examples/s: {ratio:.2f}")
    print(f"(of lm-eval's time, env/git info per call: {env_info_s:.3f} s)")
    info = machine()
    print("machine:", json.dumps(info))
    write_json(
        args.json,
        {
            "machine": info,
            "checkpoint": str(args.checkpoint),
            "task": args.task,
            "examples": n,
            "batch_size": args.batch_size,
            "repeats": args.repeats,
            "metrics": {"lmlab": ours, "lm-eval": theirs},
            "results": rows,
            "lmlab_over_lm_eval": round(ratio, 3),
            "lm_eval_env_info_seconds": round(env_info_s, 3),
        },
    )


if __name__ == "__main__":
    main()

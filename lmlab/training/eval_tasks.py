"""``train.eval_tasks``: ``lmlab eval``'s benchmarks scored on the model while it trains, every
``eval_tasks_interval`` steps (default ``eval_interval``) and at the last step, as rows of
metrics.jsonl and every tracker: ``{step, tokens, train_s, tasks: {task: {metric: value}}}``,
``tasks/hellaswag/acc_norm`` to a tracker (``MetricsProcessor.summary`` keeps the last in
metrics.json).

The numbers are ``lmlab eval``'s for the same weights and examples: the same task objects
(``lmlab.eval.tasks``), the same :class:`Scorer` settings (fp32 without autocast, the runner's
batch size, the model's whole scoring window, eos before every document) and the same
aggregation (``Task.result``). Under data parallelism every rank scores a strided share of each
task's documents and the per-document scores are gathered back into document order before the
metrics are taken, so every rank aggregates what one process would (a document's score may
differ from one process's in its last bits: the documents it is batched with differ). Under a
strategy whose forward is collective (FSDP) every rank scores every document instead.

The documents are read once, as the run starts, from ``$LMLAB_EVAL_DATA`` (a folder laid out
like shared/data), else the HF hub (``lmlab eval`` without ``--data-dir``), the first
``eval_tasks_max_examples`` of each task: missing data stops the run before its first step, in
one line. Every family scores through ``log_probs``; what a model cannot score (a window under
two tokens) is the Scorer's refusal, also met at the start.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from lmlab.errors import LmlabError
from lmlab.eval.metrics import TaskResult
from lmlab.eval.runner import BATCH_SIZE
from lmlab.eval.scoring import Scorer
from lmlab.eval.tasks import Doc, get_task, resolve_tasks
from lmlab.train_config import TrainConfig
from lmlab.training.distributed import DistInfo, all_gather_objects
from lmlab.training.metrics import MetricsProcessor
from lmlab.training.state import Clock, Progress
from lmlab.training.trackers import Tracker, tasks_line

DATA_ENV = "LMLAB_EVAL_DATA"


def eval_data_dir() -> Path | None:
    """Where task documents come from: ``$LMLAB_EVAL_DATA``, else None (the HF hub)."""
    value = os.environ.get(DATA_ENV)
    return Path(value) if value else None


class TaskEval:
    """The run's task evaluations: ``due(step, last)``, then ``run(...)`` on every rank."""

    def __init__(self, train: TrainConfig, model: torch.nn.Module, tokenizer: Any, info: DistInfo,
                 collective_forward: bool):
        self.model, self.tokenizer, self.info = model, tokenizer, info
        self.shard = info.world > 1 and not collective_forward  # else every rank scores every document
        self.interval = train.eval_tasks_interval or train.eval_interval
        self.tasks = [get_task(name) for name in resolve_tasks(train.eval_tasks)] if train.eval_tasks else []
        self.docs: dict[str, list[Doc]] = {}
        if not self.tasks:
            return
        data, was_training = eval_data_dir(), model.training
        try:
            for task in self.tasks:
                docs = task.load(data, train.eval_tasks_max_examples)
                if not docs:
                    raise LmlabError(f"{task.name}: no examples to score")
                self.docs[task.name] = docs
            self._scorer()  # the Scorer's refusals now, not at the first evaluation
        except LmlabError as e:
            # the loaders speak to lmlab eval's flags; here the data dir is the environment's
            why = str(e).replace("--tasks ", "").replace("--data-dir", f"${DATA_ENV}")
            raise LmlabError(f"train.eval_tasks: {why}") from None
        finally:
            model.train(was_training)

    def due(self, step: int, last: bool) -> bool:
        """Whether this step is scored: every ``interval`` steps and the last one."""
        return bool(self.tasks) and (step % self.interval == 0 or last)

    def _scorer(self) -> Scorer:
        # lmlab eval's settings for a run dir: the model's whole window, eos before every document
        return Scorer(self.model, self.tokenizer, batch_size=BATCH_SIZE, always_prefix=True)

    def score(self) -> dict[str, TaskResult]:
        """Every task's result (every rank calls it; under sharding each scores its share and
        all get the same results); the model's mode is kept."""
        world, rank = self.info.world, self.info.rank
        out: dict[str, TaskResult] = {}
        was_training = self.model.training
        try:
            scorer = self._scorer()  # puts the model in eval mode
            for task in self.tasks:
                docs, t0 = self.docs[task.name], time.perf_counter()
                if self.shard:
                    mine = docs[rank::world]
                    shares = all_gather_objects(task.score_examples(scorer, mine) if mine else [], self.info)
                    samples: list[Any] = [None] * len(docs)
                    for r, share in enumerate(shares):  # rank r scored documents r, r + world, ...
                        samples[r::world] = share
                else:
                    samples = task.score_examples(scorer, docs)
                res = task.result(docs, samples)
                res.seconds = time.perf_counter() - t0
                out[task.name] = res
        finally:
            self.model.train(was_training)
        return out

    def run(self, progress: Progress, clock: Clock, trackers: Tracker, bar: Any) -> dict[str, Any]:
        """Score every task and log the row (rank 0's trackers; other ranks have none); returns it."""
        results = self.score()
        tasks = {name: {k: float(v) for k, (v, _) in res.metrics.items()} for name, res in results.items()}
        row = MetricsProcessor.eval_row(progress, clock, {"tasks": tasks})
        trackers.log(row)
        if self.info.is_main and not bar.disable:  # a plain log gets the console tracker's line
            bar.write(tasks_line(row))
        return row

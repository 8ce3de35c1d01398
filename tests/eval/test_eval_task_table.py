"""A new task is one class plus one row of the task table: defined here with three examples of
its own and registered with monkeypatch, it runs through ``lmlab eval``'s runner end to end, and
its scores are the Scorer's on the requests the class makes. The runner names no task."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

import lmlab
from lmlab.errors import LmlabError
from lmlab.eval import runner
from lmlab.eval import tasks as T
from lmlab.eval.scoring import Scorer
from lmlab.eval.tasks.base import Choices, Doc, LoglikelihoodTask, MultipleChoiceTask, choices_after

COLORS = [
    {"q": "What color is the sky on a clear day?", "options": ["blue", "green", "red"], "answer": 0},
    {"q": "What color is fresh grass?", "options": ["purple", "green"], "answer": 1},
    {"q": "What color is snow?", "options": ["black", "orange", "white", "brown"], "answer": 2},
]
LAST_WORDS = [{"text": "The cat sat on the mat"}, {"text": "She opened the door"}, {"text": "It is raining today"}]


class Colors(MultipleChoiceTask):
    """A made-up multiple-choice task: its documents are the three above, no file needed."""

    hub = ("lmlab/colors", None, "test")

    def load_local(self, root: Path) -> list[Doc]:
        return [dict(d) for d in COLORS]

    def request(self, doc: Doc) -> Choices:
        return choices_after(f"Question: {doc['q']}\nAnswer:", doc["options"], doc["answer"])


class LastWord(LoglikelihoodTask):
    """A made-up loglikelihood task (LAMBADA's shape): the last word after the rest."""

    hub = ("lmlab/last_word", None, "test")

    def load_local(self, root: Path) -> list[Doc]:
        return [dict(d) for d in LAST_WORDS]

    def request(self, doc: Doc) -> tuple[str, str]:
        head, last = doc["text"].rsplit(" ", 1)
        return head, " " + last


@pytest.fixture
def registered(monkeypatch):
    """The one row each new task needs."""
    monkeypatch.setitem(T.TASKS, "colors", Colors)
    monkeypatch.setitem(T.TASKS, "last_word", LastWord)


@pytest.fixture
def run_copy(eval_run, tmp_path) -> Path:
    """The shared eval run, copied: evaluate writes eval_results.json into the run dir."""
    return Path(shutil.copytree(eval_run, tmp_path / "run"))


def test_a_new_multiple_choice_task_runs_end_to_end(registered, run_copy, tmp_path):
    report = runner.evaluate([str(run_copy)], "colors,last_word", data_dir=tmp_path, log=lambda *_: None)
    got = report["runs"][0]["tasks"]
    assert got["colors"]["n"] == 3 and got["colors"]["data"] == f"local:{tmp_path}"
    assert "| colors | acc | 3 |" in report["table"] and "| last_word | perplexity | 3 |" in report["table"]

    # the same numbers straight from the Scorer, on the requests written out by hand
    lm = lmlab.load(run_copy)
    scorer = Scorer(lm.model, lm.tokenizer)
    pairs = [(f"Question: {d['q']}\nAnswer:", " " + o) for d in COLORS for o in d["options"]]
    lls = iter(ll for ll, _ in scorer.loglikelihood(pairs))
    acc, norm, per_example = [], [], []
    for d in COLORS:
        ll = np.array([next(lls) for _ in d["options"]])
        per_example.append({"lls": ll.tolist(), "gold": d["answer"]})
        acc.append(float(np.argmax(ll) == d["answer"]))
        norm.append(float(np.argmax(ll / [len(o) for o in d["options"]]) == d["answer"]))
    metrics = got["colors"]["metrics"]
    assert metrics["acc"]["value"] == np.mean(acc) and metrics["acc_norm"]["value"] == np.mean(norm)
    assert runner.run_task(scorer, "colors", T.load_docs("colors", tmp_path)).samples == per_example

    scored = scorer.loglikelihood([(d["text"].rsplit(" ", 1)[0], " " + d["text"].rsplit(" ", 1)[1])
                                   for d in LAST_WORDS])
    lam = got["last_word"]["metrics"]
    assert lam["perplexity"]["value"] == pytest.approx(math.exp(-np.mean([ll for ll, _ in scored])), rel=1e-12)
    assert lam["acc"]["value"] == np.mean([g for _, g in scored])


def test_a_new_task_is_a_task_name_everywhere(registered):
    assert T.resolve_tasks("colors, piqa") == ["colors", "piqa"]
    assert T.multiple_choice("colors", COLORS[2]).gold == 2
    assert T.data_source("colors", None) == "hf-hub:lmlab/colors:test"
    with pytest.raises(LmlabError, match=r"unknown task 'colour'; known: titans, .*colors, last_word, file:PATH"):
        T.resolve_tasks("colour")
    with pytest.raises(LmlabError, match="last_word is not a multiple-choice task"):
        T.multiple_choice("last_word", LAST_WORDS[0])


def test_a_malformed_example_of_a_new_task_fails_before_scoring(registered, monkeypatch, tmp_path):
    monkeypatch.setattr(Colors, "load_local", lambda self, root: [{**COLORS[0], "answer": 3}])
    with pytest.raises(LmlabError, match=r"colors: example 0 from .* has gold answer index 3, expected 0..2"):
        T.load_docs("colors", tmp_path)


def test_the_runner_and_compare_name_no_task():
    """Every task, group, alias and prefix lives in the task package; nothing that runs tasks
    spells one (a new task touches only its file and its row)."""
    names = [*T.TASKS, *T.GROUPS, *T.ALIASES, *T.PREFIXES]
    lmlab_dir = Path(lmlab.__file__).parent
    for path in [lmlab_dir / "eval" / "runner.py", *sorted((lmlab_dir / "compare").glob("*.py"))]:
        source = path.read_text(encoding="utf-8")
        spelled = [n for n in names if f'"{n}"' in source or f"'{n}'" in source]
        assert not spelled, f"{path.name} names tasks {spelled}"

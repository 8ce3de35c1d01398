"""The evaluation tasks: one class per task, one file per task, and the table below.

Prompts, choices, delimiters and metrics follow lm-eval-harness 0.4 task by task (each class
names its YAML), so numbers are comparable with the field's. Documents come either from a local
folder laid out like ``shared/data`` (``eval/<task>/...`` and ``wikitext2/``; see that folder's
MANIFEST.md for each file) or, without one, from the HF hub with the dataset lm-eval uses. Every
loader returns the hub's schema, so one ``request`` serves both sources.

Adding a task is one new file here plus one row in ``TASKS``:

1. ``lmlab/eval/tasks/<task>.py`` with one class. A multiple-choice task subclasses
   ``base.MultipleChoiceTask`` and gives ``load_local(root) -> docs`` and ``request(doc) ->
   Choices`` (``base.choices_after(context, answers, gold)`` builds the usual one); a
   loglikelihood task (LAMBADA's shape) subclasses ``base.LoglikelihoodTask`` and its
   ``request(doc)`` is one ``(context, continuation)``; a rolling-perplexity task subclasses
   ``base.RollingTask`` (documents ``{"page": text}``). Set ``hub`` (the HF dataset, config and
   split lm-eval loads), ``from_hub`` where the hub's rows need reshaping, and ``metrics`` where
   they differ from the base's (e.g. ``("acc",)`` without acc_norm).
2. ``TASKS["<task>"] = TheClass`` below (and a ``GROUPS`` entry if it belongs to one).

The runner, ``lmlab eval`` and ``lmlab compare`` then take it by name; none of them names a task.
"""

from __future__ import annotations

from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.eval.tasks.arc import ArcChallenge, ArcEasy
from lmlab.eval.tasks.base import Choices, Doc, MultipleChoiceTask, Task, find_eval_root
from lmlab.eval.tasks.boolq import BoolQ
from lmlab.eval.tasks.hellaswag import HellaSwag, hellaswag_preprocess
from lmlab.eval.tasks.lambada import LambadaOpenAI, lambada_request
from lmlab.eval.tasks.openbookqa import OpenBookQA
from lmlab.eval.tasks.piqa import Piqa
from lmlab.eval.tasks.siqa import SocialIQa
from lmlab.eval.tasks.textfile import TextFile, text_file_docs
from lmlab.eval.tasks.wikitext import WikiText2, split_wikitext_articles, wikitext_detokenizer
from lmlab.eval.tasks.winogrande import Winogrande

__all__ = [
    "ALIASES", "GROUPS", "PREFIXES", "TASKS", "Choices", "Doc", "Task", "data_source", "find_eval_root",
    "get_task", "hellaswag_preprocess", "is_rolling", "lambada_request", "load_docs", "multiple_choice",
    "resolve_tasks", "split_wikitext_articles", "text_file_docs", "wikitext_detokenizer",
]

TASKS: dict[str, type[Task]] = {
    "wikitext2": WikiText2,
    "lambada_openai": LambadaOpenAI,
    "hellaswag": HellaSwag,
    "piqa": Piqa,
    "arc_easy": ArcEasy,
    "arc_challenge": ArcChallenge,
    "winogrande": Winogrande,
    "openbookqa": OpenBookQA,
    "boolq": BoolQ,
    "siqa": SocialIQa,
}
# Tasks named by an argument, ``prefix:ARG``: the class gets the whole name.
PREFIXES: dict[str, type[Task]] = {"file": TextFile}
# The benchmark set of the Titans paper (seed 000's `--tasks titans`): WikiText, LAMBADA and the
# common-sense multiple-choice tasks including PIQA and Social IQa.
GROUPS: dict[str, list[str]] = {
    "titans": ["wikitext2", "lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy",
               "arc_challenge", "siqa", "boolq"],
}
# Names other tools use for the same tasks.
ALIASES = {"winogrande_xl": "winogrande", "social_iqa": "siqa", "wikitext": "wikitext2",
           "wikitext-2": "wikitext2"}


def _task_class(name: str) -> type[Task] | None:
    prefix, colon, _ = name.partition(":")
    return TASKS.get(name) or (PREFIXES.get(prefix) if colon else None)


def _unknown(item: str) -> LmlabError:
    known = ", ".join([*GROUPS, *TASKS, *(f"{p}:PATH" for p in PREFIXES)])
    return LmlabError(f"--tasks: unknown task {item!r}; known: {known}")


def get_task(name: str) -> Task:
    """The task object of one task name: a row of ``TASKS``, an alias of one, or ``prefix:ARG``."""
    name = ALIASES.get(name, name)
    cls = _task_class(name)
    if cls is None:
        raise _unknown(name)
    return cls(name)


def resolve_tasks(spec: str | list[str]) -> list[str]:
    """``"titans"`` / ``"piqa,arc_easy"`` / ``"file:notes.txt"`` -> task names, groups expanded."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise LmlabError("--tasks is empty; name tasks or a group, e.g. --tasks titans")
    out: list[str] = []
    for item in items:
        name = ALIASES.get(item, item)
        if name in GROUPS:
            out.extend(GROUPS[name])
        elif _task_class(name) is not None:
            out.append(name)
        else:
            raise _unknown(item)
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------ by name
# Shorthands over get_task for callers that hold a task name (bench/eval_throughput.py, tests).


def load_docs(task: str, data_dir: Path | None, max_examples: int | None = None) -> list[Doc]:
    """``get_task(task).load(data_dir, max_examples)``: the checked documents."""
    return get_task(task).load(data_dir, max_examples)


def data_source(task: str, data_dir: Path | None) -> str:
    return get_task(task).data_source(data_dir)


def is_rolling(task: str) -> bool:
    return get_task(task).kind == "rolling"


def multiple_choice(task: str, doc: Doc) -> Choices:
    """The lm-eval request of one document of a multiple-choice task."""
    t = get_task(task)
    if not isinstance(t, MultipleChoiceTask):
        raise LmlabError(f"{task} is not a multiple-choice task")
    return t.request(doc)

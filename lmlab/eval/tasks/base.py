"""The task base classes: a task knows its documents, the request each one becomes and how the
scores become its metrics, so the runner asks the task and never its name.

- :class:`Task`: where documents come from, a local folder laid out like ``shared/data``
  (``load_local``) or the HF hub dataset lm-eval uses (``hub``, then ``from_hub`` into the same
  schema), and what the reports say of them.
- :class:`MultipleChoiceTask`: ``request(doc) -> Choices``; ``acc`` picks the choice with the
  highest log-likelihood, ``acc_norm`` the highest log-likelihood per character of the choice.
- :class:`LoglikelihoodTask`: ``request(doc) -> (context, continuation)``; ``perplexity`` is
  exp(-mean log-likelihood of the continuation), ``acc`` whether it is the greedy continuation.
- :class:`RollingTask`: each document scored whole over rolling windows; word and byte
  perplexity and bits-per-byte with lm-eval's word and byte counts (of the document before
  ``text`` changes it, e.g. WikiText's detokenization), plus token perplexity.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lmlab.errors import LmlabError
from lmlab.eval.metrics import TaskResult, capped_exp, mean_stderr, ratio_perplexity
from lmlab.eval.scoring import Scorer

Doc = dict[str, Any]
# What a malformed document raises while it is read or turned into its request.
LAYOUT_ERRORS = (KeyError, ValueError, TypeError, AttributeError)


# ------------------------------------------------------------------------------ file helpers


def read_jsonl(path: Path) -> list[Doc]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise LmlabError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return docs


def read_labels(path: Path, n: int) -> list[str]:
    labels = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(labels) != n:
        raise LmlabError(f"{path}: {len(labels)} labels for {n} examples; the files do not match")
    return labels


def need(path: Path) -> Path:
    """``path``, or a one-line error saying how the eval folder is laid out."""
    if not path.is_file():
        raise LmlabError(f"eval data file not found: {path} (lay the folder out like shared/data, "
                         "see its MANIFEST.md, or drop --data-dir to read the HF hub)")
    return path


def find_eval_root(data_dir: Path) -> Path:
    """The folder holding ``<task>/`` subfolders: ``DIR/eval`` when present, else ``DIR``."""
    if not data_dir.is_dir():
        raise LmlabError(f"--data-dir {data_dir} is not a directory")
    return data_dir / "eval" if (data_dir / "eval").is_dir() else data_dir


# ------------------------------------------------------------------------------ any task


class Task:
    """One benchmark, named by its row in the task table. ``kind``: multiple_choice |
    loglikelihood | rolling (what the lm-eval request type is)."""

    kind: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()
    hub: ClassVar[tuple[str, str | None, str]] = ("", None, "")
    """(dataset path, config name, split) lm-eval loads."""
    lm_eval_yaml: ClassVar[str] = ""
    uses_stride: ClassVar[bool] = False
    """Scored over rolling windows, so ``--stride`` applies (checked before anything is scored)."""
    local_note: ClassVar[str] = ""
    """Logged once when the documents come from a local folder."""
    local_detail: ClassVar[str] = ""
    """Added to ``local:DIR`` in the reports."""

    def __init__(self, name: str):
        self.name = name

    # ------------------------------------------------------------------ documents

    def load_local(self, root: Path) -> list[Doc]:
        """The documents from the eval folder ``root``, in the hub's schema."""
        raise NotImplementedError

    def from_hub(self, rows) -> list[Doc]:
        """The hub dataset's rows as documents (by default as they are)."""
        return list(rows)

    def check(self, doc: Doc) -> str | None:
        """What is wrong with one document (None: nothing); may raise one of LAYOUT_ERRORS."""
        return None

    def documents(self, data_dir: Path | None) -> list[Doc]:
        """Every document, from ``data_dir`` or the HF hub."""
        where = str(data_dir) if data_dir is not None else "the HF hub"
        try:
            return self.load_local(find_eval_root(data_dir)) if data_dir is not None else self._hub_documents()
        except LAYOUT_ERRORS as e:
            raise LmlabError(f"{self.name}: unexpected data layout in {where} ({type(e).__name__}: {e}); "
                             "see shared/data/MANIFEST.md for each file's format") from None

    def load(self, data_dir: Path | None, max_examples: int | None = None) -> list[Doc]:
        """The first ``max_examples`` documents, each checked, so a malformed file fails before
        anything is scored, naming the example."""
        docs = self.documents(data_dir)
        docs = docs[:max_examples] if max_examples else docs
        where = str(data_dir) if data_dir is not None else "the HF hub"
        for i, d in enumerate(docs):
            try:
                problem = self.check(d)
            except LAYOUT_ERRORS as e:
                raise LmlabError(f"{self.name}: example {i} from {where} is malformed "
                                 f"({type(e).__name__}: {e})") from None
            if problem:
                raise LmlabError(f"{self.name}: example {i} from {where} {problem}")
        return docs

    def data_source(self, data_dir: Path | None) -> str:
        """Where the documents came from, for the reports."""
        if data_dir is None:
            path, name, split = self.hub
            return f"hf-hub:{path}" + (f"/{name}" if name else "") + f":{split}"
        return f"local:{data_dir}" + self.local_detail

    def _hub_documents(self) -> list[Doc]:
        try:
            # deferred: datasets is optional (the data and eval extras); only the hub path needs it
            import datasets
        except ImportError:
            raise LmlabError(f"{self.name}: no --data-dir given and `datasets` is not installed "
                             "(pip install lmlab[data], or pass --data-dir)") from None
        path, name, split = self.hub
        try:
            rows = datasets.load_dataset(path, name, split=split)
        except Exception as e:  # network, auth, schema: all end the same way for the user
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise LmlabError(f"{self.name}: could not load {path} from the HF hub ({first}); "
                             "pass --data-dir with local files") from None
        return [dict(d) for d in self.from_hub(rows)]

    # ------------------------------------------------------------------ scoring

    def score(self, scorer: Scorer, docs: list[Doc], stride: int | None = None) -> TaskResult:
        """The task's metrics and per-example scores (``seconds`` left 0 for the caller)."""
        return self.result(docs, self.score_examples(scorer, docs, stride))

    def score_examples(self, scorer: Scorer, docs: list[Doc], stride: int | None = None) -> list[dict[str, Any]]:
        """One score dict per document, each independent of the others (so the documents may be
        scored in shares, e.g. one per training rank, and the shares put back in order)."""
        raise NotImplementedError

    def result(self, docs: list[Doc], samples: list[dict[str, Any]]) -> TaskResult:
        """The metrics of ``docs`` from their ``score_examples`` (in the same order)."""
        raise NotImplementedError


# ------------------------------------------------------------------------------ multiple choice


@dataclass
class Choices:
    """A multiple-choice example: score each (context, continuation); ``choices`` (the answer
    strings, no delimiter) give acc_norm's lengths."""

    pairs: list[tuple[str, str]]
    choices: list[str]
    gold: int


def choices_after(context: str, choices: list[str], gold: int) -> Choices:
    """Each choice as the continuation of one context, after lm-eval's target delimiter " "."""
    return Choices([(context, " " + c) for c in choices], list(choices), gold)


def answer_key_gold(doc: Doc) -> int:
    """The gold index of a ``choices.label`` / ``answerKey`` document (ARC, OpenBookQA)."""
    return doc["choices"]["label"].index(doc["answerKey"].lstrip())


class MultipleChoiceTask(Task):
    """Each document is one context and several continuations; the likeliest one is the answer."""

    kind = "multiple_choice"
    metrics = ("acc", "acc_norm")

    def request(self, doc: Doc) -> Choices:
        raise NotImplementedError

    def check(self, doc: Doc) -> str | None:
        ex = self.request(doc)
        if not 0 <= ex.gold < len(ex.pairs):
            return (f"has gold answer index {ex.gold}, expected 0..{len(ex.pairs) - 1} "
                    "(check its label file)")
        return None

    def score_examples(self, scorer: Scorer, docs: list[Doc], stride: int | None = None) -> list[dict[str, Any]]:
        examples = [self.request(d) for d in docs]
        flat = [p for ex in examples for p in ex.pairs]
        lls = [ll for ll, _ in scorer.loglikelihood(flat)]
        samples, k = [], 0
        for ex in examples:
            samples.append({"lls": lls[k : k + len(ex.pairs)], "gold": ex.gold})
            k += len(ex.pairs)
        return samples

    def result(self, docs: list[Doc], samples: list[dict[str, Any]]) -> TaskResult:
        acc, acc_norm = [], []
        for doc, sample in zip(docs, samples, strict=True):
            ex = self.request(doc)  # the choices' lengths (acc_norm)
            ll = np.array(sample["lls"])
            lengths = np.array([len(c) for c in ex.choices], dtype=np.float64)
            acc.append(float(np.argmax(ll) == ex.gold))
            acc_norm.append(float(np.argmax(ll / lengths) == ex.gold))
        metrics = {"acc": (float(np.mean(acc)), mean_stderr(np.array(acc)))}
        if "acc_norm" in self.metrics:
            metrics["acc_norm"] = (float(np.mean(acc_norm)), mean_stderr(np.array(acc_norm)))
        return TaskResult(self.name, len(docs), metrics, 0.0, samples)


# ------------------------------------------------------------------------------ loglikelihood


class LoglikelihoodTask(Task):
    """Each document is one (context, continuation): how likely, and is it the greedy one."""

    kind = "loglikelihood"
    metrics = ("perplexity", "acc")

    def request(self, doc: Doc) -> tuple[str, str]:
        raise NotImplementedError

    def check(self, doc: Doc) -> str | None:
        self.request(doc)
        return None

    def score_examples(self, scorer: Scorer, docs: list[Doc], stride: int | None = None) -> list[dict[str, Any]]:
        scored = scorer.loglikelihood([self.request(d) for d in docs])
        return [{"ll": float(ll), "is_greedy": bool(g)} for ll, g in scored]

    def result(self, docs: list[Doc], samples: list[dict[str, Any]]) -> TaskResult:
        lls = np.array([s["ll"] for s in samples])
        hits = np.array([float(s["is_greedy"]) for s in samples])
        ppl = capped_exp(-lls.mean())
        se = mean_stderr(lls)
        metrics = {"perplexity": (ppl, None if se is None else ppl * se),
                   "acc": (float(hits.mean()), mean_stderr(hits))}
        return TaskResult(self.name, len(docs), metrics, 0.0, samples)


# ------------------------------------------------------------------------------ rolling


class RollingTask(Task):
    """Each document (``{"page": text}``) scored whole: lm-eval's ``loglikelihood_rolling``."""

    kind = "rolling"
    metrics = ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity")
    uses_stride = True

    def text(self, page: str) -> str:
        """What is scored of a page (words and bytes are counted on the page itself)."""
        return page

    def score_examples(self, scorer: Scorer, docs: list[Doc], stride: int | None = None) -> list[dict[str, Any]]:
        pages = [d["page"] for d in docs]
        texts = [self.text(p) for p in pages]
        lls = scorer.loglikelihood_rolling(texts, stride)
        return [{"ll": float(ll), "tokens": len(scorer.encode(t)), "words": len(re.split(r"\s+", p)),
                 "bytes": len(p.encode("utf-8"))} for ll, t, p in zip(lls, texts, pages)]

    def result(self, docs: list[Doc], samples: list[dict[str, Any]]) -> TaskResult:
        lls = np.array([s["ll"] for s in samples])
        words, nbytes, tokens = (np.array([s[k] for s in samples], dtype=np.float64)
                                 for k in ("words", "bytes", "tokens"))
        bpb, bpb_se = -lls.sum() / nbytes.sum() / math.log(2), None
        byte_ppl, byte_se = ratio_perplexity(lls, nbytes)
        if byte_se is not None:
            bpb_se = byte_se / byte_ppl / math.log(2)  # d(log2 ppl) = d(ppl) / (ppl ln 2)
        metrics = {"word_perplexity": ratio_perplexity(lls, words), "byte_perplexity": (byte_ppl, byte_se),
                   "bits_per_byte": (bpb, bpb_se), "token_perplexity": ratio_perplexity(lls, tokens)}
        return TaskResult(self.name, len(docs), metrics, 0.0, samples)

"""ARC Easy and Challenge (lm-eval's arc/arc_easy.yaml, arc/arc_challenge.yaml): grade-school
science questions, the answer text after "Answer:"."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from lmlab.eval.tasks.base import (
    Choices,
    Doc,
    MultipleChoiceTask,
    answer_key_gold,
    choices_after,
    need,
    read_jsonl,
)


class Arc(MultipleChoiceTask):
    """The two ARC sets differ only in where their documents are."""

    folder: ClassVar[str] = ""
    file: ClassVar[str] = ""
    """The local documents: ``<folder>/<file>`` under the eval folder."""

    def load_local(self, root: Path) -> list[Doc]:
        out = []
        for d in read_jsonl(need(root / self.folder / self.file)):
            q = d["question"]
            out.append({"question": q["stem"], "answerKey": d["answerKey"],
                        "choices": {"text": [c["text"] for c in q["choices"]],
                                    "label": [c["label"] for c in q["choices"]]}})
        return out

    def request(self, doc: Doc) -> Choices:
        return choices_after(f"Question: {doc['question']}\nAnswer:", doc["choices"]["text"], answer_key_gold(doc))


class ArcEasy(Arc):
    folder = "arc_easy"
    file = "ARC-Easy-Test.jsonl"
    hub = ("allenai/ai2_arc", "ARC-Easy", "test")
    lm_eval_yaml = "arc/arc_easy.yaml"


class ArcChallenge(Arc):
    folder = "arc_challenge"
    file = "ARC-Challenge-Test.jsonl"
    hub = ("allenai/ai2_arc", "ARC-Challenge", "test")
    lm_eval_yaml = "arc/arc_challenge.yaml"

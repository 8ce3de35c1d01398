"""Social IQa (lm-eval's siqa/siqa.yaml): a situation, a question and three answers (labels 1-3)."""

from __future__ import annotations

from pathlib import Path

from lmlab.eval.tasks.base import (
    Choices,
    Doc,
    MultipleChoiceTask,
    choices_after,
    need,
    read_jsonl,
    read_labels,
)


class SocialIQa(MultipleChoiceTask):
    metrics = ("acc",)
    hub = ("lighteval/siqa", None, "validation")
    lm_eval_yaml = "siqa/siqa.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        docs = read_jsonl(need(root / "siqa" / "dev.jsonl"))
        labels = read_labels(need(root / "siqa" / "dev-labels.lst"), len(docs))
        keys = ("context", "question", "answerA", "answerB", "answerC")
        return [{**{k: d[k] for k in keys}, "label": y} for d, y in zip(docs, labels)]

    def request(self, doc: Doc) -> Choices:
        return choices_after(f"Q: {doc['context']} {doc['question']}\nA:",
                             [doc["answerA"], doc["answerB"], doc["answerC"]], int(doc["label"]) - 1)

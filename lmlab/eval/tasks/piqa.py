"""PIQA (lm-eval's piqa/piqa.yaml): which of two solutions reaches the goal."""

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


class Piqa(MultipleChoiceTask):
    hub = ("baber/piqa", None, "validation")
    lm_eval_yaml = "piqa/piqa.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        docs = read_jsonl(need(root / "piqa" / "valid.jsonl"))
        labels = read_labels(need(root / "piqa" / "valid-labels.lst"), len(docs))
        return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)}
                for d, y in zip(docs, labels)]

    def request(self, doc: Doc) -> Choices:
        return choices_after(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], int(doc["label"]))

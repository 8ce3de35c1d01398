"""BoolQ (lm-eval's super_glue/boolq/default.yaml): a passage, a yes/no question, " no" or " yes"."""

from __future__ import annotations

from pathlib import Path

from lmlab.eval.tasks.base import Choices, Doc, MultipleChoiceTask, choices_after, need, read_jsonl


class BoolQ(MultipleChoiceTask):
    metrics = ("acc",)
    hub = ("aps/super_glue", "boolq", "validation")
    lm_eval_yaml = "super_glue/boolq/default.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        out = []
        for d in read_jsonl(need(root / "boolq" / "val.jsonl")):
            label = d["label"]
            label = {"true": 1, "false": 0}[label.lower()] if isinstance(label, str) else int(label)
            out.append({"passage": d["passage"], "question": d["question"], "label": label})
        return out

    def request(self, doc: Doc) -> Choices:
        return choices_after(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"],
                             int(doc["label"]))

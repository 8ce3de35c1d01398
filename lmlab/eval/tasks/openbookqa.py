"""OpenBookQA (lm-eval's openbookqa/openbookqa.yaml): the question stem, then each answer."""

from __future__ import annotations

from pathlib import Path

from lmlab.eval.tasks.base import (
    Choices,
    Doc,
    MultipleChoiceTask,
    answer_key_gold,
    choices_after,
    need,
    read_jsonl,
)


class OpenBookQA(MultipleChoiceTask):
    hub = ("allenai/openbookqa", "main", "test")
    lm_eval_yaml = "openbookqa/openbookqa.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        # the local file is MosaicML's layout (query, choices, gold): into the hub's
        out = []
        for d in read_jsonl(need(root / "openbookqa" / "openbook_qa_mosaicml.jsonl")):
            labels = "ABCD"[: len(d["choices"])]
            out.append({"question_stem": d["query"], "answerKey": labels[d["gold"]],
                        "choices": {"text": d["choices"], "label": list(labels)}})
        return out

    def request(self, doc: Doc) -> Choices:
        return choices_after(doc["question_stem"], doc["choices"]["text"], answer_key_gold(doc))

"""LAMBADA, OpenAI's version (lm-eval's lambada/lambada_openai.yaml): the last word of a passage."""

from __future__ import annotations

from pathlib import Path

from lmlab.eval.tasks.base import Doc, LoglikelihoodTask, need, read_jsonl


def lambada_request(doc: Doc) -> tuple[str, str]:
    """The text up to its last space, and " " + the last word."""
    words = doc["text"].split(" ")
    return " ".join(words[:-1]), " " + words[-1]


class LambadaOpenAI(LoglikelihoodTask):
    hub = ("EleutherAI/lambada_openai", "default", "test")
    lm_eval_yaml = "lambada/lambada_openai.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        return [{"text": d["text"]} for d in read_jsonl(need(root / "lambada" / "lambada_test.jsonl"))]

    def request(self, doc: Doc) -> tuple[str, str]:
        return lambada_request(doc)

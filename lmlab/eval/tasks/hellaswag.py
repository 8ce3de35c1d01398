"""HellaSwag (lm-eval's hellaswag/hellaswag.yaml): pick the ending of an activity description."""

from __future__ import annotations

import re
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.eval.tasks.base import Choices, Doc, MultipleChoiceTask, choices_after, need


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess`` (tasks/hellaswag/utils.py)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _capitalize_last_fragment(ctx: str) -> str:
    # The local file keeps ctx_b (the start of the sentence the ending completes) lower-case;
    # lm-eval capitalizes it. It is the fragment after the context's last sentence end.
    m = re.search(r"(?:^|[.!?:] )([a-z])[^.!?]*$", ctx)
    return ctx if m is None else ctx[: m.start(1)] + m.group(1).upper() + ctx[m.end(1):]


class HellaSwag(MultipleChoiceTask):
    hub = ("Rowan/hellaswag", None, "validation")
    lm_eval_yaml = "hellaswag/hellaswag.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        # six lines per example: context, label, four endings
        path = need(root / "hellaswag" / "hellaswag_val_full.txt")
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 6:
            raise LmlabError(f"{path}: {len(lines)} lines is not a multiple of 6 (context, label, 4 endings)")
        docs = []
        for i in range(0, len(lines), 6):
            label = lines[i + 1].strip()
            if label not in {"0", "1", "2", "3"}:
                raise LmlabError(f"{path}:{i + 2}: label {label!r} is not 0-3")
            docs.append({"query": hellaswag_preprocess(_capitalize_last_fragment(lines[i])),
                         "choices": [hellaswag_preprocess(e) for e in lines[i + 2 : i + 6]], "gold": int(label)})
        return docs

    def from_hub(self, rows) -> list[Doc]:
        out = []
        for d in rows:
            ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
            out.append({"query": hellaswag_preprocess(d["activity_label"] + ": " + ctx),
                        "choices": [hellaswag_preprocess(e) for e in d["endings"]], "gold": int(d["label"])})
        return out

    def request(self, doc: Doc) -> Choices:
        return choices_after(doc["query"], doc["choices"], doc["gold"])

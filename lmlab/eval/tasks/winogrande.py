"""WinoGrande (lm-eval's winogrande/default.yaml): which option fills the blank. Partial
scoring: each option completes the context, and the shared rest of the sentence is the
continuation whose likelihood is compared."""

from __future__ import annotations

from pathlib import Path

from lmlab.eval.tasks.base import Choices, Doc, MultipleChoiceTask, need, read_jsonl


class Winogrande(MultipleChoiceTask):
    metrics = ("acc",)
    hub = ("allenai/winogrande", "winogrande_xl", "validation")
    lm_eval_yaml = "winogrande/default.yaml"

    def load_local(self, root: Path) -> list[Doc]:
        keys = ("sentence", "option1", "option2", "answer")
        return [{k: d[k] for k in keys} for d in read_jsonl(need(root / "winogrande" / "dev.jsonl"))]

    def request(self, doc: Doc) -> Choices:
        cut = doc["sentence"].index("_")
        rest = " " + doc["sentence"][cut + 1 :].strip()
        contexts = [doc["sentence"][:cut] + doc[o] for o in ("option1", "option2")]
        return Choices([(c, rest) for c in contexts], contexts, {"1": 0, "2": 1}[str(doc["answer"])])

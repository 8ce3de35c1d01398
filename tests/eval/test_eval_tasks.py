"""Task loaders and requests: the local files of shared/data, the hub schema, lm-eval's prompts."""

from __future__ import annotations

import shutil
import sys
import types

import pytest

from lmlab.errors import LmlabError
from lmlab.eval import tasks as T

# Examples per task in shared/data (its MANIFEST.md); wikitext2 test has 62 articles, as lm-eval's
# wikitext_document_level does.
COUNTS = {"wikitext2": 62, "lambada_openai": 5153, "hellaswag": 10042, "piqa": 1838, "arc_easy": 2376,
          "arc_challenge": 1172, "winogrande": 1267, "openbookqa": 500, "boolq": 3270, "siqa": 1954}


@pytest.mark.parametrize("task", sorted(COUNTS))
def test_local_loader_reads_every_example(eval_data, task):
    docs = T.load_docs(task, eval_data)
    assert len(docs) == COUNTS[task]
    assert len(T.load_docs(task, eval_data, max_examples=7)) == 7
    kind = T.TASKS[task].kind
    if kind == "multiple_choice":
        golds = set()
        for d in docs:
            ex = T.multiple_choice(task, d)
            assert 0 <= ex.gold < len(ex.pairs) == len(ex.choices) >= 2
            assert all(cont.startswith(" ") and ctx for ctx, cont in ex.pairs)
            golds.add(ex.gold)
        assert {0, 1} <= golds  # the gold answer is not always in one position
    elif kind == "loglikelihood":
        ctx, target = T.lambada_request(docs[0])
        assert ctx + target == docs[0]["text"] and target.startswith(" ") and " " not in target[1:]


def test_prompts_follow_lm_eval(eval_data):
    piqa = T.multiple_choice("piqa", T.load_docs("piqa", eval_data, 1)[0])
    assert piqa.pairs[0][0].startswith("Question: ") and piqa.pairs[0][0].endswith("\nAnswer:")
    boolq = T.multiple_choice("boolq", T.load_docs("boolq", eval_data, 1)[0])
    assert [c for _, c in boolq.pairs] == [" no", " yes"] and boolq.pairs[0][0].endswith("?\nAnswer:")
    siqa = T.multiple_choice("siqa", T.load_docs("siqa", eval_data, 1)[0])
    assert siqa.pairs[0][0].startswith("Q: ") and siqa.pairs[0][0].endswith("\nA:") and siqa.gold == 2
    wino = T.multiple_choice("winogrande", T.load_docs("winogrande", eval_data, 1)[0])
    # "Sarah was a much better surgeon than Maria so _ always got the easier cases." answer 2
    assert wino.pairs == [("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
                          ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases.")]
    assert wino.gold == 1
    obqa = T.load_docs("openbookqa", eval_data, 1)[0]
    assert T.multiple_choice("openbookqa", obqa).gold == 1 and obqa["answerKey"] == "B"
    hs = T.load_docs("hellaswag", eval_data, 2)
    # lm-eval capitalizes ctx_b, the fragment the ending completes; the local file keeps it lower-case.
    assert hs[0]["query"] == "Roof shingle removal: A man is sitting on a roof. He"
    assert hs[1]["query"].endswith("grabs the pole. The lady") and hs[0]["gold"] == 3


def test_arc_numeric_labels(eval_data):
    docs = T.load_docs("arc_easy", eval_data)
    numeric = [d for d in docs if d["answerKey"].isdigit()]
    assert numeric  # the manifest: 97 use 1-4
    for d in numeric:
        assert d["choices"]["label"][T.multiple_choice("arc_easy", d).gold] == d["answerKey"]


def test_wikitext_split():
    text = " = Title = \n \n A @-@ b \n = = Sub = = \n e . \n = <unk> for the next round \n = Next = \n f \n"
    docs = T.split_wikitext_articles(text)
    assert len(docs) == 2 and docs[0].startswith(" = Title = ") and docs[1] == " = Next = \n f \n"


def test_preprocessing_equals_lm_eval(eval_data):
    pytest.importorskip("lm_eval", reason="compares with lm-eval's own functions (pip install lmlab[eval])")
    # deferred: lm-eval is optional (the eval extra); the test skips without it
    from lm_eval.tasks.hellaswag.utils import preprocess

    # deferred: as above
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    for d in T.load_docs("wikitext2", eval_data):
        assert T.wikitext_detokenizer(d["page"]) == wikitext_detokenizer(d)
    for text in ("A man [title] walks.  [step] Then", " [header] How to x [title] Do y ", "plain"):
        assert T.hellaswag_preprocess(text) == preprocess(text)


def test_resolve_tasks():
    assert T.resolve_tasks("titans") == T.GROUPS["titans"]
    assert T.resolve_tasks("winogrande_xl, piqa,piqa") == ["winogrande", "piqa"]
    assert T.resolve_tasks(["file:a.txt", "boolq"]) == ["file:a.txt", "boolq"]
    with pytest.raises(LmlabError, match="unknown task 'pica'; known: titans"):
        T.resolve_tasks("pica")
    with pytest.raises(LmlabError, match="--tasks is empty"):
        T.resolve_tasks(" , ")


def test_missing_local_file_names_it(tmp_path):
    (tmp_path / "eval" / "piqa").mkdir(parents=True)
    with pytest.raises(LmlabError, match=r"eval data file not found: .*piqa/valid.jsonl"):
        T.load_docs("piqa", tmp_path)
    (tmp_path / "eval" / "piqa" / "valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n{bad\n')
    with pytest.raises(LmlabError, match=r"valid.jsonl:2: not valid JSON"):
        T.load_docs("piqa", tmp_path)


def test_hub_path_uses_lm_eval_datasets(monkeypatch):
    calls = []
    hub_rows = {
        "Rowan/hellaswag": [{"activity_label": "Baking", "ctx_a": "She mixes flour.", "ctx_b": "then she",
                             "endings": ["bakes [title] it.", "sings."], "label": "0"}],
        "baber/piqa": [{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}],
    }

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        if path not in hub_rows:
            raise ConnectionError("offline\nmore detail")
        return hub_rows[path]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    hs = T.load_docs("hellaswag", None)
    assert hs == [{"query": "Baking: She mixes flour. Then she", "choices": ["bakes. it.", "sings."], "gold": 0}]
    assert T.multiple_choice("piqa", T.load_docs("piqa", None)[0]).gold == 1
    assert calls == [("Rowan/hellaswag", None, "validation"), ("baber/piqa", None, "validation")]
    with pytest.raises(LmlabError, match=r"siqa: could not load lighteval/siqa from the HF hub \(offline\); pass --data-dir"):
        T.load_docs("siqa", None)


def test_bad_labels_are_refused_before_scoring(eval_data, tmp_path):
    root = tmp_path / "eval"
    shutil.copytree(eval_data / "eval" / "siqa", root / "siqa")
    labels = root / "siqa" / "dev-labels.lst"
    labels.write_text("\n".join(str(int(x) - 1) for x in labels.read_text().split()) + "\n")  # 0-based
    with pytest.raises(LmlabError, match=r"siqa: example \d+ from .* has gold answer index -1, expected 0..2"):
        T.load_docs("siqa", tmp_path)
    (root / "boolq").mkdir()
    (root / "boolq" / "val.jsonl").write_text('{"question": "q", "passage": "p", "label": "yes"}\n')
    with pytest.raises(LmlabError, match=r"boolq: unexpected data layout in .* \(KeyError: 'yes'\)"):
        T.load_docs("boolq", tmp_path)

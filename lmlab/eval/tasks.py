"""The evaluation tasks: where each one's data comes from and how it becomes scoring requests.

Prompts, choices, delimiters and metrics follow lm-eval-harness 0.4 task by task (its YAML is
named beside each task), so numbers are comparable with the field's. Documents come either from
a local folder laid out like ``shared/data`` (``eval/<task>/...`` and ``wikitext2/``; see that
folder's MANIFEST.md for each file) or, without one, from the HF hub with the dataset lm-eval
uses. Every loader returns the hub's schema, so one ``requests`` function serves both sources.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.errors import LmlabError

Doc = dict[str, Any]

# The benchmark set of the Titans paper (seed 000's `--tasks titans`): WikiText, LAMBADA and the
# common-sense multiple-choice tasks including PIQA and Social IQa.
GROUPS: dict[str, list[str]] = {
    "titans": ["wikitext2", "lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy",
               "arc_challenge", "siqa", "boolq"],
}
# Names other tools use for the same tasks.
ALIASES = {"winogrande_xl": "winogrande", "social_iqa": "siqa", "wikitext": "wikitext2",
           "wikitext-2": "wikitext2"}


@dataclass(frozen=True)
class Task:
    """One benchmark. ``kind``: multiple_choice | loglikelihood | rolling."""

    name: str
    kind: str
    metrics: tuple[str, ...]
    local: Callable[[Path], list[Doc]]
    hub: tuple[str, str | None, str]
    """(dataset path, config name, split) lm-eval loads."""
    hub_docs: Callable[[Any], list[Doc]] = list
    lm_eval_yaml: str = ""


# ------------------------------------------------------------------------------ file helpers


def _read_jsonl(path: Path) -> list[Doc]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    docs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise LmlabError(f"{path}:{n}: not valid JSON ({e.msg})") from None
    return docs


def _read_labels(path: Path, n: int) -> list[str]:
    labels = [x.strip() for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if len(labels) != n:
        raise LmlabError(f"{path}: {len(labels)} labels for {n} examples; the files do not match")
    return labels


def _need(path: Path) -> Path:
    if not path.is_file():
        raise LmlabError(f"eval data file not found: {path} (lay the folder out like shared/data, "
                         "see its MANIFEST.md, or drop --data-dir to read the HF hub)")
    return path


# ------------------------------------------------------------------------------ wikitext


def wikitext_detokenizer(text: str) -> str:
    """lm-eval's ``wikitext_detokenizer`` (tasks/wikitext/preprocess_wikitext.py)."""
    s = text.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    for a, b in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), (" : ", ": "), (" ; ", "; "),
                 (" . ", ". "), (" ! ", "! "), (" ? ", "? "), (" , ", ", ")):
        s = s.replace(a, b)
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    for a, b in (("= = = =", "===="), ("= = =", "==="), ("= =", "=="), (" \N{DEGREE SIGN} ", "\N{DEGREE SIGN}"),
                 (" \n", "\n"), ("\n ", "\n"), (" N ", " 1 "), (" 's", "'s")):
        s = s.replace(a, b)
    return s


_ARTICLE = re.compile(r"^ = [^=].* = $")


def split_wikitext_articles(text: str) -> list[str]:
    """A WikiText ``.tokens`` file -> one document per article (a `` = Title = `` line starts
    each), the unit of lm-eval's ``wikitext_document_level`` dataset."""
    docs: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if _ARTICLE.match(line.rstrip("\n")) or not docs:
            docs.append([])
        docs[-1].append(line)
    return ["".join(d) for d in docs if "".join(d).strip()]


def _local_wikitext(root: Path) -> list[Doc]:
    for cand in (root / "wikitext2", root.parent / "wikitext2", root):
        if (cand / "wiki.test.tokens").is_file():
            text = (cand / "wiki.test.tokens").read_text(encoding="utf-8")
            return [{"page": p} for p in split_wikitext_articles(text)]
    raise LmlabError(f"eval data file not found: {root}/wikitext2/wiki.test.tokens (lay the folder "
                     "out like shared/data, or drop --data-dir to read the HF hub)")


def text_file_docs(path: Path) -> list[Doc]:
    """Any local UTF-8 text file as one document (``file:PATH`` tasks)."""
    if not path.is_file():
        why = "is not a regular file" if path.exists() else "no such file"
        raise LmlabError(f"--tasks file:{path}: {why}; give a UTF-8 text file to score")
    try:
        return [{"page": path.read_text(encoding="utf-8")}]
    except UnicodeDecodeError as e:
        raise LmlabError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# ------------------------------------------------------------------------------ hellaswag


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag ``preprocess`` (tasks/hellaswag/utils.py)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_hub(rows) -> list[Doc]:
    out = []
    for d in rows:
        ctx = d["ctx_a"] + " " + d["ctx_b"].capitalize()
        out.append({"query": hellaswag_preprocess(d["activity_label"] + ": " + ctx),
                    "choices": [hellaswag_preprocess(e) for e in d["endings"]], "gold": int(d["label"])})
    return out


def _capitalize_last_fragment(ctx: str) -> str:
    # The local file keeps ctx_b (the start of the sentence the ending completes) lower-case;
    # lm-eval capitalizes it. It is the fragment after the context's last sentence end.
    m = re.search(r"(?:^|[.!?:] )([a-z])[^.!?]*$", ctx)
    return ctx if m is None else ctx[: m.start(1)] + m.group(1).upper() + ctx[m.end(1):]


def _local_hellaswag(root: Path) -> list[Doc]:
    path = _need(root / "hellaswag" / "hellaswag_val_full.txt")
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


# ------------------------------------------------------------------------------ the other loaders


def _local_lambada(root: Path) -> list[Doc]:
    return [{"text": d["text"]} for d in _read_jsonl(_need(root / "lambada" / "lambada_test.jsonl"))]


def _local_piqa(root: Path) -> list[Doc]:
    docs = _read_jsonl(_need(root / "piqa" / "valid.jsonl"))
    labels = _read_labels(_need(root / "piqa" / "valid-labels.lst"), len(docs))
    return [{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)} for d, y in zip(docs, labels)]


def _local_arc(folder: str, file: str) -> Callable[[Path], list[Doc]]:
    def load(root: Path) -> list[Doc]:
        out = []
        for d in _read_jsonl(_need(root / folder / file)):
            q = d["question"]
            out.append({"question": q["stem"], "answerKey": d["answerKey"],
                        "choices": {"text": [c["text"] for c in q["choices"]],
                                    "label": [c["label"] for c in q["choices"]]}})
        return out

    return load


def _local_winogrande(root: Path) -> list[Doc]:
    keys = ("sentence", "option1", "option2", "answer")
    return [{k: d[k] for k in keys} for d in _read_jsonl(_need(root / "winogrande" / "dev.jsonl"))]


def _local_openbookqa(root: Path) -> list[Doc]:
    out = []
    for d in _read_jsonl(_need(root / "openbookqa" / "openbook_qa_mosaicml.jsonl")):
        labels = "ABCD"[: len(d["choices"])]
        out.append({"question_stem": d["query"], "answerKey": labels[d["gold"]],
                    "choices": {"text": d["choices"], "label": list(labels)}})
    return out


def _local_boolq(root: Path) -> list[Doc]:
    out = []
    for d in _read_jsonl(_need(root / "boolq" / "val.jsonl")):
        label = d["label"]
        label = {"true": 1, "false": 0}[label.lower()] if isinstance(label, str) else int(label)
        out.append({"passage": d["passage"], "question": d["question"], "label": label})
    return out


def _local_siqa(root: Path) -> list[Doc]:
    docs = _read_jsonl(_need(root / "siqa" / "dev.jsonl"))
    labels = _read_labels(_need(root / "siqa" / "dev-labels.lst"), len(docs))
    keys = ("context", "question", "answerA", "answerB", "answerC")
    return [{**{k: d[k] for k in keys}, "label": y} for d, y in zip(docs, labels)]


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("wikitext2", "rolling", ("word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"),
             _local_wikitext, ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test"),
             lm_eval_yaml="wikitext/wikitext.yaml"),
        Task("lambada_openai", "loglikelihood", ("perplexity", "acc"), _local_lambada,
             ("EleutherAI/lambada_openai", "default", "test"), lm_eval_yaml="lambada/lambada_openai.yaml"),
        Task("hellaswag", "multiple_choice", ("acc", "acc_norm"), _local_hellaswag,
             ("Rowan/hellaswag", None, "validation"), _hellaswag_hub, "hellaswag/hellaswag.yaml"),
        Task("piqa", "multiple_choice", ("acc", "acc_norm"), _local_piqa,
             ("baber/piqa", None, "validation"), lm_eval_yaml="piqa/piqa.yaml"),
        Task("arc_easy", "multiple_choice", ("acc", "acc_norm"), _local_arc("arc_easy", "ARC-Easy-Test.jsonl"),
             ("allenai/ai2_arc", "ARC-Easy", "test"), lm_eval_yaml="arc/arc_easy.yaml"),
        Task("arc_challenge", "multiple_choice", ("acc", "acc_norm"),
             _local_arc("arc_challenge", "ARC-Challenge-Test.jsonl"),
             ("allenai/ai2_arc", "ARC-Challenge", "test"), lm_eval_yaml="arc/arc_challenge.yaml"),
        Task("winogrande", "multiple_choice", ("acc",), _local_winogrande,
             ("allenai/winogrande", "winogrande_xl", "validation"), lm_eval_yaml="winogrande/default.yaml"),
        Task("openbookqa", "multiple_choice", ("acc", "acc_norm"), _local_openbookqa,
             ("allenai/openbookqa", "main", "test"), lm_eval_yaml="openbookqa/openbookqa.yaml"),
        Task("boolq", "multiple_choice", ("acc",), _local_boolq,
             ("aps/super_glue", "boolq", "validation"), lm_eval_yaml="super_glue/boolq/default.yaml"),
        Task("siqa", "multiple_choice", ("acc",), _local_siqa,
             ("lighteval/siqa", None, "validation"), lm_eval_yaml="siqa/siqa.yaml"),
    )
}


# ------------------------------------------------------------------------------ requests


@dataclass
class Choices:
    """A multiple-choice example: score each (context, continuation); ``choices`` (the answer
    strings, no delimiter) give acc_norm's lengths."""

    pairs: list[tuple[str, str]]
    choices: list[str]
    gold: int


def _mc(context: str, choices: list[str], gold: int) -> Choices:
    return Choices([(context, " " + c) for c in choices], list(choices), gold)


def _arc_gold(doc: Doc) -> int:
    return doc["choices"]["label"].index(doc["answerKey"].lstrip())


def multiple_choice(task: str, doc: Doc) -> Choices:
    """The lm-eval request of one multiple-choice document (target delimiter " ")."""
    if task == "hellaswag":
        return _mc(doc["query"], doc["choices"], doc["gold"])
    if task == "piqa":
        return _mc(f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], int(doc["label"]))
    if task in ("arc_easy", "arc_challenge"):
        return _mc(f"Question: {doc['question']}\nAnswer:", doc["choices"]["text"], _arc_gold(doc))
    if task == "openbookqa":
        return _mc(doc["question_stem"], doc["choices"]["text"], _arc_gold(doc))
    if task == "boolq":
        return _mc(f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:", ["no", "yes"], int(doc["label"]))
    if task == "siqa":
        return _mc(f"Q: {doc['context']} {doc['question']}\nA:",
                   [doc["answerA"], doc["answerB"], doc["answerC"]], int(doc["label"]) - 1)
    if task == "winogrande":
        # Partial scoring: the choice fills the blank in the context; the shared rest of the
        # sentence is the continuation whose likelihood is compared.
        cut = doc["sentence"].index("_")
        rest = " " + doc["sentence"][cut + 1 :].strip()
        contexts = [doc["sentence"][:cut] + doc[o] for o in ("option1", "option2")]
        return Choices([(c, rest) for c in contexts], contexts, {"1": 0, "2": 1}[str(doc["answer"])])
    raise LmlabError(f"{task} is not a multiple-choice task")


def lambada_request(doc: Doc) -> tuple[str, str]:
    """lm-eval's lambada_openai: the text up to its last space, and " " + the last word."""
    words = doc["text"].split(" ")
    return " ".join(words[:-1]), " " + words[-1]


# ------------------------------------------------------------------------------ resolving


def resolve_tasks(spec: str | list[str]) -> list[str]:
    """``"titans"`` / ``"piqa,arc_easy"`` / ``"file:notes.txt"`` -> task names, groups expanded."""
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise LmlabError("--tasks is empty; name tasks or a group, e.g. --tasks titans")
    out: list[str] = []
    for item in items:
        name = ALIASES.get(item, item)
        if name in GROUPS:
            out.extend(GROUPS[name])
        elif name in TASKS or name.startswith("file:"):
            out.append(name)
        else:
            known = ", ".join([*GROUPS, *TASKS, "file:PATH"])
            raise LmlabError(f"--tasks: unknown task {item!r}; known: {known}")
    return list(dict.fromkeys(out))


def find_eval_root(data_dir: Path) -> Path:
    """The folder holding ``<task>/`` subfolders: ``DIR/eval`` when present, else ``DIR``."""
    if not data_dir.is_dir():
        raise LmlabError(f"--data-dir {data_dir} is not a directory")
    return data_dir / "eval" if (data_dir / "eval").is_dir() else data_dir


def is_rolling(task: str) -> bool:
    return task.startswith("file:") or TASKS[task].kind == "rolling"


def data_source(task: str, data_dir: Path | None) -> str:
    """Where a task's documents came from, for the reports."""
    if task.startswith("file:"):
        return task
    if data_dir is None:
        path, name, split = TASKS[task].hub
        return f"hf-hub:{path}" + (f"/{name}" if name else "") + f":{split}"
    return f"local:{data_dir}" + (" (tokenized wiki.test.tokens)" if task == "wikitext2" else "")


def load_docs(task: str, data_dir: Path | None, max_examples: int | None = None) -> list[Doc]:
    """The task's documents (the first ``max_examples``), from ``data_dir`` or the HF hub.

    Every multiple-choice document is turned into its request here, so a malformed file fails
    before anything is scored, naming the example."""
    where = str(data_dir) if data_dir is not None else "the HF hub"
    if task.startswith("file:"):
        docs = text_file_docs(Path(task[5:]))
    else:
        try:
            docs = TASKS[task].local(find_eval_root(data_dir)) if data_dir is not None else _hub_docs(TASKS[task])
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise LmlabError(f"{task}: unexpected data layout in {where} ({type(e).__name__}: {e}); "
                             "see shared/data/MANIFEST.md for each file's format") from None
    docs = docs[:max_examples] if max_examples else docs
    if not is_rolling(task) and TASKS[task].kind == "multiple_choice":
        for i, d in enumerate(docs):
            try:
                ex = multiple_choice(task, d)
            except (KeyError, ValueError, TypeError, AttributeError) as e:
                raise LmlabError(f"{task}: example {i} from {where} is malformed ({type(e).__name__}: {e})") from None
            if not 0 <= ex.gold < len(ex.pairs):
                raise LmlabError(f"{task}: example {i} from {where} has gold answer index {ex.gold}, "
                                 f"expected 0..{len(ex.pairs) - 1} (check its label file)")
    return docs


def _hub_docs(task: Task) -> list[Doc]:
    try:
        import datasets
    except ImportError:
        raise LmlabError(f"{task.name}: no --data-dir given and `datasets` is not installed "
                         "(pip install lmlab[data], or pass --data-dir)") from None
    path, name, split = task.hub
    try:
        rows = datasets.load_dataset(path, name, split=split)
    except Exception as e:  # network, auth, schema: all end the same way for the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LmlabError(f"{task.name}: could not load {path} from the HF hub ({first}); "
                         "pass --data-dir with local files") from None
    docs = task.hub_docs(rows)
    return [dict(d) for d in docs]

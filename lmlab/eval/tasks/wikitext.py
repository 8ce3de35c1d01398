"""WikiText-2 (lm-eval's wikitext/wikitext.yaml): document-level rolling perplexity. lm-eval
reads the raw text from the hub and detokenizes it; the local copy is the tokenized
``wiki.test.tokens`` split into articles."""

from __future__ import annotations

import re
from pathlib import Path

from lmlab.errors import LmlabError
from lmlab.eval.tasks.base import Doc, RollingTask


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


class WikiText2(RollingTask):
    hub = ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test")
    lm_eval_yaml = "wikitext/wikitext.yaml"
    local_detail = " (tokenized wiki.test.tokens)"
    local_note = ("note: local wikitext2 is the tokenized WikiText-2 (wiki.test.tokens, with <unk>), not the raw "
                  "text lm-eval reads from the hub: compare its perplexities between lmlab runs only")

    def load_local(self, root: Path) -> list[Doc]:
        for cand in (root / "wikitext2", root.parent / "wikitext2", root):
            if (cand / "wiki.test.tokens").is_file():
                text = (cand / "wiki.test.tokens").read_text(encoding="utf-8")
                return [{"page": p} for p in split_wikitext_articles(text)]
        raise LmlabError(f"eval data file not found: {root}/wikitext2/wiki.test.tokens (lay the folder "
                         "out like shared/data, or drop --data-dir to read the HF hub)")

    def text(self, page: str) -> str:
        # lm-eval detokenizes WikiText's tokenized layout but counts words and bytes of the original
        return wikitext_detokenizer(page)

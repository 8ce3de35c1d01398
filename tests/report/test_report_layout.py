"""How reports look: the bits-per-byte bars start at 0, and a wide table never widens the page
(no headless browser here: the HTML structure and its CSS are checked instead)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from lmlab.compare.report import CSS, draw_bpb, page

TASKS = [f"{t}/{m}" for t in ("arc_easy", "arc_challenge", "hellaswag", "piqa", "winogrande", "boolq",
                               "lambada_openai", "siqa") for m in ("acc", "acc_norm")]


def _stat(mean: float, std: float = 0.0, n: int = 1) -> dict[str, float]:
    return {"mean": mean, "std": std, "n": n}


def _results(bpbs: list[float]) -> dict:
    summary = {"num_params": _stat(1.2e6), "tokens": _stat(5e5), "tokens_per_s": _stat(1234.0),
               "peak_mem_mb": _stat(812.0), "wall_s": _stat(42.0), "val_loss": _stat(1.1)}
    arms = [{"name": f"arm{i}", "family": "transformer", "runs": [],
             "summary": {**summary, "val_bpb": _stat(b, 0.002), **{k: _stat(0.2512, 0.0123) for k in TASKS}}}
            for i, b in enumerate(bpbs)]
    return {"name": "RUN", "description": "", "seeds": [1], "budget": {}, "arms": arms}


def test_bpb_bars_start_at_zero_and_carry_their_values():
    """Two arms 0.02 bpb apart: the axis starts at 0 (it used to start just under the smaller
    bar, drawing a 1% gap as a tall one), and each bar is labelled with its mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        draw_bpb(ax, _results([1.50, 1.52]))
        bottom, top = ax.get_ylim()
        assert bottom == 0.0 and top > 1.52
        assert sorted(t.get_text() for t in ax.texts) == ["1.5000", "1.5200"]
    finally:
        plt.close(fig)


class _Tables(HTMLParser):
    """For every <table>: the classes of the elements around it; and every <th>'s raw HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str]] = []
        self.tables: list[list[str]] = []
        self.headers: list[str] = []
        self._th: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([cls for _, cls in self.stack])
        if tag == "th":
            self._th = []
        elif self._th is not None:
            self._th.append(f"<{tag}>")
        if tag not in ("wbr", "img", "meta", "br"):
            self.stack.append((tag, dict(attrs).get("class") or ""))

    def handle_endtag(self, tag):
        if tag == "th" and self._th is not None:
            self.headers.append("".join(self._th))
            self._th = None
        while self.stack and self.stack.pop()[0] != tag:
            pass

    def handle_data(self, data):
        if self._th is not None:
            self._th.append(data)


def test_a_wide_table_scrolls_in_its_own_box_and_its_headers_wrap():
    """`lmlab report RUN` with many task columns: every table sits in a box that scrolls sideways
    (the page stays 1100 px), in a smaller font; headers may wrap after "/", values may not."""
    html = page(_results([1.5]), {})
    parsed = _Tables()
    parsed.feed(html)
    assert parsed.tables and all("table-wrap" in classes for classes in parsed.tables)
    rules = dict(re.findall(r"([^{}]+)\{([^{}]*)\}", CSS))
    assert "overflow-x:auto" in rules[".table-wrap"] and "max-width:100%" in rules[".table-wrap"]
    assert "max-width:1100px" in rules["body"]
    assert "white-space:normal" in rules["th"] and "white-space:nowrap" in rules["td"]
    assert "font-size:.85em" in rules["table"]
    assert "piqa/<wbr>acc_norm" in parsed.headers and len(parsed.headers) == 2 + 7 + len(TASKS)

"""What a comparison (or any set of run dirs) writes: ``results.json`` (per arm, per seed, and
mean ± std over seeds), ``report.md`` and ``report.html`` (one self-contained page: its charts
are PNGs inside it, nothing is fetched), plus the charts as files for docs.

``lmlab report RUN_OR_COMPARE...`` builds the same from existing run dirs and compare dirs;
``lmlab report RUN`` adds one run's panels (loss, lr, grad norm, tokens/s, memory). A tuned,
scaled comparison (``results["scaling"]``) adds loss against compute, the tuning curves and their
table (``scaling_report.py``).
"""

from __future__ import annotations

import base64
import html
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

from lmlab import rundir
from lmlab.compare import scaling_report
from lmlab.configure import validate_config
from lmlab.errors import LmlabError
from lmlab.eval.runner import RESULTS_FILE
from lmlab.fsio import atomic_write_text
from lmlab.registry import get_family
from lmlab.report.plots import read_metrics
from lmlab.runs import checkpoint_config

# metrics.json keys shown per run, with their labels in the table
HEADLINE = [("num_params", "params"), ("tokens", "tokens"), ("tokens_per_s", "tokens/s"),
            ("peak_mem_mb", "peak MB"), ("wall_s", "train s"), ("val_loss", "val loss"), ("val_bpb", "val bpb")]


# An eval row's own keys; any other number in it is the family's (``eval_diagnostics``).
_EVAL_KEYS = {"step", "tokens", "train_s", "val_loss", "val_ppl", "val_bpb", "val_loss_by_source"}


# --------------------------------------------------------------------------------- collecting


def collect(spec, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """results.json of a comparison: its settings and, per arm, every seed's numbers and their
    mean ± std (sample std over seeds; 0 for one seed)."""
    budget = {k: v for k, v in spec.train.items() if k in ("max_steps", "max_tokens", "epochs", "max_seconds")}
    return _results(spec.name, spec.description, budget, spec.seeds, [a.name for a in spec.arms], runs)


def _results(name: str, description: str, budget: dict[str, Any], seeds: list[int], order: list[str],
             runs: list[dict[str, Any]]) -> dict[str, Any]:
    arms = []
    for arm in order:
        mine = [_run_entry(r) for r in runs if r["arm"] == arm]
        if not mine:
            continue
        keys = sorted({k for r in mine for k, v in r["numbers"].items() if isinstance(v, (int, float))})
        summary = {}
        for k in keys:
            vals = [r["numbers"][k] for r in mine if isinstance(r["numbers"].get(k), (int, float))]
            summary[k] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                          "n": len(vals)}
        arms.append({"name": arm, "family": mine[0]["family"], "runs": mine, "summary": summary})
    return {"name": name, "description": description, "budget": budget, "seeds": seeds, "arms": arms,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _run_entry(r: dict[str, Any]) -> dict[str, Any]:
    """One run's numbers: metrics.json's headline, each task's metrics, the family's final
    diagnostics (numeric scalars, one level of nesting flattened); its curves for the charts."""
    numbers = {k: r["metrics"][k] for k, _ in HEADLINE if k in r["metrics"]}
    for task, res in (r.get("tasks") or {}).items():
        for metric, m in res.get("metrics", {}).items():
            numbers[f"{task}/{metric}"] = m["value"]
    diag = r.get("diagnostics") or {}
    final = diag.get("final", diag) if isinstance(diag, dict) else {}
    numbers.update({f"diag/{k}": v for k, v in _flat({k: v for k, v in (final or {}).items() if k != "step"})})
    curves = {
        "val": [(row["tokens"], row["val_bpb"]) for row in r["rows"] if "val_bpb" in row],
        "train": [(row["wall_s"], row["loss"]) for row in r["rows"] if "loss" in row and "wall_s" in row],
    }
    periodic = diag.get("periodic", []) if isinstance(diag, dict) else []
    over_time = [{"step": e.get("step"), **dict(_flat({k: v for k, v in e.items() if k != "step"}))}
                 for e in periodic if isinstance(e, dict)]
    if not over_time:  # the numbers a family logs with every evaluation (eval_diagnostics)
        over_time = [e for e in ({"step": row["step"], **dict(_flat({k: v for k, v in row.items() if k not in _EVAL_KEYS}))}
                                 for row in r["rows"] if "val_loss" in row) if len(e) > 1]
    # train.eval_tasks: the benchmarks scored while it trained, by step (``task/metric``)
    tasks_over_time = [{"step": row["step"], **{f"{task}/{k}": v for task, metrics in row["tasks"].items()
                                                for k, v in metrics.items() if _finite_number(v)}}
                       for row in r["rows"] if isinstance(row.get("tasks"), dict)]
    return {"seed": r["seed"], "run": r["run"], "family": r["family"], "numbers": numbers, "curves": curves,
            "rows": r["rows"], "diagnostics_over_time": over_time, "tasks_over_time": tasks_over_time}


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _flat(node: Any, prefix: str = "", depth: int = 0) -> list[tuple[str, float]]:
    """The numbers of a diagnostics tree: ``sine.d_frequency``, ``usage[2]`` (apelr's plan usage),
    ``levels[0].symbols_per_code``; three levels deep at most, booleans and text left out."""
    if isinstance(node, bool) or depth > 3:
        return []
    if isinstance(node, (int, float)):
        return [(prefix, node)] if math.isfinite(node) else []
    if isinstance(node, dict):
        return [kv for k, v in node.items() for kv in _flat(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)]
    if isinstance(node, list) and len(node) <= 16:
        return [kv for i, v in enumerate(node) for kv in _flat(v, f"{prefix}[{i}]", depth + 1)]
    return []


def collect_dirs(paths: list[str | Path]) -> dict[str, Any]:
    """The results of existing run dirs and compare dirs (a compare dir's arms as they are; a
    run dir as an arm named after it), scores taken from what they saved: nothing is trained or
    scored here."""
    runs: list[dict[str, Any]] = []
    order: list[str] = []
    seeds: set[int] = set()
    for p in map(Path, paths):
        if (p / "results.json").is_file():
            saved = json.loads((p / "results.json").read_text(encoding="utf-8"))
            for arm in saved["arms"]:
                name = arm["name"] if arm["name"] not in order else f"{p.name}/{arm['name']}"
                order.append(name)
                for r in arm["runs"]:
                    runs.append(run_record(Path(r["run"]), name, r["seed"]))
                    seeds.add(r["seed"])
        elif rundir.has_checkpoint(p) or (p / "metrics.json").is_file():
            name = p.name if p.name not in order else str(p)
            order.append(name)
            entry = run_record(p, name, None)
            runs.append(entry)
            seeds.add(entry["seed"])
        else:
            raise LmlabError(f"{p}: neither a run dir (checkpoints/, metrics.json) nor a compare dir (results.json)")
    return _results("report", "", {}, sorted(seeds), order, runs)


def run_record(run: Path, arm: str, seed: int | None) -> dict[str, Any]:
    """What a finished run dir says of itself: metrics.json, its metrics rows (finite values),
    the family's diagnostics and the scores kept in eval_results.json (``seed`` None: the run's)."""
    if not (run / "metrics.json").is_file():
        raise LmlabError(f"{run}: no metrics.json (the run has not finished); finish it with lmlab train --resume {run}")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    cfg = validate_config(checkpoint_config(rundir.latest_snapshot(run).meta), source=str(run))
    diag_file = run / get_family(cfg.model.family)[1].diagnostics_file
    scores = run / RESULTS_FILE
    rows = [r for r in read_metrics(run)
            if not any(isinstance(v, float) and not math.isfinite(v) for v in r.values())]
    return {"arm": arm, "seed": cfg.train.seed if seed is None else seed, "run": str(run), "family": cfg.model.family,
            "metrics": metrics,
            "tasks": json.loads(scores.read_text(encoding="utf-8")).get("tasks", {}) if scores.is_file() else {},
            "diagnostics": json.loads(diag_file.read_text(encoding="utf-8")) if diag_file.is_file() else None,
            "rows": rows}


# ----------------------------------------------------------------------------------- writing


def write_reports(out: Path, results: dict[str, Any], single_run: bool = False) -> None:
    """results.json, report.md, report.html and the charts (curves.png, bpb.png[, run.png];
    compute.png and tuning.png of a scaled comparison)."""
    out.mkdir(parents=True, exist_ok=True)
    charts = {"curves": _curves_png(results), "bpb": _bpb_png(results)}
    if "scaling" in results:
        charts |= {"compute": scaling_report.compute_png(results["scaling"]),
                   "tuning": scaling_report.tuning_png(results["scaling"])}
    if single_run:
        run = results["arms"][0]["runs"][0]
        charts["run"] = _run_png(run)
        if run["diagnostics_over_time"]:
            charts["diagnostics"] = _diag_png(run["diagnostics_over_time"])
        if run["tasks_over_time"]:
            charts["tasks"] = _tasks_png(run["tasks_over_time"])
    for name, png in charts.items():
        (out / f"{name}.png").write_bytes(png)
    saved = {**results, "arms": [{**a, "runs": [{k: v for k, v in r.items() if k != "rows"} for r in a["runs"]]}
                                 for a in results["arms"]]}
    atomic_write_text(out / "results.json", json.dumps(saved, indent=2) + "\n")
    atomic_write_text(out / "report.md", markdown(results))
    atomic_write_text(out / "report.html", page(results, charts))


def write_combined(root: Path, spec, parts: list[tuple[str, dict[str, Any]]]) -> None:
    """A multi-dataset comparison's top level: results.json with every dataset's results, and
    report.md / report.html with a section (table, charts) per dataset."""
    slim = {name: json.loads((root / name / "results.json").read_text(encoding="utf-8")) for name, _ in parts}
    atomic_write_text(root / "results.json", json.dumps(
        {"name": spec.name, "description": spec.description, "seeds": spec.seeds, "datasets": slim}, indent=2) + "\n")
    head = [f"# {spec.name}", ""] + ([spec.description, ""] if spec.description else [])

    def section(name: str, results: dict[str, Any]) -> str:
        md = markdown({**results, "name": name, "description": ""}).replace("\n## ", "\n### ")
        for chart in scaling_report.CAPTIONS:  # a scaled dataset's charts sit in its folder
            md = md.replace(f"]({chart}.png)", f"]({name}/{chart}.png)")
        return "## " + md.removeprefix("# ")

    atomic_write_text(root / "report.md", "\n".join(head) + "\n"
                      + "\n".join(section(name, results) for name, results in parts))
    body = []
    for name, results in parts:
        charts = {n: (root / name / f"{n}.png").read_bytes() for n in ("curves", "bpb")}
        plain = {k: v for k, v in results.items() if k != "scaling"}
        body.append(_md_tables_to_html(section(name, plain)).replace("<!--charts-->",
                                                                     _figures(charts)))
        if "scaling" in results:
            scaled = {n: (root / name / f"{n}.png").read_bytes() for n in scaling_report.CAPTIONS}
            body.append(scaling_report.table_html(results["scaling"], scaled, level=3))
    title = html.escape(spec.name)
    intro = f"<h1>{title}</h1>" + (f"<p>{html.escape(spec.description)}</p>" if spec.description else "")
    atomic_write_text(root / "report.html", "<!doctype html><html><head><meta charset='utf-8'>"
                      f"<title>{title}</title><style>{CSS}</style></head><body>{intro}{''.join(body)}</body></html>\n")


def _figures(charts: dict[str, bytes]) -> str:
    return "".join(f'<figure><img alt="{n}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
                   f"<figcaption>{html.escape(CAPTIONS[n])}</figcaption></figure>" for n, png in charts.items())


def _columns(results: dict[str, Any]) -> list[tuple[str, str]]:
    keys = [k for arm in results["arms"] for k in arm["summary"]]
    head = [(k, label) for k, label in HEADLINE if k in keys]
    tasks = sorted({k for k in keys if "/" in k and not k.startswith("diag/")})
    return head + [(k, k) for k in tasks]


def _cell(s: dict[str, float] | None, key: str) -> str:
    if s is None:
        return "—"
    mean, std = s["mean"], s["std"]
    if key in ("num_params", "tokens"):
        return f"{mean:,.0f}"
    if key in ("tokens_per_s", "peak_mem_mb") or (key == "wall_s" and mean >= 100):
        return f"{mean:,.0f}" + (f" ± {std:,.0f}" if s["n"] > 1 else "")
    if key == "wall_s":
        return f"{mean:.1f}" + (f" ± {std:.1f}" if s["n"] > 1 else "")
    digits = 4 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if s["n"] > 1 else "")


def markdown(results: dict[str, Any]) -> str:
    """The table (arms x headline metrics and tasks, mean ± std over seeds) and the diagnostics."""
    cols = _columns(results)
    lines = [f"# {results['name']}", ""]
    if results.get("description"):
        lines += [results["description"], ""]
    # a scaled comparison's budget also holds steps per arm and rung: its own table shows them
    budget = ", ".join(
        f"{k} {v:,}" if isinstance(v, int) else f"{k} {v:.3g}" if isinstance(v, float) and v >= 1e6
        else f"{k} {v}" for k, v in results["budget"].items() if not isinstance(v, (dict, list)))
    lines += [f"Seeds: {', '.join(map(str, results['seeds']))}" + (f"; budget: {budget}" if budget else ""), ""]
    lines += ["| arm | family | " + " | ".join(label for _, label in cols) + " |",
              "|---|---|" + "---:|" * len(cols)]
    for arm in results["arms"]:
        lines.append(f"| {arm['name']} | {arm['family']} | "
                     + " | ".join(_cell(arm["summary"].get(k), k) for k, _ in cols) + " |")
    diag = [(arm, k) for arm in results["arms"] for k in arm["summary"] if k.startswith("diag/")]
    if diag:
        lines += ["", "## Family diagnostics (final)", "", "| arm | diagnostic | value |", "|---|---|---:|"]
        lines += [f"| {arm['name']} | {k[5:]} | {_cell(arm['summary'][k], k)} |" for arm, k in diag]
    if "scaling" in results:
        lines += ["", scaling_report.table_md(results["scaling"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def page(results: dict[str, Any], charts: dict[str, bytes]) -> str:
    """One self-contained HTML page: inline CSS, the charts as data: PNGs, the tables (a scaled
    comparison's section after them, with its own charts)."""
    body = _md_tables_to_html(markdown({k: v for k, v in results.items() if k != "scaling"}))
    imgs = _figures({n: png for n, png in charts.items() if n not in scaling_report.CAPTIONS})
    scaled = scaling_report.table_html(results["scaling"], charts) if "scaling" in results else ""
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(results['name'])}</title><style>{CSS}</style></head><body>"
            f"{body.replace('<!--charts-->', imgs)}{scaled}</body></html>\n")


CAPTIONS = {
    "curves": "left: validation bits per byte against tokens seen (one line per seed); right: training loss "
              "against training wall-clock seconds",
    "bpb": "final validation bits per byte, mean over seeds with their standard deviation",
    "run": "one run over its steps: loss, learning rate, gradient norm, tokens/s, peak memory",
    "diagnostics": "the family's diagnostics at every evaluation (e.g. apelr with train.eval_planner_diagnostics)",
    "tasks": "the benchmarks scored during training (train.eval_tasks) against the step, one panel per task metric",
}
# A table never widens the page: it sits in a box that scrolls sideways when it must, in a
# smaller font, its headers wrapping (after a "/" of a task's metric) while values stay whole.
CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
       ".table-wrap{max-width:100%;overflow-x:auto;margin:1em 0}"
       "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em}"
       "th{background:#f3f3f3;white-space:normal;overflow-wrap:anywhere;min-width:4em;vertical-align:bottom}"
       "td{text-align:right;white-space:nowrap}td:first-child,td:nth-child(2){text-align:left}"
       "figure{margin:1em 0}img{max-width:100%}figcaption{color:#555;font-size:.9em}")


def header_cell(text: str) -> str:
    """A table header: escaped, with a break opportunity after each ``/`` (``piqa/acc_norm``)."""
    return f"<th>{html.escape(text).replace('/', '/<wbr>')}</th>"


def _md_tables_to_html(md: str) -> str:
    """The markdown above as HTML (headings, paragraphs, pipe tables): no converter needed."""
    out, table = [], []

    def flush() -> None:
        if table:
            head, rows = table[0], table[2:]
            out.append("<div class='table-wrap'><table><tr>" + "".join(header_cell(c) for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</table></div>")
            table.clear()

    first_table = True
    for line in md.splitlines():
        if line.startswith("|"):
            if not table and first_table:
                out.append("<!--charts-->")
                first_table = False
            table.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("### "):  # a multi-dataset page's sections
            out.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)


# ------------------------------------------------------------------------------------- charts


def _figure(ncols: int, width: float = 11):
    # deferred: matplotlib is slow to import, and only the charts (not results.json) need it
    import matplotlib

    matplotlib.use("Agg")
    # deferred: as above; pyplot must come after use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, 4), dpi=90, squeeze=False)
    return plt, fig, axes[0]


def _curves_png(results: dict[str, Any]) -> bytes:
    plt, fig, (ax_v, ax_t) = _figure(2)
    for i, arm in enumerate(results["arms"]):
        color = f"C{i % 10}"
        for j, run in enumerate(arm["runs"]):
            label = arm["name"] if j == 0 else None
            if run["curves"]["val"]:
                ax_v.plot(*zip(*run["curves"]["val"]), "o-", color=color, lw=1.2, ms=3, label=label, alpha=0.85)
            if run["curves"]["train"]:
                ax_t.plot(*zip(*run["curves"]["train"]), color=color, lw=1, label=label, alpha=0.85)
    ax_v.set(xlabel="tokens seen (each family's units)", ylabel="val bits per byte")
    ax_t.set(xlabel="training wall-clock (s)", ylabel="train loss (nats per unit)")
    for ax in (ax_v, ax_t):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return scaling_report.figure_png(plt, fig)


def _bpb_png(results: dict[str, Any]) -> bytes:
    plt, fig, (ax,) = _figure(1, width=max(4.0, 1.2 * len(results["arms"]) + 2))
    draw_bpb(ax, results)
    return scaling_report.figure_png(plt, fig)


def draw_bpb(ax: Any, results: dict[str, Any]) -> None:
    """Final val bits per byte per arm, as bars from 0: a bar's length is its value (an axis cut
    near the smallest bar made small gaps look large), each labelled with its mean so close
    arms still read apart."""
    arms = [a for a in results["arms"] if "val_bpb" in a["summary"]]
    means = [a["summary"]["val_bpb"]["mean"] for a in arms]
    stds = [a["summary"]["val_bpb"]["std"] for a in arms]
    bars = ax.bar(range(len(arms)), means, yerr=stds, capsize=4, color=[f"C{i % 10}" for i in range(len(arms))])
    ax.bar_label(bars, labels=[f"{m:.4f}" for m in means], padding=3, fontsize=8)
    ax.set_xticks(range(len(arms)), [a["name"] for a in arms], rotation=20, ha="right")
    ax.set_ylabel("val bits per byte")
    top = max((m + s for m, s in zip(means, stds)), default=1.0)
    ax.set_ylim(0.0, 1.15 * top if top > 0 else 1.0)  # room above the tallest bar for its label
    ax.grid(axis="y", alpha=0.3)


def _run_png(run: dict[str, Any]) -> bytes:
    rows = [r for r in run.get("rows", []) if "loss" in r]
    panels = [("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "grad norm"),
              ("tokens_per_s", "tokens/s"), ("peak_mem_mb", "peak memory (MB)")]
    plt, fig, axes = _figure(len(panels), width=16)
    for ax, (key, label) in zip(axes, panels):
        pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        ax.set(xlabel="step", title=label)
        ax.grid(alpha=0.3)
    return scaling_report.figure_png(plt, fig)


def _diag_png(series: list[dict[str, Any]]) -> bytes:
    """Up to six of the family's diagnostics against the step (the first ones that vary)."""
    keys = [k for k in series[0] if k != "step" and len({round(e.get(k, 0), 9) for e in series}) > 1][:6]
    plt, fig, axes = _figure(max(1, len(keys)), width=max(5.0, 3.2 * len(keys)))
    for ax, key in zip(axes, keys):
        pts = [(e["step"], e[key]) for e in series if key in e and e.get("step") is not None]
        if pts:
            ax.plot(*zip(*pts), "o-", lw=1, ms=3)
        ax.set(xlabel="step", title=key)
        ax.grid(alpha=0.3)
    return scaling_report.figure_png(plt, fig)


def _tasks_png(series: list[dict[str, Any]]) -> bytes:
    """Every ``task/metric`` of the ``train.eval_tasks`` rows against the step, a panel each,
    four to a row (their scales differ: accuracies, perplexities, bits per byte)."""
    # deferred: matplotlib is slow to import, and only the charts need it
    import matplotlib

    matplotlib.use("Agg")
    # deferred: as above; pyplot must come after use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for e in series for k in e if k != "step"))
    ncols = min(4, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.8 * nrows), dpi=90, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        pts = [(e["step"], e[key]) for e in series if key in e]
        ax.plot(*zip(*pts), "o-", lw=1, ms=3)
        if key.endswith("perplexity") and min(v for _, v in pts) > 0:  # an untrained model's is astronomical
            ax.set_yscale("log")
        ax.set(xlabel="step", title=key)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.set_visible(False)
    return scaling_report.figure_png(plt, fig)

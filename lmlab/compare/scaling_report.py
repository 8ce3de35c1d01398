"""The report of a tuned, scaled comparison (``results["scaling"]``, built by ``verdict.py``):
loss against compute with each arm's fitted curve and its 95% band (``compute_png``), the tuning
curves of every arm and rung (``tuning_png``), and one table of tuned values, sizes, compute,
loss, fits and multipliers (``table_md`` / ``table_html``, built from the same blocks).

The band is not drawn from the parameters' intervals (E, A and alpha are strongly correlated, so
their corners make a far wider, wrong band): the arm's tuned runs are refitted here by the same
residual bootstrap as the verdict's intervals, and the band is each compute's expanded 95%
interval of the refits' predictions.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import statistics
from functools import partial
from typing import Any

import numpy as np

from lmlab.compare.fit import Fit, bootstrap, ci95, fit_arm

BAND_BOOTSTRAP = 200  # refits per arm for the band: ~40 ms, smooth enough at this size
SPAN = 1.5  # the fitted curves reach this factor past the data's compute on either side
CAPTIONS = {
    "compute": "held-out bits per byte against training FLOPs (log-log): each arm's tuned runs "
               "(one point per seed), its fitted L(C) = E + A·C^-alpha and 95% bootstrap band; "
               "the arrow is the compute multiplier against the baseline at the largest size, "
               "dotted lines where two fitted curves cross",
    "tuning": "the tuning curves: final validation loss against the tuned value, one panel per "
              "arm, one line per size (rung); the chosen value is starred, an optimum on its "
              "grid's edge is a red triangle, diverged values are crosses at the top; the ticks "
              "at the bottom are every value searched",
}

Block = tuple[str, Any]  # ("h2" | "p" | "chart", text) or ("table", (header, rows))


# -------------------------------------------------------------------------------------- tables


def table_md(scaling: dict[str, Any]) -> str:
    """The scaling sections as markdown; charts as links to compute.png and tuning.png."""
    out = []
    for kind, x in _blocks(scaling):
        if kind == "h2":
            out += [f"## {x}", ""]
        elif kind == "p":
            out += [x, ""]
        elif kind == "chart":
            out += [f"![{x}]({x}.png)", "", f"*{CAPTIONS[x]}*", ""]
        else:
            head, rows = x
            out += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
            out += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    return "\n".join(out)


def table_html(scaling: dict[str, Any], charts: dict[str, bytes] | None = None,
               level: int = 2) -> str:
    """The scaling sections as HTML, charts inline as data: PNGs (left out when not given);
    ``level`` is the headings' (3 inside a multi-dataset page's section)."""
    out = []
    for kind, x in _blocks(scaling):
        if kind == "h2":
            out.append(f"<h{level}>{html.escape(x)}</h{level}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(x)}</p>")
        elif kind == "chart":
            if charts and x in charts:
                data = base64.b64encode(charts[x]).decode()
                out.append(f'<figure><img alt="{x}" src="data:image/png;base64,{data}">'
                           f"<figcaption>{html.escape(CAPTIONS[x])}</figcaption></figure>")
        else:
            head, rows = x
            cells = "".join("<tr>" + "".join(f"<td{_flag(c)}>{html.escape(c)}</td>" for c in r)
                            + "</tr>" for r in rows)
            out.append("<div class='table-wrap'><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                       + f"</tr>{cells}</table></div>")  # report.CSS: the box scrolls, the page never widens
    return "".join(out)


def _flag(cell: str) -> str:
    # an edge optimum is what a reader must not miss: the best value may lie outside the grid
    return ' style="color:#b00000;font-weight:bold"' if "(edge" in cell else ""


def _blocks(s: dict[str, Any]) -> list[Block]:
    """The sections, once, for both renderings."""
    key, base = s["tune_key"], s.get("baseline")
    fit_rows = [_fit_row(s, arm) for arm in s["search"]]
    blocks: list[Block] = [
        ("h2", "Scaling: loss against compute"),
        ("p", "Held-out bits per byte against training compute (FLOPs per token × tokens "
              "trained) of each arm's tuned runs, fitted per arm as L(C) = E + A·C^-alpha with "
              f"95% bootstrap intervals. The multiplier is the baseline ({base}) compute that "
              "reaches the arm's fitted loss at its largest size, over the arm's compute there "
              "(> 1: the arm is worth more compute; ∞: the baseline's curve never gets that low)."),
        ("chart", "compute"),
        ("table", (["arm", "runs (sizes)", "E", "A", "alpha", "fit",
                    f"multiplier vs {base} (95% CI)", "curves cross"], fit_rows)),
        ("h2", f"Scaling: tuned {key} per arm and size"),
        ("p", f"One row per arm and rung: the tuned {key} (searched at that size, or carried up "
              "from the smallest), the search, the model's parameters and FLOPs per token, a "
              "tuned run's tokens and compute, and held-out bits per byte (mean ± std over "
              "seeds)."),
        ("table", (["arm", "rung", key, "search", "params", "FLOPs/token", "tokens",
                    "compute (FLOPs)", "val bpb"], _run_rows(s))),
    ]
    edges = [f"{arm} r{r[1:]} ({e['edge']})" for arm, rungs in s["search"].items()
             for r, e in rungs.items() if e.get("edge")]
    if edges:
        blocks.append(("p", f"(edge): the best {key} is its grid's lowest or highest value (after "
                            "any extensions), so the optimum may lie outside the grid: "
                            f"{', '.join(edges)}."))
    blocks += [("p", _totals(s)), ("h2", f"Scaling: tuning curves ({key})"), ("chart", "tuning")]
    return blocks


def _fit_row(s: dict[str, Any], arm: str) -> list[str]:
    f = s["fits"].get(arm)
    if f is None or "error" in f:
        return [arm, "—", "—", "—", "—", f.get("error", "no fit") if f else "no fit",
                _multiplier(s, arm), _crossing(s, arm)]
    ci = f.get("ci95") or {}

    def with_ci(k: str) -> str:
        if k == "E" and f["E_mode"] == "fixed":  # not estimated: an interval [0, 0] says nothing
            return f"{_g(f[k])} (fixed)"
        lo_hi = ci.get(k)
        return f"{_g(f[k])} [{_g(lo_hi[0])}, {_g(lo_hi[1])}]" if lo_hi else _g(f[k])

    note = f["note"] + ("" if f.get("ci95") else f"; no interval: {f.get('ci_note', '')}")
    return [arm, f"{f['points']} ({f['sizes']})", with_ci("E"), with_ci("A"), with_ci("alpha"),
            note, _multiplier(s, arm), _crossing(s, arm)]


def _multiplier(s: dict[str, Any], arm: str) -> str:
    if arm == s.get("baseline"):
        return "baseline"
    m = s.get("multiplier", {}).get(arm)
    if m is None:
        return "—"
    if m.get("value") is None and "note" in m:
        return f"— ({m['note']})"
    lo, hi = m["ci95"] if m.get("ci95") else (None, None)
    return f"{_x(m['value'])}× [{_x(lo)}, {_x(hi)}] at {_sci(m['at_compute'])} FLOPs"


def _crossing(s: dict[str, Any], arm: str) -> str:
    if arm == s.get("baseline") or arm not in s.get("crossing", {}):
        return "—"
    base, c = s["baseline"], s["crossing"][arm]
    lo, hi = _compute_range(s, (arm, base))
    if c is None:
        return f"do not cross in {_sci(lo)}–{_sci(hi)} FLOPs"
    fits = {a: _fit(s, a) for a in (arm, base)}
    if None in fits.values():
        return f"cross at {_sci(c)} FLOPs"
    above = arm if fits[arm].predict(c * 2) < fits[base].predict(c * 2) else base
    return f"cross at {_sci(c)} FLOPs ({above} lower above it)"


def _run_rows(s: dict[str, Any]) -> list[list[str]]:
    rows = []
    for arm, rungs in s["search"].items():
        for r, e in sorted(rungs.items(), key=lambda kv: int(kv[0][1:])):
            runs = [x for x in s["runs"] if x["arm"] == arm and f"r{x['rung']}" == r]
            bpb = [x["val_bpb"] for x in runs if x.get("val_bpb") is not None]
            loss = "—" if not bpb else f"{statistics.fmean(bpb):.4f}" + (
                f" ± {statistics.stdev(bpb):.4f} ({len(bpb)} seeds)" if len(bpb) > 1 else "")
            tokens, compute = ([statistics.fmean(x[k] for x in runs) for k in ("tokens", "compute")]
                               if runs else (None, None))
            rows.append([arm, r[1:], _tuned(e), _search_cell(e), _si(e.get("params")),
                         _si(e.get("flops_per_token")), _si(tokens), _sci(compute), loss])
    return rows


def _tuned(e: dict[str, Any]) -> str:
    text = _g(e.get("value"))
    if "carried" in e:
        return f"{text} (carried: {e['carried']})"
    flags = ([f"edge: {e['edge']}"] if e.get("edge") else []) + (
        [f"grid extended {e['extensions']}×"] if e.get("extensions") else [])
    return f"{text} ({'; '.join(flags)})" if flags else text


def _search_cell(e: dict[str, Any]) -> str:
    if "grid" not in e:
        return "—"
    return (f"{e['method']}, {len(e['grid'])} values {_g(min(e['grid']))}–{_g(max(e['grid']))}, "
            f"{e['search_steps']:,} of {e['grid_steps']:,} steps")


def _totals(s: dict[str, Any]) -> str:
    cells = [e for rungs in s["search"].values() for e in rungs.values() if "grid_steps" in e]
    done, full = sum(e["search_steps"] for e in cells), sum(e["grid_steps"] for e in cells)
    text = (f"Total compute of the comparison: {_sci(s.get('compute_total'))} FLOPs over "
            f"{len(s.get('trials', []))} trial runs (every value, size and seed).")
    if full:
        text += (f" The searches trained {done:,} of the {full:,} steps full grids would have "
                 f"({100 * (1 - done / full):.0f}% saved).")
    return text


# ---------------------------------------------------------------------------------- formatting


def _g(v: float | None) -> str:
    """3 significant digits, exponents without their "+0" padding (3.53e3, 1e-5)."""
    if v is None:
        return "—"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].strip("+") + m[2], f"{v:.3g}")


def _x(v: float | None) -> str:
    """A multiplier or its bound; null is infinite (the baseline never reaches that loss)."""
    return "∞" if v is None or not math.isfinite(v) else f"{v:.3g}"


def _sci(v: float | None) -> str:
    """FLOPs as 2.44e7 (no "+", no padding)."""
    if v is None or not math.isfinite(v):
        return "—"
    mant, exp = f"{v:.2e}".split("e")
    return f"{float(mant):.3g}e{int(exp)}"


def _si(v: float | None) -> str:
    if v is None:
        return "—"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.3g}"


# -------------------------------------------------------------------------------------- charts


def _fit(s: dict[str, Any], arm: str) -> Fit | None:
    f = s.get("fits", {}).get(arm)
    if not f or "error" in f:
        return None
    return Fit(f["E"], f["A"], f["alpha"], f["E_mode"], f.get("note", ""))


def _points(s: dict[str, Any], arm: str) -> list[tuple[int, int, float, float]]:
    """(rung, seed, compute, bpb) of the arm's tuned runs: the points its fit was made on."""
    return [(r["rung"], r["seed"], r["compute"], r["val_bpb"]) for r in s["runs"]
            if r["arm"] == arm and r.get("val_bpb") is not None and r.get("compute")]


def _compute_range(s: dict[str, Any], arms) -> tuple[float, float]:
    c = [p[2] for a in arms for p in _points(s, a)]
    return (min(c), max(c)) if c else (math.nan, math.nan)


def band(s: dict[str, Any], arm: str, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The arm's 95% band at the computes of grid: the verdict's residual bootstrap refitted
    (BAND_BOOTSTRAP times) and each compute's interval of the refits' predictions, expanded by
    the residual degrees of freedom as the parameters' intervals are. None: too few runs."""
    pts = _points(s, arm)
    sizes = len({p[0] for p in pts})
    if sizes < 2:
        return None
    fit_fn = partial(fit_arm, n_sizes=sizes)
    try:
        boots = bootstrap(pts, fit_fn, n=BAND_BOOTSTRAP, seed=0)
    except ValueError:  # no residual spread to resample: the table says so (ci_note)
        return None
    pred = np.array([b.predict(grid) for b in boots])
    dof = len(pts) - boots[0].n_params
    lo_hi = np.array([ci95(col, dof=dof)[:2] for col in pred.T])
    return lo_hi[:, 0], lo_hi[:, 1]


def _figure(nrows: int, ncols: int, width: float, height: float):
    # deferred: matplotlib takes ~1 s to import, and only the charts need it
    import matplotlib

    matplotlib.use("Agg")
    # deferred: as above; pyplot must come after use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), dpi=90, squeeze=False)
    return plt, fig, axes


def figure_png(plt, fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (the figure is closed)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def compute_png(scaling: dict[str, Any]) -> bytes:
    """Bits per byte against training FLOPs (log-log): runs, fitted curves, bands, multiplier
    arrows and crossings."""
    # deferred: matplotlib takes ~1 s to import; the formatters are for the log axes' labels
    from matplotlib.ticker import FormatStrFormatter

    s = scaling
    plt, fig, axes = _figure(1, 1, 8.5, 5.2)
    ax = axes[0][0]
    colors = {arm: f"C{i % 10}" for i, arm in enumerate(s["search"])}
    for arm, color in colors.items():
        pts = _points(s, arm)
        if not pts:
            continue
        ax.plot([p[2] for p in pts], [p[3] for p in pts], "o", color=color, ms=5, alpha=0.85,
                zorder=3)
        f = _fit(s, arm)
        if f is None:
            ax.plot([], [], "o", color=color, label=f"{arm} (no fit)")
            continue
        lo, hi = _compute_range(s, [arm])
        grid = np.geomspace(lo / SPAN, hi * SPAN, 120)
        ax.plot(grid, f.predict(grid), "-", color=color, lw=1.5,
                label=f"{arm}{' (baseline)' if arm == s.get('baseline') else ''}: "
                f"E {_g(f.E)}, A {_g(f.A)}, α {_g(f.alpha)}")
        if (b := band(s, arm, grid)) is not None:
            ax.fill_between(grid, b[0], b[1], color=color, alpha=0.18, lw=0,
                            label="95% band" if arm == next(iter(colors)) else None)
    _multiplier_arrows(ax, s, colors)
    _crossing_lines(ax, s)
    ax.set_xscale("log")
    ax.set_yscale("log")
    # bpb spans well under a decade: label the minor ticks too, or the axis shows no numbers
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2f"))
    ax.set(xlabel="training compute (FLOPs)", ylabel="held-out bits per byte")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return figure_png(plt, fig)


def _multiplier_arrows(ax, s: dict[str, Any], colors: dict[str, str]) -> None:
    """At the arm's largest compute, an arrow from its fitted loss to where the baseline's curve
    (dotted past its data) reaches the same loss: the multiplier, drawn."""
    base = _fit(s, s.get("baseline", ""))
    for arm, m in s.get("multiplier", {}).items():
        f, value = _fit(s, arm), m.get("value")
        if base is None or f is None or value is None or not (1e-3 < value < 1e3):
            continue
        c, y = m["at_compute"], f.predict(m["at_compute"])
        ax.annotate("", xy=(c * value, y), xytext=(c, y),
                    arrowprops={"arrowstyle": "-|>", "color": colors.get(arm, "k"), "lw": 1.5})
        ax.annotate(f"{arm}: ×{value:.2g}", (math.sqrt(c * c * value), y),
                    textcoords="offset points", xytext=(0, -6), ha="center", va="top",
                    fontsize=9, color=colors.get(arm, "k"),
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})
        _, hi = _compute_range(s, [s["baseline"]])
        if c * value > hi * SPAN:
            grid = np.geomspace(hi * SPAN, c * value * 1.1, 40)
            ax.plot(grid, base.predict(grid), ":", color=colors.get(s["baseline"], "k"), lw=1.2)


def _crossing_lines(ax, s: dict[str, Any]) -> None:
    for arm, c in s.get("crossing", {}).items():
        if c is None:
            continue
        ax.axvline(c, color="0.4", ls=":", lw=1)
        ax.annotate(f"{arm} × {s['baseline']} cross", (c, 0.98), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=7, color="0.3")


def tuning_png(scaling: dict[str, Any]) -> bytes:
    """Final val loss against the tuned value: one panel per arm, one line per rung."""
    s = scaling
    arms = list(s["search"])
    ncols = min(3, max(1, len(arms)))
    nrows = math.ceil(len(arms) / ncols) if arms else 1
    plt, fig, axes = _figure(nrows, ncols, 4.3 * ncols, 3.4 * nrows)
    cmap = plt.get_cmap("viridis")
    for i, ax in enumerate(axes.ravel()):
        if i >= len(arms):
            ax.set_visible(False)
            continue
        rungs = sorted(s["search"][arms[i]].items(), key=lambda kv: int(kv[0][1:]))
        for j, (r, e) in enumerate(rungs):
            color = cmap(0.1 + 0.75 * j / max(1, len(rungs) - 1))  # light: small, dark: large
            _tuning_line(ax, s, arms[i], int(r[1:]), e, color)
        values = sorted({v for _, e in rungs for v in e.get("grid", [e.get("value")])
                         if v is not None})
        if _log_spaced(values):
            ax.set_xscale("log")
        # every value searched, those halving stopped early too: what the curves were drawn from
        ax.plot(values, [0.03] * len(values), "|", color="0.5", ms=8, label="grid",
                transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set(title=arms[i], xlabel=s["tune_key"])
        if i % ncols == 0:
            ax.set_ylabel("final val loss")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, handles))  # one legend entry per label (chosen, edge, diverged)
        ax.legend(seen.values(), seen.keys(), fontsize=7)
    return figure_png(plt, fig)


def _tuning_line(ax, s: dict[str, Any], arm: str, rung: int, e: dict[str, Any], color) -> None:
    """One rung's curve, its chosen value (a red triangle on the grid's edge), its diverged
    values as crosses at the top; a carried rung is a dotted line at its value."""
    if "curve" not in e:
        if e.get("value") is not None:
            ax.axvline(e["value"], color=color, ls=":", lw=1.2,
                       label=f"r{rung}: carried ({e.get('carried')})")
        return
    pts = [(v, x) for v, x in e["curve"] if x is not None]
    if pts:
        ax.plot(*zip(*pts), "o-", color=color, ms=3.5, lw=1.2, label=f"r{rung}")
    chosen = dict(pts).get(e.get("value"))
    if chosen is not None and e.get("edge"):
        ax.plot(e["value"], chosen, ">" if e["edge"] == "high" else "<", color="#d00000", ms=10,
                mec="k", zorder=4, label="edge optimum")
    elif chosen is not None:
        ax.plot(e["value"], chosen, "*", color=color, ms=13, mec="k", zorder=4, label="chosen")
    bad = {v for v, x in e["curve"] if x is None} | {
        t["value"] for t in s.get("trials", [])
        if t["arm"] == arm and t["rung"] == rung and t.get("diverged")}
    for v in sorted(bad):
        ax.plot(v, 0.96, "x", color=color, ms=8, mew=2, label="diverged",
                transform=ax.get_xaxis_transform(), clip_on=False)


def _log_spaced(values: list[float]) -> bool:
    """Whether a grid's values are spaced by ratio (3e-4, 1e-3, 3e-3) rather than difference."""
    v = sorted(set(values))
    if len(v) < 2 or v[0] <= 0:
        return False
    if len(v) == 2:
        return v[1] / v[0] >= 3
    ratios, diffs = np.diff(np.log(v)), np.diff(v)
    return float(np.std(ratios) / np.mean(ratios)) <= float(np.std(diffs) / np.mean(diffs))

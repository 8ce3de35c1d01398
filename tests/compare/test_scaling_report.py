"""lmlab.compare.scaling_report: a tuned, scaled comparison's report shows loss against compute
with each arm's fitted curve and band, the tuning curves, and the table of tuned values, sizes,
compute, loss, fits and multipliers (edge optima flagged, infinite bounds as ∞); a comparison
without ``scaling`` reports exactly as before."""

from __future__ import annotations

import copy
import io
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lmlab.compare import scaling_report
from lmlab.compare.fit import Fit
from lmlab.compare.report import _results, markdown, write_combined, write_reports
from lmlab.compare.verdict import fits

PNG = b"\x89PNG\r\n\x1a\n"
# report.md of plain_results() as written before scaling_report existed
BEFORE = ("# scaled\n\ntwo arms on a ladder\n\nSeeds: 1, 2; budget: max_steps 6,250\n\n"
          "| arm | family | params | tokens | val loss | val bpb |\n|---|---|---:|---:|---:|---:|\n"
          "| base | transformer | 2,666,666 | 125,000,000 | 2.7452 ± 0.0116 | 1.2478 ± 0.0053 |\n"
          "| new | transformer | 2,500,000 | 125,000,000 | 2.6740 ± 0.0113 | 1.2155 ± 0.0052 |\n")
# two arms on three rungs: "new" is worse at small compute and better at large (the curves cross)
LAWS = {"base": Fit(E=0.9, A=2326.0, alpha=0.25, E_mode="free"),
        "new": Fit(E=0.7, A=1181.0, alpha=0.22, E_mode="free")}
FLOPS_PER_TOKEN = {"base": [1.0e6, 4.0e6, 1.6e7], "new": [1.1e6, 4.2e6, 1.5e7]}
TOKENS = [2.0e7, 5.0e7, 1.25e8]
NOISE = {(0, 1): 1.002, (1, 1): 0.998, (2, 1): 1.003, (2, 2): 0.997}  # (rung, seed): factor
STEPS = [1000, 2500, 6250]
GRID = [1e-3, 2e-3, 4e-3, 8e-3]


def _runs() -> list[dict]:
    out = []
    for arm, law in LAWS.items():
        for (rung, seed), noise in NOISE.items():
            fpt, tokens = FLOPS_PER_TOKEN[arm][rung], TOKENS[rung]
            bpb = law.predict(fpt * tokens) * noise
            out.append({"arm": arm, "rung": rung, "seed": seed, "value": 4e-3,
                        "run": f"/x/{arm}/r{rung}/s{seed}", "params": int(fpt / 6),
                        "flops_per_token": fpt, "tokens": tokens, "compute": fpt * tokens,
                        "val_loss": bpb * 2.2, "val_bpb": bpb})
    return out


def _search() -> dict:
    """base: a full grid at every rung, its largest rung's best on the grid's high edge even after
    one extension; new: halving at the smallest rung (one value diverged), carried up."""
    base = {}
    for rung in range(3):
        grid = GRID + ([1.6e-2] if rung == 2 else [])
        best = 1.6e-2 if rung == 2 else 4e-3
        curve = [[v, 3.0 - 0.3 * rung + 0.4 * np.log(v / best) ** 2] for v in grid]
        fpt = FLOPS_PER_TOKEN["base"][rung]
        base[f"r{rung}"] = {"value": best, "steps": STEPS[rung], "params": int(fpt / 6),
                            "flops_per_token": fpt, "grid": grid, "method": "grid",
                            "edge": "high" if rung == 2 else None,
                            "extensions": 1 if rung == 2 else 0,
                            "search_steps": len(grid) * STEPS[rung],
                            "grid_steps": len(grid) * STEPS[rung], "curve": curve}
    grid = [5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2]
    new = {"r0": {"value": 2e-3, "steps": 1000, "params": int(1.1e6 / 6), "flops_per_token": 1.1e6,
                  "grid": grid, "method": "halving", "edge": None, "extensions": 0,
                  "search_steps": 3000, "grid_steps": 6000,
                  "curve": [[1e-3, 3.3], [2e-3, 3.1], [4e-3, 3.25]]}}
    for rung in (1, 2):
        fpt = FLOPS_PER_TOKEN["new"][rung]
        new[f"r{rung}"] = {"value": 2e-3, "steps": STEPS[rung], "params": int(fpt / 6),
                           "flops_per_token": fpt, "carried": "same"}
    return {"base": base, "new": new}


def _trials(search: dict) -> list[dict]:
    out = []
    for arm, rungs in search.items():
        for key, e in rungs.items():
            rung, fpt = int(key[1:]), e["flops_per_token"]
            finals = {v: x for v, x in e.get("curve", [])}
            for v in e.get("grid", []):
                diverged = arm == "new" and v == 1.6e-2
                step = 150 if diverged else e["steps"] if v in finals else e["steps"] // 4
                out.append({"arm": arm, "rung": rung, "value": v, "seed": 1, "step": step,
                            "steps": e["steps"],
                            "val_loss": None if diverged else finals.get(v, 3.6), "val_bpb": None,
                            "diverged": diverged, "compute": fpt * 8000 * step})
    return out


def scaling_block() -> dict:
    """What verdict() writes, with the fits of the synthetic runs and one infinite bound."""
    runs, search = _runs(), _search()
    spec = SimpleNamespace(match_params=SimpleNamespace(arm="base"), n_rungs=lambda: 3,
                           arms=[SimpleNamespace(name=a) for a in LAWS])
    verdict = fits(spec, runs, n=200)
    verdict["multiplier"]["new"]["ci95"][1] = None  # the baseline never reaches the bound's loss
    trials = _trials(search)
    tuned = {a: {r: e["value"] for r, e in rungs.items()} for a, rungs in search.items()}
    return {"tune_key": "lr", "tuned_lr": tuned, "search": search, **verdict, "runs": runs,
            "trials": trials, "compute_total": sum(t["compute"] for t in trials)}


def _record(run: dict) -> dict:
    """A run_record of a top-rung tuned run, as scaled_results reads it."""
    bpb = run["val_bpb"]
    rows = [{"step": 10, "tokens": run["tokens"] / 2, "wall_s": 5.0, "loss": 2.5,
             "val_bpb": bpb * 1.1},
            {"step": 20, "tokens": run["tokens"], "wall_s": 10.0, "loss": 2.2, "val_bpb": bpb}]
    metrics = {"num_params": run["params"], "tokens": run["tokens"], "val_loss": run["val_loss"],
               "val_bpb": bpb}
    return {"arm": run["arm"], "seed": run["seed"], "run": run["run"], "family": "transformer",
            "metrics": metrics, "tasks": {}, "diagnostics": None, "rows": rows}


def plain_results() -> dict:
    """A comparison's results without tuning or scaling (its top-rung runs as the arms' runs)."""
    records = [_record(r) for r in _runs() if r["rung"] == 2]
    return _results("scaled", "two arms on a ladder", {"max_steps": 6250}, [1, 2], list(LAWS),
                    records)


@pytest.fixture(scope="module")
def scaling() -> dict:
    return scaling_block()


def scaled_results(scaling: dict) -> dict:
    """results.json of a scaled comparison, as run.scaled_results builds it."""
    results = plain_results()
    results["budget"] = {"compute_total_flops": scaling["compute_total"], "steps": {
        arm: {r: e["steps"] for r, e in rungs.items()} for arm, rungs in scaling["search"].items()}}
    return {**results, "scaling": scaling}


def _image(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG)
    with Image.open(io.BytesIO(png)) as im:
        im.load()  # decodes every pixel: a truncated file fails here
        return im.size


def test_the_report_shows_the_charts_and_table_of_a_scaled_comparison(tmp_path, scaling):
    write_reports(tmp_path, scaled_results(scaling))
    for name in ("compute", "tuning", "curves", "bpb"):
        w, h = _image((tmp_path / f"{name}.png").read_bytes())
        assert w >= 300 and h >= 250, (name, w, h)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert md.startswith(BEFORE.replace("max_steps 6,250", "compute_total_flops 4.38e+15"))
    # a row per arm and rung with its tuned value: the edge flagged, the carried ones said so
    for row in ("| base | 0 | 0.004 | grid, 4 values 0.001–0.008, 4,000 of 4,000 steps | 167k | 1M "
                "| 20M | 2e13 | 2.0039 |",
                "| base | 1 | 0.004 |",
                "| base | 2 | 0.016 (edge: high; grid extended 1×) |",
                "| new | 0 | 0.002 | halving, 6 values 0.0005–0.016, 3,000 of 6,000 steps |",
                "| new | 1 | 0.002 (carried: same) | — |",
                "| new | 2 | 0.002 (carried: same) | — | 2.5M | 15M | 125M | 1.88e15 "
                "| 1.2155 ± 0.0052 (2 seeds) |"):
        assert row in md, row
    assert "may lie outside the grid: base r2 (high)" in md
    for arm in ("base", "new"):  # each fit's E rule, as the fit stated it
        assert scaling["fits"][arm]["note"] in md and "3 sizes" in scaling["fits"][arm]["note"]
    m = scaling["multiplier"]["new"]
    assert f"| {m['value']:.3g}× [{m['ci95'][0]:.3g}, ∞] at 1.88e15 FLOPs |" in md
    assert re.search(r"\| base \| 4 \(3\) \| 0\.9\d+ \[0\.\d+, 1\.\d+\] \|.*\| baseline \| — \|",
                     md)
    cross = scaling["crossing"]["new"]
    assert 2e14 < cross < 2e15
    assert f"cross at {cross:.3g}".replace("e+", "e") + " FLOPs (new lower above it)" in md
    assert "Total compute of the comparison: 4.38e15 FLOPs over 19 trial runs" in md
    assert "48,250 of the 51,250 steps full grids would have (6% saved)" in md
    assert "![compute](compute.png)" in md and "![tuning](tuning.png)" in md
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 4
    assert '<img alt="compute" src="data:image/png;base64,' in page and '<img alt="tuning"' in page
    assert page.count("<table>") == 3 and "<td>1.2155 ± 0.0052 (2 seeds)</td>" in page
    flagged = 'style="color:#b00000;font-weight:bold">0.016 (edge: high; grid extended 1×)</td>'
    assert flagged in page
    assert "<h2>Scaling: loss against compute</h2>" in page and "∞" in page
    assert "http" not in page and "![" not in page
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert saved["scaling"]["tuned_lr"]["base"]["r2"] == 1.6e-2


def test_without_scaling_the_report_is_as_before(tmp_path):
    write_reports(tmp_path, plain_results())
    assert (tmp_path / "report.md").read_text(encoding="utf-8") == BEFORE
    assert markdown(plain_results()) == BEFORE
    assert not (tmp_path / "compute.png").exists() and not (tmp_path / "tuning.png").exists()
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 2 and "Scaling" not in page


def test_a_multi_dataset_page_carries_each_scaled_section(tmp_path, scaling):
    parts = [("web", scaled_results(scaling)), ("code", plain_results())]
    for name, results in parts:
        write_reports(tmp_path / name, results)
    write_combined(tmp_path, SimpleNamespace(name="both", description="", seeds=[1, 2]), parts)
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "![compute](web/compute.png)" in md and "### Scaling: tuned lr per arm and size" in md
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6 and page.count("<table>") == 4
    assert "<h3>Scaling: loss against compute</h3>" in page and "###" not in page


def test_missing_fits_and_infinite_multipliers_are_said_not_drawn(scaling):
    s = copy.deepcopy(scaling)
    s["fits"]["new"] = {"error": "1 size(s) finished: a fit needs 2 or more"}
    s["fits"]["base"].update(ci95=None, ci_note="cannot bootstrap: 3 runs leave no residual spread")
    s["multiplier"]["new"] = {"value": None, "ci95": None, "note": "no fit", "at_compute": 1e15}
    s["crossing"]["new"] = None
    md = scaling_report.table_md(s)
    assert ("| new | — | — | — | — | 1 size(s) finished: a fit needs 2 or more | — (no fit) "
            "| do not cross in") in md
    assert "; no interval: cannot bootstrap" in md
    s["fits"]["base"].update(E=0.0, E_mode="fixed", note="E fixed at 0 (pure power law): 2 sizes")
    md = scaling_report.table_md(s)
    assert "| base | 4 (3) | 0 (fixed) | 3.53e3 | 0.265 | E fixed at 0" in md
    s["multiplier"]["new"] = {"value": None, "ci95": [3.2, None], "at_compute": 1e15}
    assert "| ∞× [3.2, ∞] at 1e15 FLOPs |" in scaling_report.table_md(s)
    for png in (scaling_report.compute_png(s), scaling_report.tuning_png(s)):
        _image(png)
    # four arms: the tuning panels wrap onto a second row
    s["search"] |= {"c": s["search"]["base"], "d": s["search"]["new"]}
    w, h = _image(scaling_report.tuning_png(s))
    assert h > w / 3


def test_the_band_comes_from_refits_not_from_the_parameters_corners(scaling):
    f = scaling["fits"]["base"]
    fit = Fit(f["E"], f["A"], f["alpha"], f["E_mode"])
    grid = np.geomspace(1e13, 3e15, 30)
    lo, hi = scaling_report.band(scaling, "base", grid)
    mid = fit.predict(grid)
    assert np.all(lo < mid) and np.all(mid < hi) and np.all(np.isfinite(hi))
    ci = f["ci95"]
    corners = np.array([Fit(e, a, al, "free").predict(grid)
                        for e in ci["E"] for a in ci["A"] for al in ci["alpha"]])
    # E, A and alpha move together: their intervals' corners span far more than the curves do
    assert np.all(hi - lo < 0.5 * (corners.max(0) - corners.min(0)))
    assert scaling_report.band({**scaling, "runs": scaling["runs"][:2]}, "base", grid) is None


@pytest.mark.parametrize(("values", "log"), [
    ([1e-4, 3e-4, 1e-3, 3e-3], True), ([0, 100, 200, 400], False), ([100, 200, 300], False),
    ([1e-3, 4e-3], True), ([0.9, 0.95], False)])
def test_a_log_spaced_grid_gets_a_log_axis(values, log):
    assert scaling_report._log_spaced(values) is log


def test_formats():
    assert [scaling_report._g(v) for v in (3533.4, 1e-5, 0.004, None)] == [
        "3.53e3", "1e-5", "0.004", "—"]
    assert scaling_report._sci(4.38e15) == "4.38e15" and scaling_report._sci(math.nan) == "—"
    assert scaling_report._x(None) == "∞"
    assert scaling_report._x(math.inf) == "∞" and scaling_report._si(2_666_666) == "2.67M"

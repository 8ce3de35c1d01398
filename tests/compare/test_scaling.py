"""Tuned, scaled comparisons end to end (issue 27): a tiny grid (2 lrs x 2 rungs x 2 arms) trains
as run dirs in waves, resumes after an interruption to the same numbers, and writes the verdict;
successive halving pauses the losers at their rung; an edge optimum grows the grid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmlab.compare import run as compare_run
from lmlab.compare.executors import InProcess
from lmlab.compare.run import run_compare
from lmlab.compare.scaling import build_cells
from lmlab.compare.spec import load_spec
from lmlab.errors import ConfigError
from lmlab.rundir import latest_snapshot

TRAIN = {"batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "eval_interval": 100, "save_interval": 100,
         "log_interval": 1, "progress": False, "eval_batches": 2, "num_threads": 1}


def _spec(tmp_path: Path, corpus_dir: Path, **over) -> Path:
    spec = {
        "name": "ladder", "out_dir": str(tmp_path / "cmp"),
        "data": {"sources": [{"type": "text", "path": str(corpus_dir)}], "val_fraction": 0.1},
        "tokenizer": {"type": "char"},
        "model": {"block_size": 32},
        "train": TRAIN, "sample": {"max_new_tokens": 2, "prompts": []}, "seeds": [1, 2],
        "tune": {"lr": [1e-3, 1e-2]},
        "scale": {"sizes": [{"d_model": 32}, {"d_model": 48}], "tokens_per_param": 0.004},
        "match_params": {"arm": "transformer", "width": "d_ff", "tolerance": 0.05},
        "arms": [{"name": "transformer", "model": {"family": "transformer", "preset": "tiny"}},
                 {"name": "psann", "model": {"family": "psann", "preset": "tiny"}}],
        **over,
    }
    spec = {k: v for k, v in spec.items() if v is not None}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _verdict(root: Path) -> dict:
    return json.loads((root / "results.json").read_text())["scaling"]


def _final(scaling: dict) -> dict:
    return {(r["arm"], r["rung"], r["seed"]): (r["value"], r["val_loss"]) for r in scaling["runs"]}


class _StopAfter(InProcess):
    """The in-process executor, interrupted (as Ctrl-C would) after its first ``waves`` waves."""

    def __init__(self, waves: int):
        super().__init__(log=lambda *_: None)
        self.left = waves

    def run(self, trials):
        if self.left == 0:
            raise KeyboardInterrupt("stopped by the test")
        self.left -= 1
        return super().run(trials)


def test_a_tiny_ladder_tunes_fits_and_resumes_to_the_same_verdict(tmp_path, corpus_dir, monkeypatch):
    straight = run_compare(_spec(tmp_path / "a", corpus_dir), log=lambda *_: None)
    s = _verdict(straight)
    # every arm x rung searched both lrs on seed 1; the winner trained seed 2 at the largest rung
    for arm in ("transformer", "psann"):
        for rung in ("r0", "r1"):
            entry = s["search"][arm][rung]
            assert entry["grid"] == [1e-3, 1e-2] and entry["value"] in (1e-3, 1e-2)
            assert s["tuned_lr"][arm][rung] == entry["value"]
            assert [v for v, _ in entry["curve"]] == [1e-3, 1e-2]
    seeds = {(r["arm"], r["rung"]): [] for r in s["runs"]}
    for r in s["runs"]:
        seeds[(r["arm"], r["rung"])].append(r["seed"])
    assert seeds == {("transformer", 0): [1], ("transformer", 1): [1, 2], ("psann", 0): [1], ("psann", 1): [1, 2]}
    # compute is counted: flops_per_token x tokens, and the rungs grow
    for r in s["runs"]:
        assert r["compute"] == pytest.approx(r["flops_per_token"] * r["tokens"])
    assert s["search"]["transformer"]["r1"]["params"] > s["search"]["transformer"]["r0"]["params"]
    # two sizes: E fixed at 0 (the report says so), a multiplier with its interval
    assert s["fits"]["psann"]["E_mode"] == "fixed" and "2 sizes" in s["fits"]["psann"]["note"]
    assert set(s["multiplier"]) == {"psann"} and "ci95" in s["multiplier"]["psann"]
    assert s["baseline"] == "transformer" and s["compute_total"] > 0
    assert (straight / "report.html").is_file() and (straight / "report.md").is_file()

    # the same spec, interrupted after its first wave and started again, ends identical
    monkeypatch.setattr(compare_run, "executor_for", lambda spec, jobs, log: _StopAfter(1))
    path = _spec(tmp_path / "b", corpus_dir)
    with pytest.raises(KeyboardInterrupt):
        run_compare(path, log=lambda *_: None)
    monkeypatch.setattr(compare_run, "executor_for", lambda spec, jobs, log: _StopAfter(100))
    resumed = run_compare(path, log=lambda *_: None)
    assert _final(_verdict(resumed)) == _final(s)


def test_halving_pauses_the_worse_half_and_an_edge_optimum_grows_the_grid(tmp_path, corpus_dir):
    # lrs far below the useful range: the best is the highest value, on the edge, every time
    path = _spec(tmp_path, corpus_dir, seeds=[1], scale=None, match_params=None,
                 train={**TRAIN, "max_steps": 8},
                 tune={"lr": [1e-6, 1e-5, 1e-4, 1e-3], "method": "halving", "rungs": [0.5, 1.0],
                       "extend": True, "max_extend": 1},
                 arms=[{"name": "transformer", "model": {"family": "transformer", "preset": "tiny"}}])
    root = run_compare(path, log=lambda *_: None)
    s = _verdict(root)["search"]["transformer"]["r0"]
    assert s["method"] == "successive_halving" and s["extensions"] == 1
    assert s["grid"][-1] == pytest.approx(1e-2)  # grown one point up, at the grid's ratio
    assert s["search_steps"] < s["grid_steps"]
    steps = {d.name: latest_snapshot(d / "seed1").meta["step"] for d in (root / "transformer" / "r0").iterdir()
             if d.is_dir()}
    assert steps["lr=1e-06"] == 4 and steps["lr=1e-05"] == 4  # paused at the rung: half of 8 steps
    assert max(steps.values()) == 8
    saved = json.loads((root / "transformer" / "r0" / "search.json").read_text())
    assert saved["extensions"] == 1 and len(saved["policy"]["values"]) == 5


def test_tuning_at_the_smallest_size_carries_the_value_up_by_inverse_width(tmp_path, corpus_dir):
    path = _spec(tmp_path, corpus_dir, seeds=[1],
                 tune={"lr": [1e-3, 1e-2], "at": "smallest", "carry": "inverse_width"},
                 arms=[{"name": "transformer", "model": {"family": "transformer", "preset": "tiny"}}])
    root = run_compare(path, log=lambda *_: None)
    s = _verdict(root)["search"]["transformer"]
    assert s["r0"]["grid"] == [1e-3, 1e-2] and "grid" not in s["r1"] and s["r1"]["carried"] == "inverse_width"
    assert s["r1"]["value"] == pytest.approx(float(f"{s['r0']['value'] * 32 / 48:.3g}"))  # d_model 32 -> 48
    trained = sorted(d.name for d in (root / "transformer" / "r1").iterdir() if d.is_dir())
    assert trained == [f"lr={s['r1']['value']:g}"]  # one trial at the larger size, no search


def test_matching_flops_per_token_and_a_budget_in_flops(tmp_path, corpus_dir):
    """match: flops solves each arm's width to the baseline's FLOPs per token at every rung, and a
    budget in FLOPs gives each arm the steps that spend it at its own FLOPs per token."""
    budget = [2e9, 6e9]
    spec = load_spec(_spec(tmp_path, corpus_dir, seeds=[1], scale={
        "sizes": [{"d_model": 32}, {"d_model": 48}], "match": "flops", "flops": budget}))
    cells = build_cells(spec, True, lambda *_: None)
    assert len(cells) == 4
    for rung in (0, 1):
        base, psann = (c for c in cells if c.rung == rung)
        # psann's sine channels cost FLOPs parameters don't show: a params match leaves them ~3%
        # apart at these sizes, the FLOPs match well under 0.5%
        assert abs(psann.flops_per_token - base.flops_per_token) / base.flops_per_token <= 0.005
        assert psann.params != base.params
        for c in (base, psann):
            assert c.steps == round(budget[rung] / c.flops_per_token / c.tokens_per_step)
    assert cells[2].steps > cells[0].steps


def test_bad_tune_and_scale_specs_are_one_line_errors(tmp_path, corpus_dir):
    cases = [({"tune": {"lr": [1e-3]}}, "at least 2"),
             ({"tune": {"lrr": [1e-3, 1e-2]}}, "not a train key"),
             ({"tune": {"lr": [1e-3, 1e-2], "warmup_steps": [0, 10]}}, "exactly one train key"),
             ({"scale": {"sizes": [{"d_model": 32}, {"d_model": 48}]}}, "one budget per rung"),
             ({"match_params": None}, "scale needs match_params"),
             ({"scale": {"sizes": [{"d_model": 32}, {"d_mdl": 48}], "tokens_per_param": 1}}, "d_mdl")]
    for over, needle in cases:
        with pytest.raises(ConfigError, match=needle) as e:
            load_spec(_spec(tmp_path, corpus_dir, **over))
        assert "\n" not in str(e.value)


STAGE1 = {"family": "abstractinator", "preset": "tiny", "top_transformer_config": None, "top_lm_loss_weight": 0.0}
STAGE2 = {"family": "abstractinator", "preset": "tiny", "load_base_from": "arm:stage1"}


@pytest.mark.parametrize("tuned", [True, False])
def test_an_arm_cites_an_earlier_arms_run_dir_at_each_seed(tmp_path, corpus_dir, tuned):
    """``load_base_from: arm:stage1``: the stage-2 arm trains on the stage-1 arm's run dir of
    the same seed (tuned: its winning lr's trial), after it has finished."""
    path = _spec(tmp_path, corpus_dir, scale=None, match_params=None, tokenizer={"type": "byte"},
                 train={**TRAIN, "max_steps": 3}, tune={"lr": [1e-3, 1e-2]} if tuned else None,
                 arms=[{"name": "stage1", "model": STAGE1}, {"name": "stage2", "model": STAGE2}])
    root = run_compare(path, log=lambda *_: None)
    spec = load_spec(path)
    for seed in (1, 2):
        if tuned:
            won = _verdict(root)["search"]["stage1"]["r0"]["value"]
            base = root / "stage1" / "r0" / f"lr={won:g}" / f"seed{seed}"
            stage2 = next((root / "stage2" / "r0").glob(f"lr=*/seed{seed}/metrics.json")).parent
        else:
            base, stage2 = spec.run_dir(spec.arms[0], seed), spec.run_dir(spec.arms[1], seed)
        cfg = yaml.safe_load((stage2 / "config.yaml").read_text())
        assert cfg["model"]["load_base_from"] == str(base)
        assert latest_snapshot(base).meta["step"] == 3 and latest_snapshot(stage2).meta["step"] == 3


def test_an_arm_cites_only_an_earlier_trained_arm(tmp_path, corpus_dir):
    arms = [{"name": "stage2", "model": STAGE2}, {"name": "stage1", "model": STAGE1}]
    with pytest.raises(ConfigError, match="arm stage2: arm:stage1 names no trained arm listed before it") as e:
        load_spec(_spec(tmp_path, corpus_dir, scale=None, match_params=None, arms=arms))
    assert "\n" not in str(e.value)
    arms = [{"name": "stage1", "model": STAGE1}, {"name": "stage2", "model": STAGE2}]
    with pytest.raises(ConfigError, match="without scale"):
        load_spec(_spec(tmp_path, corpus_dir, arms=arms, match_params={"arm": "stage1", "width": "d_model"}))

"""lmlab.compare.fit: the scaling-law fit recovers a known law, its bootstrap intervals cover the
truth, the compute multiplier recovers a known factor, few sizes follow the stated E rule, curves
cross where built to, and bad input is refused in one line."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import minimize

from lmlab.compare.fit import (
    Fit,
    bootstrap,
    ci95,
    crossing,
    fit_arm,
    fit_power_law,
    multiplier,
    multiplier_ci,
)

TRUE = Fit(E=1.8, A=1e4, alpha=0.3, E_mode="free")  # loss 4.3 at 1e12 FLOPs, 1.96 at 1e16
SIZES = np.logspace(12, 16, 6)
SIGMA = 0.005  # multiplicative log-normal seed noise, 0.5%


def make_points(law: Fit, sizes=SIZES, seeds=(0, 1), sigma=SIGMA, rng=None):
    rng = rng if rng is not None else np.random.default_rng(0)
    return [(i, s, float(c), float(law.predict(c) * math.exp(rng.normal(0, sigma) if sigma else 0)))
            for i, c in enumerate(sizes) for s in seeds]


def arrays(points):
    return np.array([p[2] for p in points]), np.array([p[3] for p in points])


def test_noiseless_fit_is_exact():
    fit = fit_power_law(*arrays(make_points(TRUE, sigma=0)))
    assert fit.E_mode == "free"
    for got, want in ((fit.E, TRUE.E), (fit.A, TRUE.A), (fit.alpha, TRUE.alpha)):
        assert got == pytest.approx(want, rel=1e-5)


def test_recovers_known_law_under_noise():
    # Tolerances over 10 noise draws of 6 sizes x 2 seeds at 0.5% noise: E 3%, alpha 10%, A a
    # factor 1.6, predict() 1% on 1e12..1e16 (the worst of these 10: 1.7%, 3.7%, 1.35, 0.8%; of
    # 100 draws: 2.0%, 4.4%, 1.46, 1.2%). A is the loose one: log A moves by d(alpha) * log C.
    grid = np.logspace(12, 16, 41)
    for trial in range(10):
        fit = fit_arm(*arrays(make_points(TRUE, rng=np.random.default_rng(trial))))
        assert fit.E == pytest.approx(TRUE.E, rel=0.03), trial
        assert fit.alpha == pytest.approx(TRUE.alpha, rel=0.10), trial
        assert 1 / 1.6 < fit.A / TRUE.A < 1.6, trial
        assert np.abs(fit.predict(grid) / TRUE.predict(grid) - 1).max() < 0.01, trial


def _huber_objective(theta, x, y):
    a, alpha, e = theta
    r = np.logaddexp(a - alpha * x, e) - y
    return np.where(np.abs(r) <= 1e-3, 0.5 * r * r, 1e-3 * (np.abs(r) - 0.5e-3)).sum()


def test_minimiser_reaches_the_chinchilla_objective_minimum():
    # The module minimises by batched Newton, not L-BFGS: its optimum must be at least as good as
    # Nelder-Mead from 27 starts on the same objective (written out independently here).
    for trial in range(2):
        C, L = arrays(make_points(TRUE, rng=np.random.default_rng(100 + trial)))
        x, y = np.log(C) - np.log(C).mean(), np.log(L)
        fit = fit_power_law(C, L)
        ours = _huber_objective(
            (math.log(fit.A) - fit.alpha * np.log(C).mean(), fit.alpha, math.log(fit.E)), x, y)
        ref = min(minimize(_huber_objective, [a, al, e], args=(x, y), method="Nelder-Mead",
                           options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000}).fun
                  for a in (-2, 0, 2) for al in (0.1, 0.3, 0.8) for e in (-1, 0, 0.5))
        assert ours <= ref * (1 + 1e-7), (ours, ref)


def test_bootstrap_interval_covers_the_truth():
    # 100 noise draws; the 95% interval (residual bootstrap, 200 replicates, expanded for 9
    # residual dof) of the predicted loss at the largest C must cover the truth in >= 90, and
    # be informative (median width under 2% of the loss). Measured: 94/100 (91-97 over other
    # noise seeds; 88-91 without the dof expansion), median width 1.5%, ~2-3 s.
    truth, covered, widths = TRUE.predict(SIZES[-1]), 0, []
    for trial in range(100):
        pts = make_points(TRUE, rng=np.random.default_rng(1000 + trial))
        fits = bootstrap(pts, fit_arm, n=200, seed=trial)
        ci = ci95([f.predict(SIZES[-1]) for f in fits], dof=len(pts) - 3)
        covered += ci.lo <= truth <= ci.hi
        widths.append((ci.hi - ci.lo) / truth)
    assert covered >= 90, covered
    assert np.median(widths) < 0.02, np.median(widths)


def test_seed_bootstrap_resamples_seeds_within_each_size():
    pts = make_points(TRUE, seeds=(0, 1, 2))
    seen = []

    def spy(C, L, init=None):
        seen.append(np.asarray(C))
        return fit_arm(C, L, init=init)

    fits = bootstrap(pts, spy, n=50, seed=3, method="seeds")
    assert len(fits) == 50 and all(isinstance(f, Fit) for f in fits)
    reps = seen[-1]
    assert reps.shape == (50, 6 * 2)  # k-1 = 2 of 3 seeds per size
    assert all(np.unique(row).size == 6 for row in reps)  # every replicate keeps every size
    assert len({tuple(np.round(f.predict(SIZES), 12)) for f in fits}) > 10  # they do differ


def test_multiplier_recovers_k_noiseless():
    k = 2.0
    arm_law = Fit(E=TRUE.E, A=TRUE.A * k ** -TRUE.alpha, alpha=TRUE.alpha, E_mode="free")
    assert arm_law.predict(3e13) == pytest.approx(TRUE.predict(k * 3e13), rel=1e-12)
    assert multiplier(arm_law, TRUE, 1e14) == pytest.approx(k, rel=1e-9)
    arm = fit_arm(*arrays(make_points(arm_law, sigma=0)))
    base = fit_arm(*arrays(make_points(TRUE, sigma=0)))
    for c in (1e12, 1e14, 1e16):
        assert multiplier(arm, base, c) == pytest.approx(k, rel=0.01)
    assert multiplier(base, base, 1e14) == pytest.approx(1.0, rel=1e-9)


def test_multiplier_interval_covers_k_with_noise():
    k = 2.0
    arm_law = Fit(E=TRUE.E, A=TRUE.A * k ** -TRUE.alpha, alpha=TRUE.alpha, E_mode="free")
    for trial in range(3):
        arm = make_points(arm_law, rng=np.random.default_rng(2000 + trial))
        base = make_points(TRUE, rng=np.random.default_rng(3000 + trial))
        value, (lo, hi) = multiplier_ci(arm, base, 1e14, n=300, seed=trial)
        assert lo <= k <= hi, (trial, value, lo, hi)
        assert lo < value < hi and 1.0 < lo and hi < 4.0, (trial, value, lo, hi)  # and it says so


def test_multiplier_is_inf_below_the_baseline_floor():
    arm = Fit(E=1.0, A=TRUE.A, alpha=TRUE.alpha, E_mode="free")
    assert multiplier(arm, TRUE, 1e20) == math.inf  # 1.0 + tiny < the baseline's E = 1.8
    assert TRUE.inverse(1.7) == math.inf
    assert TRUE.inverse(TRUE.predict(1e14)) == pytest.approx(1e14, rel=1e-9)


def test_E_rule_by_number_of_sizes():
    three = make_points(TRUE, sizes=SIZES[::2][:3])
    fit = fit_arm(*arrays(three))
    assert fit.E_mode == "bounded" and 0 <= fit.E < min(p[3] for p in three)
    assert fit.note.startswith("E bounded to [0, ") and fit.note.endswith("): 3 sizes")
    # a flattening third size pulls a free E above the smallest loss; the rule keeps it below
    C3, L3 = np.repeat([1e12, 1e14, 1e16], 2), np.array([4.0, 4.02, 2.5, 2.52, 2.49, 2.45])
    assert fit_power_law(C3, L3).E > 2.45 > fit_arm(C3, L3).E
    two = make_points(TRUE, sizes=SIZES[[0, -1]])
    fit = fit_arm(*arrays(two))
    assert fit.E_mode == "fixed" and fit.E == 0.0 and fit.note.endswith("2 sizes")
    assert fit.predict(SIZES[0]) == pytest.approx(np.mean([p[3] for p in two[:2]]), rel=0.01)
    fit = fit_arm(*arrays(make_points(TRUE, sizes=SIZES[:4])))
    assert fit.E_mode == "free" and fit.note == "E free: 4 sizes"
    # n_sizes, when given, decides (seed-jittered C must not count as extra sizes)
    assert fit_arm(*arrays(make_points(TRUE)), n_sizes=3).E_mode == "bounded"


def test_fixed_and_bounded_E_are_respected():
    C, L = arrays(make_points(TRUE, sigma=0))
    fit = fit_power_law(C, L, E=1.8)
    assert fit.E == 1.8 and fit.E_mode == "fixed"
    assert fit.A == pytest.approx(TRUE.A, rel=1e-5) and fit.alpha == pytest.approx(0.3, rel=1e-6)
    fit = fit_power_law(C, L, E=0.107)  # the wrong E (and exp(log(0.107)) != 0.107): kept exactly
    assert fit.E == 0.107 and fit.alpha < TRUE.alpha
    fit = fit_power_law(C, L, E_bounds=(0.0, 1.0))  # the truth (1.8) is outside: E sits on 1.0
    assert fit.E_mode == "bounded" and 0 <= fit.E <= 1.0 and fit.E == pytest.approx(1.0, rel=1e-6)
    fit = fit_power_law(C, L, E_bounds=(1.0, 2.5))
    assert fit.E == pytest.approx(TRUE.E, rel=1e-5)


def test_crossing():
    c_star = 1e14
    b = Fit(E=1.9, A=(TRUE.predict(c_star) - 1.9) * c_star**0.5, alpha=0.5, E_mode="free")
    assert crossing(TRUE, b, 1e12, 1e16) == pytest.approx(c_star, rel=1e-9)
    assert crossing(b, TRUE, 1e12, 1e16) == pytest.approx(c_star, rel=1e-9)
    assert crossing(TRUE, b, 1e15, 1e16) is None  # outside the range
    parallel = Fit(E=2.0, A=TRUE.A, alpha=TRUE.alpha, E_mode="free")
    assert crossing(TRUE, parallel, 1e10, 1e20) is None
    assert crossing(TRUE, TRUE, 1e10, 1e20) is None


def test_ci95_drops_nan_and_keeps_inf():
    ci = ci95([*range(1, 100), math.nan, math.nan])
    assert ci.dropped == 2 and ci.lo == 3.0 and ci.hi == 97.0
    assert ci95([1.0] * 90 + [math.inf] * 10).hi == math.inf
    assert ci95(range(1000))[:2] == (24.0, 975.0)
    assert ci95(range(1000), dof=5)[:2] == (5.0, 994.0)  # Phi(-t_5(0.975)) = 0.51%: expanded


def test_to_dict_is_json():
    fit = fit_arm(*arrays(make_points(TRUE)))
    d = json.loads(json.dumps(fit.to_dict()))
    assert set(d) == {"E", "A", "alpha", "E_mode", "note"}
    assert all(isinstance(d[k], float) for k in ("E", "A", "alpha"))
    assert d["note"] == "E free: 6 sizes"


@pytest.mark.parametrize("C, L, match", [
    ([1e12, 1e12], [3.0, 3.1], "at least 2 distinct compute sizes; got 1"),
    ([1e12, -1e13], [3.0, 2.9], "C must be positive"),
    ([1e12, 1e13], [3.0, 0.0], "L must be positive"),
    ([1e12, 1e13], [3.0, math.nan], "L has non-finite values"),
    ([1e12, math.inf], [3.0, 2.9], "C has non-finite values"),
    ([1e12, 1e13, 1e14], [3.0, 2.9], "do not match"),
])
def test_bad_input_is_one_line_value_error(C, L, match):
    for fn in (fit_power_law, fit_arm):
        with pytest.raises(ValueError, match=match) as err:
            fn(C, L)
        assert "\n" not in str(err.value)


def test_bad_bootstrap_input():
    pts = make_points(TRUE, sizes=SIZES[:2], seeds=(0,))
    with pytest.raises(ValueError, match="no residual spread"):
        bootstrap(pts, fit_arm, n=10)  # 2 runs, 2 parameters
    with pytest.raises(ValueError, match="share a"):
        bootstrap(pts + pts[:1], fit_arm, n=10)
    with pytest.raises(ValueError, match="2\\+ seeds at every size"):
        bootstrap(make_points(TRUE, seeds=(0,)), fit_arm, n=10, method="seeds")
    with pytest.raises(ValueError, match="at least 2 model sizes"):
        fit_arm([1e12, 1e13], [3.0, 2.9], n_sizes=1)
    with pytest.raises(ValueError, match="E_bounds"):
        fit_power_law([1e12, 1e13], [3.0, 2.9], E_bounds=(2.0, 1.0))

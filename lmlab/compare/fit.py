"""Scaling-law statistics for ``lmlab compare`` on (compute C, loss L) points: fit ``L(C) = E + A *
C**-alpha`` as Chinchilla's third approach (Hoffmann et al. 2022, D.2: E = exp(e), A = exp(a), Huber
loss, delta 1e-3, of ``logsumexp(a - alpha*log C, e) - log L``, best of a grid of starts), bootstrap
it, and state compute multipliers with 95% intervals. The minimiser is a batched damped Newton,
not L-BFGS-B: at ~0.5% seed noise all residuals are past delta, the loss is piecewise linear and
L-BFGS-B crawls (30-170 iterations a start; 10-40x slower still beside a threaded OpenBLAS,
scipy#23191). Two seeds at a size leave a flat valley: equally good fits can differ by ~0.1% in
predicted loss."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import numpy as np

DELTA = 1e-3  # Chinchilla's Huber delta, on log-loss residuals
ALPHA_MAX = 4.0  # LM exponents are ~0.05-0.5; the cap keeps A = exp(a + alpha*log C0) finite
E_STARTS = (0.05, 0.4, 0.7, 0.9)  # starting E as fractions of min(L); (a, alpha) regressed for each
MAX_ITER, TOL = 300, 1e-9  # TOL: the largest parameter step of a converged batch
Points = Sequence[tuple[Any, Any, float, float]]  # (size, seed, C, L), one tuned run each


@dataclass(frozen=True)
class Fit:
    """A fitted ``L(C) = E + A * C**-alpha``; E_mode is "free", "fixed" or "bounded"."""
    E: float
    A: float
    alpha: float
    E_mode: str
    note: str = ""

    def predict(self, C: Any) -> Any:
        """The fitted loss at compute C (a float for a scalar C, else an array)."""
        log_a = math.log(self.A) if self.A > 0 else -math.inf
        out = self.E + np.exp(log_a - self.alpha * np.log(np.asarray(C, dtype=float)))
        return float(out) if np.ndim(out) == 0 else out

    def inverse(self, L: float) -> float:
        """The compute at which the curve reaches loss L; inf where it never does (L <= E)."""
        gap = L - self.E
        if gap <= 0:
            return math.inf
        if self.alpha <= 0:  # a flat curve is at L everywhere or nowhere
            return 0.0 if gap >= self.A else math.inf
        log_c = (math.log(self.A) - math.log(gap)) / self.alpha
        return math.exp(log_c) if log_c < 709 else math.inf

    @property
    def n_params(self) -> int:
        return 2 if self.E_mode == "fixed" else 3

    def to_dict(self) -> dict[str, Any]:
        return {"E": float(self.E), "A": float(self.A), "alpha": float(self.alpha),
                "E_mode": self.E_mode, "note": self.note}


class CI(NamedTuple):
    """A 95% bootstrap interval and how many NaN replicates it left out."""
    lo: float
    hi: float
    dropped: int


def _check(C: Any, L: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """C and L as float arrays (L (n,) or (B, n): B datasets; C (n,) or L's shape) and the number
    of distinct C (the fewest over rows)."""
    C, L = np.asarray(C, dtype=float), np.asarray(L, dtype=float)
    if L.ndim not in (1, 2) or C.shape not in (L.shape, L.shape[-1:]):
        raise ValueError(f"C {C.shape} and L {L.shape} do not match: want (n,) and (n,) or (B, n)")
    for name, v in (("C", C), ("L", L)):
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} has non-finite values (NaN or inf): {v[~np.isfinite(v)][:3]}")
        if np.any(v <= 0):
            raise ValueError(f"{name} must be positive; got {v[v <= 0][:3]}")
    c = np.sort(np.atleast_2d(C), axis=-1)
    if (sizes := int((np.diff(c, axis=-1) > 0).sum(-1).min()) + 1 if c.size else 0) < 2:
        raise ValueError(f"a scaling fit needs at least 2 distinct compute sizes; got {sizes}")
    return C, L, sizes


def _resid(th: np.ndarray, x: np.ndarray, y: np.ndarray, e_fixed: float | None):
    """Rows th = (a, alpha[, e]): log residuals, d lse / d u (1 minus it is d lse / d e) and the
    Huber loss / delta per row (the scale keeps it O(1) at any delta)."""
    u = th[:, :1] - th[:, 1:2] * x
    lse = np.logaddexp(u, th[:, 2:3] if e_fixed is None else e_fixed)
    r = lse - y
    huber = np.where(np.abs(r) <= DELTA, 0.5 * r * r / DELTA, np.abs(r) - 0.5 * DELTA).sum(-1)
    return r, np.exp(u - lse), huber


def _solve(th, x, y, e_fixed, lo, hi) -> tuple[np.ndarray, np.ndarray]:
    """Minimise the Huber loss from every row of th within [lo, hi]; a row leaves the batch when its
    step is below TOL or no step along it descends. Returns (theta, loss)."""
    th, x, p = th.copy(), np.broadcast_to(x, y.shape), th.shape[1]
    r, w, f = _resid(th, x, y, e_fixed)
    live, scale = np.arange(len(th)), np.ones((len(th), 1))
    for _ in range(MAX_ITER):
        T, X, Y, R, W, lo_, hi_ = th[live], x[live], y[live], r[live], w[live], lo[live], hi[live]
        J = np.stack([W, -W * X, 1 - W][:p], -1)  # d r / d theta: (B, n, p)
        g = np.einsum("bnp,bn->bp", J, np.clip(R / DELTA, -1.0, 1.0))
        # Huber's curvature is 1/delta inside delta and 0 outside; a little IRLS curvature
        # (0.01/|r|) outside keeps the step defined while fewer than p residuals are inside
        v = np.where(np.abs(R) <= DELTA, 1 / DELTA, 0.01 / np.maximum(np.abs(R), DELTA))
        H = np.einsum("bnp,bn,bnq->bpq", J, v, J)
        act = ((T <= lo_) & (g > 0)) | ((T >= hi_) & (g < 0))  # held on a bound pushing outward
        g = np.where(act, 0.0, g)
        H = np.where(act[:, :, None] | act[:, None, :], 0.0, H)
        ridge = 1e-10 * np.trace(H, axis1=1, axis2=2)[:, None, None] + 1e-300  # E -> 0: e inert
        d = -np.linalg.solve(H + np.eye(p) * (act[:, :, None] + ridge), g[..., None])[..., 0]
        step = scale[live]  # far from the minimum Newton overshoots: start at the last step x4
        new = np.clip(T + step * d, lo_, hi_)
        rn, wn, fn = _resid(new, X, Y, e_fixed)
        worse = fn > f[live] * (1 + 1e-13)
        for _k in range(40):  # halve the step of the rows whose loss went up
            if not worse.any():
                break
            i = np.nonzero(worse)[0]
            step[i] /= 2
            new[i] = np.clip(T[i] + step[i] * d[i], lo_[i], hi_[i])
            rn[i], wn[i], fn[i] = _resid(new[i], X[i], Y[i], e_fixed)
            worse[i] = fn[i] > f[live[i]] * (1 + 1e-13)
        ok, done = live[~worse], (np.abs(new - T).max(1) < TOL) & (step[:, 0] == 1.0)  # full step
        th[ok], r[ok], w[ok], f[ok] = new[~worse], rn[~worse], wn[~worse], fn[~worse]
        scale[live] = np.minimum(1.0, 4 * step)
        if not (live := live[~worse & ~done]).size:
            break
    return th, f


def _fit(C, L, E_fixed, e_lo, e_hi, init, mode, notes) -> list[Fit]:
    """Fit every row of L (B, n); e bounds are (B,) arrays, notes one per row."""
    log_c0 = float(np.log(C).mean())  # C / its geometric mean: x is O(1), a and alpha decouple
    x, y = np.log(C) - log_c0, np.log(L)
    e_fixed = None if E_fixed is None else (math.log(E_fixed) if E_fixed > 0 else -math.inf)
    B, p = L.shape[0], 3 if E_fixed is None else 2
    lo = np.stack([np.full(B, -np.inf), np.zeros(B), e_lo], -1)[:, :p]
    hi = np.stack([np.full(B, np.inf), np.full(B, ALPHA_MAX), e_hi], -1)[:, :p]
    starts = []
    if init is not None:
        e0 = math.log(init.E) if init.E > 0 else -30.0
        starts = [np.tile([math.log(init.A) - init.alpha * log_c0, init.alpha, e0], (B, 1))]
    for frac in [] if init is not None else E_STARTS if E_fixed is None else (None,):
        e0 = np.full(B, e_fixed) if frac is None else np.clip(np.log(frac * L.min(-1)), e_lo, e_hi)
        z = np.log(np.maximum(L - np.exp(e0)[:, None], 1e-12 * L))  # line: log(L - E0) vs x
        xc = x - x.mean(-1, keepdims=True)
        slope = (xc * z).sum(-1) / (xc * xc).sum(-1)
        starts.append(np.stack([z.mean(-1) - slope * x.mean(-1), np.clip(-slope, 0.01, ALPHA_MAX),
                                e0], -1))
    S = len(starts)  # every start of every dataset in one batch
    x, y, lo, hi = (v if v.ndim == 1 else np.concatenate([v] * S) for v in (x, y, lo, hi))
    th0 = np.concatenate([t[:, :p] for t in starts])
    th, f = _solve(np.clip(th0, lo, hi), x, y, e_fixed, lo, hi)
    best = th.reshape(S, B, p)[f.reshape(S, B).argmin(0), np.arange(B)]
    return [Fit(float(E_fixed if E_fixed is not None else math.exp(e[0])),
                math.exp(a + alpha * log_c0), float(alpha), mode, notes[i])
            for i, (a, alpha, *e) in enumerate(best)]


def fit_power_law(C: Any, L: Any, *, E: float | None = None,
                  E_bounds: tuple[float, float] | None = None,
                  init: Fit | None = None) -> Fit | list[Fit]:
    """Fit ``L = E + A * C**-alpha``; ``E`` fixes E, ``E_bounds=(lo, hi)`` keeps lo <= E <= hi.
    L of shape (B, n) fits B datasets at once into a list; ``init`` replaces the grid of starts."""
    C, L, _ = _check(C, L)
    lo, hi, mode, note = 0.0, math.inf, "free", "E free"
    if E is not None and E_bounds is not None:
        raise ValueError("give E (fixed) or E_bounds, not both")
    if E is not None and not (math.isfinite(E) and E >= 0):
        raise ValueError(f"a fixed E must be finite and >= 0; got {E}")
    if E is not None:
        mode, note = "fixed", f"E fixed at {E:.4g}"
    elif E_bounds is not None:
        lo, hi = (float(b) for b in E_bounds)
        if not (0 <= lo < hi < math.inf):
            raise ValueError(f"E_bounds must satisfy 0 <= lo < hi < inf; got {E_bounds}")
        mode, note = "bounded", f"E bounded to [{lo:.4g}, {hi:.4g}]"
    B = len(np.atleast_2d(L))
    with np.errstate(divide="ignore"):  # log(0) = -inf: no lower bound on e
        e_lo, e_hi = np.full(B, np.log(lo)), np.full(B, np.log(hi))
    fits = _fit(C, np.atleast_2d(L), E, e_lo, e_hi, init, mode, [note] * B)
    return fits if L.ndim == 2 else fits[0]


def fit_arm(C: Any, L: Any, n_sizes: int | None = None, *,
            init: Fit | None = None) -> Fit | list[Fit]:
    """Fit one arm by the rule the report states (``Fit.note``), on its number of model sizes
    (default: the distinct values of C). 4+ sizes: E free. 3 sizes: E bounded to [0, min(L)): three
    parameters through three size means leave no residual, so E follows their noise and can run off
    past the data; the bound keeps it below every observed loss, and the interval shows the rest.
    2 sizes: E fixed at 0, a pure power law (a true E > 0 skews it: multiplier 2.16 for 2)."""
    C, L, distinct = _check(C, L)
    n_sizes = distinct if n_sizes is None else n_sizes
    if n_sizes < 2:
        raise ValueError(f"a scaling fit needs at least 2 model sizes; got {n_sizes}")
    if n_sizes == 3:
        hi = np.atleast_2d(L).min(-1) * (1 - 1e-9)  # strictly below the smallest loss
        notes = [f"E bounded to [0, {h:.4g}): 3 sizes" for h in hi]
        fits = _fit(C, np.atleast_2d(L), None, np.full(hi.size, -np.inf), np.log(hi), init,
                    "bounded", notes)
        return fits if L.ndim == 2 else fits[0]
    if n_sizes == 2:
        fits, note = fit_power_law(C, L, E=0.0, init=init), "E fixed at 0 (pure power law): 2 sizes"
    else:
        fits, note = fit_power_law(C, L, init=init), f"E free: {n_sizes} sizes"
    return replace(fits, note=note) if L.ndim == 1 else [replace(f, note=note) for f in fits]


def _points(points: Points) -> tuple[list, np.ndarray, np.ndarray]:
    rows = [tuple(p) for p in points]
    if any(len(p) != 4 for p in rows):
        raise ValueError("each point must be (size, seed, C, L)")
    if len({(p[0], p[1]) for p in rows}) < len(rows):
        raise ValueError("two points share a (size, seed): give one tuned run per size and seed")
    C, L, _ = _check([p[2] for p in rows], [p[3] for p in rows])
    return [p[0] for p in rows], C, L


def bootstrap(points: Points, fit_fn: Callable[..., Any], n: int = 1000, seed: int = 0,
              method: str = "residuals") -> list[Fit]:
    """Refit ``n`` resamples of points (size, seed, C, L), each with every size; ``fit_fn(C, L,
    init=)`` takes L (n,) and (B, n), as fit_arm does. "residuals": the full fit's log residuals,
    scaled by sqrt(n/(n-p)), redrawn onto its fitted values (pools all sizes' seed spread). "seeds":
    each size draws k-1 of its k seeds (McCarthy & Snowden 1985: k halves a 2-seed size's
    variance); with few seeds it covers less (nominal 95%: ~71% at 2 seeds, ~90% at 4; residuals
    with dof ~94%)."""
    if method not in ("residuals", "seeds"):
        raise ValueError(f"method must be 'residuals' or 'seeds'; got {method!r}")
    sizes, C, L = _points(points)
    rng = np.random.default_rng(seed)
    full = fit_fn(C, L)
    if method == "seeds":
        groups = [np.flatnonzero([s == u for s in sizes]) for u in dict.fromkeys(sizes)]
        if min(len(ix) for ix in groups) < 2:
            raise ValueError("method='seeds' needs 2+ seeds at every size; use 'residuals'")
        rows = np.concatenate([ix[rng.integers(0, len(ix), (n, len(ix) - 1))] for ix in groups], 1)
        return fit_fn(C[rows], L[rows], init=full)
    if len(L) <= full.n_params:
        raise ValueError(f"cannot bootstrap: {len(L)} runs leave no residual spread for "
                         f"{full.n_params} parameters; add seeds")
    fitted = np.log(full.predict(C))
    resid = (np.log(L) - fitted) * math.sqrt(len(L) / (len(L) - full.n_params))
    return fit_fn(C, np.exp(fitted + resid[rng.integers(0, len(L), (n, len(L)))]), init=full)


def ci95(values: Any, dof: int | None = None) -> CI:
    """The 2.5 and 97.5 percentiles of bootstrap values, NaNs dropped and counted. Uninterpolated
    order statistics, so replicates at inf (the baseline never gets there) give hi = inf, not NaN.
    ``dof`` (residual degrees of freedom) widens the levels to Phi(-t_dof(0.975)), Hesterberg's
    (2015) expanded percentile interval: the noise level is itself estimated from few runs."""
    v = np.asarray(values, dtype=float).ravel()
    if (v := v[~(nan := np.isnan(v))]).size == 0:
        return CI(math.nan, math.nan, int(nan.sum()))
    # deferred: scipy.special alone, not scipy.stats (~0.4 s at every lmlab start, as cli imports compare)
    from scipy.special import ndtr, stdtrit

    q = 2.5 if dof is None else 100 * float(ndtr(-stdtrit(max(dof, 1), 0.975)))
    return CI(float(np.percentile(v, q, method="lower")),
              float(np.percentile(v, 100 - q, method="higher")), int(nan.sum()))


def multiplier(arm: Fit, base: Fit, C_arm: float) -> float:
    """The baseline compute reaching the arm's fitted loss at C_arm, over C_arm (> 1: the arm is
    worth more compute than the baseline); inf where that loss is at or below the baseline's E."""
    if not (C_arm > 0 and math.isfinite(C_arm)):
        raise ValueError(f"C_arm must be a positive finite compute; got {C_arm}")
    return base.inverse(arm.predict(C_arm)) / C_arm


def multiplier_ci(arm_points: Points, base_points: Points, C_arm: float, n: int = 1000,
                  seed: int = 0) -> tuple[float, tuple[float, float]]:
    """The multiplier of the fit_arm fits and its 95% interval: each arm bootstrapped on its own
    (residuals), replicate i paired with replicate i; expanded by the smaller residual dof."""
    fits, boots = [], []
    for pts, ss in zip((arm_points, base_points), np.random.SeedSequence(seed).spawn(2)):
        fit_fn = partial(fit_arm, n_sizes=len({p[0] for p in pts}))
        boots.append(bootstrap(pts, fit_fn, n=n, seed=int(ss.generate_state(1)[0])))
        fits.append(fit_fn(*_points(pts)[1:]))
    dof = min(len(pts) - f.n_params for pts, f in zip((arm_points, base_points), fits))
    ci = ci95([multiplier(a, b, C_arm) for a, b in zip(*boots)], dof=dof)
    return multiplier(fits[0], fits[1], C_arm), (ci.lo, ci.hi)


def crossing(a: Fit, b: Fit, C_lo: float, C_hi: float) -> float | None:
    """The lowest compute in [C_lo, C_hi] where the two curves cross; None where they don't."""
    if not (0 < C_lo < C_hi < math.inf):
        raise ValueError(f"want 0 < C_lo < C_hi < inf; got {C_lo}, {C_hi}")
    t = np.linspace(math.log(C_lo), math.log(C_hi), 513)  # scan log C for a sign change
    s = np.sign(a.predict(np.exp(t)) - b.predict(np.exp(t)))
    change = np.nonzero(s[:-1] * s[1:] <= 0)[0]  # a 0 counts: brentq returns that end
    if not s.any() or change.size == 0:  # one curve twice, or no sign change
        return None
    i = int(change[0])
    # deferred: scipy.optimize takes ~0.3 s to import, and every lmlab command imports this module
    from scipy.optimize import brentq

    root = brentq(lambda u: a.predict(math.exp(u)) - b.predict(math.exp(u)), t[i], t[i + 1],
                  xtol=1e-12, rtol=1e-14)
    return float(math.exp(root))

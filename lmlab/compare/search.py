"""Search policies for ``tune`` in ``lmlab compare``: which trials of one train key (lr, muon_lr,
warmup_steps) run next, to which step, and which value won.

Pure decisions, no torch and no runs. A result is ``(value, step, val_loss)``; a trial is named by
its value; a non-finite loss means the trial diverged: it counts as +inf from that step on, never
wins and is never asked to run again. Every decision is a function of (policy, results) alone, so a
killed comparison that rebuilds its results from the run dirs and its policy from ``to_dict`` makes
the same decisions again.

The executor's contract: ``next_wave`` names ``(value, target_step)`` pairs; the trial trains (or
resumes) to ``target_step`` and reports a validation loss at exactly that step (evaluations on the
way are welcome and ignored); a trial that diverges stops and reports its non-finite loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Result = tuple[float, int, float]
Edge = Literal["low", "high"]
RunFn = Callable[[float, int], Iterable[tuple[int, float]]]


class _Trials:
    """Results grouped per value: the loss at each reported step."""

    def __init__(self, values: Sequence[float], results: Iterable[Sequence[Any]]):
        self.losses: dict[float, dict[int, float]] = {v: {} for v in values}
        for value, step, loss in results:
            key = self._key(value)
            if key is not None:  # a result of a value outside this grid is not this policy's
                loss = float(loss)
                self.losses[key][int(step)] = loss if math.isfinite(loss) else math.inf

    def _key(self, value: float) -> float | None:
        if value in self.losses:
            return value
        # YAML and JSON may spell the same lr differently (3e-3 vs 0.003000000000000001)
        return next((v for v in self.losses if math.isclose(v, value, rel_tol=1e-9)), None)

    def reached(self, value: float) -> int:
        return max(self.losses[value], default=0)

    def at(self, value: float, step: int) -> float | None:
        """The loss at ``step``: +inf once diverged at or before it, None while not reached."""
        losses = self.losses[value]
        if any(s <= step and math.isinf(x) for s, x in losses.items()):
            return math.inf
        if step in losses:
            return losses[step]
        if self.reached(value) >= step:
            raise ValueError(f"trial {value!r} reached step {self.reached(value)} without an "
                             f"evaluation at step {step}: the executor must evaluate at every rung")
        return None


class SearchPolicy:
    """Shared by both policies: a sorted grid of values, ``total_steps`` and a rung schedule."""

    kind = ""

    def __init__(self, values: Sequence[float], total_steps: int, rungs: Sequence[float] = (1.0,),
                 scale: str = "auto"):
        vals = sorted(values)
        if len(vals) < 2 or len(set(vals)) != len(vals):
            raise ValueError(f"a search needs at least two distinct values, got {list(values)}")
        if any(isinstance(v, bool) or not math.isfinite(v) for v in vals):
            raise ValueError(f"search values must be finite numbers, got {list(values)}")
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        steps = [max(1, round(r * total_steps)) for r in rungs]
        if not rungs or rungs[-1] != 1.0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"rungs must rise to 1.0 in distinct steps of {total_steps}: {rungs}")
        if scale not in ("auto", "log", "linear") or (scale == "log" and vals[0] <= 0):
            raise ValueError(f"scale must be auto, linear or log (positive values): {scale!r}")
        self.values: tuple[float, ...] = tuple(vals)
        self.total_steps = int(total_steps)
        self.rungs: tuple[float, ...] = tuple(float(r) for r in rungs)
        self.rung_steps: tuple[int, ...] = tuple(steps)
        self.scale = _detect_scale(vals) if scale == "auto" else scale

    def _plan(self, trials: _Trials) -> tuple[list[tuple[float, int]], list[float]]:
        """(the wave to run now, the finalists once the wave is empty). Each rung halves the trials
        still alive (ceil, ranked by loss at the rung step, ties to the smaller value); a one-rung
        schedule is the full grid."""
        alive = list(self.values)
        for i, step in enumerate(self.rung_steps):
            todo = [(v, step) for v in alive if trials.at(v, step) is None]
            if todo:
                return todo, []
            if i == len(self.rung_steps) - 1:
                return [], alive
            ranked = sorted(alive, key=lambda v, s=step: (trials.at(v, s), v))
            # a diverged trial ranks last and is never asked to run again (its loss stays +inf),
            # but it keeps its slot: the live trials still get the planned count (8 -> 4 -> 2)
            alive = sorted(ranked[: math.ceil(len(ranked) / 2)])
        return [], alive

    def next_wave(self, results: Iterable[Sequence[Any]]) -> list[tuple[float, int]]:
        """The ``(value, target_step)`` trials to run or continue now; ``[]`` when the search is done."""
        return self._plan(_Trials(self.values, results))[0]

    def best(self, results: Iterable[Sequence[Any]]) -> float | None:
        """The finalist with the lowest loss at ``total_steps`` (ties: the smaller value); None when
        every finalist diverged. Raises ValueError while trials are still to run."""
        trials = _Trials(self.values, results)
        wave, finalists = self._plan(trials)
        if wave:
            raise ValueError(f"the search is not finished: {len(wave)} trials still to run")
        scored = [(trials.at(v, self.total_steps), v) for v in finalists]
        finite = [(loss, v) for loss, v in scored if loss is not None and loss < math.inf]
        return min(finite)[1] if finite else None

    def edge(self, results: Iterable[Sequence[Any]]) -> Edge | None:
        """Whether the best is the grid's lowest ("low") or highest ("high") value: the optimum
        may lie outside the grid. None when it is inside (or nothing won)."""
        best = self.best(results)
        if best is not None and best in (self.values[0], self.values[-1]):
            return "low" if best == self.values[0] else "high"
        return None

    def extended(self, direction: Edge) -> SearchPolicy | None:
        """The same policy with one more value past the ``direction`` edge, spaced like the two
        values at that edge (their ratio on a log grid, their difference on a linear one); None
        when that would leave the key's domain (below 0 for a non-negative linear grid)."""
        vals = self.values
        a, b = (vals[0], vals[1]) if direction == "low" else (vals[-1], vals[-2])
        new = a * a / b if self.scale == "log" else 2 * a - b
        if all(isinstance(v, int) for v in self.values):
            new = int(round(new))  # an integer key (warmup_steps) stays an integer
        else:  # 3 significant digits keep run-dir names readable; the ratio drifts by < 0.5 %
            new = float(f"{new:.3g}") if self.scale == "log" else float(f"{new:.12g}")
        if new in self.values or (new < 0 <= self.values[0]) or (self.scale == "log" and new <= 0):
            return None
        return type(self).from_dict({**self.to_dict(), "values": [*self.values, new]})

    def cost(self, results: Iterable[Sequence[Any]]) -> int:
        """Total steps trained: each trial's furthest reported step (a continued trial resumes)."""
        trials = _Trials(self.values, results)
        return sum(trials.reached(v) for v in self.values)

    @property
    def full_cost(self) -> int:
        """The steps a full grid (every value to ``total_steps``) would train."""
        return len(self.values) * self.total_steps

    def to_dict(self) -> dict[str, Any]:
        d = {"policy": self.kind, "values": list(self.values), "total_steps": self.total_steps,
             "scale": self.scale}
        return d if self.kind == GridSearch.kind else {**d, "rungs": list(self.rungs)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchPolicy:
        """Rebuild any policy from ``to_dict`` (the ``policy`` key picks the class)."""
        kinds = {c.kind: c for c in (GridSearch, SuccessiveHalving)}
        if d.get("policy") not in kinds:
            raise ValueError(f"unknown search policy {d.get('policy')!r}; known: {sorted(kinds)}")
        args = {k: v for k, v in d.items() if k != "policy"}
        return kinds[d["policy"]](**args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchPolicy) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class GridSearch(SearchPolicy):
    """Every value runs to ``total_steps``; the best final validation loss wins."""

    kind = "grid"

    def __init__(self, values: Sequence[float], total_steps: int, scale: str = "auto"):
        super().__init__(values, total_steps, (1.0,), scale)


class SuccessiveHalving(SearchPolicy):
    """Successive halving (Jamieson & Talwalkar 2016): every value runs to ``rungs[0] *
    total_steps``; at each rung the better half (ceil) by validation loss at that step continues to
    the next rung; the survivors of the last halving reach ``total_steps`` and the best wins. With
    8 values and rungs (1/4, 1/2, 1): 8 trials to T/4, 4 to T/2, 2 to T, half the grid's steps.

    A continued trial is paused, not restarted: every trial trains with the schedule (warmup, decay)
    of the full ``total_steps`` and resumes from its checkpoint at the rung, so its loss at a rung is
    the loss a full run had there. A stopped trial's checkpoint is worth keeping: an ``extended``
    grid re-ranks every rung with the new value and may resume a trial it stopped before.
    """

    kind = "successive_halving"

    def __init__(self, values: Sequence[float], total_steps: int,
                 rungs: Sequence[float] = (0.25, 0.5, 1.0), scale: str = "auto"):
        super().__init__(values, total_steps, rungs, scale)


def _detect_scale(values: Sequence[float]) -> str:
    """The grid's spacing: linear with a value <= 0 or even steps (warmup 0, 50, 100); log with
    even ratios (lr 1e-3, 3e-3, 1e-2) or two positive values (read as an lr pair)."""
    if values[0] <= 0:
        return "linear"
    if len(values) == 2:
        return "log"

    def spread(xs: list[float]) -> float:  # how uneven the spacing is, relative to its mean
        return (max(xs) - min(xs)) / (sum(xs) / len(xs))

    diffs = [b - a for a, b in zip(values, values[1:])]
    logs = [math.log(b / a) for a, b in zip(values, values[1:])]
    return "linear" if spread(diffs) < spread(logs) else "log"


@dataclass
class SearchOutcome:
    policy: SearchPolicy
    """The final policy, extensions included (save its ``to_dict``)."""
    results: list[Result]
    best: float | None
    edge: Edge | None
    """Still at an edge: the extension limit was hit or the grid cannot grow that way."""
    extensions: int


def search_until_inside(policy: SearchPolicy, run_fn: RunFn, max_extend: int = 3,
                        results: Iterable[Sequence[Any]] = ()) -> SearchOutcome:
    """Drive ``policy`` to the end, calling ``run_fn(value, target_step) -> [(step, loss), ...]``
    for each trial of each wave; while the best is at an edge and fewer than ``max_extend``
    extensions were made, grow the grid that way and go on (``max_extend=0``: no ``tune.extend``).
    ``results`` already on disk are reused, so a resumed search only runs what is missing."""
    results = [(v, int(s), float(x)) for v, s, x in results]
    extensions = 0
    while True:
        while wave := policy.next_wave(results):
            for value, target in wave:
                results.extend((value, int(s), float(x)) for s, x in run_fn(value, target))
                if _Trials(policy.values, results).at(value, target) is None:
                    # asking again would loop forever: the trial neither got there nor diverged
                    raise RuntimeError(f"run_fn({value!r}, {target}) reported no loss at step {target}")
        edge = policy.edge(results)
        grown = policy.extended(edge) if edge is not None and extensions < max_extend else None
        if grown is None:
            return SearchOutcome(policy, results, policy.best(results), edge, extensions)
        policy, extensions = grown, extensions + 1

"""Training windows drawn from several sources: round-robin, sequential, weighted, adaptive.

Each source is one token array cut into non-overlapping windows of ``block_size + 1`` tokens.
A step draws ``global_batch`` window slots; the strategy decides the source of each slot and the
source's own cursor decides which window: the k-th draw from source s is window
``perm(seed, s, epoch)[k mod n_s]`` with ``epoch = k // n_s``, so within a source's epoch no
window repeats. From the second epoch on, every window of a source moves right by one seeded
offset in ``[0, block_size)`` per epoch (the last of a segment is held inside it), so a
multi-epoch run sees new contexts, as random offsets would give, while each epoch still covers
the data once; the first epoch is the plain grid. All of it is a function of the sampler state (cursors, weights, loss averages),
which the trainer saves in every checkpoint, so a resumed run draws exactly the same batches.

Micro-batch ``m`` of rank ``r`` takes slots ``[(m * world + r) * micro_batch, ...)``: every rank
computes the same plan and keeps its share, so 1 process x 2 accumulation steps and 2 processes
x 1 see the same sequences.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lmlab.errors import LmlabError


@dataclass
class Adaptive:
    """Loss-driven reweighting (seed 001): higher recent loss -> more turns, smoothed and clamped."""

    interval_tokens: int
    smoothing: float
    min_weight: float
    max_weight: float


@dataclass
class MixState:
    cursors: list[int]
    weights: list[float]
    loss_sum: list[float] = field(default_factory=list)
    loss_count: list[float] = field(default_factory=list)
    tokens_since_update: int = 0
    seq_counter: int = 0


class MixtureSampler:
    def __init__(
        self,
        arrays: list[np.ndarray | list[np.ndarray]],
        names: list[str],
        block_size: int,
        micro_batch: int,
        accum: int,
        world: int = 1,
        rank: int = 0,
        seed: int = 0,
        strategy: str = "round_robin",
        weights: list[float] | None = None,
        adaptive: Adaptive | None = None,
    ):
        # A source is one token array or several segments (one per cache shard); windows never
        # cross a segment boundary.
        self.parts = [list(a) if isinstance(a, (list, tuple)) else [a] for a in arrays]
        self.names, self.block_size = names, block_size
        self.micro_batch, self.accum, self.world, self.rank, self.seed = micro_batch, accum, world, rank, seed
        self.strategy, self.adaptive = strategy, adaptive
        self.global_batch = micro_batch * accum * world
        seg = [[max(0, (len(p) - 1) // block_size) for p in parts] for parts in self.parts]
        self.layout = seg  # windows per segment per source: the identity of the data drawn from
        self.seg_ends = [np.cumsum(c) for c in seg]  # per source: windows up to each segment's end
        self.n_windows = [int(sum(c)) for c in seg]
        for name, n in zip(names, self.n_windows):
            if n == 0:
                warnings.warn(f"source {name} has fewer than {block_size + 1} training tokens; it is not "
                              "drawn from", stacklevel=2)
        if sum(self.n_windows) < self.global_batch:
            raise LmlabError(
                f"the training split has {sum(self.n_windows)} windows of {block_size + 1} tokens, fewer than "
                f"one global batch ({self.global_batch} sequences); lower train.batch_size or "
                "model.block_size, or add text to data.sources"
            )
        self.live = [s for s, n in enumerate(self.n_windows) if n > 0]
        base = list(weights) if weights is not None else [1.0] * len(arrays)
        self.base_weights = base
        n = len(arrays)
        self.state = MixState([0] * n, list(base), [0.0] * n, [0.0] * n)
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self.shift_epochs = True  # False for a run saved before epochs moved their windows

    def set_micro_batch(self, micro_batch: int) -> None:
        """Split each rank's share of a step into micro-batches of ``micro_batch`` sequences (a
        divisor of it): the step draws the same global batch, only accumulated differently."""
        per_rank = self.micro_batch * self.accum
        if per_rank % micro_batch:
            raise ValueError(f"micro-batch {micro_batch} does not divide {per_rank} sequences per rank")
        self.micro_batch, self.accum = micro_batch, per_rank // micro_batch

    # ------------------------------------------------------------------------------- planning

    @property
    def steps_per_epoch(self) -> int:
        """Steps to draw every window once (on average, for weighted mixing)."""
        return max(1, sum(self.n_windows) // self.global_batch)

    def _perm(self, source: int, epoch: int) -> np.ndarray:
        key = (source, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * len(self.parts):
                self._perms.clear()
            rng = np.random.default_rng([self.seed, source, epoch])
            self._perms[key] = rng.permutation(self.n_windows[source])
        return self._perms[key]

    def _shift(self, source: int, epoch: int) -> int:
        """How far right source ``source``'s windows move in ``epoch`` (0 in the first)."""
        if epoch == 0 or not self.shift_epochs:
            return 0
        return int(np.random.default_rng([self.seed, source, epoch, 2]).integers(self.block_size))

    def _slot_sources(self, step: int) -> np.ndarray:
        """The source of each of the ``global_batch`` slots of ``step``. (G,)"""
        G, live = self.global_batch, np.array(self.live)
        if self.strategy == "round_robin" and self.adaptive is None:
            return live[(step * G + np.arange(G)) % len(live)]
        if self.strategy == "sequential":
            # One long sequence: every window of source 0, then of source 1, ...; then again.
            total = sum(self.n_windows)
            pos = (self.state.seq_counter + np.arange(G)) % total
            self.state.seq_counter += G
            return np.searchsorted(np.cumsum(self.n_windows), pos, side="right")
        w = np.array([self.state.weights[s] for s in self.live], dtype=np.float64)
        rng = np.random.default_rng([self.seed, step, 1])
        return live[rng.choice(len(live), size=G, p=w / w.sum())]

    def plan(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sources, segments, window starts) of the global batch of ``step``; advances the cursors.
        (G,) each."""
        sources = self._slot_sources(step)
        segs = np.empty(len(sources), dtype=np.int64)
        starts = np.empty(len(sources), dtype=np.int64)
        for j, s in enumerate(sources):
            k = self.state.cursors[s]
            epoch, i = divmod(k, self.n_windows[s])
            w = int(self._perm(int(s), epoch)[i])  # window number within the source
            seg = int(np.searchsorted(self.seg_ends[s], w, side="right"))
            first = int(self.seg_ends[s][seg - 1]) if seg else 0
            start = (w - first) * self.block_size + self._shift(int(s), epoch)
            segs[j], starts[j] = seg, min(start, len(self.parts[s][seg]) - self.block_size - 1)
            self.state.cursors[s] = k + 1
        return sources, segs, starts

    def micro_batches(self, step: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """This rank's ``accum`` micro-batches (x, y, source ids) for ``step``: (mb, T), (mb, T), (mb,)."""
        sources, segs, starts = self.plan(step)
        mb, T = self.micro_batch, self.block_size
        for m in range(self.accum):
            k = m * self.world + self.rank
            sl = slice(k * mb, (k + 1) * mb)
            rows = np.stack([self.parts[s][g][st : st + T + 1]
                             for s, g, st in zip(sources[sl], segs[sl], starts[sl])])
            t = torch.from_numpy(rows.astype(np.int64))
            yield t[:, :-1], t[:, 1:], torch.from_numpy(sources[sl].astype(np.int64))

    # ------------------------------------------------------------------------------- adaptive

    def observe(self, loss_sum: torch.Tensor, count: torch.Tensor, tokens: int) -> bool:
        """Add per-source loss sums and row counts (S,) of a step (already summed over ranks).

        Returns True when the weights were updated: every ``interval_tokens``, each weight moves
        (with ``smoothing``) toward base_weight x recent_loss / mean recent loss, then is clamped.
        """
        st = self.state
        for s in range(len(self.parts)):
            st.loss_sum[s] += float(loss_sum[s])
            st.loss_count[s] += float(count[s])
        if self.adaptive is None:
            return False
        st.tokens_since_update += tokens
        if st.tokens_since_update < self.adaptive.interval_tokens:
            return False
        seen = [s for s in self.live if st.loss_count[s] > 0]
        if seen:
            recent = {s: st.loss_sum[s] / st.loss_count[s] for s in seen}
            mean = sum(recent.values()) / len(recent)
            a = self.adaptive
            for s in seen:
                target = self.base_weights[s] * recent[s] / mean
                w = a.smoothing * st.weights[s] + (1 - a.smoothing) * target
                st.weights[s] = min(a.max_weight, max(a.min_weight, w))
        st.loss_sum = [0.0] * len(self.parts)
        st.loss_count = [0.0] * len(self.parts)
        st.tokens_since_update = 0
        return True

    def weights(self) -> dict[str, float]:
        """Current mixing weights by source name, as shares of 1."""
        if self.strategy == "sequential":
            return {}
        w = [self.state.weights[s] if s in self.live else 0.0 for s in range(len(self.parts))]
        total = sum(w) or 1.0
        return {name: wi / total for name, wi in zip(self.names, w)}

    # ---------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        st = self.state
        return {"cursors": torch.tensor(st.cursors, dtype=torch.int64),
                "weights": torch.tensor(st.weights, dtype=torch.float64),
                "loss_sum": torch.tensor(st.loss_sum, dtype=torch.float64),
                "loss_count": torch.tensor(st.loss_count, dtype=torch.float64),
                "tokens_since_update": st.tokens_since_update, "seq_counter": st.seq_counter,
                "layout": self.layout, "shift_epochs": self.shift_epochs}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a saved position; refused when the data is not laid out as it was (other
        sources, another token cache, or a cache rebuilt with another shard count)."""
        if d.get("layout") != self.layout:
            saved = d.get("layout") or []
            raise LmlabError(
                f"the checkpoint was trained on other data ({len(saved)} sources, "
                f"{sum(map(sum, saved))} windows in {sum(map(len, saved))} segments; now {len(self.layout)} "
                f"sources, {sum(self.n_windows)} windows in {sum(map(len, self.layout))} segments): resume "
                "with the same data, token cache and ranks x data.num_workers"
            )
        self.shift_epochs = bool(d.get("shift_epochs", False))  # older runs keep the plain grid
        self.state = MixState(d["cursors"].tolist(), d["weights"].tolist(), d["loss_sum"].tolist(),
                              d["loss_count"].tolist(), int(d["tokens_since_update"]), int(d["seq_counter"]))

"""The trainer's training windows as a map-style torch ``Dataset`` (``lmlab.TextData.dataset``).

The windows are read off the mixture sampler (``data/mixing.py``), the one place that lays them
out: ``window + 1`` tokens each, never across a segment, non-overlapping. Here they come in
order; training draws the same windows in a seeded order, and moves them from its second epoch on.
"""

from __future__ import annotations

import numpy as np
import torch

from lmlab.data.mixing import MixtureSampler


class LMDataset(torch.utils.data.Dataset):
    """The windows of ``segments`` (token arrays): item i is (x, y), two (T,) int64 tensors, y
    = x shifted by one."""

    def __init__(self, segments: list[np.ndarray], window: int):
        self.segments, self.window = segments, window
        # The sampler refuses a split without one window; a dataset of none is only empty.
        self.sampler = (MixtureSampler([list(segments)], ["windows"], window, micro_batch=1, accum=1)
                        if any(len(s) > window for s in segments) else None)

    def __len__(self) -> int:
        return self.sampler.n_windows[0] if self.sampler is not None else 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} of {len(self)}")
        i %= len(self)
        ends = self.sampler.seg_ends[0]  # windows up to each segment's end
        seg = int(np.searchsorted(ends, i, side="right"))
        start = (i - (int(ends[seg - 1]) if seg else 0)) * self.window
        w = torch.from_numpy(self.sampler.parts[0][seg][start : start + self.window + 1].astype(np.int64))
        return w[:-1], w[1:]

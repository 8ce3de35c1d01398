"""What every family's forward returns, and the next-token loss they share (below the heads,
which return it too, and ``base``, which builds the heads)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class ModelOutput:
    """``loss`` is what the trainer backpropagates; ``terms`` are its named, already-weighted parts."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean next-token cross entropy; ``targets`` of -1 are ignored. logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=-1,
        label_smoothing=label_smoothing,
    )

"""What every family returns and offers: the forward output and default scoring."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


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


class LanguageModel(nn.Module):
    """Base class of the families: default ``log_probs`` from the forward logits."""

    @torch.no_grad()
    def log_probs(self, input_ids: torch.Tensor) -> torch.Tensor:
        """log p(x_t | x_<t) for t = 1..T-1. input_ids (B, T) -> (B, T-1)."""
        logits = self(input_ids).logits[:, :-1].float()  # (B, T-1, V)
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

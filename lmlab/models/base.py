"""What every family returns and offers: the forward output and default scoring."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


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
    """Base class of the families: default ``log_probs`` from the forward logits, the
    gradient-checkpointing switch (``train.grad_checkpoint``) and the auxiliary heads.

    A family that exposes hidden states (``exposes_hidden = True``) implements
    ``forward_hidden`` and ``step_hidden``; the base turns them into ``forward`` (adding the
    auxiliary losses of ``model.auxiliary``) and ``step``. Other families override ``forward``.
    """

    # Families whose trunk routes its blocks through ``checkpointed`` set this to True.
    supports_grad_checkpointing = False
    grad_checkpointing = False
    exposes_hidden = False

    def attach_auxiliary(self, cfg, hidden_size: int) -> None:
        """Build the auxiliary heads of ``cfg.auxiliary`` (a model config) as ``self.aux``."""
        if cfg.auxiliary is not None and cfg.auxiliary.any_enabled:
            from lmlab.models.heads import AuxiliaryHeads

            self.aux = AuxiliaryHeads(cfg.auxiliary, hidden_size, cfg.vocab_size)

    def forward(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> ModelOutput:
        """input_ids, targets (B, T) -> logits (B, T, V) and, with targets, the loss and its terms."""
        hidden, out = self.forward_hidden(input_ids, targets, label_smoothing)
        if self.auxiliary_heads is not None and targets is not None:
            out = self.auxiliary_heads.add_losses(self, hidden, input_ids, targets, out)
        return out

    @property
    def auxiliary_heads(self) -> nn.Module | None:
        """The auxiliary heads (``self.aux``), or None when the config enables none."""
        return self._modules.get("aux")

    def forward_hidden(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, ModelOutput]:
        """The final hidden states (B, T, C) the logits are read from, and the LM's output."""
        raise NotImplementedError(f"{type(self).__name__} does not expose hidden states")

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) -> final hidden states (B, T, C), without the output head."""
        raise NotImplementedError(f"{type(self).__name__} does not expose hidden states")

    def step(self, tokens: torch.Tensor, state):
        """Feed tokens (B, T) after the cached positions -> (logits of the last one (B, V), state)."""
        _, logits, state = self.step_hidden(tokens, state)
        return logits, state

    def set_grad_checkpointing(self, on: bool = True) -> None:
        """Recompute each block's activations in backward instead of keeping them (training
        only; decoding and no-grad scoring are unaffected)."""
        if on and not self.supports_grad_checkpointing:
            raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")
        self.grad_checkpointing = on

    def checkpointed(self, fn, *args):
        """``fn(*args)``, checkpointed when switched on, training, and building a graph. The
        RNG state is replayed in the recompute, so dropout masks match."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    @torch.no_grad()
    def log_probs(
        self, input_ids: torch.Tensor, return_greedy: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """log p(x_t | x_<t) for t = 1..T-1. input_ids (B, T) -> (B, T-1).

        The scoring contract every family keeps (training eval, ``lmlab eval``, the lm-eval
        adapter use nothing else). It must be causal: a position's score may not depend on later
        tokens, so right-padding a row never changes its scores. ``return_greedy`` also returns
        (B, T-1) bools: whether each target is the model's argmax (lambada's accuracy).
        """
        logits = self(input_ids).logits[:, :-1].float()  # (B, T-1, V)
        targets = input_ids[:, 1:, None]
        # gather - logsumexp: one (B, T-1, V) tensor fewer than a full log_softmax.
        logp = (logits.gather(-1, targets) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(-1)
        if return_greedy:
            return logp, logits.argmax(dim=-1) == targets.squeeze(-1)
        return logp

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

"""What every family returns and offers: the forward output and default scoring."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmlab.errors import LmlabError
from lmlab.models.heads import AuxiliaryHeads
from lmlab.models.output import ModelOutput, lm_loss  # noqa: F401  (re-exported: every family's output)


class LanguageModel(nn.Module):
    """Base class of the families: default ``log_probs`` from the forward logits, the
    gradient-checkpointing switch (``train.grad_checkpoint``) and the auxiliary heads.

    A family that exposes hidden states (``exposes_hidden = True``) implements
    ``forward_hidden`` and ``step_hidden``; the base turns them into ``forward`` (adding the
    auxiliary losses of ``model.auxiliary``) and ``step``. Other families override ``forward``.
    """

    block_size: int  # the context in the family's units: decoding slides its window there

    # ---- What a family declares (class attributes; the shared layers read only these) ----
    # Families whose trunk routes its blocks through ``checkpointed`` set this to True.
    supports_grad_checkpointing: ClassVar[bool] = False
    grad_checkpointing = False
    exposes_hidden: ClassVar[bool] = False
    # False: the forward logits are not next-token predictions (a compressing family); the
    # contract test then skips its logits checks.
    next_token_logits: ClassVar[bool] = True
    # Load weights tolerantly by default: added / missing tensors are a warning, not an error.
    tolerant_load: ClassVar[bool] = False
    # Decoding-time options ``set_generation_options`` takes (apelr: force_state, ...); a family
    # that takes ``record`` can report its plan per generated token (``generate_with_plan``).
    generation_options: ClassVar[tuple[str, ...]] = ()
    # The ``lmlab sample`` flags of those options: option -> argparse keywords plus "flag"
    # (the CLI builds a group per family from them; the shared layers never name one).
    generation_flags: ClassVar[dict[str, dict[str, Any]]] = {}
    # Where the trainer writes ``diagnostics`` (run dir relative).
    diagnostics_file: ClassVar[str] = "diagnostics.json"
    # Held-out windows ``diagnostics`` and ``eval_diagnostics`` read (None: one micro-batch).
    diagnostics_rows: ClassVar[int | None] = None
    # Parallelisms the family cannot train under, each with the reason (``train.parallel``).
    unsupported_parallel: ClassVar[dict[str, str]] = {}
    # The name of the family's own report on a text (``lmlab report RUN --text ...`` writes
    # ``RUN/<name>.html``: the abstractinator's patches); None: the family has none.
    text_report: ClassVar[str | None] = None

    def attach_auxiliary(self, cfg, hidden_size: int) -> None:
        """Build the auxiliary heads of ``cfg.auxiliary`` (a model config) as ``self.aux``."""
        if cfg.auxiliary is not None and cfg.auxiliary.any_enabled:
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
        # The last token is only a target: the model reads T-1 tokens, so a sequence may be one
        # longer than block_size (lm-eval's max_length counts model inputs: scoring_window).
        logits = self(input_ids[:, :-1]).logits.float()  # (B, T-1, V)
        targets = input_ids[:, 1:, None]
        # gather - logsumexp: one (B, T-1, V) tensor fewer than a full log_softmax.
        logp = (logits.gather(-1, targets) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(-1)
        if return_greedy:
            return logp, logits.argmax(dim=-1) == targets.squeeze(-1)
        return logp

    def muon_parameters(self) -> set[str]:
        """Names of the parameters ``train.optimizer: muon`` gives to Muon: the hidden weight
        matrices. By default every ``nn.Linear`` weight except the output head's and any weight
        shared with an embedding (tied); everything else (embeddings, norms, biases, convolution
        kernels, codebooks, planner transitions, sine parameters) takes AdamW. A family whose
        Linear layers are not hidden layers overrides it."""
        embeddings = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        head = getattr(self, "lm_head", None)
        out = set()
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and module is not head and id(module.weight) not in embeddings:
                out.add(f"{name}.weight" if name else "weight")
        return {n for n, p in self.named_parameters() if n in out and p.ndim == 2}

    def param_parts(self) -> dict[str, str]:
        """Parameter name -> the part it belongs to, for ``train.part_lr`` and ``part_warmup``
        (a family of separately trained modules names them); {} (the default): no parts."""
        return {}

    @property
    def scoring_window(self) -> int:
        """The longest sequence ``log_probs`` scores at once: block_size inputs plus the last
        target (a family whose code reads every token, the abstractinator, says block_size)."""
        return self.block_size + 1

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- Hooks: no-op defaults; a family overrides what it needs ----

    def set_train_step(self, step: int) -> None:
        """Called before each optimizer step (families with step-dependent loss weights)."""

    def on_train_start(self, resumed: bool, weights_file: Callable[[str], Path]) -> None:
        """Called once the snapshot (if any) has loaded, before the first step (e.g. the
        abstractinator's stage 2 loads and freezes its base). ``weights_file(path)`` is the
        safetensors file a path names: the file itself, or a run dir's newest snapshot's
        weights (a model never reads a run dir itself)."""

    def on_step_end(self) -> None:
        """Called on every rank after each optimizer step (even a skipped one), before any
        evaluation or save: a family whose training forward gathers statistics over a step's
        micro-batches (the abstractinator's EMA codebooks) reduces and applies them here."""

    def on_checkpoint(self) -> None:
        """Called on rank 0 after each snapshot (e.g. the abstractinator's stage 1 writes its base)."""

    def diagnostics(self, input_ids: torch.Tensor) -> dict[str, Any] | None:
        """The family's own evaluation of windows (N, T), written to ``diagnostics_file``;
        None: the family has none."""
        return None

    def eval_diagnostics(self, input_ids: torch.Tensor) -> dict[str, float]:
        """Numbers the trainer logs with every evaluation (a row of metrics.jsonl, every
        tracker, metrics.json), from held-out windows (N, T); {} (the default): none."""
        return {}

    def generate_ids(self, prompts: list[list[int]], settings, eos_id: int, stop_fn=None) -> list[list[int]] | None:
        """A family that does not decode token by token returns its continuations here; None
        (the default) means the shared decoding loop runs ``init_state``/``step``."""
        return None

    def set_generation_options(self, **options: Any) -> None:
        """Decoding-time controls (``generation_options``); called without arguments to reset."""
        if options:
            raise LmlabError(f"{', '.join(sorted(options))}: the {type(self).__name__} model has no "
                             "decoding options")

    def extend_max_seq_len(self, block_size: int) -> None:
        """Grow the context to ``block_size`` positions in place (a continuous preset that
        raises the context); a family that cannot refuses in one line."""
        raise LmlabError(f"the {type(self).__name__} model cannot extend its context to {block_size} "
                         "positions; keep model.block_size (seq_length) as it was")

    def report_on_text(self, text: str, title: str) -> tuple[str, str]:
        """(self-contained HTML page, one summary line) of the family's ``text_report`` on
        ``text``; a family without one refuses in one line."""
        raise LmlabError(f"the {type(self).__name__} model has no report on a text (model.text_report)")

    def recorded_plan(self) -> list[dict[str, Any]]:
        """Per token of the last decoding with the ``record`` generation option, row 0's plan:
        ``state`` (the active plan state), ``belief`` and ``lookahead`` (forecast beliefs);
        empty for a family that records no plan."""
        return []

    def shard_units(self) -> list[nn.Module]:
        """The submodules FSDP shards one by one (the blocks); the rest goes with the root."""
        return []

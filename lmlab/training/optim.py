"""AdamW with decoupled weight decay on matrices only, and the lr schedule (warmup, then cosine
or warmup-stable-decay)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim._muon import _adjust_lr, _zeropower_via_newtonschulz

from lmlab.config import TrainConfig
from lmlab.errors import LmlabError


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Two groups of the trainable parameters: matrices (decayed) and the rest (biases, norms,
    other 1-d parameters: not decayed). The order is ``model.parameters()``'s. With
    ``train.part_lr`` / ``part_warmup`` the two groups are split by the family's parts
    (``param_parts``), each group carrying its ``part`` (the trainer's schedule reads it)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not (cfg.part_lr or cfg.part_warmup):
        return _decay_split([p for _, p in named], cfg)
    parts = model.param_parts()
    known = sorted(set(parts.values()))
    for key, asked in (("part_lr", cfg.part_lr), ("part_warmup", cfg.part_warmup)):
        unknown = sorted(set(asked) - set(known))
        if unknown:
            has = f"its parts: {', '.join(known)}" if known else "it declares none (LanguageModel.param_parts)"
            raise LmlabError(f"train.{key}: {type(model).__name__} has no part {', '.join(unknown)}; {has}")
    groups = [g for part in known for g in _decay_split([p for n, p in named if parts.get(n) == part], cfg, part)]
    groups += _decay_split([p for n, p in named if n not in parts], cfg)  # outside every part: the run's lr
    return [g for g in groups if g["params"]]


def _decay_split(params: list[torch.nn.Parameter], cfg: TrainConfig, part: str | None = None) -> list[dict[str, Any]]:
    """Matrices (decayed) and the rest (not decayed), as two groups (of ``part``)."""
    tag = {} if part is None else {"part": part}
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay, **tag},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0, **tag}]


def use_fused(cfg: TrainConfig, device: torch.device) -> bool:
    """``train.fused_adamw``: auto takes the fused kernel where PyTorch has one (CUDA, CPU)."""
    has = device.type in ("cuda", "cpu")
    if cfg.fused_adamw is True and not has:
        raise LmlabError(f"train.fused_adamw = true: PyTorch has no fused AdamW on {device.type}; "
                         "set it to auto or false")
    return has if cfg.fused_adamw == "auto" else bool(cfg.fused_adamw)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused per ``train.fused_adamw``; no decay on biases, norms and other 1-d params),
    or with ``train.optimizer: muon`` Muon for the family's hidden matrices and that AdamW for
    the rest (:class:`MuonAdamW`)."""
    if cfg.optimizer == "muon":
        return MuonAdamW(model, cfg, device)
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=use_fused(cfg, device))


class ShardedMuon(torch.optim.Muon):
    """``torch.optim.Muon`` that also steps FSDP2's sharded matrices (DTensors).

    Newton-Schulz orthogonalises a whole matrix, so for a sharded one the momentum stays a shard
    (elementwise, like the gradient) while each step all-gathers the matrix's Nesterov update,
    orthogonalises it on every rank alike and keeps this rank's rows: the same arithmetic as
    Muon in one process, on every rank. Plain tensors take ``torch.optim.Muon``'s own step.
    """

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        # deferred: torch.distributed.tensor takes ~0.6 s to import, and only FSDP makes DTensors
        from torch.distributed.tensor import DTensor

        if not any(isinstance(p, DTensor) for g in self.param_groups for p in g["params"]):
            return super().step(closure)
        from torch.distributed.tensor import distribute_tensor  # deferred: as above (FSDP only)

        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]  # a shard, as p.grad
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                whole = update.full_tensor() if isinstance(update, DTensor) else update  # (out, in)
                ortho = _zeropower_via_newtonschulz(whole, group["ns_coefficients"], group["ns_steps"], group["eps"])
                if isinstance(p, DTensor):  # every rank holds the same matrix: slice, no communication
                    ortho = distribute_tensor(ortho.to(p.dtype), p.device_mesh, p.placements, src_data_rank=None)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(ortho, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))


def optimizer_parts(optimizer: torch.optim.Optimizer) -> tuple[torch.optim.Optimizer, ...]:
    """The optimizers a (possibly composite) optimizer steps, for torch.distributed.checkpoint."""
    return tuple(getattr(optimizer, "optimizers", (optimizer,)))


class MuonAdamW(torch.optim.Optimizer):
    """Muon (:class:`ShardedMuon`) over the model's ``muon_parameters()`` and AdamW (as
    ``adamw``) over every other trainable parameter, stepped together as one optimizer.

    ``param_groups`` lists Muon's groups, then AdamW's: the trainer sets each group's lr to the
    schedule's times the group's ``lr_scale`` (a Muon group's is ``muon_lr / lr``). ``state_dict`` holds both
    optimizers' states, so a resume is bit-exact.
    """

    def __init__(self, model: torch.nn.Module, cfg: TrainConfig, device: torch.device):
        names = model.muon_parameters()  # the LanguageModel hook (every family has it)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        muon = [p for n, p in named if n in names]
        if not muon:
            raise LmlabError("train.optimizer = muon: this model has no hidden weight matrices for Muon "
                             "(muon_parameters() is empty); use adamw")
        bad = [n for n, p in named if n in names and p.ndim != 2]
        if bad:
            raise LmlabError(f"muon_parameters() names parameters that are not matrices: {bad[:4]}")
        rest = [p for n, p in named if n not in names]
        scale = 1.0 if cfg.muon_lr is None else cfg.muon_lr / cfg.lr
        self.muon = ShardedMuon(
            [{"params": muon, "lr_scale": scale}], lr=cfg.lr * scale, weight_decay=cfg.weight_decay,
            momentum=cfg.muon_momentum, adjust_lr_fn="match_rms_adamw" if cfg.muon_lr is None else None)
        self.adamw = torch.optim.AdamW(
            [{"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
             {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0}],
            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=use_fused(cfg, device))
        self.optimizers = (self.muon, self.adamw)
        # Optimizer's own bookkeeping (hooks, defaults) without a second copy of the groups.
        self.defaults = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:  # type: ignore[override]
        return {**self.muon.state, **self.adamw.state}

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # type: ignore[override]
        if set(state_dict) != {"muon", "adamw"}:
            raise LmlabError("the snapshot's optimizer state is AdamW's, not Muon + AdamW's: resume with the "
                             "run's own train.optimizer (or set save_optimizer_state differently and start anew)")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])


def lr_at(step: int, cfg: TrainConfig, max_steps: int, part: str | None = None) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then (``train.schedule``) cosine decay to
    ``min_lr`` at ``max_steps``, or ``lr`` held until the last ``decay_fraction`` of the
    post-warmup steps and a linear decay to ``min_lr`` over them (warmup-stable-decay).
    ``part``: a part of the model (``train.part_lr``, ``part_warmup``): its own warmup, and the
    whole curve times its lr multiple."""
    scale = 1.0 if part is None else cfg.part_lr.get(part, 1.0)
    warmup = cfg.warmup_steps if part is None else cfg.part_warmup.get(part, cfg.warmup_steps)
    return scale * _curve(step, cfg, max_steps, min(warmup, max(0, max_steps - 1)))


def _curve(step: int, cfg: TrainConfig, max_steps: int, warmup: int) -> float:
    if step < warmup:
        return cfg.lr * (step + 1) / (warmup + 1)
    if cfg.schedule == "wsd":
        decay_start = max_steps - math.ceil(cfg.decay_fraction * (max_steps - warmup))
        if step < decay_start:
            return cfg.lr
        progress = (step - decay_start) / max(1, max_steps - decay_start)
        return cfg.lr + min(1.0, progress) * (cfg.min_lr - cfg.lr)
    progress = (step - warmup) / max(1, max_steps - warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))) * (cfg.lr - cfg.min_lr)

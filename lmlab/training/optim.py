"""AdamW with decoupled weight decay on matrices only, and the lr schedule (warmup, then cosine
or warmup-stable-decay)."""

from __future__ import annotations

import math
from typing import Any

import torch

from lmlab.config import TrainConfig
from lmlab.errors import LmlabError


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Two groups of the trainable parameters: matrices (decayed) and the rest (biases, norms,
    other 1-d parameters: not decayed). The order is ``model.parameters()``'s."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def use_fused(cfg: TrainConfig, device: torch.device) -> bool:
    """``train.fused_adamw``: auto takes the fused kernel where PyTorch has one (CUDA, CPU)."""
    has = device.type in ("cuda", "cpu")
    if cfg.fused_adamw is True and not has:
        raise LmlabError(f"train.fused_adamw = true: PyTorch has no fused AdamW on {device.type}; "
                         "set it to auto or false")
    return has if cfg.fused_adamw == "auto" else bool(cfg.fused_adamw)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW (fused per ``train.fused_adamw``); no decay on biases, norms and other 1-d params."""
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             fused=use_fused(cfg, device))


def lr_at(step: int, cfg: TrainConfig, max_steps: int) -> float:
    """Linear warmup to ``lr`` over ``warmup_steps``, then (``train.schedule``) cosine decay to
    ``min_lr`` at ``max_steps``, or ``lr`` held until the last ``decay_fraction`` of the
    post-warmup steps and a linear decay to ``min_lr`` over them (warmup-stable-decay)."""
    warmup = min(cfg.warmup_steps, max(0, max_steps - 1))
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

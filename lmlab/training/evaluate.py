"""Validation loss, perplexity and bits-per-byte through the ``log_probs`` scoring contract."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch


@torch.no_grad()
def score_windows(
    model: torch.nn.Module,
    windows: list[np.ndarray],
    byte_lengths: np.ndarray,
    device: torch.device,
    batch_size: int,
    autocast: torch.autocast | None = None,
) -> tuple[float, int, int]:
    """(total NLL in nats, scored tokens, their UTF-8 bytes) of the targets of ``windows``."""
    was_training = model.training
    model.eval()
    nll, n_tokens, n_bytes = 0.0, 0, 0
    try:
        for i in range(0, len(windows), batch_size):
            by_len: dict[int, list[np.ndarray]] = {}
            for w in windows[i : i + batch_size]:  # equal lengths batch together (a short split differs)
                by_len.setdefault(len(w), []).append(w)
            for group in by_len.values():
                ids = torch.from_numpy(np.stack(group).astype(np.int64)).to(device)
                with autocast or contextlib.nullcontext():
                    logp = model.log_probs(ids)  # (B, T-1)
                nll -= logp.double().sum().item()
                n_tokens += logp.numel()
                n_bytes += int(byte_lengths[ids[:, 1:].cpu().numpy()].sum())
    finally:
        model.train(was_training)
    return nll, n_tokens, n_bytes


def lm_metrics(nll: float, n_tokens: int, n_bytes: int, prefix: str = "val_") -> dict[str, float]:
    """Mean NLL per token, perplexity and bits-per-byte from totals.

    bits-per-byte = total NLL / ln 2 / number of UTF-8 bytes the scored tokens decode to, which
    makes token- and byte-level families comparable.
    """
    loss = nll / max(1, n_tokens)
    return {f"{prefix}loss": loss, f"{prefix}ppl": math.exp(min(loss, 50.0)),
            f"{prefix}bpb": nll / math.log(2) / max(1, n_bytes)}


"""Validation loss, perplexity and bits-per-byte through the ``log_probs`` scoring contract."""

from __future__ import annotations

import math

import numpy as np
import torch


@torch.no_grad()
def evaluate_lm(
    model: torch.nn.Module,
    windows: list[np.ndarray],
    byte_lengths: np.ndarray,
    device: torch.device,
    batch_size: int,
    autocast: torch.autocast | None = None,
) -> dict[str, float]:
    """Mean NLL per token (nats), perplexity and bits-per-byte of the targets of ``windows``.

    bits-per-byte = total NLL / ln 2 / number of UTF-8 bytes the target tokens decode to, which
    makes token- and byte-level families comparable.
    """
    was_training = model.training
    model.eval()
    nll, n_tokens, n_bytes = 0.0, 0, 0
    try:
        for i in range(0, len(windows), batch_size):
            chunk = windows[i : i + batch_size]
            by_len: dict[int, list[np.ndarray]] = {}
            for w in chunk:  # equal lengths batch together (the last window may be shorter)
                by_len.setdefault(len(w), []).append(w)
            for group in by_len.values():
                ids = torch.from_numpy(np.stack(group).astype(np.int64)).to(device)
                if autocast is not None:
                    with autocast:
                        logp = model.log_probs(ids)
                else:
                    logp = model.log_probs(ids)  # (B, T-1)
                nll -= logp.double().sum().item()
                n_tokens += logp.numel()
                n_bytes += int(byte_lengths[ids[:, 1:].cpu().numpy()].sum())
    finally:
        model.train(was_training)
    loss = nll / max(1, n_tokens)
    return {
        "val_loss": loss,
        "val_ppl": math.exp(min(loss, 50.0)),
        "val_bpb": nll / math.log(2) / max(1, n_bytes),
    }

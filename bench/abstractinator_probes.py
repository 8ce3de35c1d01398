"""Three small probes behind issue 29's closing analysis, each an A/B in one plain training loop
(not the trainer: same windows and seed for both arms, 16 x 128 bytes a step, warmup 30, cosine to
0.1 x lr, AdamW betas 0.9/0.95, clip 1.0). Val bpb is the two-part code on 64 held-out windows.

    .venv/bin/python bench/abstractinator_probes.py top-synthetic
    .venv/bin/python bench/abstractinator_probes.py top-context RUN/config.yaml --seeds 1 2 --lrs 0.016 0.008
    .venv/bin/python bench/abstractinator_probes.py stack-prior ONE/config.yaml TWO/config.yaml \\
        --lrs-one 0.016 0.008 --lrs-two 0.002 0.004

- ``top-synthetic``: the top model (2 layers, d 48) alone on a code sequence with structure
  (code k = code k-1 + 7 mod 64): does it learn at all?
- ``top-context``: the run's config with and without a top model that also reads the byte
  context at each patch start (the entropy model's hidden at the byte before the patch, detached,
  through a zero-initialised linear layer added to the top model's input), one level only.
- ``stack-prior``: one level and two levels (two run configs of equal parameters), each with the
  expander prior on and off at level 1.
The run configs are those ``lmlab compare`` saved (``RUN/config.yaml``); data paths are read as
they are written there, relative to the folder this is run from.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import yaml
from abstractinator_free_running import val_windows
from torch import nn

from lmlab.configure import validate_config
from lmlab.models.abstractinator.attention import causal_mask
from lmlab.models.abstractinator.top import CodeSequenceTransformer
from lmlab.models.abstractinator.vq import ResidualVQ
from lmlab.registry import build_model
from lmlab.tokenizers import ByteTokenizer


def top_synthetic() -> None:
    torch.manual_seed(0)
    K, L, B = 64, 24, 16
    rvq = ResidualVQ(1, K, 16)
    rvq.stages[0].codebook.copy_(torch.randn(K, 16))
    top = CodeSequenceTransformer(48, 4, 2, "regular", "sdpa", 0, 64, rvq)
    opt = torch.optim.AdamW(top.parameters(), lr=4e-3)
    for step in range(301):
        codes = ((torch.randint(0, K, (B, 1)) + torch.arange(L)[None] * 7) % K)[..., None]
        loss = top.loss(codes, torch.ones(B, L, dtype=torch.bool))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}: {loss.item() / math.log(2):.2f} bits per code (uniform {math.log2(K):.0f})")


def add_byte_context(model) -> None:
    """Give the top model the entropy model's hidden state at the byte before each patch."""
    top, plain_compress = model.top, model.compress_all
    d = top.up.out_features
    top.ctx = nn.Linear(d, d, bias=False)
    nn.init.zeros_(top.ctx.weight)  # starts as the plain top model

    def compress_all(x):
        outs = plain_compress(x)
        ent = model.levels[0].entropy
        with torch.no_grad():
            h = ent.trunk(ent._symbols(x), causal_mask())  # (B, T, D): reads x_<=t
        seg, K = outs[-1].seg, outs[-1].codes.size(1)
        B, T = seg.shape
        pos = torch.arange(T).expand(B, T)
        first = torch.full((B, K + 1), T).scatter_reduce(1, seg.clamp(max=K), pos, reduce="amin")[:, :K]
        top._ctx = h.gather(1, (first - 1).clamp(min=0)[..., None].expand(-1, -1, d)) * (first > 0)[..., None]
        return outs

    def hidden(codes):
        prev = top.up(top.rvq[0].embed(codes[:, :-1]).to(top.up.weight.dtype))
        x = torch.cat([top.bos.expand(codes.size(0), 1, -1), prev], dim=1)
        return top.trunk(x + top.ctx(top._ctx[:, : x.size(1)]), causal_mask())

    model.compress_all, top.hidden = compress_all, hidden


def train_and_score(raw: dict, seed: int, lr: float, steps: int, context: bool = False) -> dict[str, float]:
    """Train a model of ``raw`` in the plain loop; the two-part val bpb by part."""
    torch.manual_seed(seed)
    cfg = validate_config(raw)
    tok = ByteTokenizer()
    model = build_model(cfg.model)
    if context:
        add_byte_context(model)
    train_ids, val = val_windows(cfg, tok, 7000, "train"), val_windows(cfg, tok, 64, "val")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        scale = min(1.0, step / 30) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        model.train()
        x = train_ids[torch.randint(0, train_ids.size(0), (16,), generator=g)]
        loss = model(x[:, :-1], x[:, 1:]).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    model.eval()
    with torch.no_grad():
        parts = model.code_lengths(val)
    n = int((val[:, 1:] != tok.eos_id).sum())
    return {k: float(v.sum()) / math.log(2) / n for k, v in parts.items()}


def _row(label: str, bpb: dict[str, float], t0: float) -> None:
    parts = ", ".join(f"{k} {v:.3f}" for k, v in bpb.items())
    print(f"| {label} | {sum(bpb.values()):.3f} | {parts} | {time.time() - t0:.0f}s |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("top-synthetic", "top-context", "stack-prior"))
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.016])
    ap.add_argument("--lrs-one", type=float, nargs="+", default=[0.016, 0.008])
    ap.add_argument("--lrs-two", type=float, nargs="+", default=[0.002, 0.004])
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.probe == "top-synthetic":
        return top_synthetic()
    raws = [yaml.safe_load(open(c, encoding="utf-8")) for c in args.configs]
    for raw in raws:  # configs saved before loss_per_byte existed trained with the seed's weighting
        raw["model"].setdefault("loss_per_byte", False)
    print("| arm | val bpb | by part | time |\n|---|---:|---|---:|")
    if args.probe == "top-context":
        for lr in args.lrs:
            for seed in args.seeds:
                for context in (False, True):
                    t0 = time.time()
                    bpb = train_and_score(raws[0], seed, lr, args.steps, context)
                    _row(f"lr {lr} seed {seed} {'byte context' if context else 'plain'}", bpb, t0)
        return
    for raw, lrs in zip(raws, (args.lrs_one, args.lrs_two)):
        for prior in (True, False):
            raw["model"]["levels"][0]["expander_prior"] = prior
            for lr in lrs:
                for seed in args.seeds:
                    t0 = time.time()
                    bpb = train_and_score(raw, seed, lr, args.steps)
                    levels = len(raw["model"]["levels"])
                    _row(f"{levels} level(s), prior {'on' if prior else 'off'}, lr {lr}, seed {seed}", bpb, t0)


if __name__ == "__main__":
    main()

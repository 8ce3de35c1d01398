"""Small probes behind issue 29's closing analysis, the first four each an A/B in one plain training loop
(not the trainer: same windows and seed for both arms, 16 x 128 bytes a step, warmup 30, cosine to
0.1 x lr, AdamW betas 0.9/0.95, clip 1.0). Val bpb is the two-part code on 64 held-out windows.

    .venv/bin/python bench/abstractinator_probes.py top-synthetic
    .venv/bin/python bench/abstractinator_probes.py top-context RUN/config.yaml --seeds 1 2 --lrs 0.016 0.008
    .venv/bin/python bench/abstractinator_probes.py stack-prior ONE/config.yaml TWO/config.yaml \\
        --lrs-one 0.016 0.008 --lrs-two 0.002 0.004
    .venv/bin/python bench/abstractinator_probes.py causal-top RUN/config.yaml --seeds 1 2 --lrs 0.016 0.008 \\
        --baseline BYTE_LM/config.yaml --baseline-lrs 0.008
    .venv/bin/python bench/abstractinator_probes.py code-space RUN [RUN ...]

- ``top-synthetic``: the top model (2 layers, d 48) alone on a code sequence with structure
  (code k = code k-1 + 7 mod 64): does it learn at all?
- ``top-context``: the run's config with and without a top model that also reads the byte
  context at each patch start (the entropy model's hidden at the byte before the patch, detached,
  through a zero-initialised linear layer added to the top model's input), one level only.
- ``stack-prior``: one level and two levels (two run configs of equal parameters), each with the
  expander prior on and off at level 1.
- ``causal-top``: the run's config (one level) as it is and in BLT's arrangement on the same
  parts (``make_causal``: the byte expander reads the top model's states over earlier patches
  instead of the current patch's code, so no code is sent and the score is the bytes' cost).
  ``--baseline RUN/config.yaml`` trains and scores a byte LM's run config in the same loop first
  (at ``--baseline-lrs``), so the table has its ratio. ``--set KEY=VALUE`` (repeatable) changes
  the run configs first (a dotted path, list items by index).
- ``code-space``: trained run dirs (``RUN`` ...) scored on 64 held-out windows twice: as the
  model scores (the code space normalised by its running moments) and with each level's code
  space normalised by the windows' own moments, as in training; and the distinct level-1 codes
  each way. Where the two scores differ, the codes collapse at eval only.
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

import lmlab
from lmlab.configure import validate_config
from lmlab.models.abstractinator.attention import causal_mask
from lmlab.models.abstractinator.top import CodeSequenceTransformer
from lmlab.models.abstractinator.vq import ResidualVQ
from lmlab.models.base import ModelOutput
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
        loss, _ = top.loss(codes, torch.ones(B, L, dtype=torch.bool))
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


def make_causal(model) -> None:
    """BLT's arrangement on the same parts (one level): no code is sent. The top model reads the
    code vectors of the patches so far (straight-through, so the byte loss trains the encoder
    through it) and the byte expander cross-attends to its states instead of to the codes:
    state k reads patches < k, so the patch a byte falls in (known from the bytes before it)
    and every state up to it are known before the byte is decoded. The score is the bytes'
    cost alone; the top model's code head goes unused. One level only: on a stack it would
    read level 1's codes into the top model and leave level 2 out of the model (an earlier
    version did, unnoticed; the library's ``decoding: causal`` builds the stack)."""
    if len(model.levels) > 1:
        raise SystemExit(f"causal-top: the probe arranges one level and this config has {len(model.levels)}; "
                         "train a stack with model.decoding: causal (lmlab compare configs/compare/abstractinator_causal.yaml)")
    level, top = model.levels[0], model.top
    d = top.up.out_features
    level.expander.mem_up = nn.Linear(d, d, bias=False)  # the memory: top states (D), not codes (d_c)

    def states(x):
        out = model.compress_all(x)[0]
        prev = top.up(out.z_q[:, :-1])  # (B, K-1, D)
        h = top.trunk(torch.cat([top.bos.expand(x.size(0), 1, -1), prev], dim=1), causal_mask())
        return out, h  # h (B, K, D): state k reads codes < k

    def forward(input_ids, targets=None, label_smoothing=0.0):
        out, h = states(input_ids)
        logits, logp, _ = level.reconstruct(input_ids, out, z_q=h)
        keep = targets[:, :-1] >= 0
        terms = {"recon_l1": -(logp * keep).sum() / keep.sum().clamp(min=1), "vq_l1": out.vq_loss,
                 "entropy_l1": out.entropy_loss}
        return ModelOutput(logits, sum(terms.values()), terms)

    def code_lengths(x):
        out, h = states(x)
        return {"level1": -level.reconstruct(x, out, z_q=h)[1].sum(1)}

    def check_causal(x):
        """Changing byte j leaves every prediction of bytes <= j as it was (a decoder has them)."""
        with torch.no_grad():
            base = level.reconstruct(x, *states(x)[:1], z_q=states(x)[1])[0]
            for j in range(1, x.size(1) - 1, 5):
                y = x.clone()
                y[:, j] = (y[:, j] + 17) % 256
                out, h = states(y)
                changed = (level.reconstruct(y, out, z_q=h)[0][:, :j] - base[:, :j]).abs().max()
                assert changed < 1e-5, f"byte {j} changed an earlier prediction by {float(changed)}"

    model.forward, model.code_lengths, model.check_causal = forward, code_lengths, check_causal


def train_and_score(raw: dict, seed: int, lr: float, steps: int, context: bool = False,
                    causal: bool = False) -> dict[str, float]:
    """Train a model of ``raw`` in the plain loop; the two-part val bpb by part."""
    torch.manual_seed(seed)
    cfg = validate_config(raw)
    tok = ByteTokenizer()
    model = build_model(cfg.model)
    if context:
        add_byte_context(model)
    if causal:
        make_causal(model)
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
    if causal:
        model.check_causal(val[:8])
    with torch.no_grad():  # a byte LM (the baseline) has no parts: its next-byte log-probs
        parts = model.code_lengths(val) if hasattr(model, "code_lengths") else {"bytes": -model.log_probs(val)}
    n = int((val[:, 1:] != tok.eos_id).sum())
    return {k: float(v.sum()) / math.log(2) / n for k, v in parts.items()}


def code_space(runs: list[str]) -> None:
    """Each run's held-out bpb with running (as scored) and batch (as trained) code-space moments."""
    print("| run | bpb, running moments | bpb, batch moments | distinct L1 codes, running / batch |\n|---|---:|---:|---:|")
    for run in runs:
        lm = lmlab.load(run)
        model, cfg = lm.model.eval(), validate_config(yaml.safe_load(open(f"{run}/config.yaml", encoding="utf-8")))
        val = val_windows(cfg, ByteTokenizer(), 64, "val")
        n = int((val[:, 1:] != model.eos_id).sum())
        row = []
        for batch in (False, True):
            if batch:  # the windows' own moments per level (training's rule), eval otherwise
                for level in model.levels:
                    level.code_space = lambda z: (z.float() - z.float().mean(0)) * torch.rsqrt(
                        z.float().var(0, unbiased=False) + 1e-5)
            with torch.no_grad():
                out = model.compress_all(val)[0]
                row.append((-float(model.log_probs(val).sum()) / math.log(2) / n,
                            int(out.codes[out.code_valid].unique().numel())))
        print(f"| {run} | {row[0][0]:.3f} | {row[1][0]:.3f} | {row[0][1]} / {row[1][1]} |", flush=True)


def _row(label: str, bpb: dict[str, float], t0: float) -> None:
    parts = ", ".join(f"{k} {v:.3f}" for k, v in bpb.items())
    print(f"| {label} | {sum(bpb.values()):.3f} | {parts} | {time.time() - t0:.0f}s |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("probe", choices=("top-synthetic", "top-context", "stack-prior", "causal-top", "code-space"))
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--lrs", type=float, nargs="+", default=[0.016])
    ap.add_argument("--lrs-one", type=float, nargs="+", default=[0.016, 0.008])
    ap.add_argument("--lrs-two", type=float, nargs="+", default=[0.002, 0.004])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--baseline", help="a byte LM's run config (RUN/config.yaml) to train and score first")
    ap.add_argument("--baseline-lrs", type=float, nargs="+", default=[0.008])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="change the run configs, e.g. model.levels.1.entropy.target_patch_len=4")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.probe == "top-synthetic":
        return top_synthetic()
    if args.probe == "code-space":
        return code_space(args.configs)
    raws = [yaml.safe_load(open(c, encoding="utf-8")) for c in args.configs]
    for item in args.set:  # KEY=VALUE, a dotted path into every run config (list items by index)
        key, _, value = item.partition("=")
        for raw in raws:
            *path, last = key.split(".")
            node = raw
            for part in path:
                node = node[int(part)] if isinstance(node, list) else node[part]
            node[int(last) if isinstance(node, list) else last] = yaml.safe_load(value)
    for raw in raws:  # configs saved before loss_per_byte existed trained with the seed's weighting
        raw["model"].setdefault("loss_per_byte", False)
    print("| arm | val bpb | by part | time |\n|---|---:|---|---:|")
    if args.baseline:  # a byte LM's run config, trained and scored in the same loop
        base = yaml.safe_load(open(args.baseline, encoding="utf-8"))
        for lr in args.baseline_lrs:
            for seed in args.seeds:
                t0 = time.time()
                _row(f"lr {lr} seed {seed} {base['model']['family']}", train_and_score(base, seed, lr, args.steps), t0)
    if args.probe in ("top-context", "causal-top"):
        other = "byte context" if args.probe == "top-context" else "causal"
        for lr in args.lrs:
            for seed in args.seeds:
                for changed in (False, True):
                    t0 = time.time()
                    flags = {"context" if args.probe == "top-context" else "causal": changed}
                    bpb = train_and_score(raws[0], seed, lr, args.steps, **flags)
                    _row(f"lr {lr} seed {seed} {other if changed else 'plain'}", bpb, t0)
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

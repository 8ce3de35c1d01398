"""The Abstractinator against a byte-level transformer of about its size: train step time.

For each dataset (tiny Shakespeare; the first 2 MiB of TinyStories, the ``<|endoftext|>`` lines
between stories replaced by the byte tokenizer's eos id 256) and for the abstractinator with one
level and with two, a byte-level transformer whose parameter count is within 15% of that
abstractinator's (n_layer / d_model picked from a grid; both counts are printed) takes its
optimizer steps beside it in one process, on the same random windows of ``--block-size`` bytes
(seeded): forward with the model's own loss terms, backward, clip, ``build_optimizer``'s AdamW
(fp32). The models step in turn on each batch (A B C D A B C D ...), so the step times are
measured interleaved; the median after the first ``--timing-warmup`` steps is reported, with the
ratio abstractinator / its transformer. Patching thresholds track their target patch length as in
training (``--l1-patch-len``, ``--l2-patch-len``).

Quality (bits per byte at equal parameters, code statistics per level) is a comparison now:
``lmlab compare configs/compare/abstractinator.yaml`` (the trainer, the shared held-out split and
the family's diagnostics); this script times steps only.

Prints the command line first and a markdown table last; writes
reports/abstractinator/<UTC timestamp>/metrics.json.

Run: .venv/bin/python bench/abstractinator.py --size small --steps 30 [--data shakespeare] [--levels 1,2]
     .venv/bin/python bench/abstractinator.py --size tiny --steps 5 --block-size 64 --batch-size 4  # smoke
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from _common import machine, median, print_table, seed_everything

from lmlab.config import TrainConfig
from lmlab.configure import build_model_config
from lmlab.models.abstractinator.config import AbstractinatorConfig
from lmlab.registry import build_model
from lmlab.tokenizers.byte import ByteTokenizer
from lmlab.training.optim import build_optimizer, lr_at

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {"shakespeare": "tinyshakespeare/input.txt", "tinystories": "tinystories/TinyStories-train-first2MiB.txt"}
VOCAB = 257  # the byte tokenizer: 256 bytes + eos
EOS = ByteTokenizer.eos_id
TOLERANCE = 0.15  # the transformer's parameter count is within this of the abstractinator's
TF_DIMS = (32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384)
TF_LAYERS = range(4, 9)  # depth 4-8: no wide shallow baselines


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ data


def load_bytes(name: str, data_root: Path) -> torch.Tensor:
    """The byte stream of a dataset (1-d long); TinyStories' story separators become eos."""
    raw = (data_root / DATASETS[name]).read_bytes()
    if name != "tinystories":
        return torch.tensor(list(raw), dtype=torch.long)
    stories = [s for s in re.split(rb"\n?^<\|endoftext\|>$\n?", raw, flags=re.M) if s.strip()]
    ids: list[int] = []
    for i, story in enumerate(stories):
        if i:
            ids.append(EOS)
        ids.extend(story)
    return torch.tensor(ids, dtype=torch.long)


def batches(train: torch.Tensor, steps: int, batch: int, block: int, seed: int):
    """``steps`` batches (x, y) of random windows of ``block`` + 1 bytes (the same for a seed)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, train.numel() - block - 1, (batch,), generator=g).tolist()
        w = torch.stack([train[s : s + block + 1] for s in starts])
        yield w[:, :-1].contiguous(), w[:, 1:].contiguous()


def level_cfg(size: str, patch_len: float, ema: float | None) -> dict:
    """One level of the ``size`` shape, cutting patches of about ``patch_len`` symbols."""
    base = copy.deepcopy(AbstractinatorConfig.presets["tiny"]["levels"][0]) if size == "tiny" else {}
    entropy = {k: v for k, v in base.get("entropy", {}).items() if k != "threshold"}
    base["entropy"] = {**entropy, "target_patch_len": patch_len}
    if ema is not None:
        base["entropy"]["threshold_ema"] = ema
    return base


def abstractinator(size: str, n_levels: int, block: int, patch_lens: list[float],
                   ema: float | None, **extra) -> torch.nn.Module:
    raw: dict = {"family": "abstractinator", "vocab_size": VOCAB, "block_size": block,
                 "levels": [level_cfg(size, p, ema) for p in patch_lens[:n_levels]], **extra}
    if size == "tiny":
        raw["preset"] = "tiny"  # the preset's levels are replaced as a whole: level_cfg starts from them
    return build_model(build_model_config(raw))


def transformer_shape(target: int) -> tuple[int, int]:
    """(n_layer, d_model) of the default transformer (rope, RMSNorm, GELU MLP 4x, tied byte
    embedding, 4 heads) whose parameter count is nearest ``target``."""
    def count(n_layer: int, d: int) -> int:
        return n_layer * (12 * d * d + 2 * d) + VOCAB * d + d

    return min(((n, d) for n in TF_LAYERS for d in TF_DIMS), key=lambda s: abs(count(*s) - target))


def transformer(n_layer: int, d_model: int, block: int) -> torch.nn.Module:
    return build_model(build_model_config({"family": "transformer", "n_layer": n_layer, "d_model": d_model,
                                           "n_head": 4, "block_size": block, "vocab_size": VOCAB}))


def build_models(args) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """The models of one dataset run, and each abstractinator's matched transformer."""
    models: dict[str, torch.nn.Module] = {}
    pairs: dict[str, str] = {}
    for n_levels in args.levels:
        seed_everything(args.seed)
        a = abstractinator(args.size, n_levels, args.block_size, [args.l1_patch_len, args.l2_patch_len],
                           args.threshold_ema)
        n_layer, d_model = transformer_shape(n_params(a))
        tf_name = f"transformer {n_layer}x{d_model}"
        if tf_name not in models:
            seed_everything(args.seed)
            models[tf_name] = transformer(n_layer, d_model, args.block_size)
        gap = n_params(a) / n_params(models[tf_name]) - 1
        if abs(gap) > TOLERANCE:
            raise SystemExit(f"no transformer shape within {TOLERANCE:.0%} of the {n_levels}-level abstractinator "
                             f"({n_params(a)} params; nearest {tf_name}: {n_params(models[tf_name])})")
        name = f"abstractinator {n_levels}L"
        models[name] = a
        pairs[name] = tf_name
        print(f"{name}: {n_params(a):,} params; {tf_name}: {n_params(models[tf_name]):,} params ({gap:+.1%})",
              flush=True)
    return models, pairs


# ---------------------------------------------------------------------------------- train


def time_steps(models: dict[str, torch.nn.Module], data: torch.Tensor, args) -> dict[str, list[float]]:
    """Every model takes a step on each of the same batches, in turn; per model: step seconds."""
    tc = TrainConfig(lr=args.lr, min_lr=args.lr / 10, warmup_steps=args.warmup, weight_decay=0.1,
                     beta1=0.9, beta2=0.95, grad_clip=1.0)
    cpu = torch.device("cpu")
    opts = {name: build_optimizer(m, tc, cpu) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    for m in models.values():
        m.train()
    for step, (x, y) in enumerate(batches(data, args.steps, args.batch_size, args.block_size, args.seed)):
        lr = lr_at(step, tc, args.steps)
        for name, model in models.items():
            opt = opts[name]
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            out = model(x, y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            times[name].append(time.perf_counter() - t0)
            if not math.isfinite(float(out.loss.detach())):
                raise SystemExit(f"{name}: a non-finite loss at step {step}; lower --lr")
    return times

def run_dataset(name: str, args) -> dict:
    stream = load_bytes(name, args.data_root)
    train_bytes = stream[: int(0.9 * stream.numel())]
    print(f"\n## {name}: {stream.numel():,} bytes\n", flush=True)
    models, pairs = build_models(args)
    times = time_steps(models, train_bytes, args)
    skip = min(args.timing_warmup, args.steps // 2)
    out: dict = {"bytes": stream.numel(), "models": {}}
    for m_name, model in models.items():
        ts = times[m_name][skip:] or times[m_name]
        out["models"][m_name] = {"params": n_params(model), "matched_transformer": pairs.get(m_name),
                                 "ms_per_step": round(1000 * median(ts), 1), "timed_steps": len(ts),
                                 "bytes_per_s": round(args.batch_size * args.block_size / median(ts))}
    for a_name, tf_name in pairs.items():
        a, t = out["models"][a_name], out["models"][tf_name]
        a["step_time_vs_transformer"] = round(a["ms_per_step"] / t["ms_per_step"], 2)
        a["params_vs_transformer"] = round(a["params"] / t["params"] - 1, 4)
    return out


def fmt(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, list):
        return "/".join(fmt(v, nd) for v in x)
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def table_rows(results: dict[str, dict]) -> list[list[str]]:
    return [[data, name, f"{r['params']:,}", fmt(r["ms_per_step"], 1), f"{r['bytes_per_s']:,}",
             fmt(r.get("step_time_vs_transformer"), 2)]
            for data, res in results.items() for name, r in res["models"].items()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["shakespeare", "tinystories", "both"], default="both")
    ap.add_argument("--size", choices=["tiny", "small"], default="small")
    ap.add_argument("--levels", default="1,2", help="abstractinator level counts to train, comma-separated (1, 2)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per model (after --timing-warmup)")
    ap.add_argument("--block-size", type=int, default=256, help="window length in bytes")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20, help="linear lr warmup steps (then cosine to lr/10)")
    ap.add_argument("--l1-patch-len", type=float, default=4.0, help="level 1: target mean bytes per code")
    ap.add_argument("--l2-patch-len", type=float, default=3.0, help="level 2: target mean level-1 codes per code")
    ap.add_argument("--threshold-ema", type=float, default=None,
                    help="EMA decay of the tracked entropy thresholds (default: the family's threshold_ema)")
    ap.add_argument("--timing-warmup", type=int, default=5, help="first steps left out of the step-time median")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out-root", type=Path, default=ROOT / "reports" / "abstractinator")
    args = ap.parse_args(argv)
    args.levels = sorted({int(v) for v in args.levels.split(",")})
    if not set(args.levels) <= {1, 2}:
        ap.error("--levels takes 1, 2 or 1,2")
    if args.steps < 1 or args.batch_size < 1 or args.block_size < 8:
        ap.error("--steps and --batch-size must be >= 1 and --block-size >= 8")
    return args


def main() -> None:
    args = parse_args()
    print("command: " + shlex.join(sys.orig_argv), flush=True)
    torch.set_num_threads(args.threads)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    payload: dict = {"command": shlex.join(sys.orig_argv), "started_utc": stamp,
                     "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "machine": machine()}
    print(f"load average (1 min) at start: {payload['machine']['load_avg_1min']}", flush=True)
    names = list(DATASETS) if args.data == "both" else [args.data]
    results = {name: run_dataset(name, args) for name in names}
    payload["datasets"] = results
    payload["load_avg_1min_end"] = round(os.getloadavg()[0], 2)

    print(f"\n{args.size} models, {args.steps} interleaved steps of {args.batch_size} x {args.block_size} bytes, "
          "fp32; median after the warmup\n")
    print_table(["data", "model", "params", "ms/step", "bytes/s", "time vs transformer"], table_rows(results))
    out_dir = args.out_root / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nload average (1 min) at end: {payload['load_avg_1min_end']}")
    print(f"wrote {out_dir / 'metrics.json'}")


if __name__ == "__main__":
    main()

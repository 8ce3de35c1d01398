"""The Abstractinator against a byte-level transformer of about its size: step time and compression.

For each dataset (tiny Shakespeare; the first 2 MiB of TinyStories, the ``<|endoftext|>`` lines
between stories replaced by the byte tokenizer's eos id 256) and for the abstractinator with one
level and with two (the second with its own entropy model over the level-1 codes), a byte-level
transformer whose parameter count is within 15% of that abstractinator's (n_layer / d_model
picked from a grid; both counts are printed) is trained beside it in one process:

- same data: random windows of ``--block-size`` bytes (seeded) from the first 90% of the byte
  stream; the last 10% is the validation split;
- same optimizer: ``lmlab.training.optim.build_optimizer``'s AdamW (lr ``--lr``, default 3e-3,
  linear warmup over ``--warmup`` steps, cosine to lr/10; weight decay 0.1, betas 0.9/0.95,
  grad clip 1.0, fp32), ``--steps`` steps of ``--batch-size`` windows;
- the models take their steps in turn on each batch (A B C D A B C D ...), so the step times
  (forward with the model's own loss terms, backward, clip, AdamW) are measured interleaved in
  the same run; the median after the first ``--timing-warmup`` steps is reported, with the ratio
  abstractinator / its transformer.

After training, on ``--val-windows`` fixed windows evenly spaced over the val split:

- bits per byte: the transformer's from ``log_probs``; the abstractinator's two-part code length
  from ``log_probs`` (its top codes under the top transformer, then every level's input given the
  codes above it), and its breakdown by part from ``diagnostics()['two_part_bpb']`` on the same
  windows (whose total must equal the ``log_probs`` one). Both score bytes 1..T-1 of each window
  (the eos separators of TinyStories count as bytes);
- from ``diagnostics()``: bytes per top code, symbols per code and code perplexity per level,
  teacher-forced reconstruction accuracy per level and the free-running byte accuracy (greedy
  bytes from the true level-1 codes alone; slow: on the first ``--free-running-rows`` windows).

Patching: each level tracks its entropy threshold toward a target mean patch length during
training (``--l1-patch-len`` bytes, ``--l2-patch-len`` level-1 codes; EMA decay
``--threshold-ema``, default the family's), frozen at eval. ``--size small`` is the family's
default shape (d_model 128, 4 heads, per level a 2-layer entropy model, compressor and expander,
512 codes of width 64; a 4-layer top transformer); ``--size tiny`` is its ``tiny`` preset, for
smoke tests. Parameter counts are trainable parameters (the EMA codebooks are buffers).

``--staged`` adds a row "abstractinator 2L staged": level 1 alone (no top model) for half the
steps, then level 2 and the top model on the frozen level 1 (``load_base_from`` with
``base_levels: 1``) for the other half, on the following batches; no step time (the stages
differ), same evaluation.

Prints the command line first and a markdown table last; writes
reports/abstractinator/<UTC timestamp>/metrics.json (with the loss curves and full diagnostics).

Run: .venv/bin/python bench/abstractinator.py --size small --steps 300 [--data shakespeare] [--levels 1,2]
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

from lmlab.config import TrainConfig, build_model_config
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


def val_windows(val: torch.Tensor, n: int, block: int) -> torch.Tensor:
    """``n`` windows of ``block`` bytes evenly spaced over the val split (n, block)."""
    if val.numel() < block:
        raise SystemExit(f"the val split has {val.numel()} bytes, fewer than --block-size {block}")
    starts = torch.linspace(0, val.numel() - block, n).long().tolist()
    return torch.stack([val[s : s + block] for s in starts])


# ---------------------------------------------------------------------------------- models


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


def train(models: dict[str, torch.nn.Module], data: torch.Tensor, args) -> dict[str, dict]:
    """Train every model on the same batches, in turn; per model: step times and the loss curve."""
    tc = TrainConfig(lr=args.lr, min_lr=args.lr / 10, warmup_steps=args.warmup, weight_decay=0.1,
                     beta1=0.9, beta2=0.95, grad_clip=1.0)
    cpu = torch.device("cpu")
    opts = {name: build_optimizer(m, tc, cpu) for name, m in models.items()}
    log: dict[str, dict] = {name: {"step_s": [], "curve": [], "diverged_at": None} for name in models}
    for m in models.values():
        m.train()
    t_start = time.perf_counter()
    for step, (x, y) in enumerate(batches(data, args.steps, args.batch_size, args.block_size, args.seed)):
        lr = lr_at(step, tc, args.steps)
        last = step == args.steps - 1
        for name, model in models.items():
            rec = log[name]
            if rec["diverged_at"] is not None:
                continue
            opt = opts[name]
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            out = model(x, y)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            rec["step_s"].append(time.perf_counter() - t0)
            loss = float(out.loss.detach())
            if not math.isfinite(loss):
                rec["diverged_at"] = step
                print(f"  {name}: loss {loss} at step {step}: stopped training it", flush=True)
            if step % args.log_interval == 0 or last or not math.isfinite(loss):
                entry = {"step": step, "loss": loss, **{k: round(float(v), 4) for k, v in (out.terms or {}).items()}}
                if hasattr(model, "levels"):
                    entry["thresholds"] = [round(float(lv.entropy.threshold), 3) for lv in model.levels]
                rec["curve"].append(entry)
        if step % args.log_interval == 0 or last:
            losses = "  ".join(f"{n}: {log[n]['curve'][-1]['loss']:.3f}" for n in models if log[n]["curve"])
            print(f"  step {step:4d}  lr {lr:.2e}  {losses}  ({time.perf_counter() - t_start:.0f}s)", flush=True)
    return log


# ------------------------------------------------------------------------------- evaluate


@torch.no_grad()
def val_bpb(model: torch.nn.Module, windows: torch.Tensor, batch: int) -> float:
    """-sum log_probs / ln 2 / scored bytes over the windows (bytes 1..T-1 of each)."""
    model.eval()
    try:
        nats = sum(float(model.log_probs(chunk).sum()) for chunk in windows.split(batch))
    finally:
        model.train()
    return -nats / math.log(2) / (windows.size(0) * (windows.size(1) - 1))


def evaluate(models: dict[str, torch.nn.Module], windows: torch.Tensor, args) -> dict[str, dict]:
    res: dict[str, dict] = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        r: dict = {"val_bpb": val_bpb(model, windows, args.batch_size)}
        if hasattr(model, "diagnostics"):
            t1 = time.perf_counter()
            diag = model.diagnostics(windows, free_running_rows=args.free_running_rows)
            r["diagnostics_s"] = round(time.perf_counter() - t1, 2)
            if args.free_running_rows == 0:
                diag["recon_acc_free_running"] = None  # no rows decoded: not a 0% accuracy
            r["diagnostics"] = diag
            gap = diag["two_part_bpb"]["total"] - r["val_bpb"]
            if abs(gap) > 1e-3 * max(1.0, r["val_bpb"]):
                print(f"  WARNING {name}: diagnostics' two_part_bpb total {diag['two_part_bpb']['total']:.5f} "
                      f"differs from log_probs' {r['val_bpb']:.5f}", flush=True)
        r["eval_s"] = round(time.perf_counter() - t0, 2)
        res[name] = r
    return res


# ------------------------------------------------------------------------------------ main


def run_dataset(name: str, args) -> dict:
    stream = load_bytes(name, args.data_root)
    cut = int(0.9 * stream.numel())
    train_bytes, val = stream[:cut], stream[cut:]
    windows = val_windows(val, args.val_windows, args.block_size)
    print(f"\n## {name}: {stream.numel():,} bytes ({cut:,} train, {val.numel():,} val)\n", flush=True)
    models, pairs = build_models(args)
    t0 = time.perf_counter()
    log = train(models, train_bytes, args)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(models, windows, args)
    eval_s = time.perf_counter() - t0
    skip = min(args.timing_warmup, args.steps // 2)
    out: dict = {"bytes": stream.numel(), "train_bytes": cut, "val_bytes": val.numel(),
                 "val_windows": list(windows.shape), "train_wall_s": round(train_s, 1),
                 "eval_wall_s": round(eval_s, 1), "models": {}}
    for m_name, model in models.items():
        ts = log[m_name]["step_s"][skip:] or log[m_name]["step_s"]
        out["models"][m_name] = {
            "params": n_params(model), "matched_transformer": pairs.get(m_name),
            "ms_per_step": round(1000 * median(ts), 1) if ts else None,
            "timed_steps": len(ts), **ev[m_name], **log[m_name],
        }
    if args.staged and 2 in args.levels:
        out["models"]["abstractinator 2L staged"] = staged_two_levels(train_bytes, windows, args)
        pairs["abstractinator 2L staged"] = pairs["abstractinator 2L"]
        out["models"]["abstractinator 2L staged"]["matched_transformer"] = pairs["abstractinator 2L"]
    for a_name, tf_name in pairs.items():
        a, t = out["models"][a_name], out["models"][tf_name]
        if a["ms_per_step"] and t["ms_per_step"]:
            a["step_time_vs_transformer"] = round(a["ms_per_step"] / t["ms_per_step"], 2)
        a["params_vs_transformer"] = round(a["params"] / t["params"] - 1, 4)
    return out


def staged_two_levels(train_bytes: torch.Tensor, windows: torch.Tensor, args) -> dict:
    """``--staged``: level 1 alone (no top model) for half the steps, then the 2-level model on
    the frozen level 1 (``load_base_from`` + ``base_levels: 1``) for the other half, on the same
    batch stream; evaluated like the others (no step time: the stages differ)."""
    import tempfile

    half = copy.copy(args)
    half.steps = args.steps // 2
    lens = [args.l1_patch_len, args.l2_patch_len]
    seed_everything(args.seed)
    one = abstractinator(args.size, 1, args.block_size, lens, args.threshold_ema, top_transformer_config=None,
                         top_lm_loss_weight=0.0)
    print("  staged: level 1 alone", flush=True)
    train({"abstractinator 1L (stage a)": one}, train_bytes, half)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.safetensors"
        one.save_base_components(base)
        seed_everything(args.seed)
        two = abstractinator(args.size, 2, args.block_size, lens, args.threshold_ema, load_base_from=str(base),
                             base_levels=1)
        two.on_train_start(resumed=False)
    half.steps = args.steps - half.steps
    half.seed = args.seed + 1  # the next batches of the stream, not the same ones again
    print("  staged: level 2 and the top model on the frozen level 1", flush=True)
    log = train({"abstractinator 2L staged": two}, train_bytes, half)["abstractinator 2L staged"]
    ev = evaluate({"abstractinator 2L staged": two}, windows, args)["abstractinator 2L staged"]
    return {"params": n_params(two), "ms_per_step": None, **ev, **log}


def fmt(x, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, list):
        return "/".join(fmt(v, nd) for v in x)
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def table_rows(results: dict[str, dict]) -> list[list[str]]:
    rows = []
    for data, res in results.items():
        for name, r in res["models"].items():
            d = r.get("diagnostics")
            curve = r["curve"]
            loss = f"{curve[0]['loss']:.2f} → {curve[-1]['loss']:.2f}" if curve else "-"
            row = [data, name, f"{r['params']:,}", fmt(r["ms_per_step"], 1), fmt(r.get("step_time_vs_transformer"), 2),
                   fmt(r["val_bpb"])]
            if d is None:
                row += ["-"] * 6
            else:
                parts = d["two_part_bpb"]
                levels = d["levels"]
                row += [
                    " + ".join(f"{k} {parts[k]:.3f}" for k in parts if k != "total"),
                    fmt(d["bytes_per_top_code"], 2),
                    fmt([lv["symbols_per_code"] for lv in levels], 2),
                    fmt([lv["code_perplexity"][0] for lv in levels], 0),
                    fmt([lv["recon_acc_teacher_forced"] for lv in levels]),
                    fmt(d["recon_acc_free_running"]),
                ]
            rows.append(row + [loss])
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["shakespeare", "tinystories", "both"], default="both")
    ap.add_argument("--size", choices=["tiny", "small"], default="small")
    ap.add_argument("--levels", default="1,2", help="abstractinator level counts to train, comma-separated (1, 2)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--block-size", type=int, default=256, help="window length in bytes")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=20, help="linear lr warmup steps (then cosine to lr/10)")
    ap.add_argument("--l1-patch-len", type=float, default=4.0, help="level 1: target mean bytes per code")
    ap.add_argument("--l2-patch-len", type=float, default=3.0, help="level 2: target mean level-1 codes per code")
    ap.add_argument("--threshold-ema", type=float, default=None,
                    help="EMA decay of the tracked entropy thresholds (default: the family's threshold_ema)")
    ap.add_argument("--val-windows", type=int, default=32, help="val windows of --block-size bytes")
    ap.add_argument("--free-running-rows", type=int, default=2, help="val windows decoded free-running (slow)")
    ap.add_argument("--staged", action="store_true",
                    help="also train 2 levels in stages: level 1 alone for half the steps, then level 2 and the "
                         "top model on the frozen level 1 (base_levels: 1)")
    ap.add_argument("--timing-warmup", type=int, default=5, help="first steps left out of the step-time median")
    ap.add_argument("--log-interval", type=int, default=25)
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

    print(f"\n{args.size} models, {args.steps} steps of {args.batch_size} x {args.block_size} bytes, lr {args.lr}; "
          f"val: {args.val_windows} windows; free-running accuracy on {args.free_running_rows} of them\n")
    print_table(["data", "model", "params", "ms/step", "time vs transformer", "val bpb", "bpb by part",
                 "bytes/top code", "symbols/code (per level)", "code perplexity (per level)",
                 "recon acc teacher-forced (per level)", "recon acc free-running", "train loss first → last"],
                table_rows(results))
    out_dir = args.out_root / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nload average (1 min) at end: {payload['load_avg_1min_end']}")
    print(f"wrote {out_dir / 'metrics.json'}")


if __name__ == "__main__":
    main()

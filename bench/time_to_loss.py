"""Wall time to quality against the real nanoGPT: tiny Shakespeare (char), baby-GPT shape, CPU.

Runs nanoGPT's own ``train.py`` with the CPU "baby GPT" command of its README (from a checkout
outside this repo: see DEVELOPERS.md) and lmlab's gpt2-flavor (nanoGPT's architecture: learned
positions, LayerNorm, exact GELU, no biases), default (RoPE, RMSNorm) and speedrun configs,
interleaved (A B C D A B C D ...) with the same thread count, fp32. Every arm trains on the first
90% of the file and is scored on the last 10% (nanoGPT's split) on the same windows: 64 characters
at stride 63, so every held-out character after the first is predicted exactly once.

Reported per arm: ms per optimizer step (median), the training wall time to reach nanoGPT's
final validation loss (evaluation and checkpoint time excluded for every arm; lmlab's from its
``train_s``, interpolated between evaluations) and the final loss, with ratios to nanoGPT.

Run: .venv/bin/python bench/time_to_loss.py --nanogpt-dir ../nanoGPT [--repeats 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import machine, median, print_table, write_json

from lmlab.data.batches import eval_windows

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
BLOCK = 64  # the baby GPT's context: every arm's windows
NANOGPT_CMD = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
               "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
               "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0"]
NANOGPT_EVAL_INTERVAL = 250  # config/train_shakespeare_char.py: those iterations also evaluate and save
GPT2_FLAVOR = ["model.pos_encoding=learned", "model.norm=layernorm", "model.mlp=gelu", "model.bias=false"]
ARMS = {
    "nanoGPT (baby GPT)": None,
    "lmlab gpt2-flavor": ("configs/baby_gpt.yaml", GPT2_FLAVOR),
    "lmlab default": ("configs/baby_gpt.yaml", []),
    "lmlab speedrun": ("configs/speedrun.yaml", []),
    # not run unless asked for (--arms): the recipe with torch.compile, compile time included
    "lmlab speedrun + compile": ("configs/speedrun.yaml", ["train.compile=true"]),
}
DEFAULT_ARMS = ["nanoGPT (baby GPT)", "lmlab gpt2-flavor", "lmlab default", "lmlab speedrun"]
HOW_TO_GET = ("bench/time_to_loss.py needs a nanoGPT checkout outside this repo: "
              "git clone https://github.com/karpathy/nanoGPT ../nanoGPT, then "
              "python bench/time_to_loss.py --nanogpt-dir ../nanoGPT (see DEVELOPERS.md)")


def split(text: str) -> tuple[str, str]:
    """nanoGPT's split: the first 90% of the characters train, the last 10% are held out."""
    cut = int(len(text) * 0.9)
    return text[:cut], text[cut:]


# ------------------------------------------------------------------------------ nanoGPT


def prepare_nanogpt(root: Path, text_path: Path) -> None:
    """Put our copy of the text where nanoGPT's prepare.py looks (so it never downloads) and run it."""
    if not (root / "train.py").is_file() or not (root / "model.py").is_file():
        sys.exit(f"--nanogpt-dir {root}: no nanoGPT train.py / model.py there; {HOW_TO_GET}")
    data = root / "data" / "shakespeare_char"
    target = data / "input.txt"
    if not target.is_file() or target.read_bytes() != text_path.read_bytes():
        shutil.copyfile(text_path, target)
        for stale in ("train.bin", "val.bin", "meta.pkl"):
            (data / stale).unlink(missing_ok=True)
    if not (data / "meta.pkl").is_file():
        subprocess.run([sys.executable, "prepare.py"], cwd=data, check=True, stdout=subprocess.DEVNULL)


def run_nanogpt(root: Path, out: Path, threads: int) -> dict:
    """One run of nanoGPT's train.py: per-iteration times and its final checkpoint's held-out loss."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "train.py", *NANOGPT_CMD, f"--out_dir={out}", "--always_save_checkpoint=True"]
    log = subprocess.run(cmd, cwd=root, env=env, check=True, capture_output=True, text=True).stdout
    dts = {int(i): float(ms) / 1e3 for i, ms in re.findall(r"iter (\d+): loss [\d.naninf]+, time ([\d.]+)ms", log)}
    steps = 2000
    # An evaluating iteration's time includes its evaluation and checkpoint: those take the
    # median of the others (the lmlab arms' times exclude evaluation and saving too).
    plain = [dt for i, dt in dts.items() if i % NANOGPT_EVAL_INTERVAL and i < steps]
    typical = median(plain)
    train_s = sum(typical if i % NANOGPT_EVAL_INTERVAL == 0 else dts[i] for i in range(steps))
    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    if ckpt["iter_num"] != steps:
        raise RuntimeError(f"nanoGPT's checkpoint is from iter {ckpt['iter_num']}, not {steps}")
    sys.path.insert(0, str(root))
    try:
        from model import GPT, GPTConfig  # nanoGPT's own model.py, from the checkout
    finally:
        sys.path.remove(str(root))
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    meta = pickle.loads((root / "data" / "shakespeare_char" / "meta.pkl").read_bytes())
    _, held = split((root / "data" / "shakespeare_char" / "input.txt").read_text(encoding="utf-8"))
    ids = np.array([meta["stoi"][c] for c in held], dtype=np.int64)
    loss = score(lambda x, y: model(x, y)[0], ids)
    return {"ms_per_step": typical * 1e3, "curve": [(train_s, loss)], "final_loss": loss, "steps": steps,
            "tokens_per_step": 12 * BLOCK}


@torch.no_grad()
def score(logits_fn, ids: np.ndarray, batch: int = 64) -> float:
    """Mean next-token CE (nats) of every window's targets, the windows lmlab's trainer scores."""
    windows = torch.from_numpy(np.stack(eval_windows(ids, BLOCK, 10**9)))
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i : i + batch]
        x, y = w[:, :-1].contiguous(), w[:, 1:].contiguous()
        logits = logits_fn(x, y)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / count


# -------------------------------------------------------------------------------- lmlab


def run_lmlab(config: str, overrides: list[str], out: Path, threads: int, eval_every: int, text: Path) -> dict:
    """One lmlab run in a fresh process (as nanoGPT gets one); reads its metrics.jsonl back."""
    cmd = [sys.executable, __file__, "--child", config, "--out", str(out), "--threads", str(threads),
           "--eval-every", str(eval_every), "--data", str(text), *[a for o in overrides for a in ("--set", o)]]
    subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    per_step = [(b["train_s"] - a["train_s"]) / (b["step"] - a["step"]) for a, b in zip(train, train[1:])]
    return {"ms_per_step": median(per_step) * 1e3, "curve": [(r["train_s"], r["val_loss"]) for r in val],
            "final_loss": val[-1]["val_loss"], "steps": val[-1]["step"],
            "tokens_per_step": train[-1]["tokens"] // train[-1]["step"]}


def child(args: argparse.Namespace) -> None:
    """Train one lmlab config on the first 90%, evaluating on every held-out window."""
    from lmlab.configure import load_config
    from lmlab.data.cache import TokenArrays
    from lmlab.tokenizers.char import CharTokenizer
    from lmlab.training.loop import PreparedData, TrainPlan, train

    text = Path(args.data).read_text(encoding="utf-8")
    tok = CharTokenizer.fit([text])  # the whole file's characters, as nanoGPT's meta.pkl
    train_text, held = split(text)
    arrays = TokenArrays(["tinyshakespeare"], [np.array(tok.encode(train_text), dtype=np.uint16)],
                         [np.array(tok.encode(held), dtype=np.uint16)], {})
    cfg = load_config(args.child, [*args.set, f"train.out_dir={args.out}", f"train.num_threads={args.threads}",
                                   f"train.eval_interval={args.eval_every}", "train.save_best=false",
                                   "train.progress=false", "sample.max_new_tokens=1"])
    if cfg.model.block_size != BLOCK:
        sys.exit(f"{args.child}: model.block_size is {cfg.model.block_size}; this benchmark scores {BLOCK}-character "
                 "windows")
    windows = (len(arrays.val[0]) - 1) // (BLOCK - 1)
    cfg.train.eval_batches = math.ceil(windows / cfg.train.batch_target)  # every held-out window, each eval
    cfg.train.save_interval = cfg.train.max_steps  # one snapshot, at the end
    train(TrainPlan(cfg, data=PreparedData(tok, arrays)))


# ------------------------------------------------------------------------------- report


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """Training seconds at which the loss first reaches ``target`` (linear between evaluations)."""
    prev_t, prev_l = 0.0, math.inf
    for t, loss in curve:
        if loss <= target:
            if math.isinf(prev_l):
                return t
            return prev_t + (t - prev_t) * (prev_l - target) / (prev_l - loss)
        prev_t, prev_l = t, loss
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nanogpt-dir", type=Path, help="a nanoGPT checkout outside this repo")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians are reported)")
    ap.add_argument("--eval-every", type=int, default=100, help="lmlab arms: steps between held-out evaluations")
    ap.add_argument("--arms", nargs="+", choices=list(ARMS), default=DEFAULT_ARMS)
    ap.add_argument("--json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.nanogpt_dir is None:
        print(HOW_TO_GET, file=sys.stderr)
        sys.exit(2)
    if not args.data.is_file():
        sys.exit(f"--data {args.data}: no such file (tiny Shakespeare is ../shared/data/tinyshakespeare/input.txt)")
    root = args.nanogpt_dir.resolve()
    if root == REPO or REPO in root.parents:
        sys.exit(f"--nanogpt-dir {root} is inside this repo; keep the peer's checkout outside it")
    arms = ["nanoGPT (baby GPT)", *[a for a in args.arms if a != "nanoGPT (baby GPT)"]]
    prepare_nanogpt(root, args.data)
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory(prefix="time_to_loss-") as tmp:
        for r in range(args.repeats):
            for i, arm in enumerate(arms):
                out = Path(tmp) / f"{r}-{i}"
                print(f"round {r + 1}/{args.repeats}: {arm}", file=sys.stderr, flush=True)
                runs[arm].append(run_nanogpt(root, out, args.threads) if ARMS[arm] is None else
                                 run_lmlab(*ARMS[arm], out, args.threads, args.eval_every, args.data))
    target = median([x["final_loss"] for x in runs["nanoGPT (baby GPT)"]])
    base = runs["nanoGPT (baby GPT)"]
    base_ms, base_t = median([x["ms_per_step"] for x in base]), median([x["curve"][-1][0] for x in base])
    rows, out_rows = [], []
    for arm in arms:
        ms = median([x["ms_per_step"] for x in runs[arm]])
        reached = [time_to(x["curve"], target) for x in runs[arm]]
        t = median(reached) if all(v is not None for v in reached) else None
        final = median([x["final_loss"] for x in runs[arm]])
        x = runs[arm][0]
        rows.append([arm, x["steps"], x["tokens_per_step"], f"{ms:.1f}", f"{ms / base_ms:.2f}x",
                     "not reached" if t is None else f"{t:.1f}", "-" if t is None else f"{t / base_t:.2f}x",
                     f"{final:.4f}"])
        out_rows.append({"arm": arm, "steps": x["steps"], "tokens_per_step": x["tokens_per_step"], "ms_per_step": ms,
                         "step_ratio": ms / base_ms, "time_to_target_s": t,
                         "time_ratio": None if t is None else t / base_t, "final_loss": final,
                         "runs": runs[arm]})
    print(f"target: nanoGPT's final held-out loss {target:.4f} (last 10% of the file, {BLOCK}-char windows)")
    print_table(["arm", "steps", "tokens/step", "ms/step", "vs nanoGPT", "s to target", "vs nanoGPT", "final loss"],
                rows)
    write_json(args.json, {"machine": machine(), "threads": args.threads, "target": target, "arms": out_rows})


if __name__ == "__main__":
    main()

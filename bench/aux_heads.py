"""Auxiliary planning heads (``model.auxiliary``): train-step overhead and val loss at equal tokens.

(a) Train step time: one optimizer step (forward with the model's own loss, i.e. CE plus every
    enabled head's weighted term, backward, ``lmlab.training.optim.build_optimizer``'s AdamW;
    fp32, batch 16 x 192, char vocab 67, 2 threads) of configs/psann/transformer_shakespeare.yaml's
    transformer (4 layers, 4 heads, d_model 192, GELU MLP 768) with: heads off; each head alone
    (policy, value, dynamics with rollout 1, dynamics with rollout 3, span contrastive); all four
    on (dynamics rollout 1). Every other knob is AuxiliaryConfig's default. The trunk weights are
    identical across configs (same seed; the heads are built after it). After a warmup,
    interleaved (A B C ... A B C ...), median (and min-max) of ``--repeats`` rounds of 3 steps
    each. The span contrastive's cost varies step to step: its span sits at a random place and the
    trunk reruns on the prefix up to the span's end.
(b) ``--quality``: val loss at equal tokens on tiny Shakespeare: one ``lmlab.train`` run per
    config (heads off; each head alone; all four on) of configs/psann/transformer_shakespeare.yaml
    (its data, char tokenizer, val split, optimizer and hyperparameters) with only
    ``model.auxiliary`` changed and ``--steps`` steps. Same data order and init within a seed (the
    data order depends only on ``train.seed``; the trunk is built before the heads). "off" and
    "all on" are also run at ``--seeds`` seeds (train.seed 1337, 1338, ...; the val split is
    hash-based and does not move), so the seed-to-seed spread can be read next to the
    differences. Reports the final val loss (next-token CE; scoring reads only the LM, the heads
    never change it), val bits per byte, and the last logged value of each weighted aux term
    (``policy_kl``, ``value``, ``dynamics``, ``span_contrastive`` in metrics.jsonl; the logged
    train ``loss`` is CE plus these terms).

Run: .venv/bin/python bench/aux_heads.py [--threads 2] [--repeats 7] [--json out.json]
     .venv/bin/python bench/aux_heads.py --quality [--steps 300] [--seeds 2] [--out-dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch
from _common import (
    machine,
    median,
    print_table,
    seed_everything,
    time_train_steps,
    train_quiet,
    write_json,
)

from lmlab.config import load_config
from lmlab.registry import build_model

CONFIG = "configs/psann/transformer_shakespeare.yaml"
CHAR_VOCAB = 67  # the char tokenizer fitted on tiny Shakespeare: 65 characters + EOS + unknown
TERMS = ("policy_kl", "value", "dynamics", "span_contrastive")
ALL_ON = {"enable_policy": True, "enable_value": True, "enable_dynamics": True, "enable_span_contrastive": True}

# name -> model.auxiliary (None: no heads)
STEP_CONFIGS: dict[str, dict | None] = {
    "off": None,
    "policy": {"enable_policy": True},
    "value": {"enable_value": True},
    "dynamics (rollout 1)": {"enable_dynamics": True, "dynamics_rollout_steps": 1},
    "dynamics (rollout 3)": {"enable_dynamics": True, "dynamics_rollout_steps": 3},
    "span contrastive": {"enable_span_contrastive": True},
    "all on (rollout 1)": {**ALL_ON, "dynamics_rollout_steps": 1},
}
QUALITY_CONFIGS: dict[str, dict | None] = {
    "off": None,
    "policy": {"enable_policy": True},
    "value": {"enable_value": True},
    "dynamics (rollout 1)": {"enable_dynamics": True, "dynamics_rollout_steps": 1},
    "span contrastive": {"enable_span_contrastive": True},
    "all on (rollout 1)": {**ALL_ON, "dynamics_rollout_steps": 1},
}
MULTI_SEED = ("off", "all on (rollout 1)")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(aux: dict | None) -> torch.nn.Module:
    cfg = load_config(CONFIG, raw={"model": {"vocab_size": CHAR_VOCAB, "auxiliary": aux}})
    return build_model(cfg.model)


# --------------------------------------------------------------------------------- (a) steps


def bench_steps(repeats: int, steps: int = 3, warmup: int = 2) -> list[dict]:
    models = {}
    for name, aux in STEP_CONFIGS.items():
        seed_everything(0)  # the same trunk weights in every config
        models[name] = build(aux)
    cfg = load_config(CONFIG)
    batch, block = cfg.train.batch_size, cfg.model.block_size
    data = torch.randint(0, CHAR_VOCAB, (batch, block + 1), generator=torch.Generator().manual_seed(1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    times = time_train_steps(models, x, y, cfg.train, repeats, steps, warmup)
    ref = median(times["off"])
    return [{"config": name, "params": n_params(models[name]),
             "ms_per_step": round(1000 * median(ts), 1), "min_max_ms": f"{1000 * min(ts):.0f}-{1000 * max(ts):.0f}",
             "tokens_per_s": round(batch * block / median(ts)), "vs_off": round(median(ts) / ref, 2),
             "rounds_ms": [round(1000 * t, 1) for t in ts]} for name, ts in times.items()]


# ------------------------------------------------------------------------------- (b) quality


def last_terms(run_dir: Path) -> dict[str, float | str]:
    """The last logged value of each weighted aux term in metrics.jsonl ('-' if never logged)."""
    last: dict[str, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for k in TERMS:
            if k in row:
                last[k] = row[k]
    return {k: round(last[k], 4) if k in last else "-" for k in TERMS}


def bench_quality(steps: int, seeds: int, threads: int, out_root: str) -> list[dict]:

    base_seed = load_config(CONFIG).train.seed
    runs = [(name, aux, base_seed + i) for name, aux in QUALITY_CONFIGS.items()
            for i in range(seeds if name in MULTI_SEED else 1)]
    rows = []
    for name, aux, seed in runs:
        slug = name.replace(" ", "_").replace("(", "").replace(")", "")
        out_dir = Path(out_root) / f"{slug}_seed{seed}"
        if out_dir.exists() and any(out_dir.iterdir()):  # lmlab.train would resume it, not retrain
            raise SystemExit(f"{out_dir} is not empty; give --out-dir a fresh folder")
        m, wall = train_quiet(CONFIG, out_dir, steps, seed, threads, **{"model.auxiliary": aux})
        rows.append({"config": name, "seed": seed, "params": m["num_params"], "steps": m["steps"],
                     "val_loss": round(m["val_loss"], 4), "val_bpb": round(m["val_bpb"], 4),
                     **last_terms(out_dir), "wall_s": round(wall, 1),
                     "load_avg_1min_after": round(os.getloadavg()[0], 2)})
        print(f"  {name} seed {seed}: val_loss {rows[-1]['val_loss']}, {wall:.0f} s", flush=True)
    return rows


def seed_spread(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per multi-seed config: mean and max - min of val loss over its seeds."""
    out = {}
    for name in MULTI_SEED:
        vals = [r["val_loss"] for r in rows if r["config"] == name]
        if len(vals) > 1:
            out[name] = {"mean_val_loss": round(sum(vals) / len(vals), 4), "spread": round(max(vals) - min(vals), 4)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the median is reported")
    ap.add_argument("--quality", action="store_true", help="run the tiny-Shakespeare val-loss comparison instead")
    ap.add_argument("--steps", type=int, default=300, help="--quality: training steps per run")
    ap.add_argument("--seeds", type=int, default=2, help="--quality: seeds for 'off' and 'all on' (others: 1)")
    ap.add_argument("--out-dir", default=None, help="--quality: keep the run dirs here (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    payload: dict = {"machine": machine()}
    print(f"load average (1 min) at start: {payload['machine']['load_avg_1min']}\n")
    if args.quality:
        with tempfile.TemporaryDirectory(prefix="aux_quality_") as tmp:
            rows = bench_quality(args.steps, args.seeds, args.threads, args.out_dir or tmp)
        print(f"\nTiny Shakespeare, {args.steps} steps x 16 x 192 tokens, char vocab, val loss = CE (nats/token):\n")
        print_table(list(rows[0]), [list(r.values()) for r in rows])
        spread = seed_spread(rows)
        for name, s in spread.items():
            print(f"\n{name}: mean val loss {s['mean_val_loss']} over {args.seeds} seeds, max - min {s['spread']}", end="")
        print()
        payload |= {"steps": args.steps, "quality": rows, "seed_spread": spread}
    else:
        rows = bench_steps(args.repeats)
        print("Train step (forward + backward + AdamW), batch 16 x 192, char vocab, fp32:\n")
        cols = [k for k in rows[0] if k != "rounds_ms"]  # the per-round times go to the JSON only
        print_table(cols, [[r[k] for k in cols] for r in rows])
        payload["step_time"] = rows
    payload["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"\nload average (1 min) at end: {payload['load_avg_1min_end']}")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()

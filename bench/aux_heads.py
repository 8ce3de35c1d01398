"""Auxiliary planning heads (``model.auxiliary``): train-step overhead.

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
Val loss at equal tokens, heads off / each / all on over 2 seeds, is a comparison now:
``lmlab compare configs/compare/aux_heads.yaml``.

Run: .venv/bin/python bench/aux_heads.py [--threads 2] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import os

import torch
from _common import (
    machine,
    median,
    print_table,
    seed_everything,
    time_train_steps,
    write_json,
)

from lmlab.configure import load_config
from lmlab.registry import build_model

CONFIG = "configs/psann/transformer_shakespeare.yaml"
CHAR_VOCAB = 67  # the char tokenizer fitted on tiny Shakespeare: 65 characters + EOS + unknown
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the median is reported")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    payload: dict = {"machine": machine()}
    print(f"load average (1 min) at start: {payload['machine']['load_avg_1min']}\n")
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

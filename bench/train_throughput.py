"""Training throughput on CPU: lmlab's transformer vs HF ``GPT2LMHeadModel`` of the same shape.

Measures tokens/s of one full training step (forward, cross-entropy, backward, fused AdamW step;
fp32, batch 16 x block_size, identical input batch and thread count) at the ``tiny`` and
``small`` (the ``default`` config's) shapes. lmlab is run twice: with GPT-2's architecture
(learned positions, LayerNorm, tanh GELU, biases: the same math as HF GPT-2) and with its own
default (RoPE, RMSNorm, GELU, no biases). All variants use ``lmlab.training.optim.build_optimizer``
(the trainer's fused AdamW with configs/default.yaml's lr/betas/weight decay). After a warmup, variants are measured interleaved
(A B C A B C ...) and the median is reported.

Run: .venv/bin/python bench/train_throughput.py [--threads 2] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from _common import (
    hf_gpt2,
    interleaved,
    lmlab_model,
    machine,
    median,
    print_table,
    seed_everything,
    timed,
    write_json,
)

from lmlab.configure import load_config
from lmlab.training.optim import build_optimizer

VOCAB = 2048
BATCH = 16


def make_step(model: torch.nn.Module, hf: bool, x: torch.Tensor, y: torch.Tensor):
    """A closure running one optimizer step on (x, y)."""
    train_cfg = load_config("configs/default.yaml").train  # lr 2e-3, betas (0.9, 0.95), wd 0.1
    opt = build_optimizer(model, train_cfg, torch.device("cpu"))
    model.train()

    def step() -> None:
        if hf:  # same loss as lmlab's lm_loss: CE of every position against y
            logits = model(input_ids=x).logits
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        else:
            loss = model(x, y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def bench_shape(preset: str, repeats: int, steps: int, warmup: int) -> list[dict]:
    seed_everything(0)
    variants = {
        "lmlab (gpt2 arch)": lmlab_model(preset, VOCAB, gpt2_arch=True),
        "lmlab (default arch)": lmlab_model(preset, VOCAB, gpt2_arch=False),
    }
    variants = {"HF GPT2LMHeadModel": hf_gpt2(variants["lmlab (gpt2 arch)"], VOCAB), **variants}
    block = variants["lmlab (gpt2 arch)"].cfg.block_size
    data = torch.randint(0, VOCAB, (BATCH, block + 1), generator=torch.Generator().manual_seed(1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    fns = {}
    for name, model in variants.items():
        step = make_step(model, name.startswith("HF"), x, y)
        for _ in range(warmup):
            step()
        fns[name] = lambda step=step: timed(lambda: [step() for _ in range(steps)]) / steps

    times = interleaved(fns, repeats)
    tokens = BATCH * block
    hf_tps = tokens / median(times["HF GPT2LMHeadModel"])
    rows = []
    for name, ts in times.items():
        tps = tokens / median(ts)
        rows.append(
            {
                "shape": preset,
                "model": name,
                "params_M": round(sum(p.numel() for p in variants[name].parameters()) / 1e6, 2),
                "ms_per_step": round(1000 * median(ts), 1),
                "tokens_per_s": round(tps),
                "vs_hf": round(tps / hf_tps, 2),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=7, help="interleaved rounds; the median is reported"
    )
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    rows = bench_shape("tiny", args.repeats, steps=20, warmup=10)
    rows += bench_shape("small", args.repeats, steps=3, warmup=3)

    header = ["shape", "model", "params (M)", "ms/step", "tokens/s", "vs HF"]
    print_table(header, [list(r.values()) for r in rows])
    write_json(args.json, {"machine": machine(), "batch": BATCH, "vocab": VOCAB, "results": rows})


if __name__ == "__main__":
    main()

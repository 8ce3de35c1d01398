"""PSANN (respsann, waveresnet) against the transformer: step time and cached generation.

(a) Train step time at equal shape: one optimizer step (forward, backward,
    ``lmlab.training.optim.build_optimizer``'s AdamW; fp32, batch 16 x 192, char vocab 67) of
    configs/psann/transformer_shakespeare.yaml's transformer (GELU MLP), respsann (and respsann
    with the GELU toggle: the cost of the sine alone) and waveresnet (interleave, replace_mlp)
    with the same n_layer / n_head / d_model / d_ff. After a warmup, interleaved,
    median.
(b) Generation: waveresnet (untrained) continues a batch of 8 prompts of 96 tokens by 64 new
    tokens (greedy), cached (``lmlab.generate.decode.generate_ids``: one prefill, then one token
    per step with KV + conv state) against the naive loop that re-runs the full forward on the
    whole sequence for every token; the two must produce identical tokens. The seed reports
    ~13.5x on CPU at this shape. The transformer's cached/naive ratio is shown beside it.
The quality ablation (val loss, bits per byte, sine drift at equal parameters) is a comparison
now: ``lmlab compare configs/compare/psann.yaml``.

Run: .venv/bin/python bench/psann.py [--threads 2] [--repeats 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from _common import (
    interleaved,
    machine,
    median,
    print_table,
    seed_everything,
    time_train_steps,
    write_json,
)

from lmlab.config import DecodeSettings
from lmlab.configure import load_config
from lmlab.generate.decode import generate_ids
from lmlab.registry import build_model

CONFIGS = {"transformer": "configs/psann/transformer_shakespeare.yaml",
           "respsann": "configs/psann/respsann_shakespeare.yaml",
           "waveresnet": "configs/psann/waveresnet_shakespeare.yaml"}
CHAR_VOCAB = 67  # the char tokenizer fitted on tiny Shakespeare: 65 characters + EOS + unknown


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(kind: str, vocab: int = CHAR_VOCAB, **model_overrides) -> torch.nn.Module:
    cfg = load_config(CONFIGS[kind], raw={"model": {"vocab_size": vocab, **model_overrides}})
    return build_model(cfg.model)


def bench_steps(repeats: int, steps: int = 3, warmup: int = 2) -> list[dict]:
    seed_everything(0)
    ff = load_config(CONFIGS["transformer"]).model.ff_dim
    models = {"transformer (gelu)": build("transformer", d_ff=ff), "respsann": build("respsann", d_ff=ff),
              "respsann (activation: gelu)": build("respsann", d_ff=ff, activation="gelu"),
              "waveresnet (interleave)": build("waveresnet", d_ff=ff),
              "waveresnet (replace_mlp)": build("waveresnet", d_ff=ff, conv_mode="replace_mlp")}
    cfg = load_config(CONFIGS["transformer"])
    batch, block = cfg.train.batch_size, cfg.model.block_size
    data = torch.randint(0, CHAR_VOCAB, (batch, block + 1), generator=torch.Generator().manual_seed(1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    times = time_train_steps(models, x, y, cfg.train, repeats, steps, warmup)
    ref = median(times["transformer (gelu)"])
    return [{"model": name, "params": n_params(models[name]), "d_ff": ff,
             "ms_per_step": round(1000 * median(ts), 1), "tokens_per_s": round(batch * block / median(ts)),
             "vs_transformer": round(median(ts) / ref, 2)} for name, ts in times.items()]


# ---------------------------------------------------------------------------- (b) generation


@torch.no_grad()
def naive_generate(model: torch.nn.Module, prompts: torch.Tensor, new_tokens: int) -> list[list[int]]:
    """Greedy decoding that re-runs the full forward over the whole sequence for every token."""
    ids = prompts
    for _ in range(new_tokens):
        nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[:, prompts.size(1):].tolist()


def bench_generation(repeats: int, batch: int, prompt_len: int, new_tokens: int) -> list[dict]:
    seed_everything(0)
    models = {"waveresnet": build("waveresnet").eval(), "transformer": build("transformer").eval()}
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(2, CHAR_VOCAB, (batch, prompt_len), generator=g)
    eos = 0
    settings = DecodeSettings(max_new_tokens=new_tokens, temperature=0.0, seed=0, stop_on_eos=False)
    # generate_ids puts the EOS start token before each prompt: the naive loop gets the same input.
    full = torch.cat([torch.full((batch, 1), eos), prompts], dim=1)
    outputs: dict[str, list[list[int]]] = {}

    def cached(model, name):
        def go() -> float:
            t0 = time.perf_counter()
            out = generate_ids(model, prompts.tolist(), settings, eos)
            outputs[name + " cached"] = out
            return time.perf_counter() - t0
        return go

    def naive(model, name):
        def go() -> float:
            t0 = time.perf_counter()
            outputs[name + " naive"] = naive_generate(model, full, new_tokens)
            return time.perf_counter() - t0
        return go

    fns = {}
    for name, model in models.items():
        fns[f"{name} cached"] = cached(model, name)
        fns[f"{name} naive"] = naive(model, name)
    for fn in fns.values():
        fn()
    times = interleaved(fns, repeats)
    rows = []
    for name in models:
        same = outputs[f"{name} cached"] == outputs[f"{name} naive"]
        assert same, f"{name}: cached decoding differs from the full recompute"
        c, n = median(times[f"{name} cached"]), median(times[f"{name} naive"])
        rows.append({"model": name, "batch": batch, "prompt": prompt_len, "new_tokens": new_tokens,
                     "cached_tokens_per_s": round(batch * new_tokens / c), "naive_tokens_per_s": round(batch * new_tokens / n),
                     "speedup": round(n / c, 1), "identical_tokens": same})
    return rows


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
    print("Train step (forward + backward + AdamW), batch 16 x 192, char vocab, fp32, equal shape:\n")
    print_table(list(rows[0]), [list(r.values()) for r in rows])
    payload["step_time"] = rows
    gen = bench_generation(max(3, args.repeats // 2), batch=8, prompt_len=96, new_tokens=64)
    print("\nGeneration, greedy, batch 8, prompt 96, 64 new tokens (untrained weights):\n")
    print_table(list(gen[0]), [list(r.values()) for r in gen])
    payload["generation"] = gen
    payload["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"\nload average (1 min) at end: {payload['load_avg_1min_end']}")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()

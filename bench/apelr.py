"""APEL-R (v1, v2) against the same-size transformer baseline: step time and the async planner.

(a) Train step time: one full optimizer step (forward with the model's own loss terms, backward,
    ``lmlab.training.optim.build_optimizer``'s fused AdamW; fp32, batch 16 x 192, identical input
    and thread count) of the baseline, apelr v1, apelr v2 and apelr v2 with the cross-entropy only
    (no auxiliary loss terms). Two shapes: configs/apelr/shakespeare.yaml's model (char vocab 67)
    against configs/apelr/baseline_transformer.yaml, and the same executor with a 2048-entry BPE
    vocab (configs/default.yaml's tokenizer), where the baseline's MLP width is solved so the
    parameter counts match. Counts are printed and must agree within 2%. After a warmup, the
    variants are measured interleaved (A B C D A B C D ...) and the median is reported; the issue's
    target is v2 <= 1.5x the baseline.
(c) Generation: ``lmlab.generate.decode.generate_ids`` (cached decoding, sampling with a fixed
    seed) of an untrained v2 model with the planner worker thread on and off
    (``model.set_generation_options(async_planner=...)``), interleaved, median; the two must
    produce identical tokens. The baseline's time is shown for reference.
Quality (val loss, bits per byte, planner usage) is a comparison now:
``lmlab compare configs/compare/apelr_vs_baseline.yaml`` (one tokenizer, batch order and budget).

Run: .venv/bin/python bench/apelr.py [--threads 2] [--repeats 7] [--json out.json]
     .venv/bin/python bench/apelr.py --profile     # also: top ops of one v2 step at the BPE shape
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
from lmlab.training.optim import build_optimizer

APELR_CFG = "configs/apelr/shakespeare.yaml"
BASELINE_CFG = "configs/apelr/baseline_transformer.yaml"
CHAR_VOCAB = 67  # the char tokenizer fitted on tiny Shakespeare: 65 characters + EOS + unknown
BPE_VOCAB = 2048
V1, V2 = "v1_filtered_mixture", "v2_planner_required"
TOLERANCE = 0.02


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def apelr_model(vocab: int, **overrides) -> torch.nn.Module:
    """configs/apelr/shakespeare.yaml's model at ``vocab`` entries, with model overrides."""
    cfg = load_config(APELR_CFG, raw={"model": {"vocab_size": vocab, **overrides}})
    return build_model(cfg.model)


def baseline_model(vocab: int, target: int | None = None) -> torch.nn.Module:
    """configs/apelr/baseline_transformer.yaml's model at ``vocab`` entries; with ``target``, its
    MLP width is re-solved so the parameter count is as close to ``target`` as it gets."""
    cfg = load_config(BASELINE_CFG, raw={"model": {"vocab_size": vocab}})
    if target is not None:
        m = cfg.model
        base = n_params(build_model(m.model_copy(update={"d_ff": 4 * m.d_model})))
        per_unit = 2 * m.d_model * m.n_layer  # one MLP hidden unit: an input row and an output column
        m.d_ff = 4 * m.d_model + round((target - base) / per_unit)
    return build_model(cfg.model)


def variants(vocab: int, solve_baseline: bool) -> dict[str, torch.nn.Module]:
    seed_everything(0)
    v1, v2 = apelr_model(vocab, version=V1), apelr_model(vocab, version=V2)
    v2_ce = apelr_model(vocab, version=V2, entropy_reg_weight=0.0, usage_balance_weight=0.0,
                        chunk_bow_weight=0.0, loss_weights={"plan_js_div": 0.0})
    base = baseline_model(vocab, n_params(v2) if solve_baseline else None)
    for name, m in (("v1", v1), ("v2", v2)):
        gap = n_params(m) / n_params(base) - 1
        assert abs(gap) <= TOLERANCE, f"{name} has {n_params(m)} params vs baseline {n_params(base)} ({gap:+.1%})"
    return {"transformer": base, "apelr v1": v1, "apelr v2": v2, "apelr v2 (CE only)": v2_ce}


def bench_steps(shape: str, vocab: int, solve_baseline: bool, repeats: int, steps: int, warmup: int) -> list[dict]:
    models = variants(vocab, solve_baseline)
    cfg = load_config(APELR_CFG)
    batch, block = cfg.train.batch_size, cfg.model.block_size
    data = torch.randint(0, vocab, (batch, block + 1), generator=torch.Generator().manual_seed(1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    # lr 2e-3, betas (0.9, 0.95), wd 0.1: the preset's optimizer
    times = time_train_steps(models, x, y, cfg.train, repeats, steps, warmup)
    ref = median(times["transformer"])
    base_n = n_params(models["transformer"])
    rows = []
    for name, ts in times.items():
        m = models[name]
        rows.append({
            "shape": shape,
            "model": name,
            "params": n_params(m),
            "params_vs_baseline": f"{n_params(m) / base_n - 1:+.2%}",
            "d_ff": m.cfg.ff_dim,
            "ms_per_step": round(1000 * median(ts), 1),
            "tokens_per_s": round(batch * block / median(ts)),
            "vs_baseline": round(median(ts) / ref, 2),
        })
    return rows


def bench_generation(repeats: int, new_tokens: int) -> list[dict]:
    """Decode with the async planner on and off (identical outputs asserted), and the baseline."""
    seed_everything(0)
    v2 = apelr_model(CHAR_VOCAB, version=V2).eval()
    base = baseline_model(CHAR_VOCAB).eval()
    prompts = [torch.randint(2, CHAR_VOCAB, (16,), generator=torch.Generator().manual_seed(2)).tolist()]
    settings = DecodeSettings(max_new_tokens=new_tokens, temperature=0.8, top_k=40, seed=0, stop_on_eos=False)
    eos = 0
    outputs: dict[str, list[list[int]]] = {}

    def run(model, name, opts=None):
        def go() -> float:
            if opts is not None:  # generation options are per model: set them before every call
                model.set_generation_options(**opts)
            t0 = time.perf_counter()
            out = generate_ids(model, prompts, settings, eos)
            dt = time.perf_counter() - t0
            assert outputs.setdefault(name, out) == out, f"{name}: output changed between repeats"
            return dt

        return go

    fns = {
        "apelr v2, async planner on": run(v2, "on", {"async_planner": True}),
        "apelr v2, async planner off": run(v2, "off", {"async_planner": False}),
        "transformer": run(base, "base"),
    }
    for fn in fns.values():
        fn()  # warmup (and the thread pool's start)
    times = interleaved(fns, repeats)
    assert outputs["on"] == outputs["off"], "async planner on/off produced different tokens"
    ref = median(times["apelr v2, async planner off"])
    rows = []
    for name, ts in times.items():
        rows.append({
            "model": name,
            "new_tokens": new_tokens,
            "ms_total": round(1000 * median(ts), 1),
            "ms_per_token": round(1000 * median(ts) / new_tokens, 3),
            "vs_async_off": round(median(ts) / ref, 3),
        })
    rows.append({"model": "identical tokens (on vs off)", "new_tokens": new_tokens,
                 "ms_total": "-", "ms_per_token": "-", "vs_async_off": str(outputs["on"] == outputs["off"])})
    return rows


def profile_v2(vocab: int, top: int) -> None:
    """Top ops (self CPU time) of one v2 training step at ``vocab``."""
    from torch.profiler import ProfilerActivity, profile

    model = apelr_model(vocab, version=V2)
    cfg = load_config(APELR_CFG)
    data = torch.randint(0, vocab, (cfg.train.batch_size, cfg.model.block_size + 1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    time_train_steps({"v2": model}, x, y, cfg.train, repeats=1, steps=1, warmup=1)
    opt = build_optimizer(model, cfg.train, torch.device("cpu"))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        model(x, y).loss.backward()
        opt.step()
    print(f"\nv2 step profile, vocab {vocab} (self CPU time, top {top} ops by shape):\n")
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds; the median is reported")
    ap.add_argument("--new-tokens", type=int, default=256, help="tokens generated per decoding run")
    ap.add_argument("--profile", action="store_true", help="also print the top ops of a v2 step (BPE vocab)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    payload: dict = {"machine": machine()}
    print(f"load average (1 min) at start: {payload['machine']['load_avg_1min']}\n")

    rows = bench_steps(f"char {CHAR_VOCAB}", CHAR_VOCAB, False, args.repeats, steps=3, warmup=2)
    rows += bench_steps(f"bpe {BPE_VOCAB}", BPE_VOCAB, True, args.repeats, steps=2, warmup=2)
    print("Train step (forward + backward + AdamW), batch 16 x 192, fp32:\n")
    print_table(["vocab", "model", "params", "vs baseline", "d_ff", "ms/step", "tokens/s", "time vs baseline"],
                [list(r.values()) for r in rows])
    payload["step_time"] = rows
    gen = bench_generation(args.repeats, args.new_tokens)
    print(f"\nGeneration, 1 prompt of 16 tokens + {args.new_tokens} new (char vocab, untrained weights):\n")
    print_table(["model", "new tokens", "ms total", "ms/token", "vs async off"], [list(r.values()) for r in gen])
    payload["generation"] = gen
    if args.profile:
        profile_v2(BPE_VOCAB, top=25)
    payload["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"\nload average (1 min) at end: {payload['load_avg_1min_end']}")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts: seeding, model builders, interleaved timing, output."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def machine() -> dict[str, str | int]:
    """CPU model name, logical cores, torch version, threads in use and the current load average."""
    name = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            name = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": name,
        "cores": os.cpu_count() or 0,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def lmlab_model(preset: str, vocab_size: int, gpt2_arch: bool) -> torch.nn.Module:
    """lmlab's transformer at a preset shape; ``gpt2_arch`` switches to GPT-2's exact architecture."""
    from lmlab.configure import load_config
    from lmlab.registry import build_model

    model_cfg: dict = {"preset": preset, "vocab_size": vocab_size}
    if gpt2_arch:
        model_cfg |= {
            "pos_encoding": "learned",
            "norm": "layernorm",
            "mlp": "gelu_tanh",
            "bias": True,
        }
    cfg = load_config(raw={"model": model_cfg})
    return build_model(cfg.model)


def hf_gpt2(model: torch.nn.Module, vocab_size: int) -> torch.nn.Module:
    """HF GPT2LMHeadModel (random init, SDPA, no dropout) of the same shape as lmlab ``model``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.cfg
    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_positions=c.block_size,
        n_embd=c.d_model,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=c.ff_dim,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=c.norm_eps,
        tie_word_embeddings=c.tie_weights,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    hf = GPT2LMHeadModel(cfg)
    assert hf.config._attn_implementation == "sdpa", hf.config._attn_implementation
    return hf


def interleaved(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each fn once per round (A B C A B C ...); each returns the seconds it measured."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(fn())
    return times


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_table(header: list[str], rows: list[list[object]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")


def write_json(path: str | None, payload: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)


def time_train_steps(models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, train_cfg,
                     repeats: int, steps: int = 3, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per optimizer step (forward with the model's own loss, backward, the trainer's
    AdamW from ``train_cfg``) of each model on (x, y): warmed up, then measured interleaved."""
    from lmlab.training.optim import build_optimizer

    fns = {}
    for name, model in models.items():
        opt = build_optimizer(model, train_cfg, torch.device("cpu"))
        model.train()
        if hasattr(model, "set_train_step"):
            model.set_train_step(10_000)  # past every warmup: all loss terms at full weight

        def step(model=model, opt=opt) -> None:
            model(x, y).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        fns[name] = lambda step=step: timed(lambda: [step() for _ in range(steps)]) / steps
    return interleaved(fns, repeats)


def train_quiet(config: str, out_dir, steps: int, seed: int, threads: int, **overrides) -> tuple[dict, float]:
    """``lmlab.train`` of ``config`` for ``steps`` steps into ``out_dir`` (one eval and save at the
    end, short samples, no progress bar); returns (its metrics.json, wall seconds)."""
    from pathlib import Path

    import lmlab

    t0 = time.perf_counter()
    lmlab.train(config, **{"train.out_dir": str(out_dir), "train.max_steps": steps, "train.seed": seed,
                           "train.progress": False, "train.num_threads": threads,
                           "train.eval_interval": steps, "train.save_interval": steps,
                           "sample.max_new_tokens": 16, **overrides})
    wall = time.perf_counter() - t0
    return json.loads((Path(out_dir) / "metrics.json").read_text()), wall

"""Greedy generation speed on CPU: lmlab cached decoding vs a naive recompute loop vs HF generate.

Shape: the ``default`` config's model (``small`` preset: 4 layers, 4 heads, d_model 192,
block 192, vocab 2048), random init. Batch 8, prompts of 96 random tokens, 64 new tokens, greedy.
For lmlab (GPT-2 architecture variant and default architecture) it times
  (a) ``lmlab.generate.generate_ids`` (KV cache, one prefill then one token per step),
  (b) a naive loop: full forward over the whole sequence each step, argmax of the last logits,
and for the GPT-2 architecture also
  (c) HF ``GPT2LMHeadModel.generate(..., use_cache=True)`` of the same shape (SDPA, no dropout).
generate_ids prepends the EOS id to each prompt, so (b) and (c) get the same 97-token input.
It asserts that (a) and (b) produce the same tokens. Variants are timed interleaved
(A B C ... A B C ...) after a warmup; the median is reported as new tokens x batch / seconds.

Run: .venv/bin/python bench/generation.py [--threads 2] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse

import torch
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

from lmlab.config import DecodeSettings
from lmlab.generate import generate_ids

VOCAB, BATCH, PROMPT, NEW, EOS = 2048, 8, 96, 64, 0
GREEDY = DecodeSettings(max_new_tokens=NEW, temperature=0, top_k=None, stop_on_eos=False)


@torch.no_grad()
def naive_greedy(model: torch.nn.Module, ids: torch.Tensor, new: int) -> torch.Tensor:
    """Recompute the full forward over the whole sequence for every new token. -> (B, new)"""
    for _ in range(new):
        nxt = model(ids).logits[:, -1].argmax(dim=-1)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
    return ids[:, -new:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--repeats", type=int, default=5, help="interleaved rounds; the median is reported"
    )
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(0)

    gpt2_arch = lmlab_model("small", VOCAB, gpt2_arch=True).eval()
    default_arch = lmlab_model("small", VOCAB, gpt2_arch=False).eval()
    hf = hf_gpt2(gpt2_arch, VOCAB).eval()
    prompts = torch.randint(1, VOCAB, (BATCH, PROMPT), generator=torch.Generator().manual_seed(1))
    prompt_lists = prompts.tolist()
    inputs = torch.cat([torch.full((BATCH, 1), EOS), prompts], dim=1)  # what generate_ids feeds

    def cached(model):
        return lambda: generate_ids(model, prompt_lists, GREEDY, EOS)

    def naive(model):
        return lambda: naive_greedy(model, inputs, NEW)

    def hf_generate():
        return hf.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=NEW,
            min_new_tokens=NEW,
            do_sample=False,
            use_cache=True,
            pad_token_id=0,
        )

    fns = {
        "HF GPT2LMHeadModel.generate": hf_generate,
        "lmlab gpt2 arch, cached": cached(gpt2_arch),
        "lmlab gpt2 arch, naive": naive(gpt2_arch),
        "lmlab default arch, cached": cached(default_arch),
        "lmlab default arch, naive": naive(default_arch),
    }
    # Correctness and warmup: cached greedy == naive greedy, token for token.
    for model in (gpt2_arch, default_arch):
        got, want = cached(model)(), naive(model)().tolist()
        assert got == want, f"cached and naive greedy outputs differ ({model.cfg.pos_encoding})"
    assert hf_generate().shape == (BATCH, PROMPT + 1 + NEW)

    times = interleaved({k: (lambda f=f: timed(f)) for k, f in fns.items()}, args.repeats)
    tps = {k: NEW * BATCH / median(v) for k, v in times.items()}
    hf_tps = tps["HF GPT2LMHeadModel.generate"]
    rows = []
    for name, v in tps.items():
        arch = "gpt2" if "gpt2 arch" in name else "default"
        ratio_naive = v / tps[f"lmlab {arch} arch, naive"] if name.endswith("cached") else None
        rows.append(
            {
                "variant": name,
                "seconds": round(median(times[name]), 3),
                "tokens_per_s": round(v),
                "cached_over_naive": round(ratio_naive, 1) if ratio_naive else "",
                "vs_hf": round(v / hf_tps, 2),
            }
        )

    print_table(
        ["variant", "s (median)", "new tokens/s", "cached / naive", "vs HF"],
        [list(r.values()) for r in rows],
    )
    write_json(
        args.json,
        {
            "machine": machine(),
            "batch": BATCH,
            "prompt": PROMPT,
            "new_tokens": NEW,
            "results": rows,
            "cached_equals_naive": True,
        },
    )


if __name__ == "__main__":
    main()

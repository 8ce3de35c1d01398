"""Planner-guided decoding against plain sampling: held-out NLL of the chosen continuations.

Question: does planner-guided decoding (``DecodeSettings.planner_rerank``,
``lmlab/generate/planner.py``) change how likely the continuations it commits to are, compared
with plain sampling at the same decoding settings? And if it does, is it the heads or simply
reranking N sampled candidates by the LM's own log-prob?

(1) Two char-level models on tiny Shakespeare, ``lmlab.train`` with
    configs/psann/transformer_shakespeare.yaml (4 layers, 4 heads, d_model 192, context 192,
    GELU MLP 768, batch 16, its optimizer and schedule) for ``--steps`` steps each:
    - the "planner model": ``model.auxiliary: {enable_policy, enable_value, enable_dynamics: true,
      dynamics_rollout_steps: 2}`` (other head knobs at AuxiliaryConfig's defaults),
      train.seed 1337 (the config's);
    - the "judge": the same transformer without heads, train.seed 1338 (another init and data
      order), used only to score. Run dirs under ``--out-dir`` are reused when they already hold a
      ``metrics.json`` of the same step count.
(2) Prompts: the run's own validation split (the documents ``split_documents`` puts in val at
    the config's ``data.val_fraction`` 0.05: 8 of the 144 ~8,000-character documents tiny
    Shakespeare is cut into, held out by document hash, never trained on). Each val document is
    tokenized with the run's char tokenizer and 8 windows of 64 tokens are taken at evenly spaced
    offsets: 64 prompts. The 48 real tokens after each window are kept as a reference row.
(3) Each decoder continues all 64 prompts (one batch; ``generate_ids`` puts the EOS start id in
    front) by 48 tokens, ``stop_on_eos`` off, with the seed's planner decoding settings:
    temperature 0.8, top-k off, top-p 0.9, 3-gram repetition blocking (at character level, any
    character trigram already in the prompt or continuation is banned). Decoders: plain sampling
    (``planner_rerank`` 0); planner N=4 and N=8 (depth 2, value weight 1); N=8 depth 1; N=8
    value weight 4; and the LM-only control N=8 value weight 0 (picks the LM's most probable of
    the 8 sampled candidates: no head enters the choice). Sampling seeds 0, 1, 2 each; the
    decoders run interleaved within a seed.
(4) Per decoder, mean and min-max over the 3 seeds of: the mean NLL per token (nats) of the 48
    chosen tokens given EOS + prompt, scored with ``model.log_probs`` on the whole sequence
    (continuation positions only) (a) by the planner model itself and (b) by the independent
    judge; distinct-2 (unique token bigrams / all bigrams, over the 64 continuations of a seed);
    and the wall time of the ``generate_ids`` call over plain's (each call timed 3 times, median;
    mean over seeds; after one untimed warm-up decode; the machine may be shared, see the load
    averages printed).

Run: .venv/bin/python bench/planner.py [--steps 600] [--out-dir DIR] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, median, print_table, train_quiet, write_json

from lmlab.config import DecodeSettings
from lmlab.configure import load_config
from lmlab.data.sources import load_documents, split_documents
from lmlab.generate.decode import generate_ids
from lmlab.runs import load_run

CONFIG = "configs/psann/transformer_shakespeare.yaml"
DATA = Path("../shared/data/tinyshakespeare/input.txt")
HEADS = {"enable_policy": True, "enable_value": True, "enable_dynamics": True, "dynamics_rollout_steps": 2}
PLANNER_SEED, JUDGE_SEED = 1337, 1338
PROMPT_LEN, NEW_TOKENS, PER_DOC = 64, 48, 8
SEEDS = (0, 1, 2)
TIMING_REPEATS = 3  # each generate_ids call is timed this many times; the median is kept
BASE = {"temperature": 0.8, "top_k": None, "top_p": 0.9, "no_repeat_ngram_size": 3}

# name -> (planner_rerank N, depth, value weight)
DECODERS: dict[str, tuple[int, int, float]] = {
    "plain sampling": (0, 2, 1.0),
    "planner N=4": (4, 2, 1.0),
    "planner N=8": (8, 2, 1.0),
    "planner N=8, depth 1": (8, 1, 1.0),
    "planner N=8, value weight 4": (8, 2, 4.0),
    "LM-only rerank N=8 (value weight 0)": (8, 2, 0.0),
}


# ------------------------------------------------------------------------------------ training


def train_run(out_dir: Path, steps: int, seed: int, aux: dict | None, threads: int) -> dict:
    """Train (or reuse) one run; its metrics.json summary plus the wall time of training."""

    metrics = out_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        if m["steps"] != steps:
            raise SystemExit(f"{out_dir} holds a {m['steps']}-step run, not {steps}; give --out-dir a fresh folder")
        print(f"  reusing {out_dir} (val_loss {m['val_loss']:.4f})", flush=True)
        return {**m, "wall_s": None, "reused": True}
    m, wall = train_quiet(CONFIG, out_dir, steps, seed, threads, **{"model.auxiliary": aux})
    print(f"  trained {out_dir.name}: val_loss {m['val_loss']:.4f}, {wall:.0f} s", flush=True)
    return {**m, "wall_s": round(wall, 1), "reused": False}


# ------------------------------------------------------------------------------------- prompts


def val_windows(tokenizer) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """(prompts, the real next tokens, val document names): PER_DOC evenly spaced windows of
    PROMPT_LEN tokens per val document, each with the NEW_TOKENS tokens that follow it."""
    cfg = load_config(CONFIG)
    _, val = split_documents(load_documents(cfg.data), cfg.data.val_fraction)
    prompts, refs = [], []
    for doc in val:
        ids = tokenizer.encode(doc.text)
        span = PROMPT_LEN + NEW_TOKENS
        if len(ids) < PER_DOC * span:
            raise SystemExit(f"val document {doc.name} has {len(ids)} tokens, too few for {PER_DOC} windows")
        for j in range(PER_DOC):
            start = j * (len(ids) - span) // (PER_DOC - 1)
            prompts.append(ids[start: start + PROMPT_LEN])
            refs.append(ids[start + PROMPT_LEN: start + span])
    return prompts, refs, [d.name for d in val]


# ------------------------------------------------------------------------------------- metrics


@torch.no_grad()
def continuation_nll(model, prompts: list[list[int]], conts: list[list[int]], eos_id: int) -> float:
    """Mean NLL per token (nats) of each continuation given EOS + its prompt, over all rows."""
    seqs = torch.tensor([[eos_id, *p, *c] for p, c in zip(prompts, conts, strict=True)])
    n = len(conts[0])
    assert all(len(c) == n for c in conts), "continuations of unequal length"
    logp = model.log_probs(seqs)[:, -n:]  # (B, n): positions of the continuation tokens
    return float(-logp.mean())


def distinct2(conts: list[list[int]]) -> float:
    grams = [(c[i], c[i + 1]) for c in conts for i in range(len(c) - 1)]
    return len(set(grams)) / max(1, len(grams))


def summary(xs: list[float], nd: int = 4) -> dict[str, float]:
    return {"mean": round(sum(xs) / len(xs), nd), "min": round(min(xs), nd), "max": round(max(xs), nd)}


def fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.4f} [{s['min']:.4f}-{s['max']:.4f}]"


# ----------------------------------------------------------------------------------------- run


def bench(steps: int, threads: int, out_root: Path) -> dict:
    print(f"Training ({steps} steps each) into {out_root}:", flush=True)
    runs = {"planner model": train_run(out_root / "planner_model", steps, PLANNER_SEED, HEADS, threads),
            "judge": train_run(out_root / "judge", steps, JUDGE_SEED, None, threads)}
    model, tok, _, _ = load_run(out_root / "planner_model")
    judge, judge_tok, _, _ = load_run(out_root / "judge")
    if judge_tok.vocab_size != tok.vocab_size or tok.encode("ROMEO:\n") != judge_tok.encode("ROMEO:\n"):
        raise SystemExit("the two runs' tokenizers differ; the judge cannot score the planner model's tokens")
    prompts, refs, val_docs = val_windows(tok)
    eos = tok.eos_id
    print(f"{len(prompts)} prompts of {PROMPT_LEN} tokens from val documents {', '.join(val_docs)}\n", flush=True)

    def settings(name: str, seed: int) -> DecodeSettings:
        n, depth, weight = DECODERS[name]
        return DecodeSettings(max_new_tokens=NEW_TOKENS, seed=seed, stop_on_eos=False, planner_rerank=n,
                              planner_depth=depth, planner_value_weight=weight, **BASE)

    generate_ids(model, prompts, settings("planner N=8", 99), eos)  # warm-up, untimed
    raw: dict[str, dict[str, list[float]]] = {k: {"self": [], "judge": [], "d2": [], "s": []} for k in DECODERS}
    examples: dict[str, str] = {}
    for seed in SEEDS:
        for name in DECODERS:
            walls, outs = [], []
            for _ in range(TIMING_REPEATS):  # seeded: every repeat gives the same tokens
                t0 = time.perf_counter()
                outs.append(generate_ids(model, prompts, settings(name, seed), eos))
                walls.append(time.perf_counter() - t0)
            assert all(o == outs[0] for o in outs), f"{name}: seeded decoding not reproducible"
            conts, wall = outs[0], median(walls)
            r = raw[name]
            r["s"].append(wall)
            r["self"].append(continuation_nll(model, prompts, conts, eos))
            r["judge"].append(continuation_nll(judge, prompts, conts, eos))
            r["d2"].append(distinct2(conts))
            if seed == SEEDS[0]:
                examples[name] = tok.decode(conts[0])
            print(f"  seed {seed} {name}: self {r['self'][-1]:.4f}, judge {r['judge'][-1]:.4f}, "
                  f"distinct-2 {r['d2'][-1]:.3f}, {wall:.2f} s", flush=True)
    plain_s = sum(raw["plain sampling"]["s"]) / len(SEEDS)
    rows = []
    for name, (n, depth, weight) in DECODERS.items():
        r = raw[name]
        rows.append({"decoder": name, "N": n, "depth": depth if n else "-", "value_weight": weight if n else "-",
                     "nll_self": summary(r["self"]), "nll_judge": summary(r["judge"]), "distinct2": summary(r["d2"], 3),
                     "decode_s": summary(r["s"], 2), "time_vs_plain": round(sum(r["s"]) / len(SEEDS) / plain_s, 2)})
    reference = {"decoder": "held-out text (reference)", "nll_self": round(continuation_nll(model, prompts, refs, eos), 4),
                 "nll_judge": round(continuation_nll(judge, prompts, refs, eos), 4), "distinct2": round(distinct2(refs), 3)}
    return {"runs": {k: {key: v.get(key) for key in ("steps", "num_params", "val_loss", "val_bpb", "wall_s", "reused")}
                     for k, v in runs.items()},
            "val_documents": val_docs, "prompts": len(prompts), "prompt_len": PROMPT_LEN, "new_tokens": NEW_TOKENS,
            "seeds": list(SEEDS), "decoding": BASE, "rows": rows, "reference": reference,
            "example_seed0_prompt0": {"prompt": tok.decode(prompts[0]), **examples}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600, help="training steps per model")
    ap.add_argument("--out-dir", default=None, help="keep (and reuse) the two run dirs here (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    if not DATA.is_file():
        print(f"skipped: tiny Shakespeare not found at {DATA} (the data source of {CONFIG})")
        return
    torch.set_num_threads(args.threads)
    payload: dict = {"machine": machine(), "steps": args.steps}
    print(f"load average (1 min) at start: {payload['machine']['load_avg_1min']}\n")
    with tempfile.TemporaryDirectory(prefix="planner_bench_") as tmp:
        res = bench(args.steps, args.threads, Path(args.out_dir or tmp))
    for name, r in res["runs"].items():
        print(f"{name}: {r['steps']} steps, {r['num_params']:,} params, val loss {r['val_loss']:.4f}, "
              f"train wall {r['wall_s'] if r['wall_s'] is not None else 'reused'} s")
    print(f"\n{res['prompts']} val prompts x {PROMPT_LEN} tokens, {NEW_TOKENS} new tokens, temperature 0.8, "
          f"top-p 0.9, 3-gram blocking; mean [min-max] over seeds {', '.join(map(str, SEEDS))}; NLL in nats/token:\n")
    header = ["decoder", "N", "depth", "value weight", "NLL, planner model", "NLL, judge", "distinct-2", "time vs plain"]
    table = [[r["decoder"], r["N"], r["depth"], r["value_weight"], fmt(r["nll_self"]), fmt(r["nll_judge"]),
              f"{r['distinct2']['mean']:.3f}", r["time_vs_plain"]] for r in res["rows"]]
    ref = res["reference"]
    table.append([ref["decoder"], "-", "-", "-", f"{ref['nll_self']:.4f}", f"{ref['nll_judge']:.4f}",
                  f"{ref['distinct2']:.3f}", "-"])
    print_table(header, table)
    plain = res["rows"][0]["decode_s"]["mean"]
    print(f"\nplain sampling: {plain:.2f} s per generate_ids call (64 x 48 tokens)")
    payload |= res
    payload["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) at end: {payload['load_avg_1min_end']}")
    write_json(args.json, payload)


if __name__ == "__main__":
    main()

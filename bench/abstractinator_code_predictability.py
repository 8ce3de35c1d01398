"""How predictable are a trained Abstractinator's top codes from the codes before them (issue 29)?

    .venv/bin/python bench/abstractinator_code_predictability.py RUN [RUN ...] [--train-windows 3000]

For each run and level: its codes (stage 1) of ``--train-windows`` training windows and
``--val-windows`` held-out windows (the run's own split; ``abstractinator_free_running.val_windows``),
then the cross-entropy on the held-out codes of a unigram and a bigram count model fitted on the
training codes (add-0.5, the bigram backing off to the unigram), beside what the run's top model
pays per code at the top level (``bpb_top`` x ``bytes_per_top_code`` from its metrics.json). A bigram below the
unigram is sequential structure a top model over codes could learn; a top model above the
unigram has not learnt even the codes' frequencies.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

import torch
from abstractinator_free_running import val_windows

from lmlab.runs import load_run


@torch.no_grad()
def code_sequences(model, x: torch.Tensor, batch: int = 64) -> list[list[list[int]]]:
    """Per level (bottom first), the stage-1 code sequence of each window of x (N, T)."""
    out: list[list[list[int]]] = []
    for i in range(0, x.size(0), batch):
        for lv, level in enumerate(model.compress_all(x[i : i + batch])):
            if lv == len(out):
                out.append([])
            out[lv] += [level.codes[b, : int(level.n_codes[b]), 0].tolist() for b in range(level.codes.size(0))]
    return out


def ngram_bits(train: list[list[int]], val: list[list[int]], K: int, alpha: float = 0.5) -> tuple[float, float]:
    """(unigram, bigram) bits per held-out code after the first of each window."""
    uni = collections.Counter(c for s in train for c in s)
    big = collections.Counter(p for s in train for p in zip(s, s[1:]))
    ctx = collections.Counter(c for s in train for c in s[:-1])
    n_uni = sum(uni.values())
    hu = hb = 0.0
    n = 0
    for s in val:
        for prev, c in zip(s, s[1:]):
            pu = (uni[c] + alpha) / (n_uni + alpha * K)
            pb = (big[(prev, c)] + alpha * K * pu) / (ctx[prev] + alpha * K)
            hu -= math.log2(pu)
            hb -= math.log2(pb)
            n += 1
    return hu / max(n, 1), hb / max(n, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--train-windows", type=int, default=3000)
    ap.add_argument("--val-windows", type=int, default=300)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | level | codes K | top model pays (bits/code) | unigram | bigram | bigram gain |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for run in args.runs:
        model, tok, cfg, _ = load_run(run)
        train = code_sequences(model, val_windows(cfg, tok, args.train_windows, "train"))
        val = code_sequences(model, val_windows(cfg, tok, args.val_windows, "val"))
        m = json.loads((run / "metrics.json").read_text())
        for lv, level in enumerate(model.levels):
            uni, big = ngram_bits(train[lv], val[lv], level.vq.K)
            top = f"{m['bpb_top'] * m['bytes_per_top_code']:.2f}" if lv == len(model.levels) - 1 else "-"
            print(f"| {run} | {lv + 1} | {level.vq.K} | {top} | {uni:.2f} | {big:.2f} | {uni - big:.2f} |", flush=True)

if __name__ == "__main__":
    main()

"""Free-running reconstruction of trained Abstractinator runs: greedy decoding of held-out windows
from their true level-1 codes alone, scored by position and after alignment (issue 29).

    .venv/bin/python bench/abstractinator_free_running.py RUN [RUN ...] [--windows 16]

Each run is read with ``lmlab.runs.load_run``; its held-out windows are the first ``--windows``
windows of ``block_size`` bytes of the validation documents of its own config (the split the
trainer used: ``doc_hash_fraction`` < ``data.val_fraction``). Prints a markdown table: teacher-forced
level-1 accuracy, free-running accuracy by position and aligned (difflib's matching blocks).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lmlab.data.sources import doc_hash_fraction, open_sources, source_streams
from lmlab.runs import load_run


def val_windows(cfg, tokenizer, n: int, split: str = "val") -> torch.Tensor:
    """(n, block_size) byte ids of the run's validation (or training) documents, in order: the
    trainer's split, ``doc_hash_fraction`` < ``data.val_fraction`` is validation."""
    width = cfg.model.block_size
    indices = [o.index for o in open_sources(cfg.data, strict_utf8=False)]
    ids: list[int] = []
    for _, docs in source_streams(cfg.data, indices, strict_utf8=False):
        for doc in docs:
            if (doc_hash_fraction(doc) < cfg.data.val_fraction) == (split == "val"):
                ids += [tokenizer.eos_id, *tokenizer.encode(doc.text)]
            if len(ids) >= n * width:
                break
    if len(ids) < n * width:
        raise SystemExit(f"only {len(ids)} {split} bytes; ask for fewer windows")
    return torch.tensor(ids[: n * width]).view(n, width)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| run | levels | teacher-forced L1 | free-running, by position | free-running, aligned |")
    print("|---|---:|---:|---:|---:|")
    for run in args.runs:
        model, tok, cfg, _ = load_run(run)
        ids = val_windows(cfg, tok, args.windows)
        d = model.diagnostics(ids, free_running_rows=args.windows)
        tf = d["levels"][0]["recon_acc_teacher_forced"]
        print(f"| {run} | {len(cfg.model.levels)} | {tf:.3f} | {d['recon_acc_free_running']:.3f} | "
              f"{d['recon_acc_free_running_aligned']:.3f} |", flush=True)


if __name__ == "__main__":
    main()

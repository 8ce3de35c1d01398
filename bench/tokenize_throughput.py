"""Tokenizer throughput: MB/s of the batched path (``encode_batch`` on ~1 MB chunks) per backend.

Each corpus (tiny Shakespeare, the TinyStories slice) is cut into ~8,000-character documents as
a text source is (``chunk_text``); the documents are grouped into batches of ~1 MB and each batch
goes through ``tokenizer.encode_batch``, as the token cache does. Every backend (byte, char, bpe,
sentencepiece; vocab 2048 where it applies) is fitted on the same corpus it then encodes; the
timing covers encoding only. Backends are timed interleaved; the median of ``--repeats`` is shown.

Run:  .venv/bin/python bench/tokenize_throughput.py [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from _common import machine, median, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lmlab.config import TokenizerConfig  # noqa: E402
from lmlab.data.documents import chunk_text  # noqa: E402
from lmlab.tokenizers import build_tokenizer  # noqa: E402

DATA = REPO.parent / "shared" / "data"
CORPORA = {
    "tiny shakespeare": DATA / "tinyshakespeare" / "input.txt",
    "tinystories 2 MiB": DATA / "tinystories" / "TinyStories-train-first2MiB.txt",
}
BACKENDS = ("byte", "char", "bpe", "sentencepiece")


def batches(text: str, batch_chars: int = 1 << 20) -> list[list[str]]:
    """The text's ~8,000-character documents, grouped into batches of about ``batch_chars``."""
    out: list[list[str]] = [[]]
    size = 0
    for doc in chunk_text(text):
        if size >= batch_chars:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += len(doc)
    return out


def encode_seconds(tok, groups: list[list[str]]) -> tuple[float, int]:
    """(seconds, tokens) to encode every batch."""
    t0 = time.perf_counter()
    n = sum(len(ids) for g in groups for ids in tok.encode_batch(g))
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="RAYON/OMP threads for the backends")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", str(args.threads))

    rows, results = [], []
    for corpus, path in CORPORA.items():
        if not path.is_file():
            print(f"skipping {corpus}: {path} not found", file=sys.stderr)
            continue
        text = path.read_text(encoding="utf-8")
        mb = len(text.encode("utf-8")) / 1e6
        groups = batches(text)
        toks = {}
        for backend in BACKENDS:
            cfg = TokenizerConfig(type=backend, vocab_size=2048, fit_max_chars=None, fit_max_examples=None)
            toks[backend] = build_tokenizer(cfg, chunk_text(text))
        times: dict[str, list[float]] = {b: [] for b in BACKENDS}
        n_tokens: dict[str, int] = {}
        for _ in range(args.repeats):
            for backend, tok in toks.items():
                s, n_tokens[backend] = encode_seconds(tok, groups)
                times[backend].append(s)
        for backend, tok in toks.items():
            s = median(times[backend])
            r = {"corpus": corpus, "mb": round(mb, 2), "backend": backend, "vocab": tok.vocab_size,
                 "tokens": n_tokens[backend], "s": round(s, 3), "mb_per_s": round(mb / s, 1),
                 "bytes_per_token": round(mb * 1e6 / n_tokens[backend], 2)}
            results.append(r)
            rows.append([corpus, r["mb"], backend, r["vocab"], f"{r['tokens']:,}", r["bytes_per_token"],
                         r["s"], r["mb_per_s"]])
    print_table(["corpus", "MB", "backend", "vocab", "tokens", "bytes/token", "s (median)", "MB/s"], rows)
    write_json(args.json, {"machine": machine(), "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()

"""Token cache build: tokens/s and peak RSS of on-disk builds of 10M and 100M train tokens.

The corpus is synthetic and generated on the fly (nothing read from disk but a word list):
documents of 200-500 words drawn with a seeded RNG from the words of the TinyStories slice
(with their frequencies), or from Python's pydoc topics if the slice is absent. A BPE tokenizer
(vocab 2048) is fitted on ~2 MB of it and saved; each build then runs in its own subprocess,
which reports its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``), so one build's peak
never hides another's. A subprocess that only runs ``import lmlab, torch`` gives the floor.
The caches go under ``--work`` and are deleted afterwards (100M tokens is ~200 MB).

Run:  .venv/bin/python bench/token_cache.py [--sizes 10000000 100000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TINYSTORIES = REPO.parent / "shared" / "data" / "tinystories" / "TinyStories-train-first2MiB.txt"


def word_list() -> list[str]:
    """Every whitespace-separated word of the TinyStories slice (or of pydoc topics), repeats kept."""
    if TINYSTORIES.is_file():
        return TINYSTORIES.read_text(encoding="utf-8").split()
    print(f"note: {TINYSTORIES} not found; using pydoc_data topics words", file=sys.stderr)
    from pydoc_data.topics import topics

    return " ".join(topics.values()).split()


def synthetic_docs(seed: int = 0) -> Iterator:
    """An endless stream of Documents of 200-500 words sampled from ``word_list()``."""
    from lmlab.data.documents import Document

    words = np.array(word_list())
    rng = np.random.default_rng(seed)
    k = 0
    while True:
        text = " ".join(words[rng.integers(0, len(words), int(rng.integers(200, 500)))])
        yield Document("synthetic", f"doc{k}", text)
        k += 1


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_build(tok_dir: str, out_dir: str, tokens: int) -> dict:
    """One build (in this process): returns timings, sizes and this process's peak RSS."""
    from lmlab.data.cache import build_token_arrays
    from lmlab.tokenizers import load_tokenizer

    tok = load_tokenizer(tok_dir)
    gen_s = 0.0
    chars = 0

    def timed_docs() -> Iterator:
        nonlocal gen_s, chars
        it = synthetic_docs(seed=1)
        while True:
            t0 = time.perf_counter()
            doc = next(it)
            gen_s += time.perf_counter() - t0
            chars += len(doc.text)
            yield doc

    t0 = time.perf_counter()
    arrays = build_token_arrays([("synthetic", timed_docs())], tok, val_fraction=0.005,
                                max_train_tokens=tokens, out_dir=out_dir)
    total_s = time.perf_counter() - t0
    totals = arrays.stats["totals"]
    return {
        "train_tokens": totals["train_tokens"], "val_tokens": totals["val_tokens"],
        "text_mb": round(chars / 1e6, 1), "total_s": round(total_s, 1),
        "corpus_gen_s": round(gen_s, 1), "cache_mb": round(sum(
            p.stat().st_size for p in Path(out_dir).iterdir()) / 1e6, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def run_child(args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000_000, 100_000_000])
    ap.add_argument("--work", default="/tmp/lmlab_bench_token_cache")
    ap.add_argument("--json", default="/tmp/bench/token_cache.json")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:  # internal: run one measurement and print it as JSON
        if args.child == ["floor"]:
            import torch  # noqa: F401

            import lmlab  # noqa: F401

            print(json.dumps({"peak_rss_mib": round(peak_rss_mib(), 1)}))
        else:
            tok_dir, out_dir, tokens = args.child
            print(json.dumps(child_build(tok_dir, out_dir, int(tokens))))
        return

    sys.path.insert(0, str(REPO))
    from lmlab.config import TokenizerConfig
    from lmlab.tokenizers import build_tokenizer

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    fit_texts = (d.text for d in synthetic_docs(seed=0))
    tok = build_tokenizer(TokenizerConfig(type="bpe", vocab_size=2048, fit_max_chars=2_000_000), fit_texts)
    tok.save(work / "tokenizer")
    fit_s = time.perf_counter() - t0
    print(f"bpe fitted on 2 MB in {fit_s:.1f} s (vocab {tok.vocab_size})", file=sys.stderr)

    floor = run_child(["--child", "floor"])
    rows = []
    for n in args.sizes:
        out = work / f"cache_{n}"
        r = run_child(["--child", str(work / "tokenizer"), str(out), str(n)])
        r["tokens_per_s"] = round(r["train_tokens"] / r["total_s"])
        r["tokens_per_s_excl_gen"] = round(r["train_tokens"] / (r["total_s"] - r["corpus_gen_s"]))
        rows.append({"max_train_tokens": n, **r})
        shutil.rmtree(out)
        print(f"{n}: {r}", file=sys.stderr)
    shutil.rmtree(work)

    print(f"floor (`import lmlab, torch`): {floor['peak_rss_mib']} MiB peak RSS\n")
    header = ["max_train_tokens", "text MB", "cache MB", "build s", "of which corpus gen s",
              "tokens/s", "tokens/s excl. gen", "peak RSS MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        cells = [f"{r['max_train_tokens']:,}", r["text_mb"], r["cache_mb"], r["total_s"], r["corpus_gen_s"],
                 f"{r['tokens_per_s']:,}", f"{r['tokens_per_s_excl_gen']:,}", r["peak_rss_mib"]]
        print("| " + " | ".join(map(str, cells)) + " |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"floor_rss_mib": floor["peak_rss_mib"],
                                               "fit_s": round(fit_s, 1), "builds": rows}, indent=2))


if __name__ == "__main__":
    main()

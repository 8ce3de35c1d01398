"""Tokenizer comparison: fit seconds, encode seconds, tokens/s, tokens/char and model size per backend.

The corpus (one UTF-8 text file) is split into documents: blank-line separated paragraphs, or
lines if it has no blank lines. Each backend (sentencepiece, bpe = HF ``tokenizers``, byte, char)
is built through lmlab (``build_tokenizer``) on those documents, within ``--max-fit-chars``
characters; the fit is timed wall-clock. The tokenizer is saved with ``tok.save`` into a temporary
directory: the model size is the total bytes of the files written there (``tokenizer_meta.json``
included, so byte shows only that), and the saved copy is reloaded (``load_tokenizer``) to check it
encodes a sample of documents the same way. Encoding runs ``encode_batch`` over all documents
repeated ``--repeat`` times: one warm-up pass, then the median of 3 timed passes. tokens/char,
chars/token and bytes/token count the documents' characters and UTF-8 bytes (the blank-line
separators between documents are not part of any document). The round trip
(``decode(encode(doc)) == doc``) is checked on up to 200 evenly spaced documents and reported as
the fraction that came back exact; a mismatch does not fail the run.

Threads: ``--threads`` sets ``RAYON_NUM_THREADS`` (the thread pool of HF ``tokenizers``) and
``TOKENIZERS_PARALLELISM=true`` (so its batch encode runs in parallel, without the fork warning)
before any tokenizer library is imported. SentencePiece is not governed by them: lmlab fits it on
``min(4, cores)`` threads and its batch encode uses every core. torch plays no part.

Results: a markdown table on stdout and ``<out-dir>/<UTC timestamp>/metrics.json`` (arguments,
machine, corpus size and sha256, one row per backend); ``--json PATH`` also writes a copy there.

Run:  .venv/bin/python bench/compare_tokenizers.py --corpus ../shared/data/tinyshakespeare/input.txt \
          [--vocab-size 4096] [--repeat 1] [--backends sentencepiece,bpe,byte,char] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _common import machine, median, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_BACKENDS = "sentencepiece,bpe,byte,char"
ALIASES = {"tokenizers": "bpe", "sp": "sentencepiece", "spm": "sentencepiece"}
KNOWN = ("sentencepiece", "bpe", "byte", "char")
TIMED_RUNS = 3
ROUND_TRIP_SAMPLE = 200


def fail(msg: str) -> SystemExit:
    """The one-line error this script exits with."""
    return SystemExit(f"compare_tokenizers: {msg}")


def parse_backends(spec: str) -> list[str]:
    """Comma list -> backend names (``tokenizers`` is ``bpe``), duplicates dropped, order kept."""
    out: list[str] = []
    for name in (s.strip().lower() for s in spec.split(",")):
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name not in KNOWN:
            raise fail(f"--backends: unknown {name!r} (choose from {', '.join(KNOWN)}, tokenizers)")
        if name not in out:
            out.append(name)
    if not out:
        raise fail("--backends: no backend given")
    return out


def read_corpus(path: Path) -> tuple[str, bytes]:
    """(text, raw bytes) of the corpus; exits with a one-line error if it is unusable."""
    if not path.exists():
        raise fail(f"--corpus {path}: no such file")
    if not path.is_file():
        raise fail(f"--corpus {path}: not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise fail(f"--corpus {path}: cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"--corpus {path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    if not text.strip():
        raise fail(f"--corpus {path}: empty (no text to fit or encode)")
    return text, raw


def split_documents(text: str) -> tuple[list[str], str]:
    """Blank-line separated paragraphs (or lines, if there are no blank lines) and the rule used."""
    text = text.replace("\r\n", "\n")
    if re.search(r"\n[ \t]*\n", text):
        docs, rule = re.split(r"\n(?:[ \t]*\n)+", text), "paragraphs"
    else:
        docs, rule = text.split("\n"), "lines"
    return [d for d in docs if d.strip()], rule


def dir_bytes(directory: Path) -> tuple[int, list[str]]:
    """Total size of the files under ``directory`` and their names."""
    files = sorted(p for p in directory.rglob("*") if p.is_file())
    return sum(p.stat().st_size for p in files), [str(p.relative_to(directory)) for p in files]


def encode_pass(tok, docs: list[str]) -> tuple[float, int]:
    """(seconds, tokens) of one ``encode_batch`` over ``docs``."""
    t0 = time.perf_counter()
    n = sum(len(ids) for ids in tok.encode_batch(docs))
    return time.perf_counter() - t0, n


def sample(docs: list[str], k: int) -> list[str]:
    """Up to ``k`` evenly spaced documents (deterministic)."""
    if len(docs) <= k:
        return list(docs)
    step = len(docs) / k
    return [docs[int(i * step)] for i in range(k)]


def measure(backend: str, docs: list[str], args: argparse.Namespace) -> dict:
    """Fit, save, reload and time one backend; returns its metrics row."""
    from lmlab.config import TokenizerConfig
    from lmlab.tokenizers import build_tokenizer, load_tokenizer

    cfg = TokenizerConfig(
        type=backend,
        vocab_size=args.vocab_size,
        fit_max_examples=None,
        fit_max_chars=args.max_fit_chars or None,
    )
    t0 = time.perf_counter()
    tok = build_tokenizer(cfg, docs)
    fit_s = time.perf_counter() - t0

    checks = sample(docs, ROUND_TRIP_SAMPLE)
    with tempfile.TemporaryDirectory(prefix=f"tok_{backend}_") as tmp:
        tok.save(tmp)
        model_bytes, model_files = dir_bytes(Path(tmp))
        reloaded = load_tokenizer(tmp)
        reload_same = all(a == b for a, b in zip(tok.encode_batch(checks), reloaded.encode_batch(checks)))
    round_trip = sum(tok.decode(tok.encode(d)) == d for d in checks) / len(checks)

    corpus = docs * args.repeat
    encode_pass(tok, corpus)  # warm-up
    runs = [encode_pass(tok, corpus) for _ in range(TIMED_RUNS)]
    encode_s = median([s for s, _ in runs])
    tokens = runs[0][1]
    chars = sum(len(d) for d in corpus)
    nbytes = sum(len(d.encode("utf-8")) for d in corpus)
    vocab = tok.vocab_size
    return {
        "backend": backend,
        "library": {"sentencepiece": "sentencepiece", "bpe": "tokenizers"}.get(backend, "lmlab"),
        "vocab_size_requested": args.vocab_size if backend in ("bpe", "sentencepiece") else None,
        "vocab_size": vocab,
        "vocab_reached": vocab >= args.vocab_size if backend in ("bpe", "sentencepiece") else None,
        "fit_s": round(fit_s, 4),
        "encode_s": round(encode_s, 4),
        "encode_runs_s": [round(s, 4) for s, _ in runs],
        "documents": len(corpus),
        "chars": chars,
        "bytes": nbytes,
        "tokens": tokens,
        "tokens_per_s": round(tokens / encode_s, 1),
        "tokens_per_char": round(tokens / chars, 4),
        "chars_per_token": round(chars / tokens, 4),
        "bytes_per_token": round(nbytes / tokens, 4),
        "model_bytes": model_bytes,
        "model_kib": round(model_bytes / 1024, 2),
        "model_files": model_files,
        "round_trip_exact": round(round_trip, 4),
        "round_trip_sample": len(checks),
        "reload_encodes_same": reload_same,
    }


def out_path(out_dir: Path) -> Path:
    """``out_dir/<UTC timestamp>/metrics.json`` in a new folder (suffixed if the second is taken)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S")
    folder, n = out_dir / stamp, 1
    while folder.exists():
        folder, n = out_dir / f"{stamp}_{n}", n + 1
    folder.mkdir(parents=True)
    return folder / "metrics.json"


def fmt_size(nbytes: int) -> str:
    """Bytes as a short human size (B / KiB / MiB)."""
    if nbytes < 1024:
        return f"{nbytes} B"
    if nbytes < 1 << 20:
        return f"{nbytes / 1024:.1f} KiB"
    return f"{nbytes / (1 << 20):.2f} MiB"


def main() -> None:
    """Parse arguments, measure every backend, print the table and write metrics.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, type=Path, help="UTF-8 text file to fit and encode")
    ap.add_argument("--vocab-size", type=int, default=4096, help="target vocab for bpe/sentencepiece")
    ap.add_argument("--repeat", type=int, default=1, help="encode the corpus this many times over")
    ap.add_argument("--backends", default=DEFAULT_BACKENDS,
                    help=f"comma list (default {DEFAULT_BACKENDS}; 'tokenizers' = bpe)")
    ap.add_argument("--max-fit-chars", type=int, default=4_000_000,
                    help="fit on at most this many characters (0: the whole corpus)")
    ap.add_argument("--out-dir", type=Path, default=Path("reports/tokenizers"),
                    help="metrics.json goes to OUT_DIR/<UTC timestamp>/")
    ap.add_argument("--threads", type=int, default=2,
                    help="RAYON_NUM_THREADS for HF tokenizers (TOKENIZERS_PARALLELISM=true)")
    ap.add_argument("--json", default=None, help="also write the metrics to this path")
    args = ap.parse_args()
    if args.vocab_size < 16:
        raise fail("--vocab-size must be at least 16")
    if args.repeat < 1:
        raise fail("--repeat must be at least 1")
    if args.max_fit_chars < 0:
        raise fail("--max-fit-chars must be >= 0 (0: no limit)")
    if args.threads < 1:
        raise fail("--threads must be at least 1")
    backends = parse_backends(args.backends)

    # Before any tokenizer library is imported: rayon reads these once, when its pool starts.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"

    text, raw = read_corpus(args.corpus)
    docs, rule = split_documents(text)

    from lmlab.errors import LmlabError

    results = []
    for backend in backends:
        print(f"[{backend}] fitting and encoding ...", file=sys.stderr, flush=True)
        try:
            results.append(measure(backend, docs, args))
        except LmlabError as e:
            raise fail(f"{backend}: {e}") from None

    rows = [
        [r["backend"], f"{r['fit_s']:.3f}", f"{r['encode_s']:.3f}", f"{r['tokens_per_s']:,.0f}",
         f"{r['tokens_per_char']:.4f}", fmt_size(r["model_bytes"]), r["vocab_size"]]
        for r in results
    ]
    print_table(["backend", "fit (s)", "encode (s)", "tokens/s", "tokens/char", "model size", "vocab"], rows)
    for r in results:
        if r["vocab_reached"] is False:
            print(f"note: {r['backend']} reached {r['vocab_size']} of the {args.vocab_size} ids asked for")
        if r["round_trip_exact"] < 1:
            print(f"note: {r['backend']} round-trips {r['round_trip_exact']:.1%} of "
                  f"{r['round_trip_sample']} sampled documents exactly")

    payload = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"backends": backends},
        "machine": machine() | {"python": platform.python_version()},
        "env": {k: os.environ[k] for k in ("RAYON_NUM_THREADS", "TOKENIZERS_PARALLELISM")},
        "corpus": {
            "path": str(args.corpus),
            "abspath": str(args.corpus.resolve()),
            "bytes": len(raw),
            "chars": len(text),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "split": rule,
            "documents": len(docs),
        },
        "encode": {"warmup_runs": 1, "timed_runs": TIMED_RUNS, "statistic": "median",
                   "method": "encode_batch over all documents"},
        "results": results,
    }
    path = out_path(args.out_dir)
    write_json(str(path), payload)
    write_json(args.json, payload)
    print(f"wrote {path}")
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

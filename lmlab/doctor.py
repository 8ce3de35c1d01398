"""``lmlab doctor``: the validation suite (seed 002's GPU-01..08) for every registered family.

On a GPU each family runs at its ``small`` preset (the transformer's throughput sweep at
``gpt2``, 124M parameters, the MFU target); on a CPU the same checks run at ``tiny`` sizes, which
is how the test suite keeps them from rotting. Checks, per family, each named by its seed id and
its descriptive name (``--only`` / ``--skip`` take either; ``ddp_fsdp`` is GPU-05 and GPU-06), and
printed with the threshold it must meet (``THRESHOLDS``):

- GPU-01 forward/backward: a finite loss and finite gradients;
- GPU-02 precision parity: the loss under bf16 (and fp16 on CUDA) autocast against fp32;
- GPU-03 throughput: optimizer steps over batch token budgets (65k, 131k, 262k on GPU; 512, 1k,
  2k on CPU) in micro-batches, tokens/s and, on a GPU lmlab knows, MFU; on a GPU also the first
  budget with ``torch.compile`` when the compile check runs (the MFU target is bf16 + compile);
- GPU-04 gradient checkpointing: peak memory and step time with and without it;
- GPU-05 ``ddp`` and GPU-06 ``fsdp`` parity: with two devices (GPUs, or ``--processes 2`` on CPU)
  a 2-process ``torchrun`` run of ``lmlab train`` under ``parallel: ddp`` / ``fsdp`` (2 sequences
  per rank) against one process with one micro-batch of 4, no dropout: every step's training
  loss within 1e-5;
- GPU-07 generation: new tokens from the shared decoding loop (or the family's own), tokens/s;
- GPU-08 continuity: 4 steps with ``lmlab.train`` against 2 + a resume of 2, bit for bit;
- compile: ``torch.compile`` of the training step, loss parity with eager (``--skip compile``
  on CPU, where inductor takes minutes to build its kernels);
- flex: families with an ``attn_backend: flex`` option train a step with it (CUDA: CPU runs
  FlexAttention forward only).

Writes ``reports/gpu/<UTC>/{system.json, results.json, throughput.csv, memory.json}`` and prints a
table. A check that fails is a row with ``FAIL`` and its error, never a crash of the suite; the
command then exits 1 (``failures``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import yaml

from lmlab.api import train as train_run
from lmlab.config import DecodeSettings
from lmlab.configure import build_model_config
from lmlab.devices import resolve_device
from lmlab.errors import LmlabError
from lmlab.generate.decode import generate_ids
from lmlab.registry import FAMILIES, build_model
from lmlab.training.telemetry import peak_memory_mb, peak_tflops

CHECKS = ("forward_backward", "precision", "throughput", "grad_checkpoint", "ddp", "fsdp", "generation",
          "continuity", "compile", "flex")
IDS = {"forward_backward": "GPU-01", "precision": "GPU-02", "throughput": "GPU-03", "grad_checkpoint": "GPU-04",
       "ddp": "GPU-05", "fsdp": "GPU-06", "generation": "GPU-07", "continuity": "GPU-08"}
"""Seed 002's (and 004's) numbering of its GPU validation suite; compile and flex are lmlab's own."""
ALIASES = {"ddp_fsdp": ("ddp", "fsdp")}
"""Older names: ``ddp_fsdp`` was one check for GPU-05 and GPU-06."""
PRECISION_REL = 0.02
PARALLEL_REL = 1e-5
COMPILE_REL = 1e-3
THRESHOLDS = {
    "forward_backward": "finite loss and gradients",
    "precision": f"rel < {PRECISION_REL:g} vs fp32",
    "throughput": "finite tokens/s at every budget",
    "grad_checkpoint": "peak_mb_on <= peak_mb_off (CUDA; a CPU only times it)",
    "ddp": f"rel < {PARALLEL_REL:g} vs one process, every step",
    "fsdp": f"rel < {PARALLEL_REL:g} vs one process, every step",
    "generation": "new tokens > 0, every id in the vocabulary",
    "continuity": "resumed weights == straight, bit for bit",
    "compile": f"rel < {COMPILE_REL:g} vs eager",
    "flex": "finite loss",
}
"""What each check must meet to PASS: printed beside its figures and kept in results.json."""


class Skip(Exception):
    """A check that does not apply here (the reason is reported)."""


class Doctor:
    """Runs the checks for each family on one device and collects rows."""

    def __init__(self, device: torch.device, families: list[str], skip: set[str], log: Callable[[str], None],
                 processes: int = 1, only: set[str] | None = None):
        self.device, self.families, self.skip, self.log = device, families, skip, log
        self.only = only  # None: every check; else only these (the others are not reported)
        self.selected = (only if only is not None else set(CHECKS)) - skip
        self.processes = processes
        self._reference: dict[str, list[float]] = {}  # family -> one process's losses (GPU-05/06)
        self.gpu = device.type == "cuda"
        self.results: list[dict[str, Any]] = []
        self.throughput: list[dict[str, Any]] = []
        self.memory: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- setup

    def model_config(self, family: str, throughput: bool = False):
        """The family's check size: tiny on CPU, small on GPU (gpt2 for a throughput sweep where
        the family has that preset)."""
        cfg_cls = FAMILIES[family][0]
        preset = "tiny" if not self.gpu else ("gpt2" if throughput and "gpt2" in cfg_cls.presets else "small")
        if preset not in cfg_cls.presets:
            preset = "tiny"
        vocab = 260 if cfg_cls.required_tokenizer == "byte" else 512
        return build_model_config({"family": family, "preset": preset, "vocab_size": vocab})

    def batch(self, cfg, rows: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, cfg.vocab_size - 1, (rows, cfg.block_size), generator=g).to(self.device)

    def fresh(self, cfg, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_model(cfg).to(self.device)

    def autocast(self, dtype: torch.dtype | None):
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def sync(self) -> None:
        if self.gpu:
            torch.cuda.synchronize(self.device)

    # ---------------------------------------------------------------------------- checks

    def forward_backward(self, family: str) -> dict[str, Any]:
        cfg = self.model_config(family)
        model = self.fresh(cfg)
        out = model(self.batch(cfg, 2), self.batch(cfg, 2, seed=1))
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(out.loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        return {"ok": finite and bool(grads), "loss": out.loss.item(), "params_with_grad": len(grads),
                "params": sum(p.numel() for p in model.parameters())}

    def precision(self, family: str) -> dict[str, Any]:
        cfg = self.model_config(family)
        x, y = self.batch(cfg, 2), self.batch(cfg, 2, seed=1)
        model = self.fresh(cfg).eval()  # eval: no dropout, the same function in every precision
        with torch.no_grad():
            ref = model(x, y).loss.item()
            out = {"fp32": ref}
            dtypes = {"bf16": torch.bfloat16, **({"fp16": torch.float16} if self.gpu else {})}
            for name, dtype in dtypes.items():
                with self.autocast(dtype):
                    out[name] = model(x, y).loss.item()
        rel = {k: abs(v - ref) / abs(ref) for k, v in out.items() if k != "fp32"}
        return {"ok": all(r < PRECISION_REL for r in rel.values()), **out, **{f"rel_{k}": v for k, v in rel.items()}}

    def _steps(self, model, cfg, rows: int, micro: int, steps: int, dtype) -> float:
        """Seconds per optimizer step of ``rows`` sequences in micro-batches of ``micro``."""
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = self.batch(cfg, micro)
        times = []
        for _ in range(steps + 1):  # the first step warms up (allocator, kernels)
            self.sync()
            t0 = time.perf_counter()
            for _ in range(max(1, rows // micro)):
                with self.autocast(dtype):
                    loss = model(x, x).loss
                loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            self.sync()
            times.append(time.perf_counter() - t0)
        return sorted(times[1:])[len(times[1:]) // 2]

    def throughput_check(self, family: str) -> dict[str, Any]:
        cfg = self.model_config(family, throughput=True)
        model = self.fresh(cfg).train()
        dtype = torch.bfloat16 if self.gpu else None
        peak = peak_tflops(self.device, "bf16" if self.gpu else "fp32", False)
        budgets = (65_536, 131_072, 262_144) if self.gpu else (512, 1024, 2048)
        micro = max(1, min(16 if self.gpu else 4, budgets[0] // cfg.block_size))
        rows_out = []
        for tokens in budgets:
            rows = max(micro, tokens // cfg.block_size)
            sec = self._steps(model, cfg, rows, micro, steps=3 if self.gpu else 1, dtype=dtype)
            tps = rows * cfg.block_size / sec
            mfu = tps * cfg.flops_per_token(cfg.block_size) / (peak * 1e12) if peak else None
            row = {"family": family, "preset": cfg.preset, "batch_tokens": rows * cfg.block_size,
                   "micro_batch": micro, "tokens_per_s": tps, "mfu": mfu}
            self.throughput.append(row)
            rows_out.append(row)
        if self.gpu and "compile" in self.selected:  # the MFU target is measured compiled
            tokens = budgets[0]
            rows = max(micro, tokens // cfg.block_size)
            sec = self._steps(torch.compile(model), cfg, rows, micro, steps=3, dtype=dtype)
            tps = rows * cfg.block_size / sec
            row = {"family": family, "preset": f"{cfg.preset}+compile", "batch_tokens": rows * cfg.block_size,
                   "micro_batch": micro, "tokens_per_s": tps,
                   "mfu": tps * cfg.flops_per_token(cfg.block_size) / (peak * 1e12) if peak else None}
            self.throughput.append(row)
            rows_out.append(row)
        best = max(rows_out, key=lambda r: r["tokens_per_s"])
        return {"ok": all(math.isfinite(r["tokens_per_s"]) for r in rows_out), "preset": cfg.preset,
                "tokens_per_s": best["tokens_per_s"], "mfu": best["mfu"]}

    def grad_checkpoint(self, family: str) -> dict[str, Any]:
        if not FAMILIES[family][1].supports_grad_checkpointing:
            raise Skip(f"the {family} family does not support gradient checkpointing")
        cfg = self.model_config(family)
        out = {}
        for on in (False, True):
            model = self.fresh(cfg).train()
            model.set_grad_checkpointing(on)
            if self.gpu:
                torch.cuda.reset_peak_memory_stats(self.device)
            sec = self._steps(model, cfg, rows=8, micro=8, steps=2, dtype=None)
            key = "on" if on else "off"
            out[f"step_s_{key}"] = sec
            if self.gpu:  # the process RSS of a CPU never goes down: only CUDA's peak is per phase
                out[f"peak_mb_{key}"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        ok = not self.gpu or out["peak_mb_on"] <= out["peak_mb_off"]
        self.memory[family] = out
        return {"ok": ok, **out}

    def _train_raw(self, family: str, out: str, steps: int, dropout: float = 0.1, **train: Any) -> dict[str, Any]:
        """A tiny ``lmlab train`` config for ``family`` on 40 of Python's doc topics, written beside
        ``out`` (dropout where the family has it: resuming must restore the random streams too)."""
        cfg_cls = FAMILIES[family][0]
        tok = "byte" if cfg_cls.required_tokenizer == "byte" else "char"
        model = {"family": family, "preset": "tiny", **({"dropout": dropout} if "dropout" in cfg_cls.model_fields else {})}
        corpus = Path(out).parent / "corpus"
        if not corpus.is_dir():  # 40 short documents: the built-in corpus takes seconds to gather
            # deferred: some minimal Python builds do not ship pydoc_data (1 MB of text)
            from pydoc_data.topics import topics

            corpus.mkdir(parents=True)
            for i, name in enumerate(sorted(topics)[:40]):
                (corpus / f"{i:02d}.txt").write_text(topics[name][:3000], encoding="utf-8")
        return {"data": {"sources": [{"type": "text", "path": str(corpus)}], "val_fraction": 0.1},
                "tokenizer": {"type": tok}, "model": model,
                "train": {"out_dir": out, "max_steps": steps, "batch_size": 2, "save_interval": 2,
                          "eval_interval": 100, "eval_batches": 2, "log_interval": 1, "progress": False, "device": str(self.device),
                          "seed": 5, "num_threads": 1, **train},
                "sample": {"prompts": [], "max_new_tokens": 1}}

    def parallel(self, family: str, mode: str) -> dict[str, Any]:
        """GPU-05 (``ddp``) / GPU-06 (``fsdp``): 2 ranks of ``lmlab train`` against one process."""
        count = torch.cuda.device_count() if self.gpu else self.processes
        if count < 2:
            raise Skip(f"needs 2 devices, this machine has {count} (on CPU: --processes 2)")
        if mode in FAMILIES[family][1].unsupported_parallel:
            raise Skip(f"the {family} family does not support parallel: {mode}")
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            if family not in self._reference:  # one reference for both modes
                # no dropout: the ranks' random streams differ from one process's by design.
                # One process takes both ranks' micro-batches with 2 accumulation steps: what DDP
                # computes, also for statistics of a micro-batch (the abstractinator's code-space
                # moments) and buffers that move once per step by the whole step's statistics
                train_run(self._train_raw(family, f"{tmp}/one", 6, dropout=0.0, batch_size=2, grad_accum_steps=2))
                self._reference[family] = _train_losses(Path(f"{tmp}/one"))
            ref = self._reference[family]
            cfg = Path(tmp) / f"{mode}.yaml"
            cfg.write_text(yaml.safe_dump(self._train_raw(family, f"{tmp}/{mode}", 6, dropout=0.0, parallel=mode)))
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                   "--master_port", str(29500 + os.getpid() % 1000), "-m", "lmlab", "train",
                                   "--config", str(cfg)], capture_output=True, text=True, env=env, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"{mode}: torchrun exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
            got = _train_losses(Path(f"{tmp}/{mode}"))
        rel = max(abs(a - b) / abs(b) for a, b in zip(got, ref))
        return {"ok": rel < PARALLEL_REL, f"rel_{mode}": rel}

    def generation(self, family: str) -> dict[str, Any]:
        cfg = self.model_config(family)
        model = self.fresh(cfg).eval()
        prompts = [self.batch(cfg, 1)[0, :8].tolist(), self.batch(cfg, 1, seed=3)[0, :5].tolist()]
        settings = DecodeSettings(max_new_tokens=16, temperature=0.0, stop_on_eos=False)
        self.sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            new = generate_ids(model, prompts, settings, eos_id=cfg.vocab_size - 1)
        self.sync()
        sec = time.perf_counter() - t0
        n = sum(len(x) for x in new)
        ok = n > 0 and all(0 <= t < cfg.vocab_size for row in new for t in row)
        return {"ok": ok, "new_tokens": n, "tokens_per_s": n / sec}

    def continuity(self, family: str) -> dict[str, Any]:
        """4 steps straight; then the same run dir cut back to its step-2 snapshot (as a crash
        after that save leaves it) and resumed to 4: the weights must match bit for bit."""
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            straight, resumed = Path(tmp) / "straight", Path(tmp) / "resumed"
            train_run(self._train_raw(family, str(straight), 4))
            shutil.copytree(straight, resumed)
            shutil.rmtree(resumed / "checkpoints" / "current")  # prev (step 2) is the newest now
            train_run(self._train_raw(family, str(resumed), 4))
            a, b = ((r / "checkpoints" / "current" / "model.safetensors").read_bytes() for r in (straight, resumed))
            return {"ok": a == b, "identical": a == b, "steps": 4, "resumed_at": 2}

    def compile_check(self, family: str) -> dict[str, Any]:
        cfg = self.model_config(family)
        model = self.fresh(cfg).eval()
        x = self.batch(cfg, 2)
        compiled = torch.compile(model)
        with torch.no_grad():
            eager, comp = model(x, x).loss.item(), compiled(x, x).loss.item()
        rel = abs(comp - eager) / abs(eager)
        return {"ok": rel < COMPILE_REL, "eager": eager, "compiled": comp, "rel": rel}

    def flex(self, family: str) -> dict[str, Any]:
        cfg_cls = FAMILIES[family][0]
        if "attn_backend" not in cfg_cls.model_fields:
            raise Skip(f"the {family} family has no attn_backend option")
        if not self.gpu:
            raise Skip("FlexAttention trains on CUDA only (on CPU it runs forward only)")
        base = self.model_config(family)
        cfg = build_model_config({**base.model_dump(), "attn_backend": "flex"})
        model = self.fresh(cfg).train()
        loss = model(self.batch(cfg, 2), self.batch(cfg, 2, seed=1)).loss
        loss.backward()
        return {"ok": bool(torch.isfinite(loss)), "loss": loss.item()}

    # ------------------------------------------------------------------------------- run

    def run(self) -> list[dict[str, Any]]:
        checks = {"forward_backward": self.forward_backward, "precision": self.precision,
                  "throughput": self.throughput_check, "grad_checkpoint": self.grad_checkpoint,
                  "ddp": lambda f: self.parallel(f, "ddp"), "fsdp": lambda f: self.parallel(f, "fsdp"),
                  "generation": self.generation, "continuity": self.continuity,
                  "compile": self.compile_check, "flex": self.flex}
        for family in self.families:
            for name, check in checks.items():
                if self.only is not None and name not in self.only:
                    continue
                row: dict[str, Any] = {"family": family, "id": IDS.get(name, "-"), "check": name,
                                       "threshold": THRESHOLDS[name]}
                t0 = time.perf_counter()
                if name in self.skip:
                    row.update(status="SKIP", reason="--skip")
                else:
                    try:
                        result = check(family)
                        row.update(status="PASS" if result.pop("ok") else "FAIL", **result)
                    except Skip as e:
                        row.update(status="SKIP", reason=str(e))
                    except Exception as e:  # noqa: BLE001 (a check that crashes is a failed check, reported)
                        row.update(status="FAIL", error=f"{type(e).__name__}: {e}".splitlines()[0],
                                   trace=traceback.format_exc(limit=3))
                row["seconds"] = round(time.perf_counter() - t0, 2)
                self.results.append(row)
                self.log(_line(row))
                if self.gpu:
                    torch.cuda.empty_cache()
        return self.results


def _line(row: dict[str, Any]) -> str:
    """One printed row: family, id, check, status, its figures and (when it ran) its threshold."""
    ran = row["status"] != "SKIP"
    threshold = f"  [threshold: {row['threshold']}]" if ran else ""
    return f"{row['family']:15s} {row['id']:6s} {row['check']:17s} {row['status']}  {_brief(row)}{threshold}"


def resolve_checks(names: tuple[str, ...] | list[str], flag: str) -> set[str]:
    """Check names from ``names``: descriptive (``precision``), seed ids (``GPU-02``, any case)
    or an older name (``ddp_fsdp``); anything else is one line naming every check."""
    by_id = {cid.lower(): name for name, cid in IDS.items()}
    out: set[str] = set()
    bad = []
    for given in names:
        key = given.strip().lower()
        if key in CHECKS:
            out.add(key)
        elif key in by_id:
            out.add(by_id[key])
        elif key in ALIASES:
            out.update(ALIASES[key])
        else:
            bad.append(given)
    if bad:
        known = ", ".join(f"{IDS[c]} {c}" if c in IDS else c for c in CHECKS)
        raise LmlabError(f"{flag}: unknown check(s) {bad}; checks: {known}")
    return out


def failures(folder: str | Path) -> list[dict[str, Any]]:
    """The FAIL rows of a report folder's results.json (what makes ``lmlab doctor`` exit 1)."""
    rows = json.loads((Path(folder) / "results.json").read_text(encoding="utf-8"))["results"]
    return [r for r in rows if r["status"] == "FAIL"]


def _train_losses(run: Path) -> list[float]:
    """The training loss of every logged step of a run (its metrics.jsonl)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _brief(row: dict[str, Any]) -> str:
    keep = [k for k in ("loss", "rel_bf16", "rel_fp16", "tokens_per_s", "mfu", "step_s_off", "step_s_on",
                        "peak_mb_off", "peak_mb_on", "new_tokens", "rel", "rel_ddp", "rel_fsdp", "resumed_at",
                        "identical", "reason", "error") if row.get(k) is not None]
    return ", ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keep)


def system_info(device: torch.device) -> dict[str, Any]:
    info = {"utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    gpu_count=torch.cuda.device_count(), peak_bf16_tflops=peak_tflops(device, "bf16", False))
    return info


def run_doctor(device: str = "auto", out_dir: str | Path = "reports/gpu", families: list[str] | None = None,
               skip: tuple[str, ...] = (), processes: int = 1, log: Callable[[str], None] = print,
               only: tuple[str, ...] = ()) -> Path:
    """Run the suite; returns the report folder ``out_dir/<UTC>`` (``failures`` reads its FAILs:
    ``lmlab doctor`` exits 1 on any). ``only`` / ``skip``: check names or seed ids (one of the two)."""
    dev = resolve_device(device)
    unknown = sorted(set(families or []) - set(FAMILIES))
    if unknown:
        raise LmlabError(f"--families: unknown {unknown}; known: {', '.join(sorted(FAMILIES))}")
    if only and skip:
        raise LmlabError("--only and --skip: give one of them (--only names what runs, --skip what does not)")
    skipped = resolve_checks(skip, "--skip")
    chosen = resolve_checks(only, "--only") if only else None
    folder = Path(out_dir) / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder.mkdir(parents=True, exist_ok=False)
    doctor = Doctor(dev, families or sorted(FAMILIES), skipped, log, processes, only=chosen)
    log(f"lmlab doctor: {dev}, families {', '.join(doctor.families)} -> {folder}")
    doctor.run()
    (folder / "system.json").write_text(json.dumps(system_info(dev), indent=2) + "\n", encoding="utf-8")
    (folder / "results.json").write_text(json.dumps({"results": doctor.results}, indent=2) + "\n", encoding="utf-8")
    (folder / "memory.json").write_text(json.dumps({"peak_process_mb": peak_memory_mb(dev), "grad_checkpoint":
                                                    doctor.memory}, indent=2) + "\n", encoding="utf-8")
    with open(folder / "throughput.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["family", "preset", "batch_tokens", "micro_batch", "tokens_per_s", "mfu"])
        writer.writeheader()
        writer.writerows(doctor.throughput)
    counts = {s: sum(r["status"] == s for r in doctor.results) for s in ("PASS", "FAIL", "SKIP")}
    failed = "".join(f"; FAIL {r['id']} {r['check']} ({r['family']})" for r in doctor.results if r["status"] == "FAIL")
    log(f"lmlab doctor: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped{failed}; {folder}")
    return folder

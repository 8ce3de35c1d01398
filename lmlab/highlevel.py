"""The one-call API of seed 002 (``psannLM`` / ``psannLMDataPrep``), for every lmlab family.

``TextData`` reads texts and files through the one data pipeline (the sources, the split by
document hash, the token arrays and the trainer's windows) and fits (or loads) a tokenizer;
``LM`` holds a model spec, trains it with the lmlab trainer (``fit``: a run config, budget
``train.epochs``, and a real run dir), generates with the shared decoding loop, and saves /
loads as an lmlab run dir (``lmlab sample`` / ``lmlab eval`` read it too). Nothing here names a
family: seed 002's spellings (``n_layers``, ``waveresnet``, ``checkpoint_dir``, ...) go through
``lmlab/compat`` and the families' declared aliases.

    data = TextData(["hello world", "goodnight moon"], max_length=256)
    model = LM(base="waveresnet", d_model=64, n_layers=2, n_heads=4, vocab_size=data.vocab_size)
    model.fit(data, epochs=1, batch_tokens=4096, lr=2e-3)
    print(model.generate("hello", max_new_tokens=16))
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
import weakref
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab import compat, rundir
from lmlab.api import LoadedModel, overrides_to_dict
from lmlab.config import BUDGET_KEYS, DataConfig, RunConfig, TokenizerConfig
from lmlab.configure import deep_merge, save_config, validate_config
from lmlab.data.batches import encode_documents
from lmlab.data.cache import TokenArrays, build_token_arrays
from lmlab.data.documents import Document
from lmlab.data.sources import doc_hash_fraction, open_sources, split_documents
from lmlab.errors import ConfigError, LmlabError
from lmlab.registry import FAMILIES, family_aliases, resolve_family
from lmlab.tokenizers import Tokenizer, build_tokenizer, load_tokenizer_path
from lmlab.training.budget import budget_for
from lmlab.training.loop import train as run_training
from lmlab.training.plan import PreparedData, TrainPlan
from lmlab.training.windows import LMDataset

UNPACKED = "lmlab packs documents into one EOS-separated stream (windows may cross documents)"
"""Why ``pack_sequences`` false is refused: the same words for ``TextData`` and a seed 002 YAML."""

TEXTS_FILE = "texts.jsonl"
"""In-memory texts become this jsonl source (one line each): a run dir keeps it in ``data/``."""


def _tokenizer_type(name: str) -> str:
    """Seed 002's tokenizer names (``simple``, ``tokenizers``) -> lmlab's, through its compat table."""
    renames = compat.table("002").values["tokenizer.type"]
    kinds = TokenizerConfig.model_fields["type"].annotation.__args__
    lmlab_name = renames.get(name, name)
    if lmlab_name not in kinds:
        raise LmlabError(f"TextData: tokenizer {name!r} is not one of {', '.join([*kinds, *renames])}")
    return lmlab_name


class TextData:
    """Documents, their train/val split, a tokenizer and token windows, ready for ``LM.fit``:
    the data pipeline of every lmlab run, fed from memory.

    ``texts_or_paths``: one string or an iterable of them (and/or ``Path``s). A string naming an
    existing file or directory is read as a data source (text, ``.jsonl`` with a ``text`` field,
    ``.csv``, ``.pdf``; a long text file is cut into ~8,000-character documents), any other
    string is one document (the in-memory ones form one ``jsonl`` source). ``tokenizer``:
    ``auto`` (sentencepiece -> tokenizers -> char, by what imports), ``sentencepiece``,
    ``tokenizers``/``bpe``, ``char``/``simple`` or ``byte``; fitted on the training documents
    with ``vocab_size`` entries, unless ``tokenizer_model_path`` names a prebuilt one (an lmlab
    tokenizer dir, a SentencePiece ``.model``, an HF tokenizers ``.json``). ``val_split``: the
    share of documents held out, chosen as every run chooses them (``data.val_fraction``: by a
    hash of each document's source type and name, with at least one document on each side;
    0 holds none out). ``seed``: the order training draws windows in (``train.seed`` of the
    run ``fit`` makes). ``pack_sequences``: documents are concatenated (each followed by EOS)
    and cut into windows of ``max_length`` tokens, as in every run; False is refused as the
    YAML refuses it (a run dir's config could not say so, and a resume would pack).
    """

    def __init__(
        self,
        texts_or_paths: str | Path | Iterable[str | Path],
        tokenizer: str = "auto",
        tokenizer_model_path: str | Path | None = None,
        max_length: int = 256,
        pack_sequences: bool = True,
        val_split: float = 0.05,
        seed: int = 1337,
        vocab_size: int = 4096,
        min_text_length: int = 0,
    ):
        kind = _tokenizer_type(tokenizer)
        if not pack_sequences:
            raise LmlabError(f"TextData: pack_sequences={pack_sequences!r}: {UNPACKED}; drop the argument")
        if max_length < 1:
            raise LmlabError(f"TextData: max_length must be >= 1, got {max_length}")
        if not 0 <= val_split < 1:
            raise LmlabError(f"TextData: val_split must be in [0, 1), got {val_split}")
        self.max_length, self.pack_sequences, self.val_split, self.seed = max_length, True, val_split, seed
        items = [texts_or_paths] if isinstance(texts_or_paths, (str, Path)) else list(texts_or_paths)
        self.texts: list[str] = []  # in-memory documents
        self.sources: list[dict[str, Any]] = []  # files, as lmlab data sources
        for item in items:
            if isinstance(item, Path) or (isinstance(item, str) and item.strip() == item and item
                                          and "\n" not in item and len(item) < 4096 and Path(item).exists()):
                if not Path(item).exists():
                    raise LmlabError(f"TextData: {item}: no such file or directory")
                self.sources.append(compat.source_for_path(Path(item)))
            elif isinstance(item, str):
                self.texts.append(item)
            else:
                raise LmlabError(f"TextData: expected texts or paths, got {type(item).__name__}: {item!r}")
        sources = list(self.sources)
        self.texts_file: Path | None = None
        kept = [t for t in self.texts if t.strip()]
        if kept:  # in memory: one jsonl source, in a folder that lives as long as this object
            folder = Path(tempfile.mkdtemp(prefix="lmlab-textdata-"))
            weakref.finalize(self, shutil.rmtree, folder, True)
            self.texts_file = folder / TEXTS_FILE
            self.texts_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in kept), encoding="utf-8")
            sources.append({"type": "jsonl", "path": str(self.texts_file)})
        if not sources:
            raise LmlabError("TextData: no text: every input is empty (or shorter than min_text_length)")
        self.data_config = DataConfig(sources=sources, min_text_length=min_text_length,
                                      **({"val_fraction": val_split} if val_split > 0 else {}))
        try:
            opened = open_sources(self.data_config, strict_utf8=kind != "byte")
        except LmlabError as e:
            raise LmlabError(f"TextData: {e}") from None
        # (label, documents) per readable source: read once, split and tokenized from memory.
        self._streams: list[tuple[str, list[Document]]] = [(o.label, list(o.documents)) for o in opened]
        docs = [d for _, ds in self._streams for d in ds]
        if not docs:
            raise LmlabError("TextData: no text: every input is empty (or shorter than min_text_length)")
        if val_split > 0 and len(docs) > 1:
            train_docs, val_docs = split_documents(docs, val_split)
            if not any(doc_hash_fraction(d) < val_split for d in docs):
                warnings.warn(f"TextData: {len(docs)} document(s) are few for a {val_split:.0%} validation "
                              "split: one is held out anyway (every split keeps a document on each side)",
                              stacklevel=2)
        else:
            train_docs, val_docs = docs, []
            if val_split > 0:
                warnings.warn("TextData: 1 document is too few to split; none held out", stacklevel=2)
        self.train_texts = [d.text for d in train_docs]
        self.val_texts = [d.text for d in val_docs]
        self._val_split = val_split if val_docs else 0.0
        if tokenizer_model_path is not None:
            self.tokenizer: Tokenizer = load_tokenizer_path(tokenizer_model_path)
        else:
            self.tokenizer = build_tokenizer(TokenizerConfig(type=kind, vocab_size=vocab_size), self.train_texts)
        self.tokenizer_backend: str = self.tokenizer.backend
        self.tokenizer_name = tokenizer if tokenizer_model_path is None else str(tokenizer_model_path)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        """The tokenizer's pad id, else its EOS id (windows are packed: nothing is padded)."""
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else self.tokenizer.eos_id

    @cached_property
    def arrays(self) -> TokenArrays:
        """The trainer's token arrays: per source and split, each document followed by EOS,
        built by the pipeline's builder (``data/cache.py``) with the split above."""
        return build_token_arrays(self._streams, self.tokenizer, val_fraction=self._val_split)

    def segments(self, texts: list[str], tokenizer: Tokenizer | None = None) -> list[np.ndarray]:
        """Token arrays of ``texts``: one packed stream (each document followed by EOS)."""
        return [encode_documents(texts, tokenizer or self.tokenizer)]

    @cached_property
    def train_segments(self) -> list[np.ndarray]:
        """The per-source training streams (empty ones dropped)."""
        return [a for a in self.arrays.train if len(a)]

    @cached_property
    def val_segments(self) -> list[np.ndarray]:
        return [a for a in self.arrays.val if len(a)]

    @property
    def window(self) -> int:
        """Window length: ``max_length``, or the longest stream when a tiny corpus is shorter."""
        longest = max((len(s) for s in self.train_segments), default=0)
        return max(1, min(self.max_length, longest - 1))

    @cached_property
    def dataset(self) -> LMDataset:
        """Training windows (built on first use)."""
        return LMDataset(self.train_segments, self.window)

    @cached_property
    def val_dataset(self) -> LMDataset | None:
        """Validation windows, or None without a validation split."""
        return LMDataset(self.val_segments, self.window) if self.val_texts else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __repr__(self) -> str:
        return (f"TextData({len(self.train_texts)} train / {len(self.val_texts)} val documents, "
                f"{self.tokenizer_backend} tokenizer of {self.vocab_size} ids, {len(self)} windows of {self.window})")


class LM:
    """A model spec that trains, generates, saves and loads in one call each.

    ``base``: a family (``transformer``, ``apelr``, ``psann``, ``abstractinator``) or a family's
    alias (psann's ``respsann`` / ``waveresnet``). The shape arguments are seed 002's names,
    mapped onto the family's fields by ``lmlab/compat`` (``n_layers`` -> ``n_layer``,
    ``n_heads`` -> ``n_head``, ``d_mlp`` -> ``d_ff``, ``positional_encoding``
    -> ``pos_encoding``); one left unset takes the family's default, and one the family does not
    have is an error that says which family has it. ``family_options`` go to the family's
    config as they are (e.g. ``num_plan_states=4`` for apelr, ``levels=[...]`` for the
    abstractinator).
    """

    def __init__(
        self,
        base: str = "waveresnet",
        d_model: int | None = None,
        n_layers: int | None = None,
        n_heads: int | None = None,
        d_mlp: int | None = None,
        vocab_size: int | None = None,
        positional_encoding: str | None = None,
        sine_params: dict[str, Any] | None = None,
        **family_options: Any,
    ):
        try:
            family, implied = resolve_family(base)
        except ConfigError:
            names = sorted({*FAMILIES, *family_aliases()})
            raise LmlabError(f"LM: unknown base {base!r}; choose one of {', '.join(names)}") from None
        given = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "d_mlp": d_mlp,
                 "positional_encoding": positional_encoding, "sine_params": sine_params}
        section = {"family": family, **implied, **{k: v for k, v in given.items() if v is not None}, **family_options}
        self.base = base
        self.model_section: dict[str, Any] = compat.translate({"model": section}, "LM(...)").raw["model"]
        self.vocab_size = vocab_size
        self.run_dir: Path | None = None
        self._loaded: LoadedModel | None = None
        # Fail now, not at fit: validate the section with a placeholder vocab (and the tokenizer
        # the family needs, if it needs one: TextData's is checked at fit).
        need = FAMILIES[family][0].required_tokenizer
        validate_config({"model": {**self.model_section, "vocab_size": vocab_size or 2},
                         **({"tokenizer": {"type": need}} if need else {})}, source="LM(...)")

    # ------------------------------------------------------------------------------ training

    def fit(
        self,
        train_data: TextData,
        val_data: TextData | None = None,
        epochs: float = 1,
        batch_tokens: int = 65_536,
        lr: float = 2e-4,
        amp: str | None = None,
        ddp: str = "auto",
        out_dir: str | Path | None = None,
        **overrides: Any,
    ) -> LM:
        """Train with the lmlab trainer for ``epochs`` (``train.epochs``; a ``max_steps=`` or
        ``max_tokens=`` keyword replaces it) over ``train_data``'s windows, about
        ``batch_tokens`` tokens per optimizer step; returns self.

        ``amp``: ``bf16`` / ``fp16`` / ``fp32`` (None: fp32). ``ddp``: ``auto`` (distributed
        when launched with torchrun), ``on`` (require it) or ``off``; ``parallel="fsdp"`` shards
        the model instead of replicating it (``train.parallel``). ``out_dir`` (seed 002:
        ``checkpoint_dir``) keeps the run (default: a temporary dir; ``save`` copies it). Other
        keywords: any ``train`` field (``warmup_steps=50``, ``grad_checkpoint=True``), a seed
        spelling of one (``log_interval_steps``, ``save_interval_steps``), or dotted /
        double-underscore keys for any section (``sample__max_new_tokens=32``). Calling ``fit``
        again continues from the current weights with a fresh optimizer and schedule.
        """
        if not isinstance(train_data, TextData):
            raise LmlabError(f"LM.fit: train_data must be a TextData, got {type(train_data).__name__}")
        if self.vocab_size not in (None, train_data.vocab_size):
            raise LmlabError(f"LM.fit: the model was built for vocab_size {self.vocab_size} but the data's "
                             f"tokenizer has {train_data.vocab_size} ids; pass vocab_size=data.vocab_size")
        world = _check_ddp(ddp)
        if amp not in (None, "bf16", "fp16", "fp32"):
            raise LmlabError(f"LM.fit: amp must be bf16, fp16 or fp32, got {amp!r}")
        train_raw, extra = _split_overrides(overrides)
        if "out_dir" in train_raw:  # checkpoint_dir=, or train__out_dir=
            given = train_raw.pop("out_dir")
            if out_dir is not None and Path(out_dir) != Path(given):
                raise LmlabError(f"LM.fit: out_dir={out_dir} and checkpoint_dir={given} name two run dirs; pass one")
            out_dir = given
        if len(train_data.dataset) == 0:
            raise LmlabError("LM.fit: no training window: the training text is shorter than two tokens; "
                             "give TextData more text")
        if out_dir is None and world > 1:  # each rank would make its own temp dir
            raise LmlabError("LM.fit: a distributed run needs out_dir= (one path every rank shares)")
        out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="lmlab-lm-"))
        # Seed 002's ddp switch picks the strategy unless parallel= names one (e.g. fsdp).
        train_raw.setdefault("parallel", {"auto": "auto", "on": "ddp", "off": "none"}[ddp])
        train_raw.setdefault("seed", train_data.seed)  # the order windows are drawn in
        train_raw.setdefault("precision", amp or "fp32")
        train_raw.setdefault("lr", lr)
        train_raw["min_lr"] = min(lr, train_raw.get("min_lr", lr / 10))
        arrays = self._arrays(train_data, val_data)
        cfg = _fit_config(self.model_section, train_data, arrays, out, world, epochs, batch_tokens, train_raw, extra)
        tok = train_data.tokenizer
        if train_data.texts_file is not None:  # written once the run is known to be valid
            kept = out / "data" / TEXTS_FILE
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(train_data.texts_file, kept)
        if self._loaded is not None and not rundir.has_checkpoint(out):
            self._seed_run(out, cfg, tok)
        run_training(TrainPlan(cfg, data=PreparedData(tok, arrays)))
        self.run_dir, self.vocab_size = out, tok.vocab_size
        self._loaded = LoadedModel(out, device=cfg.train.device)  # auto: this process's GPU, else cpu
        return self

    def _arrays(self, data: TextData, val: TextData | None) -> TokenArrays:
        """The trainer's token arrays: ``data``'s training streams (one per source), validation from ``val`` (encoded with ``data``'s
        tokenizer), else ``data``'s held-out documents, else (no validation text at all) the
        training tokens, with a warning."""
        train = data.train_segments
        if val is not None:
            val_arr = np.concatenate(data.segments(val.train_texts + val.val_texts) or [np.zeros(0)])
        elif data.val_texts:
            val_arr = np.concatenate(data.val_segments)
        else:
            warnings.warn("LM.fit: no validation text (val_split gave none and no val_data): eval metrics "
                          "are measured on the training tokens", stacklevel=3)
            val_arr = np.concatenate(data.train_segments)
        if len(val_arr) < 2:
            val_arr = np.concatenate(data.train_segments)
        # One source; its streams (one per source read) are never crossed.
        return TokenArrays(["textdata"], [train if len(train) > 1 else train[0]], [val_arr], {"window": data.window})

    def _seed_run(self, out: Path, cfg: RunConfig, tok: Tokenizer) -> None:
        """Start ``out`` from the current weights: a weights-only snapshot (a fresh optimizer)."""
        model = self._loaded.model
        out.mkdir(parents=True, exist_ok=True)
        tok.save(rundir.tokenizer_dir(out))
        save_config(cfg, rundir.config_path(out))
        meta = rundir.snapshot_meta(cfg, tok, model, 0, 0, continued_from=str(self.run_dir))
        rundir.save_snapshot(out, model, meta)

    # ---------------------------------------------------------------------------- generation

    def _model(self) -> LoadedModel:
        if self._loaded is None:
            raise LmlabError("LM: no weights yet; call fit(...) or LM.load(path) first")
        return self._loaded

    def generate(self, prompt: str, max_new_tokens: int = 128, top_k: int | None = None, top_p: float = 0.9,
                 temperature: float = 1.0, repetition_penalty: float | None = None, **settings: Any) -> str:
        """Sample a continuation of ``prompt``; returns prompt + continuation.

        The defaults are seed 002's (``max_new_tokens=128, top_p=0.9, temperature=1.0``, no
        top-k, no repetition penalty), not the run's ``sample`` section that
        ``lmlab.load(run).generate`` and ``lmlab sample`` start from (``max_new_tokens`` 200,
        ``temperature`` 0.8, ``top_k`` 50, ``top_p`` 1.0 unless the config says otherwise);
        any other knob of ``DecodeSettings`` (``seed``, ``no_repeat_ngram_size``, ...) and the
        family's decoding options pass through ``settings``."""
        return self.generate_batch([prompt], max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p,
                                   temperature=temperature, repetition_penalty=repetition_penalty, **settings)[0]

    def generate_batch(self, prompts: list[str], max_new_tokens: int = 128, top_k: int | None = None,
                       top_p: float = 0.9, temperature: float = 1.0, repetition_penalty: float | None = None,
                       **settings: Any) -> list[str]:
        """Continue every prompt (bucketed by length, each bucket one cached batch)."""
        return self._model().generate_batch(
            list(prompts), max_new_tokens=max_new_tokens, top_k=top_k, top_p=top_p, temperature=temperature,
            repetition_penalty=1.0 if repetition_penalty is None else repetition_penalty, **settings)

    # ------------------------------------------------------------------------------ save/load

    def save(self, path: str | Path) -> Path:
        """Write the run (config with the architecture, tokenizer, latest checkpoint) to ``path``,
        an lmlab run dir that ``LM.load``, ``lmlab sample`` and ``lmlab eval`` read."""
        src = self._model().run_dir
        dst = Path(path)
        if dst.resolve() == src.resolve():
            return dst
        if rundir.has_checkpoint(dst):
            raise LmlabError(f"LM.save: {dst} already holds a checkpoint; save to a new path")
        tmp = Path(tempfile.mkdtemp(prefix=".lm-save-", dir=dst.parent if dst.parent.exists() else None))
        try:
            shutil.copytree(src, tmp / "run", ignore=shutil.ignore_patterns("token_cache", ".tmp-*"))
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                dst.rmdir()  # an empty dir only (a non-empty one raises: nothing is overwritten)
            (tmp / "run").rename(dst)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dst

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> LM:
        """An LM from a run dir (``save`` output or any lmlab run): architecture, positional
        encoding and sine settings come from its config."""
        loaded = LoadedModel(path, device=device)
        m = loaded.config.model
        self = cls.__new__(cls)
        # The alias the saved fields match (psann: waveresnet), else the family.
        self.base = next((alias for alias, (fam, fields) in family_aliases().items()
                          if fam == m.family and all(getattr(m, k, None) == v for k, v in fields.items())), m.family)
        self.model_section = {k: v for k, v in m.model_dump(mode="json").items()
                              if k not in ("vocab_size", "block_size", "preset")}
        self.vocab_size, self.run_dir, self._loaded = m.vocab_size, Path(path), loaded
        return self

    @property
    def model(self) -> torch.nn.Module:
        return self._model().model

    @property
    def tokenizer(self) -> Tokenizer:
        return self._model().tokenizer

    def __repr__(self) -> str:
        state = f"trained in {self.run_dir}" if self.run_dir else "untrained"
        return f"LM(base={self.base!r}, {state})"


def _check_ddp(ddp: str) -> int:
    """The world size the trainer will see, checked against ``ddp``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if ddp not in ("auto", "on", "off"):
        raise LmlabError(f"LM.fit: ddp must be auto, on or off, got {ddp!r}")
    if ddp == "on" and world < 2:
        raise LmlabError("LM.fit: ddp='on' needs a distributed launch (torchrun --nproc_per_node N ...)")
    if ddp == "off" and world > 1:
        raise LmlabError(f"LM.fit: ddp='off' but this process was launched with WORLD_SIZE={world}; "
                         "run it without torchrun")
    return world


def _fit_config(model_section: dict[str, Any], data: TextData, arrays: TokenArrays, out: Path, world: int,
                epochs: float, batch_tokens: int, train_raw: dict[str, Any], extra: dict[str, Any]) -> RunConfig:
    """The run config of ``LM.fit``: ``data``'s sources and tokenizer, the model, windows of
    ``data.window`` tokens, about ``batch_tokens`` per optimizer step, and the budget in the
    trainer's terms: ``train.epochs`` (a budget keyword, ``max_steps=`` or ``max_tokens=``,
    replaces it), or, continuing a whole checkpoint in ``out``, that many epochs' steps past its
    step as ``train.max_steps``. Warmup and the eval / save intervals follow the trainer's count."""
    window, n_windows = data.window, len(data.dataset)
    accum = int(train_raw.get("grad_accum_steps", 1))
    sequences = max(1, batch_tokens // window)  # per optimizer step, all processes
    batch_size = max(1, min(math.ceil(sequences / (world * accum)), n_windows // (world * accum) or 1))
    budget = {} if set(BUDGET_KEYS) & set(train_raw) else {"epochs": epochs}
    sources = data.data_config.model_dump(mode="json", exclude_defaults=True)
    for dumped, source in zip(sources["sources"], data.data_config.sources, strict=True):
        dumped["type"] = source.type  # the discriminator, dropped as a default
    if data.texts_file is not None:  # the in-memory texts, kept in the run: its config names real data
        sources["sources"][-1]["path"] = str((out / "data" / TEXTS_FILE).resolve())
    raw = deep_merge({
        "data": sources,
        "tokenizer": {"type": data.tokenizer.backend, "model_path": str(rundir.tokenizer_dir(out).resolve())},
        "model": {**model_section, "block_size": max(data.max_length, window), "vocab_size": data.vocab_size},
        "train": {"out_dir": str(out), "batch_size": batch_size, "seq_len": window, **budget, **train_raw},
    }, extra)
    # Every part is lmlab's already (the model and keywords went through compat): translating
    # again could read it as seed 002's and move ``model.vocab_size`` to ``tokenizer.vocab_size``.
    steps = budget_for(validate_config(raw, source="LM.fit", translated=True), arrays, world).max_steps
    # The trainer resumes a whole checkpoint in ``out`` at its step; a fresh dir (or one seeded
    # with the current weights) counts from 0.
    snap = rundir.latest_snapshot(out) if rundir.has_checkpoint(out) else None
    if budget and snap is not None and rundir.TRAINER in snap.meta.get("sha256", {}):
        raw["train"].update({"epochs": None, "max_steps": int(snap.meta.get("step", 0)) + steps})
    every = max(1, min(200, steps // 4))
    for key, value in (("warmup_steps", min(100, max(1, steps // 10))), ("eval_interval", every),
                       ("save_interval", every)):
        raw["train"].setdefault(key, value)
    return validate_config(raw, source="LM.fit", translated=True)


def _split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train fields, other sections) from ``fit``'s keywords: bare names are ``train`` keys
    (seed 002's spellings translated by ``lmlab/compat``), dotted / double-underscore ones name
    their section."""
    bare = {k: v for k, v in overrides.items() if "." not in k and "__" not in k}
    nested = overrides_to_dict({k: v for k, v in overrides.items() if k not in bare})
    raw = compat.translate(deep_merge(nested, {"train": bare}), "LM.fit").raw
    return raw.pop("train", {}), raw


# Seed 002's names.
psannLM = LM
psannLMDataPrep = TextData

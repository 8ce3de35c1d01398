"""How a run starts from a snapshot: whether the run dir's checkpoint may be continued with this
config (``check_resumable``), a model warm-started from another snapshot's weights
(``warm_model``), and ``train.init_from``'s weights and tokenizer (``init_weights``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmlab import rundir, runs
from lmlab.config import DEFAULT_FAMILY, RunConfig
from lmlab.configure import apply_overrides
from lmlab.errors import LmlabError
from lmlab.init_from import read_source
from lmlab.interop.hf import load_hf, load_hf_tokenizer
from lmlab.registry import build_model
from lmlab.tokenizers import Tokenizer, load_tokenizer


def check_resumable(cfg: RunConfig, meta: dict[str, Any], run_dir: Path) -> None:
    """A checkpoint continues only the same model, tokenizer, data and seed (the data order).

    A weights-only snapshot (an imported model) has no data position to keep: its data and seed
    may change, which is how it is fine-tuned on a new corpus.
    """
    saved = runs.checkpoint_config(meta)
    now = cfg.to_dict()
    family = saved.get("model", {}).get("family", "transformer")
    if family != cfg.model.family:
        raise LmlabError(f"family {cfg.model.family} != {family}: {run_dir} holds a {family} checkpoint and the "
                         f"config asks for {cfg.model.family}; continue it with its own config "
                         f"(lmlab train --resume {run_dir}), or pick a new train.out_dir")
    weights_only = rundir.TRAINER not in meta.get("sha256", {})
    if not weights_only:  # the window length lays out the data order: a change is not "other data"
        was = saved.get("train", {}).get("seq_len") or saved["model"]["block_size"]
        if was != (cfg.train.seq_len or cfg.model.block_size):
            raise LmlabError(f"{run_dir} trained on windows of {was} tokens but the config asks for "
                             f"{cfg.train.seq_len or cfg.model.block_size} (train.seq_len / model.block_size); "
                             f"drop that change to continue the run, or pick a new train.out_dir")
    was, asked = _parts(saved.get("train", {})), _parts(now["train"])
    if not weights_only and was != asked:  # the optimizer's groups follow the parts, so its state keeps to them
        raise LmlabError(f"{run_dir} trained with per-part learning rates for {was or 'no part'} but the config "
                         f"sets them for {asked or 'no part'} (train.part_lr, train.part_warmup): the optimizer's "
                         "state is grouped by them; change their values, not which parts they name, or pick a "
                         "new train.out_dir")
    for section in ("model", "tokenizer") if weights_only else ("model", "tokenizer", "data", "train.seed"):
        section, _, only = section.partition(".")
        keys = [only] if only else sorted(set(saved.get(section, {})) | set(now[section]))
        for key in keys:
            a, b = saved.get(section, {}).get(key), now[section].get(key)
            if section == "model" and key == "vocab_size" and b is None:
                continue
            if a != b:
                raise LmlabError(
                    f"{run_dir} holds a checkpoint with {section}.{key} = {a!r} but the config asks for "
                    f"{b!r}; drop that change to continue the run (lmlab train --resume {run_dir}), "
                    "or pick a new train.out_dir"
                )


def _parts(train: dict[str, Any]) -> list[str]:
    """The parts a train section gives their own lr or warmup."""
    return sorted(set(train.get("part_lr") or {}) | set(train.get("part_warmup") or {}))


def check_family_kept(run_dir: Path, saved: dict[str, Any], overrides: list[str]) -> None:
    """A resumed run keeps its family: ``--set model.family`` is refused before the config loads
    (``saved``: the run's raw config), where the run's model keys would read as unknown keys of
    the other family."""
    model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
    was = model.get("family", DEFAULT_FAMILY)
    asked = apply_overrides({}, overrides).get("model")
    new = asked.get("family") if isinstance(asked, dict) else None
    if new is not None and new != was:
        raise LmlabError(f"--set model.family={new}: family {new} != {was}: {run_dir} is a {was} run and a run's "
                         f"family cannot change; drop that --set to resume it, or start a new run "
                         f"(lmlab train --config CONFIG --set model.family={new} --set train.out_dir=NEW_DIR)")


def check_in_place(run_dir: Path, cfg: RunConfig) -> None:
    """A resume continues ``run_dir`` in place: a ``train.out_dir`` override that names another
    folder would start a new run there from step 0."""
    if Path(cfg.train.out_dir) != Path(run_dir):
        raise LmlabError(f"--resume {run_dir} continues that run in place, but --set train.out_dir="
                         f"{cfg.train.out_dir} names another folder; drop that --set (to branch the run, copy it "
                         f"first: cp -r {run_dir} NEW_DIR, then lmlab train --resume NEW_DIR)")


def past_the_pause(run_dir: Path, cfg: RunConfig, overrides: list[str]) -> None:
    """``--resume`` of a run paused at ``train.stop_at_step`` (its latest snapshot is there or
    past it) continues to the end of the budget: resuming it to pause again at once would do
    nothing. A ``--set train.stop_at_step`` of the user's own is kept."""
    stop = cfg.train.stop_at_step
    asked = apply_overrides({}, overrides).get("train")
    if stop is None or (isinstance(asked, dict) and "stop_at_step" in asked):
        return
    step = rundir.latest_snapshot(run_dir).step
    if step >= stop:
        cfg.train.stop_at_step = None
        print(f"lmlab: {run_dir} paused at train.stop_at_step {stop} (step {step}); resuming it to the end of its "
              f"budget (--set train.stop_at_step=N pauses again at N)", flush=True)


@dataclass
class InitWeights:
    """``train.init_from``'s weights, read once, and the tokenizer that comes with them; shaped
    like a :class:`rundir.Snapshot` for :func:`warm_model` (``meta``'s config, ``load_weights``).
    ``state``: the weights of an HF folder (mapped in memory), else ``snapshot``'s file."""

    path: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer
    snapshot: rundir.Snapshot | None = None
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def load_weights(self, model: torch.nn.Module, tolerant: bool | None = None) -> None:
        if self.snapshot is not None:
            self.snapshot.load_weights(model, tolerant)
            return
        have = model.state_dict()
        differ = sorted(k for k in self.state.keys() & have.keys() if self.state[k].shape != have[k].shape)
        if differ:
            raise LmlabError(f"train.init_from {self.path}: the config's model does not fit those weights "
                             f"({', '.join(differ[:3])}); load the config with lmlab train / lmlab.load_config, "
                             "which take the model section from the weights")
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        self.state = {}  # copied into the model: the plan keeps no second copy for the whole run
        if missing or unexpected:
            warnings.warn(f"{self.path}: loaded with missing tensors {sorted(missing)} (kept at their initial "
                          f"values) and unexpected tensors {sorted(unexpected)} (ignored)", stacklevel=2)

    def place_tokenizer(self, run_dir: str | Path) -> None:
        """Rank 0, before the data is prepared: the run's tokenizer is the weights' own."""
        self.tokenizer.save(rundir.tokenizer_dir(run_dir))


def init_tokenizer(cfg: RunConfig) -> Tokenizer:
    """The tokenizer that comes with ``cfg.train.init_from``'s weights, read without them
    (``lmlab prepare``); the same one ``init_weights`` gives."""
    source = read_source(cfg.train.init_from)
    if source.snapshot is not None:
        return load_tokenizer(source.tokenizer["model_path"])
    tokenizer = load_hf_tokenizer(source.path)
    if tokenizer is None:
        raise LmlabError(f"train.init_from {source.path}: the folder has no tokenizer (tokenizer.json); the "
                         "tokenizer comes with the weights, so add the model's tokenizer files to it")
    return tokenizer


def init_weights(cfg: RunConfig) -> InitWeights:
    """The weights and tokenizer ``cfg.train.init_from`` names (a run dir, a snapshot folder or
    an HF folder), for a run that has no snapshot of its own yet."""
    source = read_source(cfg.train.init_from)
    if source.snapshot is not None:
        tokenizer = load_tokenizer(source.tokenizer["model_path"])
        return InitWeights(source.path, source.snapshot.meta, tokenizer, snapshot=source.snapshot)
    model, _, model_dict = load_hf(source.path)
    return InitWeights(source.path, {"config": {"model": model_dict}}, init_tokenizer(cfg), state=model.state_dict())


def warm_model(cfg: RunConfig, snap: rundir.Snapshot | InitWeights, device: torch.device) -> torch.nn.Module:
    """A model of ``cfg`` with ``snap``'s weights: added or missing tensors (auxiliary heads) are a
    warning; a longer ``block_size`` than the snapshot's extends its positions (seed 001)."""
    saved = int(runs.checkpoint_config(snap.meta)["model"]["block_size"])
    grow = saved < cfg.model.block_size
    model_cfg = cfg.model.model_copy(update={"block_size": saved}) if grow else cfg.model
    model = build_model(model_cfg).to(device)
    snap.load_weights(model, tolerant=True)
    if grow:
        model.extend_max_seq_len(cfg.model.block_size)
    return model

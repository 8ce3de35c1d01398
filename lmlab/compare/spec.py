"""A comparison spec: shared sections, seeds, eval tasks and named arms (``lmlab compare SPEC``).

    name: char_duel
    data: {sources: [pydocs]}
    tokenizer: {type: char}
    model: {block_size: 64}                 # shared model keys (each arm adds its family's)
    train: {max_tokens: 200000, batch_size: 8, lr: 2e-3}
    seeds: [1, 2]
    eval: {tasks: [piqa], max_examples: 200, data_dir: ../shared/data}
    match_params: {arm: transformer, width: d_ff, tolerance: 0.05}
    arms:
      - {name: transformer, model: {family: transformer, n_layer: 2}}
      - {name: apelr, model: {family: apelr, n_layer: 2, num_plan_states: 4}}
      - {name: earlier, run: runs/some_run}  # an existing run dir: evaluated, not trained

Every arm is the shared config with its own sections merged over it; each arm x seed is validated
as a whole run config when the spec loads (all errors at once, each naming its arm).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from lmlab.config import DEFAULT_FAMILY, RunConfig
from lmlab.configure import apply_overrides, deep_merge, read_config_file, validate_config
from lmlab.errors import ConfigError
from lmlab.registry import FAMILIES, resolve_family
from lmlab.strict import Strict, validate_strict

SECTIONS = ("data", "tokenizer", "model", "train", "sample")


class ArmSpec(Strict):
    """One arm: partial run-config sections merged over the shared ones, or an existing run dir."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    run: str | None = None
    """An existing lmlab run dir: evaluated with the others, never trained (its seed is its own)."""
    data: dict[str, Any] = Field(default_factory=dict)
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    sample: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _run_or_config(self) -> ArmSpec:
        if self.run is not None and any(getattr(self, s) for s in SECTIONS):
            raise ValueError(f"arm {self.name}: a run dir is evaluated as it was trained; drop its config sections")
        return self


class EvalSpec(Strict):
    tasks: list[str] = Field(default_factory=list)
    """Tasks or groups of ``lmlab eval`` (val loss and bits-per-byte are always reported)."""
    max_examples: int | None = Field(None, ge=1)
    data_dir: str | None = None
    """Local eval data laid out like ../shared/data (None: $LMLAB_EVAL_DATA, else the hub)."""
    max_input_len: int | None = Field(None, ge=2)
    batch_size: int = Field(32, ge=1)


class MatchParams(Strict):
    """Solve one width of every other trained arm so its parameters match ``arm``'s."""

    arm: str
    width: Literal["d_ff", "d_model"] = "d_ff"
    widths: dict[str, Literal["d_ff", "d_model"]] = Field(default_factory=dict)
    """Per-arm exceptions (a family without a d_ff, the abstractinator, solves d_model)."""
    tolerance: float = Field(0.02, gt=0, lt=1)
    """Relative: |params - target| <= tolerance x target, else the spec is refused."""


class DatasetSpec(Strict):
    """One dataset of a multi-dataset comparison: its sections go over the shared ones."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    data: dict[str, Any] = Field(default_factory=dict)
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


class CompareSpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    out_dir: str | None = None
    """Where the comparison lives (default ``compare/<name>``): one run dir per arm and seed."""
    description: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    tokenizer: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    sample: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [1337], min_length=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    match_params: MatchParams | None = None
    datasets: list[DatasetSpec] = Field(default_factory=list)
    """Several datasets (each its own tokenizer and held-out split): every arm x seed on each,
    under ``<root>/<dataset>/``; empty: the shared ``data`` and ``tokenizer`` alone."""
    arms: list[ArmSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> CompareSpec:
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arm names must differ: {', '.join(dup)} used twice")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must differ: {self.seeds}")
        if self.match_params is not None:
            ref = next((a for a in self.arms if a.name == self.match_params.arm), None)
            if ref is None:
                raise ValueError(f"match_params.arm {self.match_params.arm!r} is not an arm ({', '.join(names)})")
            extra = sorted(set(self.match_params.widths) - set(names))
            if extra:
                raise ValueError(f"match_params.widths names {', '.join(extra)}, not arms ({', '.join(names)})")
        datasets = [d.name for d in self.datasets]
        if len(set(datasets)) != len(datasets):
            raise ValueError(f"dataset names must differ: {datasets}")
        return self

    def parts(self) -> list[tuple[str | None, CompareSpec]]:
        """(dataset name, the single-dataset spec for it), or [(None, self)] without datasets."""
        if not self.datasets:
            return [(None, self)]
        out = []
        for d in self.datasets:
            merged = {s: deep_merge(getattr(self, s), getattr(d, s, {}) or {}) for s in SECTIONS}
            out.append((d.name, self.model_copy(update={**merged, "datasets": [],
                                                        "out_dir": str(self.root / d.name)})))
        return out

    @property
    def root(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("compare") / self.name

    def run_dir(self, arm: ArmSpec, seed: int) -> Path:
        """An arm's run dir for one seed (an existing run dir arm: that dir)."""
        return Path(arm.run) if arm.run is not None else self.root / arm.name / f"seed{seed}"

    def seeds_of(self, arm: ArmSpec) -> list[int]:
        return [self.seeds[0]] if arm.run is not None else list(self.seeds)

    def arm_raw(self, arm: ArmSpec, seed: int) -> dict[str, Any]:
        """The run config of one arm and seed, before the shared tokenizer and matched width."""
        raw: dict[str, Any] = {}
        for section in SECTIONS:
            raw[section] = deep_merge(getattr(self, section), getattr(arm, section))
        raw["train"] = {**raw["train"], "seed": seed, "out_dir": str(self.run_dir(arm, seed))}
        need = required_tokenizer(raw["model"])
        if need is not None and raw["tokenizer"].get("type") != need:
            raw["tokenizer"] = {"type": need}  # a family that reads one unit (bytes) keeps it
        return raw


def required_tokenizer(model: dict[str, Any]) -> str | None:
    """The tokenizer a model section's family must read (the abstractinator: byte), if any."""
    try:
        family = resolve_family(model.get("family", DEFAULT_FAMILY))[0]
    except ConfigError:
        return None  # validation names the family
    return FAMILIES[family][0].required_tokenizer


def load_spec(path: str | Path, overrides: list[str] | None = None) -> CompareSpec:
    """Read and check a spec: strict keys, then every trained arm x seed as a run config (all
    problems in one error, each naming its arm)."""
    raw = apply_overrides(read_config_file(path), overrides or [])
    spec = validate_strict(CompareSpec, raw, str(path))
    problems = []
    for dataset, part in spec.parts():
        for arm in part.arms:
            if arm.run is not None:
                if not (Path(arm.run) / "checkpoints").is_dir():
                    problems.append(f"arm {arm.name}: run {arm.run} is not an lmlab run dir (no checkpoints/)")
                continue
            where = f"arm {arm.name}" + (f" on {dataset}" if dataset else "")
            try:
                validate_config(part.arm_raw(arm, part.seeds[0]), source=where)
            except ConfigError as e:
                problems.append(str(e))
    problems = list(dict.fromkeys(problems))
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")
    return spec


def dump_spec(spec: CompareSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def resolved(spec: CompareSpec, arm: ArmSpec, seed: int, extra: dict[str, Any]) -> RunConfig:
    """The validated run config of an arm and seed, with ``extra`` (shared tokenizer, matched
    width) merged over it."""
    return validate_config(deep_merge(spec.arm_raw(arm, seed), extra), source=f"arm {arm.name}")

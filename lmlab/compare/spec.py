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

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

from lmlab import rundir
from lmlab.config import DEFAULT_FAMILY, RunConfig
from lmlab.configure import apply_overrides, deep_merge, read_config_file, validate_config
from lmlab.errors import ConfigError
from lmlab.fsio import check_input
from lmlab.registry import FAMILIES, resolve_family
from lmlab.strict import Strict, validate_strict
from lmlab.train_config import Seed, TrainConfig

SECTIONS = ("data", "tokenizer", "model", "train", "sample")
SPEC_EXAMPLE = "a YAML spec, e.g. configs/compare/headline.yaml"


class TuneSpec(Strict):
    """What every arm tunes at every size: one train key over a grid (``tune: {lr: [1e-3, 3e-3]}``).

    The grid key is any key of the train section (``lr``, ``muon_lr``, ``warmup_steps``); the
    value with the lowest validation loss at the end of its budget wins. Tuning ``lr`` moves
    ``min_lr`` with it (the arm's min_lr / lr is kept), so the schedule's shape stays the same."""

    key: str = "lr"
    """The tuned train key (written as the grid's own key: ``tune: {lr: [...]}``)."""
    values: list[float] = Field(min_length=2)
    method: Literal["grid", "halving"] = "grid"
    """``grid``: every value trains its whole budget; ``halving``: successive halving (every value
    starts, the worse half pauses at each of ``rungs``; the winners continue the same schedule)."""
    rungs: list[float] = Field(default_factory=lambda: [0.25, 0.5, 1.0], min_length=1)
    at: Literal["every", "smallest"] = "every"
    """Search at every size, or at the smallest only and carry the winner up by ``carry``."""
    carry: Literal["same", "inverse_width"] = "same"
    """``same``: the smallest size's value at every size; ``inverse_width``: scaled by the
    smallest size's d_model over each size's (Adam's hidden-layer lr under muP goes as 1/width)."""
    extend: bool = False
    """A winner on the edge of the grid grows the grid one point that way, until it is inside."""
    max_extend: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _check(self) -> TuneSpec:
        if self.key not in TrainConfig.model_fields:
            raise ValueError(f"tune.{self.key}: not a train key; tune one of lr, min_lr, muon_lr, warmup_steps, "
                             "weight_decay, ...")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"tune.{self.key}: the grid repeats a value: {self.values}")
        if sorted(self.rungs) != self.rungs or self.rungs[-1] != 1.0 or self.rungs[0] <= 0:
            raise ValueError(f"tune.rungs: fractions of the budget rising to 1.0, e.g. [0.25, 0.5, 1.0]; got {self.rungs}")
        return self


def tune_form(raw: Any, where: str = "tune") -> Any:
    """``{lr: [...], method: halving}`` -> ``{key: lr, values: [...], method: halving}``: the
    grid is written under its own key, as users write it."""
    if not isinstance(raw, dict) or "key" in raw or "values" in raw:
        return raw
    own = set(TuneSpec.model_fields)
    grids = [k for k in raw if k not in own]
    if len(grids) != 1:
        raise ConfigError(f"{where}: give exactly one train key with its grid, e.g. tune: {{lr: [1e-3, 3e-3]}}; "
                          f"got {', '.join(map(str, grids)) or 'none'}")
    return {**{k: v for k, v in raw.items() if k in own}, "key": grids[0], "values": raw[grids[0]]}


class ScaleSpec(Strict):
    """A ladder of sizes: every trained arm at each rung, matched to the baseline's rung."""

    sizes: list[dict[str, Any]] = Field(min_length=2)
    """Model keys per rung, smallest first (``{n_layer: 2, d_model: 64}``), merged over every arm's
    model section; an arm with other keys gives its own ``sizes`` (the same number of rungs)."""
    match: Literal["params", "flops"] = "params"
    """What ``match_params`` solves each arm's width for at each rung: the baseline's parameters,
    or its training FLOPs per token (``ModelConfig.flops_per_token``)."""
    tokens_per_param: float | None = Field(None, gt=0)
    """Budget per rung: this many tokens per baseline parameter (the same tokens for every arm)."""
    flops: list[float] | None = None
    """Budget per rung in training FLOPs (one per rung): each arm trains flops / its FLOPs per token."""
    seeds_at: Literal["largest", "every"] = "largest"
    """Where every spec seed trains the tuned value; elsewhere the first seed alone."""

    @model_validator(mode="after")
    def _budget(self) -> ScaleSpec:
        if (self.tokens_per_param is None) == (self.flops is None):
            raise ValueError("scale: give one budget per rung: tokens_per_param, or flops (a list, one per rung)")
        if self.flops is not None and (len(self.flops) != len(self.sizes) or min(self.flops) <= 0):
            raise ValueError(f"scale.flops: one positive budget per rung ({len(self.sizes)}), got {self.flops}")
        return self


class ExecutionSpec(Strict):
    """How trials run: here (``local``, ``jobs`` at once) or on a SLURM cluster through submitit."""

    executor: Literal["local", "submitit"] = "local"
    jobs: int = Field(1, ge=1)
    """Trials at once on this machine: one per GPU on a GPU machine; on a CPU the cores are split."""
    submitit: dict[str, Any] = Field(default_factory=dict)
    """``folder`` (logs, default ``<root>/submitit``), ``local: true`` (submitit's local executor,
    no cluster), and any ``AutoExecutor.update_parameters`` key (``slurm_partition``,
    ``timeout_min``, ``gpus_per_node``, ...)."""


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
    tune: dict[str, Any] | None = None
    """The arm's own grid or search settings, over the shared ``tune`` (``{lr: [...]}``)."""
    sizes: list[dict[str, Any]] | None = None
    """The arm's own model keys per rung (a family whose sizes are other keys)."""

    @model_validator(mode="after")
    def _run_or_config(self) -> ArmSpec:
        if self.run is not None and (any(getattr(self, s) for s in SECTIONS) or self.tune or self.sizes):
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
    seeds: list[Seed] = Field(default_factory=lambda: [1337], min_length=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    match_params: MatchParams | None = None
    datasets: list[DatasetSpec] = Field(default_factory=list)
    """Several datasets (each its own tokenizer and held-out split): every arm x seed on each,
    under ``<root>/<dataset>/``; empty: the shared ``data`` and ``tokenizer`` alone."""
    tune: TuneSpec | None = None
    """Tune each arm's ``tune.key`` at each size before comparing (see :class:`TuneSpec`)."""
    scale: ScaleSpec | None = None
    """Compare over a ladder of sizes and fit loss against compute (see :class:`ScaleSpec`)."""
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
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
        if self.scale is not None:
            if self.match_params is None:
                raise ValueError("scale needs match_params: the baseline arm whose rungs the others match")
            for arm in self.arms:
                if arm.run is not None:
                    raise ValueError(f"arm {arm.name}: a scaling comparison trains every arm; drop run")
                if arm.sizes is not None and len(arm.sizes) != len(self.scale.sizes):
                    raise ValueError(f"arm {arm.name}: sizes has {len(arm.sizes)} rungs, scale.sizes "
                                     f"{len(self.scale.sizes)}")
        if (self.tune is not None or self.scale is not None) and any(a.run is not None for a in self.arms):
            raise ValueError("tune and scale train every arm; drop the arms given as run dirs")
        for i, arm in enumerate(self.arms):
            earlier = {a.name for a in self.arms[:i] if a.run is None}
            for name in arm_refs(arm):
                if name not in earlier:
                    raise ValueError(f"arm {arm.name}: {REF}{name} names no trained arm listed before it; an "
                                     f"arm cites the run dir of an earlier one (e.g. load_base_from: {REF}stage1)")
                if self.scale is not None:
                    raise ValueError(f"arm {arm.name}: {REF}{name}: run dirs are cited between arms of a "
                                     "comparison without scale (one size)")
        return self

    @property
    def scaling(self) -> bool:
        """Whether this is a tuned and/or scaled comparison (``lmlab/compare/scaling.py``)."""
        return self.tune is not None or self.scale is not None

    def n_rungs(self) -> int:
        return len(self.scale.sizes) if self.scale is not None else 1

    def arm_tune(self, arm: ArmSpec) -> TuneSpec | None:
        """The arm's search: the shared ``tune`` with the arm's own keys over it (an arm's own
        grid, ``{lr: [...]}``, replaces the shared grid and keeps its other settings)."""
        if arm.tune is None:
            return self.tune
        base = self.tune.model_dump() if self.tune is not None else {}
        own, where = dict(arm.tune), f"arm {arm.name}: tune"
        if any(k not in TuneSpec.model_fields for k in own):
            base.pop("key", None)
            base.pop("values", None)
            own = tune_form(own, where)
        return validate_strict(TuneSpec, {**base, **own}, where)

    def rung_model(self, arm: ArmSpec, rung: int) -> dict[str, Any]:
        """The model keys rung ``rung`` sets on ``arm`` (empty without a ladder)."""
        if self.scale is None:
            return {}
        return dict((arm.sizes or self.scale.sizes)[rung])

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

    def arm_named(self, name: str) -> ArmSpec:
        return next(a for a in self.arms if a.name == name)

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


def load_spec(path: str | Path, overrides: list[str] | None = None, arms: list[str] | None = None) -> CompareSpec:
    """Read and check a spec: strict keys, then every trained arm x seed as a run config (all
    problems in one error, each naming its arm). ``arms``: run only these (:func:`select_arms`)."""
    raw = apply_overrides(read_config_file(path, "compare spec", SPEC_EXAMPLE), overrides or [])
    if arms:
        raw = select_arms(raw, arms, str(path))
    if isinstance(raw.get("tune"), dict):
        raw["tune"] = tune_form(raw["tune"], f"{path}: tune")
    spec = validate_strict(CompareSpec, raw, str(path))
    # the spec's own paths, in the one line each that every path gets (empty, a loop, a pipe, a
    # compare dir planted inside a run dir)
    if spec.out_dir is not None:
        rundir.check_out_dir(spec.out_dir, f"{path}: out_dir")
    if spec.eval.data_dir is not None:
        check_input(spec.eval.data_dir, f"{path}: eval.data_dir", "dir", "give a folder laid out like shared/data",
                    must_exist=True)
    problems = []
    for dataset, part in spec.parts():
        for arm in part.arms:
            if arm.run is not None:
                check_input(arm.run, f"{path}: arm {arm.name}: run", "any", "give a run dir")
                if not (Path(arm.run) / "checkpoints").is_dir():
                    problems.append(f"arm {arm.name}: run {arm.run} is not an lmlab run dir (no checkpoints/)")
                continue
            where = f"arm {arm.name}" + (f" on {dataset}" if dataset else "")
            try:
                for rung in range(part.n_rungs()):
                    raw = deep_merge(part.arm_raw(arm, part.seeds[0]), {"model": part.rung_model(arm, rung)})
                    validate_config(raw, source=where + (f" at rung {rung}" if part.scale else ""))
                part.arm_tune(arm)
            except ConfigError as e:
                problems.append(str(e))
    problems = list(dict.fromkeys(problems))
    if problems:
        raise ConfigError(f"{path}: {'; '.join(problems)}")
    return spec


def select_arms(raw: dict[str, Any], names: list[str], where: str) -> dict[str, Any]:
    """The spec ``raw`` with only the arms ``names`` and those they need: the ``match_params``
    arm (the others are sized against it) and every arm an ``arm:NAME`` value cites, in the
    spec's order. An unknown name is refused in one line that lists the arms."""
    arms = raw.get("arms")
    if not isinstance(arms, list):
        return raw  # validation says what is wrong with the spec's arms
    have = [a.get("name") for a in arms if isinstance(a, dict)]
    unknown = [n for n in names if n not in have]
    if unknown:
        raise ConfigError(f"{where}: --arms names {', '.join(unknown)}, not arms of the spec "
                          f"({', '.join(map(str, have))})")
    keep = set(names)
    match = raw.get("match_params")
    if isinstance(match, dict) and match.get("arm") in have:
        keep.add(match["arm"])

    def cited(node: Any) -> set[str]:
        if isinstance(node, str) and node.startswith(REF):
            return {node[len(REF):]}
        if isinstance(node, dict):
            return set().union(*map(cited, node.values())) if node else set()
        if isinstance(node, list):
            return set().union(*map(cited, node)) if node else set()
        return set()

    while True:  # a cited arm may cite another
        more = set().union(*(cited(a) for a in arms if isinstance(a, dict) and a.get("name") in keep)) - keep
        if not more & set(have):
            break
        keep |= more & set(have)
    return {**raw, "arms": [a for a in arms if isinstance(a, dict) and a.get("name") in keep]}


def dump_spec(spec: CompareSpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


REF = "arm:"
"""A config value ``arm:NAME`` in an arm's sections is the run dir of arm NAME at the same seed
(tuned: its winning value's trial): a stage-2 arm loads a stage-1 arm's weights
(``load_base_from: arm:stage1``). The cited arm is listed earlier and finishes first."""


def arm_refs(arm: ArmSpec) -> list[str]:
    """The arms whose run dirs ``arm``'s config cites (``arm:NAME`` values), in order."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and value.startswith(REF):
            found.append(value[len(REF):])

    for section in SECTIONS:
        walk(getattr(arm, section))
    return found


def with_refs(raw: Any, run_of: Callable[[str], Path]) -> Any:
    """``raw`` with every ``arm:NAME`` value replaced by ``run_of(NAME)`` (a run dir path)."""
    if isinstance(raw, dict):
        return {k: with_refs(v, run_of) for k, v in raw.items()}
    if isinstance(raw, list):
        return [with_refs(v, run_of) for v in raw]
    if isinstance(raw, str) and raw.startswith(REF):
        return str(run_of(raw[len(REF):]))
    return raw


def resolved(spec: CompareSpec, arm: ArmSpec, seed: int, extra: dict[str, Any]) -> RunConfig:
    """The validated run config of an arm and seed, with ``extra`` (shared tokenizer, matched
    width) merged over it."""
    return validate_config(deep_merge(spec.arm_raw(arm, seed), extra), source=f"arm {arm.name}")

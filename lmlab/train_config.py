"""The ``train`` section of a run config: budget, optimizer, precision, parallelism, batch probing.

Split out of ``config.py`` (which re-exports every name here) at the section's seam: it is the
part the scale path grows (FSDP, ZeRO, GPU knobs, adaptive batch).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    field_validator,
    model_validator,
)

from lmlab.strict import Strict

BUDGET_KEYS = ("max_steps", "max_tokens", "epochs")

INT64_MAX = 2**63 - 1
"""The largest integer torch and numpy take (int64); pydantic takes any Python int."""


def _int64(value: int) -> int:
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise ValueError("beyond a 64-bit integer (-2**63 .. 2**63 - 1), which torch and numpy cannot hold; "
                         "give a smaller value")
    return value


def _seed(value: int) -> int:
    if not 0 <= value <= INT64_MAX:
        raise ValueError("a seed goes from 0 to 2**63 - 1 (numpy takes no negative seed, torch none past 64 bits)")
    return value


Int = Annotated[int, AfterValidator(_int64)]
"""Every integer knob of every schema: a value past int64 is refused here, in one line, instead of
overflowing in torch or numpy later (tests/test_integers.py checks no int field goes without it).
Its own ``Field(ge=..., le=...)`` still applies."""
Seed = Annotated[int, AfterValidator(_seed)]
"""A random seed: 0 .. 2**63 - 1, what every consumer takes (torch.manual_seed, torch.Generator,
numpy's SeedSequence, which refuses negatives), with room for the trainer's ``seed + rank`` and
``seed + 1000 * step``."""

MAX_THREADS = 1024
"""Above any machine's cores: more intra-op threads than that only oversubscribe it."""
MAX_WORKERS = 256
"""Data-loading worker processes per rank: each is a spawned Python process; 10**12 of them would
fork until the machine gives out."""
MAX_STEP_SEQUENCES = 2**20
"""Sequences per rank per optimizer step (micro-batch x accumulation): a million, past any real
batch; the data sampler plans every step's windows in arrays this long."""
MAX_CONTEXT = 2**24
"""Context, window and vocabulary sizes stop here (16,777,216): past anything trained today, and a
bound that keeps position tables and token dtypes within reach."""


class DistributedConfig(Strict):
    """Process-group knobs (seed 000's ``train.distributed``)."""

    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """``auto``: nccl on CUDA, gloo on CPU."""
    zero_optimizer: bool = False
    """Shard the AdamW state over the ranks (``ZeroRedundancyOptimizer``; ``parallel: ddp``)."""


class FsdpConfig(Strict):
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) options, used with ``parallel: fsdp``."""

    cpu_offload: bool = False
    """Keep the sharded parameters, gradients and optimizer state in CPU memory (CUDA only)."""
    reshard_after_forward: bool = True
    """Free each block's gathered weights after its forward (less memory, one more all-gather)."""


class MlflowConfig(Strict):
    """``train.trackers: [mlflow]`` (seed 003): one MLflow run per lmlab run dir, resumed with it."""

    experiment: str = "lmlab"
    """The MLflow experiment (seed 003's ``project_name``)."""
    tracking_uri: str | None = None
    """None: a sqlite store in the run dir, ``sqlite:///RUN/mlflow.db`` (``mlflow ui
    --backend-store-uri sqlite:///RUN/mlflow.db`` reads it offline)."""
    run_name: str | None = None
    """None: the run dir's name."""
    batch_interval: Int = Field(10, ge=1)
    """Metric rows sent per ``log_batch`` call (seed 003's ``mlflow_batch_interval``)."""


class TensorBoardConfig(Strict):
    """``train.trackers: [tensorboard]``: event files for ``tensorboard --logdir``."""

    log_dir: str | None = None
    """None: ``RUN/tensorboard``."""


class WandbConfig(Strict):
    """``train.trackers: [wandb]``: one Weights & Biases run per lmlab run dir, resumed with it
    (its id is kept in ``RUN/wandb_run.json``); the run config is the W&B run's config."""

    project: str = "lmlab"
    entity: str | None = None
    """None: the account's default entity."""
    run_name: str | None = None
    """None: the run dir's name."""
    mode: Literal["online", "offline", "disabled"] | None = None
    """None: ``WANDB_MODE`` when it is set; else online when ``WANDB_API_KEY`` is set, offline
    otherwise (no network needed; ``wandb sync RUN/wandb/offline-run-*`` uploads it later)."""
    dir: str | None = None
    """Where W&B writes its ``wandb/`` folder; None: the run dir."""
    tags: list[str] = Field(default_factory=list)


class AdaptiveBatchConfig(Strict):
    """``batch_size: auto``: the micro-batch is the largest that fits in the GPU's memory (seed 000).

    The optimizer step always takes ``max_batch_size x grad_accum_steps`` sequences per process,
    as if ``batch_size`` were ``max_batch_size``: the probe picks a micro-batch that divides that
    and accumulates the rest, so the micro-batch never changes the math.
    """

    enabled: bool = True
    probe_batch_size: Int = Field(2, ge=1, le=MAX_STEP_SEQUENCES)
    """The first micro-batch tried; the search doubles from there."""
    min_batch_size: Int = Field(1, ge=1, le=MAX_STEP_SEQUENCES)
    max_batch_size: Int = Field(64, ge=1, le=MAX_STEP_SEQUENCES)
    safety_factor: float = Field(0.9, gt=0, le=1)
    """Use at most this share of the device's memory at the probed peak."""
    reprobe_interval_steps: Int = Field(0, ge=0)
    """Probe again every this many steps (0: only at the start)."""

    @model_validator(mode="after")
    def _range(self) -> AdaptiveBatchConfig:
        if self.min_batch_size > self.max_batch_size:
            raise ValueError(f"min_batch_size ({self.min_batch_size}) exceeds max_batch_size ({self.max_batch_size})")
        return self


class TrainConfig(Strict):
    out_dir: str = "runs/default"
    init_from: str | None = None
    """Start a new run from these weights: a run dir (its newest snapshot), a snapshot folder or a
    Hugging Face GPT-2 / Llama folder. Weights only: a fresh optimizer, schedule and data
    position, in ``out_dir``, on this config's data. The model config and the tokenizer come with
    the weights (``configure.resolve_init_from``): a model key that reshapes a weight, or any
    other tokenizer, is refused. Once ``out_dir`` has a snapshot, the run continues from it."""
    seed: Seed = 1337
    device: str = "auto"
    """``auto`` (cuda if available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    num_threads: Int | None = Field(None, ge=1, le=MAX_THREADS)
    batch_size: Annotated[Int, Field(ge=1)] | Literal["auto"] = 16
    """Sequences per micro-batch per process; the global batch is this x grad_accum x world.
    ``auto``: probe the GPU's memory for the micro-batch (``adaptive_batch``)."""
    adaptive_batch: AdaptiveBatchConfig = Field(default_factory=AdaptiveBatchConfig)
    grad_accum_steps: Int = Field(1, ge=1)
    seq_len: Int | None = Field(None, ge=1, le=MAX_CONTEXT)
    """Training and eval window length in tokens; None: ``model.block_size`` (it may not exceed it)."""
    max_steps: Int | None = Field(1000, ge=1)
    """Training budget: max_steps, max_tokens (global tokens) or epochs over the train split.
    max_steps beside max_tokens or epochs caps them (seed 003: ``num_epochs`` with ``max_steps``)."""
    max_tokens: Int | None = Field(None, ge=1)
    epochs: float | None = Field(None, gt=0)
    max_seconds: float | None = Field(None, gt=0)
    """A wall-clock cap: stop (evaluate, save) at the first step after this many seconds of
    training, summed over resumes. A cap, like max_steps beside another budget: the schedule
    still follows the step budget, and where it stops depends on the machine."""
    stop_at_step: Int | None = Field(None, ge=1)
    """Pause the run after this step (evaluate, save a snapshot, write metrics.json) while the
    schedule stays the full budget's: a later run with a higher stop_at_step (or none) resumes it
    exactly where a straight run would be; successive halving in ``lmlab compare`` pauses trials
    at its rungs. It may change on resume; one at or below the snapshot's step trains nothing."""
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    warmup_steps: Int = Field(100, ge=0)
    part_lr: dict[str, PositiveFloat] = Field(default_factory=dict)
    """The lr of a part of the model as a multiple of ``lr`` (``{top: 2.0}``); the parts are the
    family's own (``LanguageModel.param_parts``: the abstractinator's are encoder, entropy,
    expander and top), a part left out follows ``lr``. The schedule scales every part alike."""
    part_warmup: dict[str, NonNegativeInt] = Field(default_factory=dict)
    """A part's own linear warmup in steps (``{top: 100}``), its cosine (or wsd) starting after it;
    a part left out warms up over ``warmup_steps``."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """After the linear warmup: ``cosine`` decays to min_lr over the rest of the budget; ``wsd``
    (warmup-stable-decay, Hägele et al. 2024) holds lr, then decays linearly to min_lr over the
    last ``decay_fraction`` of the steps (a short run spends most of its steps at full lr)."""
    decay_fraction: float = Field(0.2, gt=0, le=1)
    """``wsd``: the share of the post-warmup steps spent decaying."""
    weight_decay: float = Field(0.1, ge=0)
    optimizer: Literal["adamw", "muon"] = "adamw"
    """``muon``: ``torch.optim.Muon`` (orthogonalised momentum) for the hidden weight matrices the
    family names (``LanguageModel.muon_parameters``: by default the nn.Linear weights but the
    output head), AdamW for embeddings, the head, norms, biases and the family's other
    parameters. Single process, DDP and FSDP (a sharded matrix's update is all-gathered for
    Newton-Schulz, every rank keeping its rows); not with ZeRO."""
    muon_lr: float | None = Field(None, gt=0)
    """Muon's peak lr; None: ``lr``, with Muon's update scaled to AdamW's RMS
    (``adjust_lr_fn="match_rms_adamw"``) so one lr serves both. The schedule scales it like lr."""
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0)
    """Max global grad norm; 0 disables clipping."""
    on_nonfinite: Literal["stop", "skip_step"] = "stop"
    """A non-finite loss or gradient norm (all ranks agree): ``stop`` with one line naming the step
    and the last good snapshot (nothing non-finite is saved); ``skip_step`` drops that optimizer
    step and stops after ``max_nonfinite_steps`` consecutive ones."""
    max_nonfinite_steps: Int = Field(10, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    """``torch.compile`` the model."""
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    """Data parallelism (``lmlab/training/parallel.py``): ``auto`` is ddp under torchrun, none
    otherwise; ``fsdp`` shards parameters, gradients and optimizer state per block (FSDP2)."""
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    fsdp: FsdpConfig = Field(default_factory=FsdpConfig)
    save_optimizer_state: bool = True
    """false: snapshots keep weights, step and data position but not the optimizer state
    (smaller), so a resume continues with a fresh optimizer and is not bit-exact."""
    allow_tf32: bool = False
    """TF32 matmuls and convolutions on Ampere/Hopper GPUs (faster, ~1e-3 relative error)."""
    matmul_precision: Literal["highest", "high", "medium"] | None = None
    """``torch.set_float32_matmul_precision`` for the run (None: leave PyTorch's setting)."""
    fused_adamw: Literal["auto"] | bool = "auto"
    """The fused AdamW kernel: ``auto`` uses it where PyTorch has it (CUDA, CPU)."""
    grad_checkpoint: bool = False
    """Recompute each block's activations in backward (less memory, ~1/3 more compute)."""
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    log_interval: Int = Field(10, ge=1)
    eval_interval: Int = Field(200, ge=1)
    eval_batches: Int = Field(20, ge=1)
    eval_tasks: list[str] = Field(default_factory=list)
    """Benchmarks of ``lmlab eval`` scored on the model while it trains: task names, groups
    (``titans``), ``file:PATH``; a string ``piqa,hellaswag`` is split at its commas. Scored every
    ``eval_tasks_interval`` steps and at the last step with ``lmlab eval``'s numbers, logged as
    ``tasks/<task>/<metric>`` (metrics.jsonl, every tracker, metrics.json's ``tasks``); the names
    are checked with the task table when the config is validated (``configure``). The data:
    ``$LMLAB_EVAL_DATA`` (a folder laid out like shared/data), else the HF hub. Empty: none."""
    eval_tasks_interval: Int | None = Field(None, ge=1)
    """Steps between task evaluations; None: ``eval_interval``."""
    eval_tasks_max_examples: Int | None = Field(500, ge=1)
    """The first this many examples (documents, for wikitext2) of each task are scored each
    time; None: all of them (hellaswag has 10,042)."""
    save_interval: Int = Field(200, ge=1)
    progress: bool = True
    """A progress bar when stderr is a terminal; otherwise one plain line per log interval."""
    trackers: list[Literal["jsonl", "mlflow", "tensorboard", "wandb"]] = Field(default_factory=lambda: ["jsonl"])
    """Where metrics go; ``jsonl`` (``metrics.jsonl``, what lmlab reads back) is always on.
    mlflow, tensorboard and wandb need ``pip install 'lmlab[track]'``."""
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    tensorboard: TensorBoardConfig = Field(default_factory=TensorBoardConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    save_best: bool = True
    """Keep the weights of the best validation loss so far as ``checkpoints/best`` (seed 004)."""
    peak_tflops: float | None = Field(None, gt=0)
    """The device's peak dense TFLOPS at the run's precision, for MFU on a GPU lmlab's table
    does not know (``training/telemetry.py``)."""
    eval_planner_diagnostics: bool = False
    """Planner families (apelr): add the planner diagnostics to planner_eval.json at every eval."""
    final_eval_planner_diagnostics: bool = True
    """Planner families: write the final planner diagnostics to planner_eval.json."""

    @field_validator("eval_tasks", mode="before")
    @classmethod
    def _split_tasks(cls, value: object) -> object:
        # --set train.eval_tasks=piqa,hellaswag gives a string, as lmlab eval --tasks takes one
        return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_budget(self) -> TrainConfig:
        # Setting max_tokens or epochs replaces the default max_steps; a max_steps set beside them caps them.
        if "max_steps" not in self.model_fields_set and (self.max_tokens or self.epochs):
            object.__setattr__(self, "max_steps", None)
        if self.optimizer == "muon" and self.distributed.zero_optimizer:
            raise ValueError("optimizer: muon with distributed.zero_optimizer: ZeRO shards one optimizer class; "
                             "use adamw with ZeRO, or muon without it")
        if self.batch_target * self.grad_accum_steps > MAX_STEP_SEQUENCES:
            raise ValueError(f"batch_size x grad_accum_steps = {self.batch_target * self.grad_accum_steps:,} sequences "
                             f"per rank per step, over {MAX_STEP_SEQUENCES:,}; lower train.batch_size or "
                             "train.grad_accum_steps")
        if self.max_tokens is not None and self.epochs is not None:
            raise ValueError("set only one of max_tokens and epochs (max_steps may cap either)")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.optimizer == "muon" and (self.part_lr or self.part_warmup):
            raise ValueError("part_lr / part_warmup with optimizer: muon: Muon's groups follow muon_lr; "
                             "use adamw for per-part learning rates")
        if self.allow_tf32 and self.matmul_precision == "highest":
            raise ValueError("allow_tf32: true and matmul_precision: highest contradict each other; drop one")
        return self

    @property
    def batch_target(self) -> int:
        """Sequences per micro-batch slot: ``batch_size``, or with ``auto`` the adaptive maximum
        (the micro-batch the probe may split into smaller ones)."""
        return self.adaptive_batch.max_batch_size if self.batch_size == "auto" else self.batch_size

"""The bad-input catalogue (issue 16): one row per case, run by ``test_catalogue.py``.

Every case must fail the user-error way: exit 2 (or ``LmlabError`` from the Python API) with one
line naming what was wrong, no traceback, and ``{run}`` (a trained run dir that exists before the
case) byte-identical after it. Add a row to add a case.

Placeholders: ``{cfg}`` a valid tiny config (training into ``{tmp}/new``), ``{run}`` the trained run,
``{copy}`` a one-snapshot copy of it that ``damage`` breaks first, ``{tmp}`` a fresh folder per case,
``{corpus}`` the test corpus folder, ``{file}`` a text file, ``{fifo}`` a FIFO, ``{binary}`` a file of
bytes that are not UTF-8, ``{empty}`` an empty file, ``{emptydir}`` an empty folder, ``{loop}`` a
symlink that points at itself, ``{unreachable}`` a path whose folder cannot be made (under /proc).
``files`` are written into ``{tmp}`` first (name -> text).

Beside the cases written one by one, the classes (issue 28) are generated from tables, one file
each, so that the next case of a class is covered before anyone finds it: ``class_*.py`` define
``ROWS``, dicts of ``Case`` fields, added to ``CASES`` at the end of this file.
"""

from __future__ import annotations

import runpy
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...] = ()
    """``lmlab`` arguments, or for ``api`` cases the call's name then KEY=VALUE arguments."""
    needles: tuple[str, ...] = ()
    """Substrings the one error line must contain."""
    api: bool = False
    damage: str | None = None
    files: dict[str, str | bytes] = field(default_factory=dict)


def cli(id: str, *argv: str, needles: tuple[str, ...] | str = (), damage: str | None = None,
        files: dict[str, str | bytes] | None = None) -> Case:
    return Case(id, tuple(argv), (needles,) if isinstance(needles, str) else needles, False, damage, files or {})


def train_set(id: str, *sets: str, needles: tuple[str, ...] | str = ()) -> Case:
    """``lmlab train --config {cfg} --set S ...``: a bad value for a fresh run."""
    argv = ["train", "--config", "{cfg}"] + [x for s in sets for x in ("--set", s)]
    return cli(id, *argv, needles=needles)


def resume_set(id: str, *sets: str, needles: tuple[str, ...] | str = ()) -> Case:
    """``lmlab train --resume {run} --set S ...``: a change the trained run refuses."""
    argv = ["train", "--resume", "{run}"] + [x for s in sets for x in ("--set", s)]
    return cli(id, *argv, needles=needles)


def sample_run(id: str, *args: str, needles: tuple[str, ...] | str = ()) -> Case:
    """``lmlab sample --checkpoint {run} ARGS``: a bad sampling flag for the trained run."""
    return cli(id, "sample", "--checkpoint", "{run}", *args, needles=needles)


def api(id: str, *call: str, needles: tuple[str, ...] | str = ()) -> Case:
    return Case(id, tuple(call), (needles,) if isinstance(needles, str) else needles, True)


CASES: list[Case] = [
    # ---------------------------------------------------------------- command line (argparse)
    cli("cli-no-command", needles="required: command"),
    cli("cli-unknown-command", "fly", needles="invalid choice: 'fly'"),
    cli("cli-sample-no-checkpoint", "sample", needles="--checkpoint"),
    sample_run("cli-sample-zero-samples", "--num-samples", "0", needles="--num-samples: must be at least 1"),
    sample_run("cli-sample-bad-int", "--max-new-tokens", "ten", needles="--max-new-tokens: invalid int value"),
    cli("cli-eval-no-tasks", "eval", "--checkpoints", "{run}", needles="--tasks"),
    cli("cli-eval-zero-batch", "eval", "--checkpoints", "{run}", "--tasks", "piqa", "--batch-size", "0",
        needles="--batch-size: must be at least 1"),
    cli("cli-eval-zero-stride", "eval", "--checkpoints", "{run}", "--tasks", "piqa", "--stride", "0",
        needles="--stride"),
    cli("cli-train-unknown-flag", "train", "--confg", "{cfg}", needles="unrecognized arguments"),
    cli("cli-report-text-and-file", "report", "{run}", "--text", "x", "--file", "{tmp}/f.txt",
        needles="not allowed with argument"),
    cli("cli-import-missing-args", "import-gpt2", needles="required: hf_dir, run_dir"),
    # ------------------------------------------------------------------------- config files
    cli("cfg-missing-file", "train", "--config", "{tmp}/nope.yaml", needles=("config file", "nope.yaml: no such file or folder")),
    cli("cfg-yaml-syntax", "train", "--config", "{tmp}/bad.yaml", needles=("bad.yaml: line 3, column 1: cannot parse", "while parsing"),
        files={"bad.yaml": "train:\n  lr: [1,\n"}),
    cli("cfg-json-syntax", "train", "--config", "{tmp}/bad.json", needles=("bad.json: line 1, column", "cannot parse"),
        files={"bad.json": '{"train": {"lr": 1,}}'}),
    cli("cfg-top-level-list", "train", "--config", "{tmp}/list.yaml", needles="must be a mapping of sections",
        files={"list.yaml": "- a\n- b\n"}),
    cli("cfg-section-not-mapping", "train", "--config", "{tmp}/s.yaml", needles="train",
        files={"s.yaml": "train: 5\n"}),
    cli("cfg-model-not-mapping", "train", "--config", "{tmp}/m.yaml", needles="model: expected a mapping",
        files={"m.yaml": "model: transformer\n"}),
    cli("cfg-unknown-section", "train", "--config", "{tmp}/u.yaml", needles="trainer",
        files={"u.yaml": "trainer: {lr: 1}\n"}),
    cli("cfg-not-utf8", "train", "--config", "{binary}", needles="save it as UTF-8"),
    cli("cfg-is-a-folder", "train", "--config", "{emptydir}", needles="is a folder; give a .yaml or .json file"),
    cli("cfg-fifo", "train", "--config", "{fifo}", needles="is not a regular file (a pipe"),
    # ------------------------------------------------------------------ config values (--set)
    train_set("set-no-equals", "train.lr", needles="--set train.lr"),
    train_set("set-no-key", "=3", needles="--set '=3': expected section.key=value"),
    train_set("set-unknown-key", "train.lrr=1", needles="train.lrr"),
    train_set("set-unknown-section", "foo.bar=1", needles="foo"),
    train_set("lr-negative", "train.lr=-1", needles="train.lr"),
    train_set("lr-text", "train.lr=fast", needles="train.lr"),
    train_set("batch-zero", "train.batch_size=0", needles="train.batch_size"),
    train_set("batch-text", "train.batch_size=many", needles="train.batch_size"),
    train_set("accum-zero", "train.grad_accum_steps=0", needles="train.grad_accum_steps"),
    train_set("seq-len-zero", "train.seq_len=0", needles="train.seq_len"),
    train_set("warmup-negative", "train.warmup_steps=-1", needles="train.warmup_steps"),
    train_set("max-tokens-negative", "train.max_tokens=-5", needles="train.max_tokens"),
    train_set("precision-fp8", "train.precision=fp8", needles="train.precision"),
    train_set("parallel-tp", "train.parallel=tp", needles="train.parallel"),
    train_set("on-nonfinite-ignore", "train.on_nonfinite=ignore", needles="train.on_nonfinite"),
    train_set("device-gpu", "train.device=gpu", needles="'gpu' is not a device name"),
    train_set("device-cuda-on-cpu", "train.device=cuda:7", needles="device 'cuda:7'"),
    train_set("backend-unknown", "train.distributed.backend=mpi", needles="train.distributed.backend"),
    train_set("out-dir-is-file", "train.out_dir={file}", needles="is a file, not a folder"),
    train_set("num-threads-zero", "train.num_threads=0", needles="train.num_threads"),
    train_set("eval-interval-zero", "train.eval_interval=0", needles="train.eval_interval"),
    train_set("family-unknown", "model.family=lstm", needles="lstm"),
    train_set("preset-unknown", "model.preset=huge", needles="huge"),
    train_set("layers-zero", "model.n_layer=0", needles="model.n_layer"),
    train_set("heads-indivisible", "model.n_head=3", needles="divisible by n_head"),
    train_set("dropout-one", "model.dropout=1.5", needles="model.dropout"),
    train_set("block-size-one", "model.block_size=1", needles="model.block_size"),
    train_set("pos-encoding-unknown", "model.pos_encoding=xyz", needles="model.pos_encoding"),
    train_set("mlp-unknown", "model.mlp=relu", needles="model.mlp"),
    train_set("model-unknown-key", "model.n_layerz=3", needles="n_layerz"),
    train_set("vocab-mismatch", "model.vocab_size=10", needles="model.vocab_size = 10"),
    train_set("absurd-depth", "model.n_layer=100000", "model.d_model=2048", "model.n_head=16",
              needles=("cannot train here", "GiB")),
    train_set("absurd-width", "model.d_model=1000000", "model.n_head=1", needles="cannot train here"),
    train_set("abstractinator-char", "model.family=abstractinator", needles="tokenizer"),
    train_set("tokenizer-unknown", "tokenizer.type=morse", needles="tokenizer.type"),
    train_set("bpe-vocab-tiny", "tokenizer.type=bpe", "tokenizer.vocab_size=1", needles="tokenizer.vocab_size"),
    train_set("sources-empty", "data.sources=[]", needles="data.sources"),
    train_set("source-missing", "data.sources=[{type: text, path: /no/such/dir}]", needles="no such file or folder"),
    train_set("source-fifo", "data.sources=[{type: text, path: '{fifo}'}]", needles="not a regular file"),
    train_set("source-empty-file", "data.sources=[{type: text, path: '{empty}'}]", needles="corpus is empty"),
    train_set("source-no-glob-match", "data.sources=[{type: text, path: '{emptydir}'}]",
              needles="no files matching glob"),
    train_set("source-type-unknown", "data.sources=[{type: parquet, path: x}]", needles="parquet"),
    train_set("source-binary-char", "data.sources=[{type: text, path: '{binary}'}]", needles="UTF-8"),
    train_set("val-fraction-big", "data.val_fraction=1.5", needles="data.val_fraction"),
    train_set("weights-length", "data.source_weights=[1, 2]", needles="source_weights"),
    train_set("sample-temp-negative", "sample.temperature=-1", needles="sample.temperature"),
    train_set("sample-top-p-zero", "sample.top_p=0", needles="sample.top_p"),
    train_set("grad-clip-text", "train.grad_clip=none", needles="train.grad_clip"),
    train_set("adaptive-batch-typo", "train.adaptive_batch.max_batch=4", needles="max_batch"),
    train_set("fsdp-abstractinator", "model.family=abstractinator", "tokenizer.type=byte", "train.parallel=fsdp",
              needles="fsdp"),
    # ------------------------------------------------------------------- resuming a run dir
    cli("resume-missing-dir", "train", "--resume", "{tmp}/nope", needles="no checkpoint there"),
    cli("resume-empty-dir", "train", "--resume", "{emptydir}", needles="no checkpoint there"),
    cli("resume-with-config", "train", "--resume", "{run}", "--config", "{cfg}", needles="drop --config"),
    resume_set("resume-model-change", "model.n_layer=3", needles="model.n_layer = 2"),
    resume_set("resume-seed-change", "train.seed=8", needles="train.seed = 7"),
    resume_set("resume-data-change", "data.val_fraction=0.2", needles="data.val_fraction"),
    resume_set("resume-family-change", "model.family=apelr", needles="family apelr != transformer"),
    resume_set("resume-seq-len-change", "train.seq_len=16", needles="windows of 32 tokens"),
    resume_set("resume-tokenizer-change", "tokenizer.type=byte", needles="tokenizer.type"),
    resume_set("resume-bad-lr", "train.lr=-3", needles="train.lr"),
    resume_set("resume-fsdp-unsharded", "train.parallel=fsdp", needles="saved without parallel: fsdp"),
    cli("config-into-other-run", "train", "--config", "{cfg}", "--set", "train.out_dir={run}",
        "--set", "model.n_layer=3", needles="model.n_layer = 2"),
    cli("load-base-missing", "train", "--config", "{cfg}", "--load-base-from", "{tmp}/nope.safetensors",
        needles="--load-base-from"),
    train_set("tracker-unknown", "train.trackers=[neptune]", needles="train.trackers"),
    train_set("mlflow-batch-zero", "train.mlflow.batch_interval=0", needles="train.mlflow.batch_interval"),
    train_set("peak-tflops-negative", "train.peak_tflops=-1", needles="train.peak_tflops"),
    # ------------------------------------------------------------------------------ sample
    cli("sample-missing-run", "sample", "--checkpoint", "{tmp}/nope", needles="run dir not found"),
    cli("sample-empty-dir", "sample", "--checkpoint", "{emptydir}", needles="no checkpoint found"),
    cli("sample-no-best", "sample", "--checkpoint", "{copy}", "--snapshot", "best", damage="no-best",
        needles="no best snapshot"),
    sample_run("sample-snapshot-unknown", "--snapshot", "oldest", needles="--snapshot: invalid choice"),
    sample_run("sample-device-cuda", "--device", "cuda", needles="device 'cuda'"),
    sample_run("sample-device-bogus", "--device", "tpu9", needles="'tpu9'"),
    sample_run("sample-prompts-missing", "--prompts-file", "{tmp}/p.txt", needles="--prompts-file"),
    sample_run("sample-prompts-binary", "--prompts-file", "{binary}", needles="--prompts-file"),
    sample_run("sample-unknown-chars", "--prompt", "日本語", needles="char tokenizer never saw"),
    sample_run("sample-top-p-big", "--top-p", "2", needles="top_p"),
    sample_run("sample-temperature-negative", "--temperature", "-1", needles="temperature"),
    sample_run("sample-force-state-transformer", "--force-state", "1", needles="force_state"),
    sample_run("sample-planner-no-heads", "--planner-rerank", "4", needles="auxiliary"),
    # -------------------------------------------------------------------------------- eval
    cli("eval-unknown-task", "eval", "--checkpoints", "{run}", "--tasks", "mmlu_pro_max", needles="mmlu_pro_max"),
    cli("eval-missing-run", "eval", "--checkpoints", "{tmp}/nope", "--tasks", "file:{file}", needles="not found"),
    cli("eval-missing-file-task", "eval", "--checkpoints", "{run}", "--tasks", "file:{tmp}/none.txt",
        needles=("file:{tmp}/none.txt: no such file",)),
    cli("eval-binary-file-task", "eval", "--checkpoints", "{run}", "--tasks", "file:{binary}", needles="not UTF-8"),
    cli("eval-data-dir-missing", "eval", "--checkpoints", "{run}", "--tasks", "piqa", "--data-dir", "{tmp}/nodata",
        needles="nodata"),
    cli("eval-output-is-dir", "eval", "--checkpoints", "{run}", "--tasks", "file:{file}", "--output", "{emptydir}",
        needles="is a folder; give a file name"),
    cli("eval-output-under-file", "eval", "--checkpoints", "{run}", "--tasks", "file:{file}", "--output",
        "{file}/out.json", needles=("--output", "a file is in the way")),
    cli("eval-device-cuda", "eval", "--checkpoints", "{run}", "--tasks", "file:{file}", "--device", "cuda:0",
        needles="device 'cuda:0'"),
    cli("doctor-unknown-check", "doctor", "--device", "cpu", "--out", "{tmp}/r", "--skip", "speed",
        needles="--skip: unknown check(s) ['speed']"),
    cli("doctor-unknown-family", "doctor", "--device", "cpu", "--out", "{tmp}/r", "--families", "rnn",
        needles="--families: unknown ['rnn']"),
    cli("doctor-device-cuda", "doctor", "--device", "cuda", "--out", "{tmp}/r", needles="device 'cuda'"),
    # ----------------------------------------------------------------- interop and reports
    cli("import-missing-dir", "import-gpt2", "{tmp}/hf", "{tmp}/out", needles="hf"),
    cli("import-no-config", "import-gpt2", "{emptydir}", "{tmp}/out", needles="config.json"),
    cli("import-weights-not-safetensors", "import-gpt2", "{tmp}/hf", "{tmp}/out",
        needles=("model.safetensors: not a readable safetensors file",),
        files={"hf/config.json": '{"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8, '
                                 '"vocab_size": 10, "n_positions": 16}',
               "hf/model.safetensors": "a renamed pickle, not safetensors"}),
    cli("import-into-run", "import-gpt2", "{emptydir}", "{run}", needles="already holds a checkpoint"),
    cli("export-rope-model", "export-gpt2", "{run}", "{tmp}/hf", needles=("cannot export to GPT-2", "model.pos_encoding='rope'")),
    cli("export-missing-run", "export-gpt2", "{tmp}/nope", "{tmp}/hf", needles="not found"),
    cli("report-not-abstractinator", "report", "{run}", "--text", "hi", needles="abstractinator"),
    cli("report-file-missing", "report", "{run}", "--file", "{tmp}/none.txt", needles="--file"),
    # ------------------------------------------------------------ damaged checkpoints ({copy})
    cli("ckpt-weights-torn", "sample", "--checkpoint", "{copy}", damage="weights-torn",
        needles=("no usable checkpoint", "model.safetensors is truncated")),
    cli("ckpt-meta-not-json", "sample", "--checkpoint", "{copy}", damage="meta-not-json",
        needles=("no usable checkpoint", "meta.json does not match its checksum")),
    cli("ckpt-old-meta-not-json", "sample", "--checkpoint", "{copy}", damage="old-meta-not-json",
        needles="meta.json is not valid JSON"),
    cli("ckpt-meta-edited", "sample", "--checkpoint", "{copy}", damage="meta-edited",
        needles="meta.json does not match its checksum"),
    cli("ckpt-meta-missing", "sample", "--checkpoint", "{copy}", damage="meta-missing", needles="no meta.json"),
    cli("ckpt-sums-garbage", "sample", "--checkpoint", "{copy}", damage="sums-garbage",
        needles="SHA256SUMS line 1"),
    cli("ckpt-format-99", "sample", "--checkpoint", "{copy}", damage="format-99", needles="format_version 99"),
    cli("ckpt-not-safetensors", "sample", "--checkpoint", "{copy}", damage="not-safetensors",
        needles="not a safetensors file"),
    cli("ckpt-trainer-pickle", "train", "--resume", "{copy}", damage="trainer-pickle",
        needles="trainer.pt holds pickled objects"),
    cli("ckpt-trainer-torn-resume", "train", "--resume", "{copy}", damage="trainer-torn",
        needles="trainer.pt is truncated"),
    cli("ckpt-config-weights-disagree", "sample", "--checkpoint", "{copy}", damage="config-weights-disagree",
        needles=("weights do not fit", "missing from the file: blocks.2")),
    cli("ckpt-no-tokenizer", "sample", "--checkpoint", "{copy}", damage="no-tokenizer", needles="tokenizer"),
    cli("ckpt-tokenizer-meta-corrupt", "sample", "--checkpoint", "{copy}", damage="tokenizer-meta-corrupt",
        needles="tokenizer_meta.json"),
    cli("ckpt-eval-all-broken", "eval", "--checkpoints", "{copy}", "--tasks", "file:{file}", damage="weights-torn",
        needles="no usable checkpoint"),
    cli("ckpt-resume-all-broken", "train", "--resume", "{copy}", damage="weights-torn",
        needles="no usable checkpoint"),
    # ---------------------------------------------------------------------------- Python API
    api("api-load-missing", "load", "run_dir={tmp}/nope", needles="run dir not found"),
    api("api-load-device", "load", "run_dir={run}", "device=cuda", needles="device 'cuda'"),
    api("api-train-bad-key", "train", "train.lrr=1", needles="train.lrr"),
    api("api-train-bad-value", "train", "train.lr=-1", needles="train.lr"),
    api("api-train-into-run-changed", "train", "train.out_dir={run}", "model.n_layer=3", needles="model.n_layer"),
    api("api-generate-zero-tokens", "generate", "run_dir={run}", "max_new_tokens=0", needles="max_new_tokens"),
    api("api-generate-bad-knob", "generate", "run_dir={run}", "top_k=-2", needles="top_k"),
    api("api-evaluate-no-checkpoints", "evaluate", "tasks=piqa", needles="--checkpoints"),
    api("api-evaluate-unknown-task", "evaluate", "checkpoints={run}", "tasks=nope", needles="nope"),
    api("api-config-missing", "load_config", "path={tmp}/none.yaml",
        needles=("config file", "none.yaml: no such file or folder")),
]

# The classes: every path-typed key or flag, every integer knob, every reader, each crossed with
# its kinds of bad input (the signals class runs separately: tests/reliability/test_signals.py).
CLASSES = ("class_paths.py", "class_integers.py", "class_readers.py")
CLASS_COUNTS: dict[str, int] = {}
for _name in CLASSES:
    _path = Path(__file__).with_name(_name)
    if _path.is_file():
        _rows = runpy.run_path(str(_path))["ROWS"]
        CLASS_COUNTS[_name] = len(_rows)
        CASES += [Case(**{k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}) for row in _rows]

"""The ``lmlab`` command line: the parser of every subcommand (one function each) and the check
of every path argument before a command runs. ``cli.py`` holds what each command does."""

from __future__ import annotations

import argparse

from lmlab import __version__, rundir
from lmlab.fsio import check_path
from lmlab.registry import FAMILIES
from lmlab.train_config import INT64_MAX

DESCRIPTION = "Train, sample and evaluate experimental language models beside a transformer baseline."


# Every path argument: command -> argparse dest -> (flag, role, what to give). Roles (fsio.check_path):
# in_* (read; a missing one is its reader's to say), need_* (read, must exist), out_* (written), each
# _file, _dir or _any (a run dir is _any: a path inside one reads that run dir); out_run: a run is
# made there (rundir.check_out_dir: never inside another run dir).
PATHS: dict[str, dict[str, tuple[str, str, str]]] = {
    "train": {"config": ("--config", "in_file", "a .yaml or .json file"), "resume": ("--resume", "in_any", "a run dir")},
    "prepare": {"config_file": ("CONFIG", "in_file", "a .yaml or .json file"),
                "config": ("--config", "in_file", "a .yaml or .json file")},
    "sample": {"checkpoint": ("--checkpoint", "in_any", "a run dir"),
               "prompts_file": ("--prompts-file", "need_file", "a text file with one prompt per line")},
    "eval": {"checkpoints": ("--checkpoints", "in_any", "a run dir or an HF GPT-2 / Llama folder"),
             "output": ("--output", "out_file", "a file name"), "tasks": ("--tasks file:", "in_file", "a text file"),
             "data_dir": ("--data-dir", "need_dir", "a folder laid out like shared/data")},
    "import-hf": {"hf_dir": ("HF_DIR", "need_dir", "an HF GPT-2 or Llama folder"), "run_dir": ("RUN_DIR", "out_run", ""),
                  "tokenizer_from": ("--tokenizer-from", "need_any", "a run dir")},
    "export-hf": {"run_dir": ("RUN_DIR", "in_any", "a run dir"), "out_dir": ("OUT_DIR", "out_dir", "a new folder")},
    "report": {"paths": ("RUN_OR_COMPARE", "need_any", "a run dir or a compare dir"),
               "file": ("--file", "need_file", "a UTF-8 text file"), "out": ("--out", "out_dir", "a folder")},
    "doctor": {"out": ("--out", "out_dir", "a folder")}, "compare": {"spec": ("SPEC", "in_file", "a spec (.yaml)")},
    "config": {"file": ("FILE", "in_any", "a config file or a run dir")},
}
PATHS["import-gpt2"], PATHS["export-gpt2"] = PATHS["import-hf"], PATHS["export-hf"]  # the aliases


def check_paths(args: argparse.Namespace) -> None:
    """Every path argument of the command, checked before it runs (``fsio.check_path``): one line
    for each way a path is wrong, before anything is read or written."""
    table = dict(PATHS.get(args.command, {}))
    if args.command == "train":  # the families' train flags that name a path
        table.update({field: (spec["flags"][0], "need_any", "a file or a run dir") for cfg_cls, _ in FAMILIES.values()
                      for field, spec in cfg_cls.train_flags.items() if spec.get("path")})
    if args.command == "report" and (args.text is not None or args.file is not None):
        table["out"] = ("--out", "out_file", "a file name (.html)")  # a family report is one page
    if args.command == "config" and args.action == "convert":
        table["file"] = ("FILE", "in_file", "a config file")
    for dest, (what, role, give) in table.items():
        value = getattr(args, dest, None)
        if dest == "tasks":  # only its file:PATH items are paths
            value = [t.strip()[5:] for t in value.split(",") if t.strip().startswith("file:")]
        for v in value if isinstance(value, list) else [] if value is None else [value]:
            _ = rundir.check_out_dir(v, what) if role == "out_run" else check_path(v, what, role, f"give {give}")


def _seed(value: str) -> int:
    n = int(value)
    if not 0 <= n <= INT64_MAX:  # the range of sample.seed / train.seed (numpy and torch both take it)
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**63 - 1 ({INT64_MAX}), got {n}")
    return n


MAX_SAMPLES = 10_000
"""``--num-samples`` at most: each prompt is repeated that many times before decoding starts."""


def _num_samples(value: str) -> int:
    n = _positive_int(value)
    if n > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SAMPLES:,} per prompt, got {n:,}; run sample again "
                                         "for more")
    return n


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong, and where to read more), exit 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _family_train_flags(parser: argparse.ArgumentParser) -> None:
    """The ``lmlab train`` flags families declare (``ModelConfig.train_flags``: a model field
    set from the command line, e.g. the abstractinator's ``--load-base-from``), a group each."""
    for name, (cfg_cls, _) in FAMILIES.items():
        if not cfg_cls.train_flags:
            continue
        group = parser.add_argument_group(f"{name} training")
        for field, spec in cfg_cls.train_flags.items():
            group.add_argument(*spec["flags"], dest=field, default=None, metavar=spec.get("metavar"),
                               help=f"{spec['help']} (sets model.{field})")


def _family_flags(parser: argparse.ArgumentParser) -> None:
    """A group of ``lmlab sample`` flags per family that declares decoding options
    (``LanguageModel.generation_flags``); an option two families share is added once."""
    done: set[str] = set()
    for name, (_, model_cls) in FAMILIES.items():
        flags = {k: v for k, v in getattr(model_cls, "generation_flags", {}).items() if k not in done}
        if not flags:
            continue
        group = parser.add_argument_group(f"{name} decoding")
        for option, spec in flags.items():
            spec = dict(spec)
            group.add_argument(spec.pop("flag"), dest=option, default=None, **spec)
            done.add(option)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lmlab", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"lmlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_train, _add_prepare, _add_run, _add_sample, _add_eval, _add_config, _add_interop, _add_doctor,
                _add_compare, _add_report):
        add(sub)
    return p


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a model (resumes the run dir's checkpoint if it has one)")
    t.add_argument("--config", "-c", help="YAML or JSON run config (default: built-in defaults)")
    t.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, parsed as YAML (repeatable), e.g. --set train.lr=3e-4")
    t.add_argument("--resume", "--resume_from_checkpoint", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or the run dir holding that path) from its latest checkpoint")
    _family_train_flags(t)


def _add_prepare(sub) -> None:
    r = sub.add_parser("prepare", help="build (or reuse) a config's tokenizer and token cache without training; "
                                       "lmlab train on the same config then reuses both, under torchrun too")
    r.add_argument("config_file", nargs="?", metavar="CONFIG", help="YAML or JSON run config (or give --config)")
    r.add_argument("--config", "-c", help="the same, as lmlab train spells it")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a config value, parsed as YAML (repeatable), as in lmlab train")


def _add_run(sub) -> None:
    sub.add_parser("run", help="the zero-flag continuous trainer (python main.py): pick a preset in "
                               "configs/presets, train 100M more tokens of one model, resume always")


def _add_sample(sub) -> None:
    s = sub.add_parser("sample", help="generate text from a trained run")
    s.add_argument("--checkpoint", required=True, metavar="RUN_DIR",
                   help="run dir to load (a snapshot folder in it loads that snapshot; any other path inside "
                        "a run dir loads the run dir's newest)")
    s.add_argument("--prompt", action="append", help="a prompt (repeatable; default: the run's sample.prompts)")
    s.add_argument("--prompts-file", help="a file with one prompt per line")
    s.add_argument("--num-samples", type=_num_samples, default=1, help=f"samples per prompt (at most {MAX_SAMPLES:,})")
    s.add_argument("--max-new-tokens", type=int)
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-k", type=int)
    s.add_argument("--top-p", type=float)
    s.add_argument("--repetition-penalty", type=float)
    s.add_argument("--no-repeat-ngram-size", type=int)
    s.add_argument("--seed", type=_seed, help="random seed, 0 to 2**63 - 1 (default: the run's sample.seed)")
    s.add_argument("--greedy", action="store_true", help="always take the most likely token")
    s.add_argument("--no-stop-on-eos", action="store_true", help="keep going past the end-of-text token")
    s.add_argument("--device", default="cpu")
    s.add_argument("--snapshot", choices=("latest", "best"), default="latest",
                   help="which snapshot: the newest (default) or the best validation loss (train.save_best)")
    g_ = s.add_argument_group("planner-guided decoding (models trained with model.auxiliary heads)")
    g_.add_argument("--planner-rerank", type=_positive_int, metavar="N",
                    help="draw N candidates per token, roll each with the dynamics head and re-score with the "
                         "value head before committing (defaults then: top-p 0.9, 3-gram blocking)")
    g_.add_argument("--planner-depth", type=_positive_int, default=2, metavar="D",
                    help="latent rollout steps per candidate (default 2; >1 needs the policy head)")
    g_.add_argument("--planner-value-weight", type=float, default=1.0, metavar="L",
                    help="score = log p(candidate) - L * predicted future NLL (default 1; 0 = LM-only rerank)")
    p_ = s.add_argument_group("plan report (families that record a plan while decoding)")
    p_.add_argument("--lookahead-steps", type=int, metavar="N",
                    help="print the planner's forecast beliefs N chunks ahead and the active state per token")
    p_.add_argument("--show-plan", action="store_true", help="print which plan state was active where")
    _family_flags(s)


def _add_eval(sub) -> None:
    e = sub.add_parser("eval", help="perplexity / bits-per-byte and zero-shot tasks for checkpoints")
    e.add_argument("--checkpoints", nargs="+", required=True, metavar="RUN_DIR",
                   help="run dirs (or HF GPT-2 folders) to compare, one table column each")
    e.add_argument("--tasks", required=True, metavar="LIST|GROUP",
                   help="comma-separated tasks or a group (titans), file:PATH for any text file")
    e.add_argument("--data-dir", metavar="DIR",
                   help="local eval data laid out like shared/data (default: $LMLAB_EVAL_DATA, else the HF hub)")
    e.add_argument("--max-examples", type=_positive_int, metavar="N", help="score the first N examples of each task")
    e.add_argument("--max-input-len", type=_positive_int, metavar="N",
                   help="most tokens per scored sequence, context cut from the left; the model reads N-1 of them "
                        "(lm-eval's max_length) (default: block_size + 1, so the model reads block_size)")
    e.add_argument("--batch-size", type=_positive_int, default=32, metavar="N")
    e.add_argument("--stride", type=_positive_int, metavar="N",
                   help="rolling perplexity: new tokens scored per window (default: max-input-len - 1, as lm-eval)")
    e.add_argument("--output", metavar="FILE", help="combined JSON (default runs/eval/eval-TIMESTAMP.json; .md beside it)")
    e.add_argument("--device", default="cpu")
    e.add_argument("--snapshot", choices=("latest", "best"), default="latest",
                   help="score each run dir's newest snapshot (default) or its best-validation one")
    e.add_argument("--progress", action="store_true", help="show a progress bar per task")


def _add_config(sub) -> None:
    k = sub.add_parser("config", help="translate a seed's config into lmlab's, or show a resolved config")
    ksub = k.add_subparsers(dest="action", required=True, parser_class=_Parser)
    kc = ksub.add_parser("convert", help="print the lmlab YAML for a config in a seed's spelling (YAML, JSON "
                                         "preset, or an Abstractinator experiments/*.py), one comment per translated key")
    kc.add_argument("file", metavar="FILE")
    ks = ksub.add_parser("show", help="print the resolved config (every key) of a run dir or a config file")
    ks.add_argument("file", metavar="RUN_DIR|FILE")
    for sp in (kc, ks):
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a value first")


def _add_interop(sub) -> None:
    for name, aliases, what in (("import-hf", ["import-gpt2"], "GPT-2 or Llama"),):
        i = sub.add_parser(name, aliases=aliases, help=f"make an lmlab run dir from an HF {what} folder "
                                                       "(LlamaForCausalLM, GPT2LMHeadModel; import-gpt2 is an alias)")
        i.add_argument("hf_dir", help="folder with config.json, model.safetensors (or pytorch_model.bin), tokenizer")
        i.add_argument("run_dir", help="new lmlab run dir to create")
        i.add_argument("--tokenizer-from", metavar="RUN_DIR", help="take the tokenizer of this lmlab run dir")
    x = sub.add_parser("export-hf", aliases=["export-gpt2"],
                       help="write an lmlab transformer run as an HF folder: Llama (rope, rmsnorm, swiglu) or GPT-2 "
                            "(learned positions, layernorm, gelu); export-gpt2 is an alias that insists on GPT-2")
    x.add_argument("run_dir")
    x.add_argument("out_dir", help="new folder (must not exist or be empty)")
    x.add_argument("--to", choices=("llama", "gpt2"), help="the format (default: the one the model fits)")


def _add_doctor(sub) -> None:
    d = sub.add_parser("doctor", help="the validation suite (GPU-01..08) for every family on this machine; "
                                      "exits 1 when a check fails")
    d.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    d.add_argument("--out", default="reports/gpu", metavar="DIR", help="reports go to DIR/<UTC>/ (default reports/gpu)")
    d.add_argument("--families", metavar="LIST", help="comma-separated families (default: all)")
    which = d.add_mutually_exclusive_group()
    which.add_argument("--only", metavar="LIST", help="comma-separated checks to run, by id or name, e.g. GPU-03 or "
                                                     "throughput,generation (GPU-01..08, compile, flex)")
    which.add_argument("--skip", metavar="LIST", help="comma-separated checks to skip, by id or name, e.g. "
                                                     "compile,GPU-05")
    d.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                   help="on CPU: run the DDP/FSDP parity check with N=2 processes (GPU: the device count)")


def _add_compare(sub) -> None:
    m = sub.add_parser("compare", help="train every arm of a comparison spec on one tokenizer, batch order and "
                                       "budget, score them, and write results.json, report.md and report.html")
    m.add_argument("spec", metavar="SPEC", help="a comparison spec (YAML), e.g. configs/compare/headline.yaml")
    m.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec value, e.g. --set seeds=[1]")
    m.add_argument("--jobs", type=_positive_int, metavar="N",
                   help="trials at once in a tuned comparison (one per GPU; on a CPU the cores are split); "
                        "over the spec's execution.jobs")
    m.add_argument("--arms", metavar="A,B", help="run only these arms (comma-separated), with the match_params "
                                                 "arm and any arm they cite as arm:NAME")


def _add_report(sub) -> None:
    own = ", ".join(f"{n}: {m.text_report}" for n, (_, m) in FAMILIES.items() if m.text_report)
    rr = sub.add_parser("report", help="charts and a table of run dirs and compare dirs (report.html, report.md, "
                                       f"results.json); with --text or --file, a run's family report ({own})")
    rr.add_argument("paths", nargs="+", metavar="RUN_OR_COMPARE")
    rr.add_argument("--out", metavar="PATH", help="where to write (default: PATH/report for one path, else ./report; "
                                                  "a family report: RUN/<report>.html)")
    src = rr.add_mutually_exclusive_group()
    src.add_argument("--text", help="the text of the run's family report (e.g. where it cuts patches)")
    src.add_argument("--file", metavar="FILE", help="a UTF-8 text file for the run's family report")

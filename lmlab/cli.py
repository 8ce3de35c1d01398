"""The ``lmlab`` command: thin subcommands over plain functions.

User errors (bad config, missing file, wrong checkpoint) print one line and exit 2; an
interrupted training run saves a snapshot and exits 128 + the signal (130, 143 for SIGTERM).
The parser and the path checks are in cli_args.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import yaml

from lmlab import compat, rundir, runs
from lmlab.api import load
from lmlab.cli_args import build_parser, check_paths
from lmlab.compare.report import collect_dirs, write_reports
from lmlab.compare.run import run_compare
from lmlab.configure import (
    apply_overrides,
    deep_merge,
    load_config,
    read_any_config,
    validate_config,
)
from lmlab.console import run_command
from lmlab.continuous import main as run_main
from lmlab.doctor import failures, run_doctor
from lmlab.errors import LmlabError
from lmlab.eval.runner import evaluate
from lmlab.interop.hf import export_hf, import_hf
from lmlab.registry import FAMILIES, generation_option_owners
from lmlab.training.loop import train
from lmlab.training.prepare import prepare
from lmlab.training.resume import check_family_kept, check_in_place, past_the_pause


def _cmd_train(args: argparse.Namespace) -> None:
    overrides = list(args.set or [])
    extra: dict = {}
    for cfg_cls, _ in FAMILIES.values():  # the families' own train flags set model.<field>
        for field in cfg_cls.train_flags:
            if getattr(args, field, None) is not None:  # a value, not a --set string
                extra.setdefault("model", {})[field] = getattr(args, field)
    if args.resume:
        run = Path(args.resume)
        if not rundir.has_checkpoint(run):
            above = rundir.enclosing_run_dir(run)
            if above is None:
                raise LmlabError(f"--resume {run}: no checkpoint there (expected {run}/checkpoints/current)")
            warnings.warn(f"--resume {run} is inside run dir {above}: resuming that run", stacklevel=1)
            run = above
        if args.config:
            raise LmlabError("--resume continues a run with its own config.yaml; drop --config (use --set to change train.*)")
        # The run dir goes in as a value, not a --set string: "2024" must stay a path, not a number.
        raw = {"train": {"out_dir": str(run)}, **extra}
        if rundir.config_path(run).is_file():
            check_family_kept(run, read_any_config(rundir.config_path(run))[0], overrides)
            cfg = load_config(rundir.config_path(run), overrides, raw=raw, saved=True)
        else:  # the snapshot carries the whole config too (config.yaml lost, or a copied snapshot)
            saved = runs.checkpoint_config(rundir.latest_snapshot(run).meta)
            check_family_kept(run, saved, overrides)
            cfg = load_config(None, overrides, raw=deep_merge(saved, raw))
        check_in_place(run, cfg)
        past_the_pause(run, cfg, overrides)
    else:
        cfg = load_config(args.config, overrides, raw=extra or None)
    train(cfg)


def _cmd_prepare(args: argparse.Namespace) -> None:
    if args.config_file and args.config:
        raise LmlabError(f"lmlab prepare: give the config once, as CONFIG or --config (got {args.config_file} "
                         f"and {args.config})")
    print(prepare(load_config(args.config_file or args.config, list(args.set or []))).text())


def _cmd_sample(args: argparse.Namespace) -> None:
    lm = load(args.checkpoint, device=args.device, snapshot=args.snapshot)
    prompts = list(args.prompt or [])
    if args.prompts_file:
        try:
            text = Path(args.prompts_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LmlabError(f"--prompts-file {args.prompts_file}: cannot read it ({e.__class__.__name__}: {e})") from None
        lines = [line for line in text.splitlines() if line]
        if not lines:  # an empty file is a mistake, not "use the run's prompts"
            raise LmlabError(f"--prompts-file {args.prompts_file} has no prompts (it is empty or blank); write one "
                             "prompt per line, or drop --prompts-file to use the run's sample.prompts")
        prompts += lines
    if not prompts:
        prompts = list(lm.config.sample.prompts)
    prompts = [p for p in prompts for _ in range(args.num_samples)]
    knobs = {k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p",
                                            "repetition_penalty", "no_repeat_ngram_size", "seed")}
    knobs = {k: v for k, v in knobs.items() if v is not None}
    if args.planner_rerank:
        knobs.update(planner_rerank=args.planner_rerank, planner_depth=args.planner_depth,
                     planner_value_weight=args.planner_value_weight)
        # The seed's decoding in this mode, unless asked otherwise: nucleus + n-gram blocking.
        knobs.setdefault("top_p", 0.9)
        knobs.setdefault("no_repeat_ngram_size", 3)
        if args.top_k is None:
            knobs["top_k"] = None
    if args.greedy:
        knobs["temperature"] = 0.0
    if args.no_stop_on_eos:
        knobs["stop_on_eos"] = False
    given = {k: getattr(args, k) for k in generation_option_owners()}
    planner = lm._family_options({k: v for k, v in given.items() if v is not None})
    settings = lm.settings(**knobs)
    if args.lookahead_steps is not None or args.show_plan:
        for i, prompt in enumerate(prompts):
            text, plan = lm.generate_with_plan(prompt, lookahead_steps=args.lookahead_steps or 0,
                                               **planner, **settings.model_dump())
            print(f"--- sample {i + 1} ---\n{text}\n")
            print("plan: " + _plan_line(prompt, plan))
            if plan and args.lookahead_steps:
                first = plan[0]
                print("belief at the first new token: " + _probs(first["belief"]))
                for h, forecast in enumerate(first["lookahead"], 1):
                    print(f"  lookahead +{h} chunk(s): " + _probs(forecast))
            print()
        return
    context = lm.model.block_size
    longest = max(len(lm.tokenizer.encode(p)) for p in prompts) + 1
    if context and longest + settings.max_new_tokens > context:
        print(f"note: prompt + max_new_tokens ({longest + settings.max_new_tokens}) exceeds the context "
              f"({context}); the window slides (the model sees the last {context // 2}+ tokens)",
              file=sys.stderr)
    texts = lm.generate_batch(prompts, **planner, **settings.model_dump())
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}\n")


def _probs(p: list[float]) -> str:
    return "[" + " ".join(f"{x:.2f}" for x in p) + "]"


def _plan_line(prompt: str, plan: list[dict]) -> str:
    """The generated text with ``[sK]`` wherever the active plan state changes."""
    out, last = [prompt], None
    for step in plan:
        if step["state"] != last:
            out.append(f"[s{step['state']}]")
            last = step["state"]
        out.append(step["token"])
    return "".join(out).replace("\n", "\\n")


def _cmd_eval(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or os.environ.get("LMLAB_EVAL_DATA") or None
    output = args.output or Path("runs/eval") / time.strftime("eval-%Y%m%d-%H%M%S.json")
    report = evaluate(args.checkpoints, args.tasks, data_dir=data_dir, max_examples=args.max_examples,
                      max_input_len=args.max_input_len, batch_size=args.batch_size, stride=args.stride,
                      output=output, device=args.device, snapshot=args.snapshot, progress=args.progress)
    print("\n" + report["table"])
    print(f"results: {output} (table: {Path(output).with_suffix('.md')}); per run: RUN_DIR/eval_results.json")


def _cmd_config(args: argparse.Namespace) -> None:
    if args.action == "convert":
        raw, seed = read_any_config(args.file)
        done = compat.translate(apply_overrides(raw, list(args.set or [])), str(args.file), seed)
        validate_config(done.raw, str(args.file), translated=True)  # what it prints loads
        head = [f"# {args.file} in lmlab's spelling (lmlab config convert)"]
        head += [f"# {line}" for line in done.notes] or ["# (already lmlab's spelling: nothing to translate)"]
        model = done.raw.get("model")
        if isinstance(model, dict) and "family" in model:  # the family first: it says how to read the rest
            done.raw["model"] = {"family": model["family"], **model}
        print("\n".join(head))
        print(yaml.safe_dump(done.raw, sort_keys=False), end="")
        return
    target = Path(args.file)
    in_run = rundir.enclosing_run_dir(target) is not None and target.suffix not in (".yaml", ".yml", ".py")
    if target.is_dir() or in_run:  # a run dir, a snapshot, or a file of one (meta.json)
        run, named = rundir.resolve_run_path(target)
        if named is None and rundir.config_path(run).is_file():
            cfg = load_config(rundir.config_path(run), list(args.set or []), notes=lambda _: None, saved=True)
        else:
            snap = rundir.named_snapshot(named) if named is not None else rundir.latest_snapshot(run)
            cfg = load_config(None, list(args.set or []), raw=runs.checkpoint_config(snap.meta))
    else:
        cfg = load_config(target, list(args.set or []))
    print(f"# the resolved config of {target} (every key, defaults included)")
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")


def _cmd_import_hf(args: argparse.Namespace) -> None:
    run = import_hf(args.hf_dir, args.run_dir, tokenizer_from=args.tokenizer_from)
    print(f"imported {args.hf_dir} -> {run} (lmlab sample / eval --checkpoints {run}; fine-tune it with "
          f"train.init_from: {run})")


def _cmd_export_hf(args: argparse.Namespace) -> None:
    to = "gpt2" if args.command == "export-gpt2" else args.to
    out, kind = export_hf(args.run_dir, args.out_dir, to=to)
    head = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[kind]
    print(f"exported {args.run_dir} -> {out} (transformers.{head}.from_pretrained)")


def _cmd_doctor(args: argparse.Namespace) -> int:
    families = [f for f in (args.families or "").split(",") if f] or None
    skip = tuple(c for c in (args.skip or "").split(",") if c)
    only = tuple(c for c in (args.only or "").split(",") if c)
    folder = run_doctor(args.device, args.out, families, skip, args.processes, only=only)
    return 1 if failures(folder) else 0  # not a user error (2): the machine or a family failed a check


def _cmd_compare(args: argparse.Namespace) -> None:
    run_compare(args.spec, list(args.set or []), jobs=args.jobs,
                arms=[a for a in (args.arms or "").split(",") if a] or None)


def _cmd_report(args: argparse.Namespace) -> None:
    paths = [Path(p) for p in args.paths]
    if args.text is not None or args.file is not None:
        _family_report(paths, args)
        return
    results = collect_dirs(paths)
    single = len(paths) == 1 and not (paths[0] / "results.json").is_file()  # one run dir (not a comparison)
    # beside what it reads, never over a comparison's own results.json
    out = Path(args.out) if args.out else paths[0] / "report" if len(paths) == 1 else Path("report")
    write_reports(out, results, single_run=single)
    print(f"wrote {out}/report.html, report.md, results.json")


def _family_report(paths: list[Path], args: argparse.Namespace) -> None:
    """``lmlab report RUN --text T | --file F``: the run's family's own report on a text
    (``LanguageModel.text_report``: the abstractinator's patches)."""
    if len(paths) != 1:
        raise LmlabError(f"--text/--file report on one run dir; got {len(paths)} paths")
    if args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise LmlabError(f"--file {args.file}: cannot read it ({e.__class__.__name__}: {e})") from None
    else:
        text = args.text
    model, _, cfg, _ = runs.load_run(paths[0], "cpu")
    if model.text_report is None:
        have = ", ".join(f"{n} ({m.text_report})" for n, (_, m) in FAMILIES.items() if m.text_report)
        raise LmlabError(f"{paths[0]}: the {cfg.model.family} family has no report on a text; families with "
                         f"one: {have}")
    page, summary = model.report_on_text(text, paths[0].name)
    out = Path(args.out) if args.out else paths[0] / f"{model.text_report}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    print(summary)
    print(f"wrote {out}")


COMMANDS = {"train": _cmd_train, "prepare": _cmd_prepare, "sample": _cmd_sample, "eval": _cmd_eval, "config": _cmd_config,
            "import-hf": _cmd_import_hf, "import-gpt2": _cmd_import_hf, "export-hf": _cmd_export_hf,
            "export-gpt2": _cmd_export_hf, "doctor": _cmd_doctor,
            "compare": _cmd_compare, "report": _cmd_report}
"""Each subcommand's function (``lmlab run`` is the continuous trainer's own ``main``)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return run_main()
    code, result = run_command(f"lmlab {args.command}", lambda: _run(args))
    return code or (result if isinstance(result, int) else 0)  # a command's own code (doctor: 1 on a FAIL)


def _run(args: argparse.Namespace) -> int | None:
    check_paths(args)  # inside run_command: a refusal is its one line and exit 2
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())

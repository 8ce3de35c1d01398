"""The path class of the bad-input catalogue (issue 28): every path-typed config key and command
line flag crossed with every kind of bad path. ``catalogue.py`` adds ``ROWS`` to its cases.

A row's id is ``path-<key>-<kind>``; its needles are where (the key or flag) and the phrase of the
kind's refusal (``KIND_NEEDLE``), or a reader's own words where it says a path is missing
(``WORDING``). The checks are ``lmlab.fsio.check_path`` (every key and flag) and
``lmlab.rundir.check_out_dir`` (a folder a run is made in): see ``lmlab/cli.py`` ``_PATHS`` and
``lmlab/training/loop.py`` ``check_paths``.

Roles: ``out_run`` (a run is made there), ``out_dir`` / ``out_file`` (written, never a run),
``in_*`` (read; a missing one is its reader's to say), ``need_*`` (read, must exist); ``_any``:
a file or a folder (a run dir is one). The pairs each role accepts, and why (no row for them;
``ACCEPTED`` holds them)::

    kind     role                 why it is accepted
    in-run   out_dir, out_file    files beside a run's files, never a run: loading the run is
                                  unaffected (report's own default is RUN/report, eval writes
                                  RUN/eval_results.json)
    in-run   in_*, need_*         a file or folder of a run dir is read like any other
                                  (RUN/config.yaml, RUN/tokenizer); a run dir path inside a run
                                  dir reads that run dir, with a warning naming it
    dir      out_run, out_dir     an existing (empty) folder is what it wants
    dir      *_dir, *_any         a folder is what it wants (one that lacks what it must hold is
                                  refused by its reader: the *-empty-dir rows of catalogue.py)

Every other (key, kind) pair is refused: a row. ``train.mlflow.tracking_uri`` is a URI, not a
path (MLflow reads ``sqlite:///...`` or ``http://...``): not in the table.
"""

from __future__ import annotations

from lmlab.registry import FAMILIES

KINDS = {
    "empty": "",
    "parent-file": "{file}/sub",
    "in-run": "{run}/checkpoints",
    "unreachable": "{unreachable}",
    "fifo": "{fifo}",
    "loop": "{loop}",
    "dir": "{emptydir}",
}

KIND_NEEDLE = {
    "empty": "is empty",
    "parent-file": "is a file, not a folder",
    "in-run": "is inside run dir {run}",
    "unreachable": "cannot be made",  # an output; a need_* input: "no such file or folder"
    "fifo": "a pipe, socket or device",
    "loop": "symlink loop",
    "dir": "is a folder",
}

_TRAIN = ("train", "--config", "{cfg}")
_EVAL = ("eval", "--output", "{tmp}/eval.json", "--checkpoints")


def _src(kind: str) -> tuple[str, ...]:
    return (*_TRAIN, "--set", f"data.sources=[{{type: {kind}, path: '{{P}}'}}]")


# key -> (where the line names it, role, argv with {P} where the path goes)
KEYS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # ---------------------------------------------------------------- config keys (--set, the API)
    "train.out_dir": ("train.out_dir", "out_run", (*_TRAIN, "--set", "train.out_dir='{P}'")),
    "data.token_cache_dir": ("data.token_cache_dir", "out_dir",
                             (*_TRAIN, "--set", "data.token_cache=true", "--set", "data.token_cache_dir='{P}'")),
    "train.tensorboard.log_dir": ("train.tensorboard.log_dir", "out_dir",
                                  (*_TRAIN, "--set", "train.trackers=[jsonl, tensorboard]", "--set",
                                   "train.tensorboard.log_dir='{P}'")),
    "train.wandb.dir": ("train.wandb.dir", "out_dir",
                        (*_TRAIN, "--set", "train.trackers=[jsonl, wandb]", "--set", "train.wandb.dir='{P}'")),
    "data.sources.text.path": ("data.sources[0].path", "in_any", _src("text")),
    "data.sources.jsonl.path": ("data.sources[0].path", "in_any", _src("jsonl")),
    "data.sources.csv.path": ("data.sources[0].path", "in_any", _src("csv")),
    "data.sources.pdf.path": ("data.sources[0].path", "in_any", _src("pdf")),
    "data.sources.hf.data_files": ("data.sources[0].data_files", "need_any",
                                   (*_TRAIN, "--set", "data.sources=[{type: hf, dataset: text, data_files: '{P}'}]")),
    "tokenizer.model_path": ("tokenizer.model_path", "need_dir", (*_TRAIN, "--set", "tokenizer.model_path='{P}'")),
    # ------------------------------------------------------------------------- command line flags
    "train--config": ("--config", "in_file", ("train", "--config", "{P}")),
    "train--resume": ("--resume", "in_any", ("train", "--resume", "{P}")),
    "prepare-config": ("CONFIG", "in_file", ("prepare", "{P}")),
    "prepare--config": ("--config", "in_file", ("prepare", "--config", "{P}")),
    "sample--checkpoint": ("--checkpoint", "in_any", ("sample", "--checkpoint", "{P}")),
    "sample--prompts-file": ("--prompts-file", "need_file", ("sample", "--checkpoint", "{run}", "--prompts-file", "{P}")),
    "eval--checkpoints": ("--checkpoints", "in_any", (*_EVAL, "{P}", "--tasks", "file:{file}")),
    "eval--output": ("--output", "out_file", ("eval", "--checkpoints", "{run}", "--tasks", "file:{file}", "--output",
                                              "{P}")),
    "eval--data-dir": ("--data-dir", "need_dir", (*_EVAL, "{run}", "--tasks", "piqa", "--data-dir", "{P}")),
    "eval--tasks-file": ("--tasks file:", "in_file", (*_EVAL, "{run}", "--tasks", "file:{P}")),
    "import-gpt2-hf_dir": ("HF_DIR", "need_dir", ("import-gpt2", "{P}", "{tmp}/out")),
    "import-gpt2-run_dir": ("RUN_DIR", "out_run", ("import-gpt2", "{emptydir}", "{P}")),
    "import-gpt2--tokenizer-from": ("--tokenizer-from", "need_any",
                                    ("import-gpt2", "{emptydir}", "{tmp}/out", "--tokenizer-from", "{P}")),
    "export-gpt2-run_dir": ("RUN_DIR", "in_any", ("export-gpt2", "{P}", "{tmp}/hf")),
    "export-gpt2-out_dir": ("OUT_DIR", "out_dir", ("export-gpt2", "{run}", "{P}")),
    "report-paths": ("RUN_OR_COMPARE", "need_any", ("report", "{P}")),
    "report--out": ("--out", "out_dir", ("report", "{run}", "--out", "{P}")),
    "report--text--out": ("--out", "out_file", ("report", "{run}", "--text", "hi", "--out", "{P}")),
    "report--file": ("--file", "need_file", ("report", "{run}", "--file", "{P}")),
    "doctor--out": ("--out", "out_dir", ("doctor", "--device", "cpu", "--families", "transformer", "--out", "{P}")),
    "compare-spec": ("SPEC", "in_file", ("compare", "{P}")),
    "config-convert": ("FILE", "in_file", ("config", "convert", "{P}")),
    "config-show": ("FILE", "in_any", ("config", "show", "{P}")),
    # ------------------------------------------------------------------------ compare spec keys
    "compare.out_dir": ("out_dir", "out_run", ("compare", "{tmp}/spec.yaml", "--set", "out_dir='{P}'")),
    "compare.eval.data_dir": ("eval.data_dir", "need_dir", ("compare", "{tmp}/spec.yaml", "--set",
                                                            "out_dir='{tmp}/cmp'", "--set", "eval.data_dir='{P}'")),
    "compare.arms.run": ("run", "in_any", ("compare", "{tmp}/spec.yaml", "--set", "out_dir='{tmp}/cmp'", "--set",
                                           "arms=[{name: a, run: '{P}'}]")),
}
FILES = {k: {"spec.yaml": "name: c\ntrain: {max_steps: 1}\narms: [{name: a, model: {preset: tiny}}]\n"}
         for k in KEYS if k.startswith("compare.")}

# A family's path fields (``ModelConfig.path_fields``, and its train flags that name a path) come
# from its declaration: a family that adds one gets its rows here without an edit.
for _name, (_cls, _) in FAMILIES.items():
    _base = (*_TRAIN, "--set", f"model.family={_name}")
    _base += ("--set", "model.preset=tiny") if "tiny" in _cls.presets else ()
    _base += ("--set", f"tokenizer.type={_cls.required_tokenizer}") if _cls.required_tokenizer else ()
    _fields = {f: "need_any" for f, spec in _cls.train_flags.items() if spec.get("path")}
    _fields.update(getattr(_cls, "path_fields", {}))
    for _field, _role in _fields.items():
        KEYS[f"model.{_field}"] = (f"model.{_field}", _role, (*_base, "--set", f"model.{_field}='{{P}}'"))
    for _field, _spec in _cls.train_flags.items():
        if _spec.get("path"):
            KEYS[f"train{_spec['flags'][0]}"] = (_spec["flags"][0], "need_any", (*_base, _spec["flags"][0], "{P}"))

# (key, kind) -> the needles where a reader says "missing" in its own (older) words (in_* roles)
WORDING: dict[tuple[str, str], tuple[str, ...]] = {
    ("train--config", "unreachable"): ("config file /proc/lmlab-unreachable/sub: no such file or folder",),
    ("train--resume", "unreachable"): ("--resume", "no checkpoint there"),
    **{(k, "unreachable"): ("config file /proc/lmlab-unreachable/sub: no such file or folder",)
       for k in ("prepare-config", "prepare--config")},
    ("sample--checkpoint", "unreachable"): ("run dir not found",),
    ("eval--checkpoints", "unreachable"): ("run dir not found",),
    ("export-gpt2-run_dir", "unreachable"): ("run dir not found",),
    ("eval--tasks-file", "unreachable"): ("file:{unreachable}: no such file",),
    ("compare-spec", "unreachable"): ("compare spec file /proc/lmlab-unreachable/sub: no such file or folder",),
    ("config-convert", "unreachable"): ("config file /proc/lmlab-unreachable/sub: no such file or folder",),
    ("config-show", "unreachable"): ("config file /proc/lmlab-unreachable/sub: no such file or folder",),
    ("compare.arms.run", "unreachable"): ("arm a: run", "is not an lmlab run dir"),
    **{(k, "unreachable"): ("data.sources[0] ", "no such file or folder")
       for k in KEYS if k.startswith("data.sources.") and k.endswith(".path")},
}


def _accepted(role: str, kind: str) -> bool:
    want = role.split("_")[1]
    if kind == "in-run":
        return role != "out_run"
    return kind == "dir" and (want in ("dir", "any") or role == "out_run")


def _needles(key: str, kind: str) -> tuple[str, ...]:
    what, role, _ = KEYS[key]
    if (key, kind) in WORDING:
        return WORDING[(key, kind)]
    if kind == "unreachable" and role.startswith("need"):
        return what, "no such file or folder"
    return what, KIND_NEEDLE[kind]


# Keys whose refusals are wrong today in code of other owners (issue 28 report): compare's spec
# paths are checked only where they are used. out_dir: '' reads as unset, a pipe or a loop is
# "File exists", one inside a run dir gets spec.yaml written there first; eval.data_dir: never
# checked without eval.tasks; arms[].run: every kind reads "is not an lmlab run dir". Their rows
# come once lmlab/compare/spec.py load_spec checks them (rundir.check_out_dir, fsio.check_input):
# delete the key here.

ACCEPTED = sorted((key, kind) for key, (_, role, _) in KEYS.items() for kind in KINDS if _accepted(role, kind))
ROWS = [{"id": f"path-{key}-{kind}", "argv": [a.replace("{P}", path) for a in argv], "needles": _needles(key, kind),
         "files": FILES.get(key, {})}
        for key, (_, role, argv) in KEYS.items()
        for kind, path in KINDS.items() if not _accepted(role, kind)]

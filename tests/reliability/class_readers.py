"""Class: every reader of a config, spec, preset or prompts file x every kind of bad file (issue 28).

Each row gives a reader a file of one bad kind (written into ``{tmp}``) through the command that
reads it, and expects one line naming the file (or the flag) and what is wrong. Every reader but
the prompts file goes through one safe loader (``lmlab.safeload``: ``read_text``, ``load_file``,
``safe_yaml``, ``safe_json``; seed 003's ``.py`` through ``compat.files.read_python_dict``).

Which kinds apply (``-``: not applicable, and why):

    reader        duplicate  alias-bomb  deep  empty  wrong-top  not-utf8
    yaml          x          x           x     x      x          x
    json          x          -           x     x      x          x      JSON has no aliases
    py            x          -           x     x      x          x      a literal holds no references
    preset        x          -           x     x      x          x      a JSON file
    spec          x          x           x     x      x          x
    set           x          x           x     -      -          -      a value, not a file: empty is
                                                                        "" and any type is a value;
                                                                        argv is already text
    prompts       -          -           -     x      -          x      plain lines, not a mapping

The file readers are reached from each command that reads them (``train --config``, ``config
show``, ``config convert``, ``compare``), so a command that parses on its own is caught too.
"""

from __future__ import annotations

DEEP = "[" * 3000 + "]" * 3000
"""A 3000-deep nested list (Python's recursion gives out near 300 levels of YAML)."""


def _bomb(flow: bool = False) -> str:
    """A billion laughs: ten lists of ten aliases of the one before, 10^10 values in about 500 bytes."""
    levels = ['&x0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"&x{i} [" + ",".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, 10)]
    if flow:  # one YAML value, for --set
        return "[" + ", ".join(levels) + "]"
    return "".join(f"x{i}: {level}\n" for i, level in enumerate(levels))


BAD_UTF8 = "byte 0xe9 at line 2"
PRESET = '"model": {{"hidden_size": 8, "num_layers": 1, "num_heads": 1, "seq_length": 8{extra}}},\n' \
         ' "train": {{"per_gpu_batch_size": 2}}, "data": {{"sources": ["pydocs"]}}'

# format -> kind -> (file content, needles besides the file's name). Bytes are not UTF-8.
CONTENT: dict[str, dict[str, tuple[str | bytes, tuple[str, ...]]]] = {
    "yaml": {
        "duplicate-key": ("train:\n  max_steps: 5\ntrain:\n  lr: 0.1\n", ("line 3: duplicate key 'train'",)),
        "alias-bomb": (_bomb(), ("alias bomb",)),
        "deep-nesting": ("train:\n  lr: " + DEEP + "\n", ("line 2: nested deeper than 100 levels",)),
        "empty": ("", ("is empty",)),
        "wrong-top-level": ("- train\n- model\n", ("must be a mapping of sections, got list",)),
        "not-utf8": (b"train:\n  out_dir: caf\xe9\n", (BAD_UTF8, "save it as UTF-8")),
    },
    "json": {
        "duplicate-key": ('{"train": {"max_steps": 5},\n "train": {"lr": 0.1}}', ("line 2: duplicate key 'train'",)),
        "deep-nesting": ('{"train":\n {"lr": ' + DEEP + "}}", ("line 2: nested deeper than 100 levels",)),
        "empty": ("", ("is empty",)),
        "wrong-top-level": ('["train", "model"]', ("must be a mapping of sections, got list",)),
        "not-utf8": (b'{"train":\n {"out_dir": "caf\xe9"}}', (BAD_UTF8, "save it as UTF-8")),
    },
    "py": {
        "duplicate-key": ("exp_config = {\n    'lr': 1e-3,\n    'lr': 3e-4,\n}\n", ("line 3: duplicate key 'lr'",)),
        "deep-nesting": ("exp_config = {\n    'x': " + "[" * 150 + "]" * 150 + "}\n",
                         ("line 2: nested deeper than 100 levels",)),
        "empty": ("", ("is empty",)),
        "wrong-top-level": ("exp_config = ['lr', 1e-3]\n", ("exp_config is not a dict literal",)),
        "not-utf8": (b"exp_config = {\n    'out_dir': 'caf\xe9'}\n", (BAD_UTF8, "save it as UTF-8")),
    },
    "preset": {
        "duplicate-key": ("{" + PRESET.format(extra=', "hidden_size": 16') + "}", ("line 1: duplicate key 'hidden_size'",)),
        "deep-nesting": ("{" + PRESET.format(extra=', "options": {"x": ' + DEEP + "}") + "}",
                         ("line 1: nested deeper than 100 levels",)),
        "empty": ("", ("is empty",)),
        "wrong-top-level": ("[{" + PRESET.format(extra="") + "}]", ("must be a mapping of sections, got list",)),
        "not-utf8": (b'{"model": {"hidden_size": 8},\n "name": "caf\xe9"}', (BAD_UTF8, "save it as UTF-8")),
    },
    "spec": {
        "duplicate-key": ("name: duel\nseeds: [1]\nname: other\n", ("line 3: duplicate key 'name'",)),
        "alias-bomb": (_bomb(), ("alias bomb",)),
        "deep-nesting": ("name: duel\nseeds: " + DEEP + "\n", ("line 2: nested deeper than 100 levels",)),
        "empty": ("", ("compare spec file is empty",)),
        "wrong-top-level": ("- name\n- arms\n", ("a compare spec must be a mapping of sections, got list",)),
        "not-utf8": (b"name:\n  caf\xe9\n", (BAD_UTF8, "save it as UTF-8")),
    },
    "prompts": {
        "empty": ("", ("--prompts-file",)),
        "not-utf8": (b"The \ncaf\xe9\n", ("--prompts-file",)),
    },
}

# reader -> (format, file name, the command reading it ({path}: the file))
READERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "yaml": ("yaml", "c.yaml", ("train", "--config", "{path}")),
    "yaml-show": ("yaml", "c.yaml", ("config", "show", "{path}")),
    "yaml-convert": ("yaml", "c.yaml", ("config", "convert", "{path}")),
    "json": ("json", "c.json", ("train", "--config", "{path}")),
    "json-show": ("json", "c.json", ("config", "show", "{path}")),
    "py": ("py", "exp.py", ("train", "--config", "{path}")),
    "py-convert": ("py", "exp.py", ("config", "convert", "{path}")),
    "preset": ("preset", "p.json", ("train", "--config", "{path}")),
    "preset-convert": ("preset", "p.json", ("config", "convert", "{path}")),
    "spec": ("spec", "s.yaml", ("compare", "{path}")),
    "prompts": ("prompts", "prompts.txt", ("sample", "--checkpoint", "{run}", "--prompts-file", "{path}")),
}

# --set values are YAML too: kind -> (value of train.lr, needles)
SET_VALUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "duplicate-key": ("{a: 1, a: 2}", ("--set train.lr: line 1: duplicate key 'a'",)),
    "alias-bomb": (_bomb(flow=True), ("--set train.lr", "alias bomb")),
    "deep-nesting": (DEEP, ("--set train.lr", "nested deeper than 100 levels")),
}


def _rows() -> list[dict]:
    rows = []
    for reader, (fmt, name, argv) in READERS.items():
        path = "{tmp}/" + name
        for kind, (content, needles) in CONTENT[fmt].items():
            # The prompts file's own flag names it; every other reader names the file.
            named = needles if fmt == "prompts" else (path, *needles)
            rows.append({"id": f"reader-{reader}-{kind}", "argv": [a.replace("{path}", path) for a in argv],
                         "needles": list(named), "files": {name: content}})
    for kind, (value, needles) in SET_VALUES.items():
        rows.append({"id": f"reader-set-{kind}", "argv": ["train", "--config", "{cfg}", "--set", f"train.lr={value}"],
                     "needles": list(needles)})
    return rows


ROWS = _rows()

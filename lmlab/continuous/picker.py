"""The interactive preset choice: rank 0 asks on its terminal, every rank gets the answer."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

import torch.distributed as dist


def choose(presets: list[tuple[str, str]], default: str, ask: Callable[[str], str] = input,
           out: TextIO | None = None, interactive: bool | None = None, marks: dict[str, str] | None = None,
           why: str = "") -> str:
    """The name of the chosen preset: Enter takes ``default``, a number or a name picks another,
    anything else asks again. Without a terminal on stdin (CI, nohup) the default is taken, and
    the line says why (``why``) and how to take another. ``marks``: a note per preset shown in
    the list (on a CPU-only machine: whether it fits, and how long a run would take)."""
    out = out or sys.stdout
    names = [name for name, _ in presets]
    marks = marks or {}
    if default not in names:
        default = names[0]
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if not interactive:
        others = [n for n in names if n != default]
        other = f"LMLAB_PRESET={others[0]} python main.py" if others else "LMLAB_PRESET=NAME python main.py"
        print(f"lmlab: no terminal attached: training the default preset {default}{why}; to train another, "
              f"run {other} (presets: {', '.join(names)})", file=out, flush=True)
        return default
    width = max(len(n) for n in names)
    print("Presets (configs/presets):", file=out)
    for i, (name, desc) in enumerate(presets, 1):
        mark = "  [default]" if name == default else ""
        note = f"  ({marks[name]})" if name in marks else ""
        print(f"  {i:>2}. {name:<{width}}  {desc}{note}{mark}", file=out)
    out.flush()
    prompt = f"Choose a preset [1-{len(names)}, Enter = {default}]: "
    while True:
        answer = ask(prompt).strip()
        if not answer:
            return default
        if answer.isdigit() and 1 <= int(answer) <= len(names):
            return names[int(answer) - 1]
        if answer in names:
            return answer
        print(f"{answer!r} is not a preset: type a number from 1 to {len(names)}, a preset name, or press "
              f"Enter for {default}", file=out, flush=True)


def broadcast_choice(choice: str | None, rank: int, world: int) -> str:
    """Rank 0's ``choice`` on every rank (the process group must be up when ``world > 1``)."""
    if world == 1:
        assert choice is not None
        return choice
    box = [choice if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]

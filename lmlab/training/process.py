"""What a training process answers to: signals (the first one stops at the next step boundary,
saved; a second one at once) and the CPU threads it uses."""

from __future__ import annotations

import contextlib
import os
import signal
import sys

import torch

from lmlab.errors import Interrupted


class Interrupt:
    """Turn the first SIGINT/SIGTERM into a flag, so the loop saves a snapshot at the next step
    boundary (and says so: a step can take minutes); a second one stops at once, keeping the
    snapshots already written (a save it cuts short is never used). Only the handler sets the
    flag: the loop reads it, never clears it, so a signal is never lost."""

    def __init__(self, resume_command: str, announce: bool):
        self.hit = False
        self.signum = signal.SIGINT.value
        self._old = {}
        self.resume_command, self.announce = resume_command, announce

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.hit:
            raise Interrupted(f"stopped at once; the last snapshot is kept; resume with: {self.resume_command}",
                              signum)
        self.hit, self.signum = True, signum
        if self.announce:
            name = signal.Signals(signum).name
            by, again = ("", "Ctrl-C") if signum == signal.SIGINT else (f"{name}: ", name)
            print(f"\nlmlab: {by}stopping after this step and saving it ({again} again to stop now, the last "
                  "snapshot is kept)", file=sys.stderr, flush=True)

    def stopped(self, step: int) -> Interrupted:
        """What the loop raises once the step it stopped at is saved."""
        return Interrupted(f"interrupted at step {step}; resume with: {self.resume_command}", self.signum)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def set_threads(num_threads: int | None) -> str:
    """CPU threads: an explicit ``OMP_NUM_THREADS`` wins over ``train.num_threads`` (a launcher,
    a shared machine or the user set it for this process), which wins over PyTorch's default.
    Returns what the start line says: the count and where it came from."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        torch.set_num_threads(int(env))
        source = "OMP_NUM_THREADS"
    elif num_threads:
        torch.set_num_threads(num_threads)
        source = "train.num_threads"
    else:
        source = "default"
    return f"{torch.get_num_threads()} thread(s) ({source})"

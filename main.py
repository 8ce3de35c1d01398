"""The zero-flag continuous trainer (seed 001): ``python main.py`` or
``torchrun --nproc_per_node=N main.py``. Pick a preset from configs/presets (Enter: the default),
train 100M more tokens of the one model in runs/main, always resuming. See docs/continuous.md."""

import sys

from lmlab.continuous import main

if __name__ == "__main__":
    sys.exit(main())

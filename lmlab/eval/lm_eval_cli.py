"""lm-eval's own command line with the ``lmlab`` model registered.

    python -m lmlab.eval.lm_eval_cli --model lmlab --model_args pretrained=runs/default \\
        --tasks hellaswag --batch_size 32

Takes exactly lm-eval's arguments (``run``/``ls``/``validate`` subcommands included; with none,
lm-eval assumes ``run``). See :mod:`lmlab.eval.lm_eval_adapter`.
"""

from __future__ import annotations

from lm_eval.__main__ import cli_evaluate

import lmlab.eval.lm_eval_adapter  # noqa: F401  (registers --model lmlab)


def main() -> None:
    cli_evaluate()


if __name__ == "__main__":
    main()

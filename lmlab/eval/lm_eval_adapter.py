"""lm-evaluation-harness adapter: an lmlab run dir as the lm-eval model ``lmlab``.

Command line (:mod:`lmlab.eval.lm_eval_cli` registers the model, then runs lm-eval's own CLI, so
every lm-eval flag works)::

    python -m lmlab.eval.lm_eval_cli --model lmlab --model_args pretrained=runs/default \\
        --tasks hellaswag --batch_size 32

Python::

    import lm_eval
    from lmlab.eval.lm_eval_adapter import LmlabLM

    results = lm_eval.simple_evaluate(model=LmlabLM("runs/default"), tasks=["hellaswag"])

Model args: ``pretrained`` (the run dir), ``batch_size`` (``auto`` means 32), ``max_length``
(model input tokens, lm-eval's meaning; default the Scorer's, which follows the run's block
size) and ``device``.

lm-eval does its own context/continuation split (``TemplateLM``) and rolling windows (the
``HFLM`` way); every score then comes from :class:`lmlab.eval.scoring.Scorer`, so lm-eval and
lmlab's own evaluation score identical token sequences: ``[eos] + context + continuation``,
truncated from the left. Needs lm-eval (``pip install lmlab[eval]``).
"""

from __future__ import annotations

import logging
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models stay registered beside ours)
import torch
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from lmlab.eval.scoring import Scorer
from lmlab.runs import load_run

DEFAULT_BATCH_SIZE = 32

log = logging.getLogger(__name__)


def _batch_size(value: int | str | None) -> int:
    """lm-eval's ``batch_size``: an int, a numeric string, or ``auto``/``auto:N`` (-> 32)."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        return DEFAULT_BATCH_SIZE
    return int(value)


def _device(value: str | None) -> str:
    """lm-eval's CLI asks for ``cuda:0`` unless told otherwise: fall back to the CPU (as lm-eval's
    ``hf`` model does) when no GPU is there."""
    device = value or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("lmlab: device %s requested but CUDA is not available; using cpu", device)
        return "cpu"
    return device


@register_model("lmlab")
class LmlabLM(TemplateLM):
    """An lmlab run scored by :class:`Scorer`; ``prefix_token_id`` is the tokenizer's eos."""

    def __init__(
        self,
        pretrained: str,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        max_length: int | None = None,
        device: str | None = "cpu",
        **kwargs: Any,
    ):
        super().__init__()
        # kwargs: what lm-eval's CLI adds for every model (max_batch_size, ...); unused here.
        device = _device(device)
        model, tokenizer, config, snapshot = load_run(pretrained, device)
        self.tokenizer = tokenizer
        self._info = {"lmlab_run": str(pretrained), "lmlab_family": config.model.family,
                      "lmlab_step": snapshot.step}
        self._device = device
        self.scorer = Scorer(
            model,
            tokenizer,
            max_input_len=None if max_length is None else int(max_length) + 1,
            batch_size=_batch_size(batch_size),
        )

    def get_model_info(self) -> dict[str, Any]:
        """Merged into lm-eval's results ``config``: which run and checkpoint was scored."""
        return {**self._info, "max_length": self.max_length}

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        return self.scorer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.scorer.eos_id

    @property
    def max_length(self) -> int:
        return self.scorer.max_length

    @property
    def batch_size(self) -> int:
        return self.scorer.batch_size

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
        **kwargs: Any,
    ) -> list[int]:
        ids = self.scorer.encode(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: int | list[int], skip_special_tokens: bool = True) -> str:
        return self.scorer.decode([tokens] if isinstance(tokens, int) else list(tokens))

    # ----------------------------------------------------------------- scoring
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Scorer.loglikelihood_tokens; a context that is only lm-eval's prefix token becomes
        empty, since the Scorer puts eos in front of every sequence itself."""
        prefix = [self.prefix_token_id]
        return self.scorer.loglikelihood_tokens(
            [([] if list(ctx) == prefix else list(ctx), list(cont)) for ctx, cont in pairs]
        )

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]],
        disable_tqdm: bool = False, **kwargs: Any,
    ) -> list[tuple[float, bool]]:
        results = self._score([(ctx, cont) for _, ctx, cont in requests])
        for (key, _, _), answer in zip(requests, results):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihoods over HFLM's disjoint rolling windows (``max_length``
        inputs, the first conditioned on the prefix token)."""
        windows: list[tuple[list[int], list[int]]] = []
        counts: list[int] = []
        for (string,) in (req.args for req in requests):
            doc = [
                utils.make_disjoint_window(w)
                for w in utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            windows.extend(doc)
            counts.append(len(doc))
        scores = self._score(windows)
        totals: list[float] = []
        start = 0
        for req, n in zip(requests, counts):
            total = float(sum(ll for ll, _ in scores[start:start + n]))
            start += n
            totals.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        args = [(context, dict(gen_kwargs)) for context, gen_kwargs in (req.args for req in requests)]
        outputs = self.scorer.generate_until(args)
        for req, text in zip(requests, outputs):
            self.cache_hook.add_partial("generate_until", req.args, text)
        return outputs

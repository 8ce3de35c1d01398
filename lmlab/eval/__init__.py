"""Evaluation: perplexity / bits-per-byte and zero-shot tasks for every family, scored only through
``log_probs`` (``scoring``), task definitions matching lm-eval (``tasks``), the ``lmlab eval``
runner and its JSON / markdown reports (``runner``), and an lm-eval model adapter
(``lm_eval_adapter``, optional extra ``eval``)."""

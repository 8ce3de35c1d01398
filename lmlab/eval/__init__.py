"""Evaluation: perplexity / bits-per-byte and zero-shot tasks for every family, scored only through
``log_probs`` (``scoring``); the tasks, one class per task in a table, matching lm-eval
(``tasks``); what a scored task reports (``metrics``); the ``lmlab eval`` runner and its JSON /
markdown reports (``runner``); and an lm-eval model adapter (``lm_eval_adapter``, optional extra
``eval``)."""

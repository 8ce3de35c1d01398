"""The decoding loop over ``init_state`` / ``step``: bucketed batches, cached, sliding window.

Prompts are grouped by token length and each group decodes as one batch, so no padding or
attention masks are needed and every row sees exactly its own prompt. Each prompt is preceded
by the end-of-text id, which separates documents in training and so acts as a start token.
When a sequence fills the model's context (``block_size``), the window slides: the state is
rebuilt from the last ``block_size // 2`` tokens, one prefill every ``block_size // 2`` new tokens.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch

from lmlab.config import DecodeSettings
from lmlab.generate.planner import check_planner_heads, planner_pick
from lmlab.generate.sampling import apply_repetition_penalty, block_repeated_ngrams, sample_next


@torch.no_grad()
def generate_ids(
    model: torch.nn.Module,
    prompts: list[list[int]],
    settings: DecodeSettings,
    eos_id: int,
    stop_fn: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """New token ids for each prompt (without the prompt, cut before the first EOS if stopping).

    ``stop_fn(new_ids)`` is asked after every token of a row still running; True ends that row
    (the batch ends when every row has): how stop sequences end generation early.
    """
    own = model.generate_ids(prompts, settings, eos_id, stop_fn)  # a family that does not decode token by token
    if own is not None:
        return own
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    buckets: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(prompts):
        buckets[len(p)].append(i)
    out: list[list[int]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for length in sorted(buckets):
            rows = buckets[length]
            batch = torch.tensor([[eos_id, *prompts[i]] for i in rows], device=device)
            for row, ids in zip(rows, _decode_batch(model, batch, settings, eos_id, generator, stop_fn)):
                out[row] = ids
    finally:
        model.train(was_training)
    return out


def _decode_batch(
    model, ids: torch.Tensor, s: DecodeSettings, eos_id: int, generator, stop_fn=None
) -> list[list[int]]:
    """ids (B, T0) -> B lists of new tokens."""
    B = ids.size(0)
    context = model.block_size
    keep = max(1, context // 2) if context else None
    if context and ids.size(1) > context:
        ids = ids[:, -context:]
    if s.planner_rerank:  # the planner reads the last hidden state (B, C) too
        check_planner_heads(model, s.planner_depth)
        step = model.step_hidden
    else:
        def step(tokens, st):
            return (None, *model.step(tokens, st))
    state = model.init_state(B, device=ids.device)
    h, logits, state = step(ids, state)  # prefill: (B, V)
    filled = ids.size(1)
    history = ids
    new: list[torch.Tensor] = []
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    for t in range(s.max_new_tokens):
        logits = apply_repetition_penalty(logits, history, s.repetition_penalty)
        if s.no_repeat_ngram_size:
            logits = block_repeated_ngrams(logits, history.tolist(), s.no_repeat_ngram_size)
        if s.planner_rerank:
            nxt = planner_pick(model, h, logits, s.planner_rerank, s.planner_depth, s.planner_value_weight,
                               s.temperature, s.top_k, s.top_p, generator)
        else:
            nxt = sample_next(logits, s.temperature, s.top_k, s.top_p, generator)  # (B,)
        new.append(nxt)
        history = torch.cat([history, nxt[:, None]], dim=1)
        if s.stop_on_eos:
            done |= nxt == eos_id
        if stop_fn is not None:
            so_far = torch.stack(new, dim=1).tolist()
            done |= torch.tensor([bool(d) or stop_fn(r) for d, r in zip(done.tolist(), so_far)],
                                 device=done.device)
        if (s.stop_on_eos or stop_fn is not None) and bool(done.all()):
            break
        if t == s.max_new_tokens - 1:
            break
        if context and filled + 1 > context:
            state = model.init_state(B, device=ids.device)
            h, logits, state = step(history[:, -keep:], state)
            filled = keep
        else:
            h, logits, state = step(nxt[:, None], state)
            filled += 1
    rows = torch.stack(new, dim=1).tolist() if new else [[] for _ in range(B)]
    if s.stop_on_eos:
        rows = [r[: r.index(eos_id)] if eos_id in r else r for r in rows]
    return rows


def complete(model: torch.nn.Module, tokenizer, prompts: list[str], settings: DecodeSettings) -> list[str]:
    """Each prompt followed by its generated continuation, as printable text.

    Prompts must be exactly encodable (a char tokenizer names the characters it never saw).
    Bytes that do not form valid UTF-8 (possible with byte-level tokenizers) show as U+FFFD.
    """
    ids = [tokenizer.encode(p, strict=True) for p in prompts]
    new = generate_ids(model, ids, settings, tokenizer.eos_id)
    texts = [p + tokenizer.decode(n) for p, n in zip(prompts, new)]
    return [t.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for t in texts]

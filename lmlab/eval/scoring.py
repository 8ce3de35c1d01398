"""Request-level scoring through the ``log_probs`` contract: the engine of ``lmlab eval`` and of
the lm-eval adapter.

Every scored sequence is ``[eos] + context + continuation``: the end-of-text id separates
documents in training, so it is the start token here as in generation. (``always_prefix=False``
puts a start token only before an empty context, as lm-eval's ``hf`` model does: the tokenizer's
bos where it has one (Llama's ``<s>``), else its eos (GPT-2); ``lmlab eval`` uses it for HF
folders so their numbers are lm-eval's.) A sequence longer than
``max_input_len`` tokens loses its oldest tokens (the eos first), exactly as lm-eval truncates
``(context + continuation)[-(max_length + 1):]``: lm-eval's ``max_length`` (model input tokens)
is ``max_input_len - 1``. The default is the model's ``scoring_window`` (block_size + 1: the
last token is only a target), so ``max_length`` is block_size, lm-eval's default for an HF
model (``n_positions``), and a request longer than the window keeps as much context as there.
Requests are sorted by length and scored in right-padded batches: ``log_probs`` is causal, so
padding after a row never changes its scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm import tqdm

from lmlab.config import DecodeSettings
from lmlab.errors import LmlabError
from lmlab.generate.decode import generate_ids
from lmlab.strict import validate_strict


class Scorer:
    """Log-likelihoods, rolling log-likelihoods and greedy generation of one model."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        max_input_len: int | None = None,
        batch_size: int = 32,
        progress: bool = False,
        always_prefix: bool = True,
    ):
        window = model.scoring_window
        if max_input_len is None:
            max_input_len = window
        if max_input_len > window:
            raise LmlabError(f"--max-input-len {max_input_len} exceeds what the model scores at once ({window}: "
                             f"block_size {model.block_size} inputs"
                             f"{' + the last target' if window > model.block_size else ''})")
        if max_input_len < 2:
            raise LmlabError(f"--max-input-len must be at least 2 (a start token and a target), got {max_input_len}")
        if batch_size < 1:
            raise LmlabError(f"--batch-size must be at least 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.eos_id: int = tokenizer.eos_id
        self.max_input_len = max_input_len
        self.max_length = max_input_len - 1
        self.batch_size = batch_size
        self.progress = progress
        self.always_prefix = always_prefix
        # lm-eval's prefix_token_id: bos if the tokenizer has one, else eos (lmlab's own: eos)
        bos = getattr(tokenizer, "bos_id", None)
        self.prefix_id: int = self.eos_id if always_prefix or bos is None else bos
        self.device = next(model.parameters()).device

    # ------------------------------------------------------------------ tokens

    def encode(self, text: str) -> list[int]:
        """Plain ids (no eos); characters a char tokenizer never saw become unk."""
        return self.tokenizer.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """lm-eval's split: trailing spaces of the context move to the continuation, the whole
        string is encoded once and the continuation is what follows the context's ids."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces:
            context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
        if not context:
            return [], self.encode(continuation)
        context_ids = self.encode(context)
        return context_ids, self.encode(context + continuation)[len(context_ids):]

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def loglikelihood_tokens(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, bool]]:
        """(sum of log p(continuation | eos + context), every continuation token greedy) per pair."""
        seqs, n_scored = [], []
        for i, (ctx, cont) in enumerate(pairs):
            if not cont:
                raise LmlabError(f"request {i}: empty continuation (nothing to score)")
            start = [self.prefix_id] if self.always_prefix or not ctx else []
            full = [*start, *ctx, *cont][-self.max_input_len :]
            seqs.append(full)
            n_scored.append(min(len(cont), len(full) - 1))  # a continuation longer than the window is cut
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first: OOM shows at once
        out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="scoring", disable=not self.progress, leave=False):
            rows = order[start : start + self.batch_size]
            width = len(seqs[rows[0]])
            ids = torch.full((len(rows), width), self.eos_id, dtype=torch.long)
            for r, i in enumerate(rows):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
            logp, greedy = self.model.log_probs(ids.to(self.device), return_greedy=True)  # (B, W-1)
            logp, greedy = logp.double().cpu(), greedy.cpu()
            for r, i in enumerate(rows):
                end = len(seqs[i]) - 1  # targets are ids[1:], so target j sits at j - 1
                span = slice(end - n_scored[i], end)
                out[i] = (float(logp[r, span].sum()), bool(greedy[r, span].all()))
        return out

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        """``loglikelihood_tokens`` of ``encode_pair`` of each (context, continuation) string pair."""
        return self.loglikelihood_tokens([self.encode_pair(c, x) for c, x in pairs])

    def check_stride(self, stride: int | None) -> int:
        """``stride`` (default ``max_length``), refused outside 1..max_length."""
        stride = self.max_length if stride is None else stride
        if not 1 <= stride <= self.max_length:
            raise LmlabError(f"--stride must be in 1..{self.max_length} (max input length - 1), got {stride}")
        return stride

    def rolling_windows(self, ids: Sequence[int], stride: int | None = None) -> list[tuple[list[int], list[int]]]:
        """(context, continuation) windows that score every token of ``ids`` exactly once.

        The first window scores up to ``max_length`` tokens after the eos; each later one scores
        the next ``stride`` tokens with as much preceding context as fits. ``stride ==
        max_length`` (the default) gives lm-eval's ``loglikelihood_rolling`` windows.
        """
        stride = self.check_stride(stride)
        ids = list(ids)
        if not ids:
            return []
        first = min(self.max_length, len(ids))
        windows = [([], ids[:first])]
        pos = first
        while pos < len(ids):
            end = min(pos + stride, len(ids))
            windows.append((ids[max(0, end - self.max_length - 1) : pos], ids[pos:end]))
            pos = end
        return windows

    def loglikelihood_rolling(self, texts: Sequence[str], stride: int | None = None) -> list[float]:
        """Total log-likelihood of each whole text (eos-started), over rolling windows."""
        owners, pairs = [], []
        for d, text in enumerate(texts):
            for w in self.rolling_windows(self.encode(text), stride):
                owners.append(d)
                pairs.append(w)
        totals = [0.0] * len(texts)
        for d, (ll, _) in zip(owners, self.loglikelihood_tokens(pairs)):
            totals[d] += ll
        return totals

    # ------------------------------------------------------------------ generation

    def generate_until(self, requests: Sequence[tuple[str, dict]]) -> list[str]:
        """Continuation of each context, cut before the first stop string (lm-eval's gen_kwargs:
        ``until``, ``max_gen_toks`` (256); greedy unless ``do_sample`` or a ``temperature`` > 0,
        then ``temperature`` (1.0), ``top_k``, ``top_p`` and ``seed`` apply)."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, kw) in enumerate(requests):
            until = kw.get("until") or []
            until = [u for u in ([until] if isinstance(until, str) else until) if u]  # "" never stops
            unknown = set(kw) - {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "seed"}
            if unknown:
                raise LmlabError(f"generate_until: unsupported generation options {sorted(unknown)} "
                                 "(supported: until, max_gen_toks, do_sample, temperature, top_k, top_p, seed)")
            sample = kw.get("do_sample", float(kw.get("temperature", 0.0)) > 0)
            temperature = float(kw.get("temperature", 1.0)) if sample else 0.0
            key = (tuple(until), int(kw.get("max_gen_toks", 256)), temperature, kw.get("top_k"),
                   float(kw.get("top_p", 1.0)), int(kw.get("seed") or 0))
            groups.setdefault(key, []).append(i)
        out = [""] * len(requests)
        for (until, max_new, temperature, top_k, top_p, seed), rows in groups.items():
            # Leave room for the new tokens, as lm-eval does: keep the context's newest ids.
            keep = max(1, self.max_input_len - 1 - max_new)
            prompts = [self.encode(requests[i][0])[-keep:] for i in rows]
            # a task's generation_kwargs are the task file's input: a bad one is a one-line error
            settings = validate_strict(DecodeSettings, {"max_new_tokens": max_new, "temperature": temperature,
                                                        "top_k": top_k, "top_p": top_p, "seed": seed,
                                                        "stop_on_eos": True}, "a task's generation_kwargs")

            def stop(new: list[int], until=until) -> bool:
                text = self.decode(new)
                return any(u in text for u in until)

            new = generate_ids(self.model, prompts, settings, self.eos_id, stop if until else None)
            for i, ids in zip(rows, new):
                text = self.decode(ids)
                for u in until:
                    text = text.split(u, 1)[0]
                out[i] = text
        return out

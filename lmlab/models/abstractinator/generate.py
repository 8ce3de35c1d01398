"""Expanding codes back into bytes, one symbol at a time, for generation and free-running
reconstruction.

The decoder keeps every level's sequence (bytes, level-1 codes, ...) and, for each symbol, the
index of the code above that covers it. To extend level l it asks whether the next symbol
opens a new patch by the same causal rule as training (level l's entropy model on the symbols
so far, the running patch length, and whether the last byte was an eos); if so and the codes
above are used up, it first extends level l+1 (at the top: the CodeSequenceTransformer
proposes a code); then level l's expander draws the symbol under its covering code. Known
symbols (a prompt, or the true codes in a reconstruction check) simply sit in the sequences.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch

from lmlab.errors import LmlabError
from lmlab.models.abstractinator.vq import Prior

Pick = Callable[[torch.Tensor], torch.Tensor]


class Expansion:
    """Sequences of one row: ``seqs[0]`` bytes (1, T), ``seqs[l]`` level-l codes (1, K, S)."""

    def __init__(self, model, seqs: list[torch.Tensor], covers: list[list[int]], pick_byte: Pick,
                 pick_code: Pick, can_propose: bool = True):
        self.model, self.seqs, self.covers = model, seqs, covers
        self.n_levels = len(seqs) - 1  # levels in play: the codes of seqs[-1] are the top
        self.pick_byte, self.pick_code = pick_byte, pick_code
        self.can_propose = can_propose  # False: the top codes are fixed (a reconstruction check)

    def _opens_document(self, lv: int) -> torch.Tensor:
        """(1, n + 1) bool: whether each of the n symbols of level lv, and the next one, opens a
        document (its first byte follows an eos): where the encoder forces a cut
        (``compress_all``). Known from the bytes decoded so far: the next symbol of any level
        begins with the byte about to be drawn, so it opens a document iff the last byte is eos."""
        x = self.seqs[0][0].tolist()
        eos = self.model.eos_id
        flags = [False] * (self.seqs[lv].size(1) + 1)
        seen: set[int] = set()
        for t in range(len(x)):
            k = t
            for j in range(lv):  # byte t -> the level-lv symbol holding it
                k = self.covers[j][k]
            if k not in seen:  # the first byte of symbol k
                seen.add(k)
                flags[k] = t > 0 and x[t - 1] == eos
        flags[-1] = bool(x) and x[-1] == eos
        return torch.tensor([flags], device=self.seqs[0].device)

    def _opens_patch(self, lv: int) -> tuple[bool, torch.Tensor | None]:
        """Whether the next symbol of level l starts a new patch of the codes above it, and with
        ``expander_prior`` what the entropy model predicts of that next symbol: the byte logits
        (1, V), or at a code level its state (1, D) (None before the level's first code). One
        pass of the entropy model over the prefix gives both."""
        level, sym = self.model.levels[lv], self.seqs[lv]
        padded = torch.cat([sym, torch.zeros_like(sym[:, :1])], dim=1)  # a dummy next symbol
        _, entropy, *logits = level.entropy(padded, logits=level.lcfg.expander_prior)
        starts = level.entropy.cut(entropy, self._opens_document(lv))
        # position -2 (the last real symbol) predicts the next one; the dummy is never read before it
        prior = logits[0][:, -2] if logits and sym.size(1) else None
        return bool(starts[0, -1]), prior

    def extend(self, lv: int) -> bool:
        """Append one symbol to level lv; False when no code above is left to expand."""
        L = self.n_levels
        if lv == L:
            top = self.model.top
            if not self.can_propose:
                return False
            if top is None:
                raise LmlabError("this abstractinator has no top transformer (a stage-1 run): it can "
                                 "reconstruct but not generate; train stage 2 with top_transformer_config")
            self.seqs[L] = torch.cat([self.seqs[L], top.next_code(self.seqs[L], self.pick_code)[:, None]], dim=1)
            return True
        opens, prior = self._opens_patch(lv)
        cover = self.covers[lv][-1] + int(opens)
        if cover >= self.seqs[lv + 1].size(1) and not self.extend(lv + 1):
            return False
        level = self.model.levels[lv]
        above = self.seqs[lv + 1]
        vec = level.vq.embed(above)
        valid = torch.ones(above.shape[:2], dtype=torch.bool, device=above.device)
        covers = self.covers[lv] + [cover]
        dev = above.device
        if lv == 0:
            tseg = torch.tensor([covers[1:]], device=dev)
            h = level.expander.hidden(self.seqs[0], tseg, vec, valid)[:, -1]
            sym = self.pick_byte(level.byte_logits(h, prior).float())[:, None]  # (1, 1)
        else:
            low = torch.cat([self.seqs[lv], torch.zeros_like(self.seqs[lv][:, :1])], dim=1)
            h = level.expander.hidden(low, torch.tensor([covers], device=dev), vec, valid)[:, -1]
            code_prior = None if prior is None else Prior(level.entropy.head, prior)
            sym = level.expander.head.sample(h, self.pick_code, code_prior)[:, None]  # (1, 1, S)
        self.seqs[lv] = torch.cat([self.seqs[lv], sym], dim=1)
        self.covers[lv] = covers
        return True


def start(model, ids: torch.Tensor, pick_byte: Pick, pick_code: Pick, levels: int | None = None,
          can_propose: bool = True) -> Expansion:
    """An expansion of one row ``ids`` (1, T): its bytes and its codes at the first ``levels``
    levels (all by default; the last, possibly unfinished patch keeps the code its partial
    bytes give)."""
    outs = model.compress_all(ids)
    seqs, covers = [ids], []
    for out in outs[: levels or len(outs)]:
        n = int(out.n_codes[0])
        covers.append(out.seg[0, : seqs[-1].size(1)].tolist())
        seqs.append(out.codes[:, :n])
    return Expansion(model, seqs, covers, pick_byte, pick_code, can_propose)


@torch.no_grad()
def free_running_accuracy(model, ids: torch.Tensor) -> tuple[float, float]:
    """Greedy decoding of bytes x_1.. from the true level-1 codes alone (and x_0), cutting patches
    with the entropy model as it goes. ids (B, T) -> (positional, aligned) accuracy: the share
    of bytes right at their position, and the share matched after aligning the decoded bytes
    with the true ones (difflib's matching blocks): one patch cut a byte early shifts every
    later byte off its position, though the codes still spell the text. The gap between them
    is drift, not content."""
    greedy = lambda logits: logits.argmax(-1)  # noqa: E731
    right = matched = total = 0
    for row in ids:
        full = start(model, row[None], greedy, greedy, levels=1, can_propose=False)
        exp = Expansion(model, [row[None, :1], full.seqs[1]], [full.covers[0][:1]], greedy, greedy,
                        can_propose=False)
        while exp.seqs[0].size(1) < row.numel() and exp.extend(0):
            pass
        out, true = exp.seqs[0][0, 1:].tolist(), row[1:].tolist()
        right += sum(a == b for a, b in zip(out, true))
        blocks = difflib.SequenceMatcher(None, out, true, autojunk=False).get_matching_blocks()
        matched += sum(b.size for b in blocks)
        total += len(true)
    return right / max(total, 1), matched / max(total, 1)

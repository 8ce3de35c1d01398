"""The abstractinator's two-part code is decodable, checked by an independent decoder.

``CausalDecoder`` below is a small left-to-right receiver written for this test: it gets x_0
and the transmitted codes of every level and decodes a byte window one byte at a time, deciding
every patch boundary from what it has already decoded (the entropy model on the decoded
symbols, the running patch length, whether the last byte was an eos), reading a new code (and
paying for it) when a patch opens, and paying log p(x_t) under the code that covers x_t. It
uses the model's networks (entropy models, expanders, top model) but none of its patching code.
Its boundaries must equal the encoder's and its payments the two-part code (``two_part``,
``code_lengths``), on windows that hold several documents. A test also shows why the old rule
(cut *at* an eos) was not decodable, and a brute-force sum over every 2-byte tail of a window
checks the code is a prefix code there.
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from lmlab.configure import validate_config
from lmlab.models.abstractinator.generate import Expansion
from lmlab.models.abstractinator.vq import Prior
from lmlab.registry import build_model

EOS = 259  # vocab_size - 1: the byte tokenizer's eos
LEVEL1 = {"compressor_layers": 1, "expander_layers": 1, "codebook_size": 32, "c_vq_d_c": 16, "d_lo_d_c": 16,
          "window": 8, "entropy": {"n_layer": 1, "threshold": 2.5, "max_patch_len": 8}}
LEVEL2 = {**LEVEL1, "codebook_size": 16, "window": 4, "entropy": {"n_layer": 1, "threshold": 2.0, "max_patch_len": 4}}


def _model(levels: int = 1, seed: int = 0, prior: bool = False, code_prior: bool = False):
    """The tiny preset (vocab 260), randomly initialised, in eval mode; ``levels=2`` adds a level;
    ``prior``: the byte expander adds the entropy model's next-byte logits (expander_prior);
    ``code_prior``: level 2's expander adds its entropy model's code scores."""
    model = {"family": "abstractinator", "preset": "tiny", "vocab_size": 260}
    model["levels"] = [{**LEVEL1, "expander_prior": prior}, {**LEVEL2, "expander_prior": code_prior}][:levels]
    cfg = validate_config({"model": model, "tokenizer": {"type": "byte"}})
    torch.manual_seed(seed)
    return build_model(cfg.model).eval()


def _doc(text: str) -> list[int]:
    return list(text.encode())


def _windows() -> torch.Tensor:
    """(5, 40) windows with eos at the first and last positions, mid-window, twice in a row, at
    position 1, and a window that starts inside a document."""
    rows = [
        [EOS, *_doc("The quick brown fox."), EOS, *_doc("A lazy dog sat, 12")],
        [*_doc("lazy dog. The end of it all, and so!"), EOS, *_doc("New")],
        [EOS, EOS, *_doc("Short."), EOS, EOS, *_doc("Two eos then text, and more t"), EOS],
        [*_doc("x"), EOS, *_doc("Every patch after this eos is new; ok!")],
        [*_doc("ends here"), EOS, *_doc("second doc"), EOS, *_doc("third document, fi"), EOS],
    ]
    assert all(len(r) == 40 for r in rows), [len(r) for r in rows]
    return torch.tensor(rows)


# The fixture's model: which seed, how much sharper its entropy models are than at init, and how
# far every decision the tests repeat in another shape (a batch, one row, a prefix, a padded
# row) must sit from flipping. Float noise between those shapes is ~1e-6 on this model (measured:
# 1.7e-6 on an entropy, 7e-7 on a quantiser input of norm ~4), and differs by CPU kernel.
SEED, SHARPEN, MARGIN = 11, 20.0, 1e-3


def _level_input(model, x: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Level i's symbols and their validity on windows x: the bytes, or the codes of level i-1."""
    if i == 0:
        return x, torch.ones_like(x, dtype=torch.bool)
    out = model.compress_all(x)[i - 1]
    return out.codes, out.code_valid


def _calibrate(model, x: torch.Tensor, thresholds: str) -> None:
    """Make the untrained model's cuts and codes clear decisions on ``x``, level by level.

    At init every entropy sits within ~2e-3 of log V (195 bytes of the windows span 5.5532 to
    5.5554, neighbours ~1e-5 apart) and every patch vector is ~0 in the quantiser's space, so
    all patches take one code and the level above sees one repeated symbol (constant entropy,
    no entropy cut there). A threshold among such entropies, or the median itself (one of
    them), is decided by float noise. So for each level: its entropy model's output gain is
    scaled by SHARPEN (sharper, more varied predictions); its threshold goes to the middle of
    the widest gap among the middle 40% of its entropies ("median": about half the symbols cut
    by entropy) or above them all ("high"); its quantiser's input statistics are set from the
    batch's patch vectors, as the first training batch sets them, so the codes vary."""
    with torch.no_grad():
        for i, level in enumerate(model.levels):
            level.entropy.trunk.norm.weight.mul_(SHARPEN)
            sym, valid = _level_input(model, x, i)
            _, H = level.entropy(sym, valid)
            if thresholds == "median":
                h = H[:, 1:][valid[:, 1:]].sort().values
                lo, hi = int(0.3 * len(h)), int(0.7 * len(h))
                j = lo + int((h[lo + 1 : hi + 1] - h[lo:hi]).argmax())
                level.entropy.threshold.fill_(float(h[j] + h[j + 1]) / 2)
            else:  # only documents and max_patch_len cut
                level.entropy.threshold.fill_(100.0)
            out = model.compress_all(x)[i]
            z = level.down(out.pooled[out.code_valid]).float()
            level.z_mean.copy_(z.mean(0))
            level.z_var.copy_(z.var(0, unbiased=False))
            level.z_stats_set.fill_(True)


def _assert_margins(model, x: torch.Tensor) -> None:
    """Every entropy of every level on ``x`` is at least MARGIN from its threshold, and every
    patch vector of ``x`` and of the truncations the padding test makes is at least MARGIN
    (squared distance) nearer its code than the next code, at every VQ stage: no cut or code
    the tests compare across shapes turns on float noise. A change to the model or its init
    that breaks this fails here, not as a flaky cut elsewhere."""
    with torch.no_grad():
        for i, level in enumerate(model.levels):
            sym, valid = _level_input(model, x, i)
            _, H = level.entropy(sym, valid)
            gap = float((H[:, 1:][valid[:, 1:]] - level.entropy.threshold).abs().min())
            assert gap >= MARGIN, f"level {i + 1}: an entropy is {gap:.2e} from the threshold"
        for n in (10, 21, 30, x.size(1)):
            for i, (level, out) in enumerate(zip(model.levels, model.compress_all(x[:, :n]))):
                z = level.code_space(level.down(out.pooled[out.code_valid]))
                for vq in level.vq.stages:
                    c = vq.codebook
                    d = z.pow(2).sum(-1, keepdim=True) - 2 * z @ c.T + c.pow(2).sum(-1)  # as vq.nearest
                    best = d.topk(2, dim=-1, largest=False).values
                    gap = float((best[:, 1] - best[:, 0]).min())
                    assert gap >= MARGIN, f"level {i + 1}, windows[:, :{n}]: a code wins by {gap:.2e}"
                    z = z - c[d.argmin(-1)]


def _prepared(levels: int, thresholds: str, prior: bool = False, code_prior: bool = False):
    model = _model(levels, SEED, prior, code_prior)
    x = _windows()
    _calibrate(model, x, thresholds)
    _assert_margins(model, x)
    return model


# ------------------------------------------------------------------------ the reference decoder


class CausalDecoder:
    """Decodes one window from x_0 and the transmitted codes, left to right.

    ``sym[0]`` are the decoded bytes, ``sym[i]`` the decoded level-i codes (each (S,)), and
    ``cover[i][n]`` the index of the level-(i+1) code covering symbol n of level i. A symbol
    opens a patch when it is the first of its level, when the last decoded byte was an eos (the
    symbol begins with the next byte, so it opens a document), when the running patch reached
    ``max_patch_len``, or when the entropy of the next symbol given the decoded ones exceeds the
    threshold. Payments are recorded with the byte position at which they become computable.
    """

    def __init__(self, model, x0: int, codes: list[torch.Tensor]):
        self.model, self.codes = model, codes  # codes[i]: (K, S) level-(i+1) codes, transmitted
        self.L = len(model.levels)
        self.sym: list[list] = [[] for _ in range(self.L + 1)]
        self.cover: list[list[int]] = [[] for _ in range(self.L)]
        self.run = [0] * self.L  # symbols in the current patch of each level
        self.paid: dict[str, list[tuple[int, int, float]]] = {}  # part -> (code index, byte at decode, lp)
        self.byte_lp: list[float] = []  # log p(x_t), t = 1..
        self._next(0, x0)

    def decode(self, window: list[int]) -> None:
        for b in window[1:]:
            self._next(0, b)

    def _opens_patch(self, i: int) -> bool:
        x, n = self.sym[0], len(self.sym[i])
        if n == 0:
            return True
        if x[-1] == EOS:  # the next symbol of any level begins with the next byte: a new document
            return True
        ecfg = self.model.levels[i].entropy.cfg
        if self.run[i] >= ecfg.max_patch_len:
            return True
        level = self.model.levels[i]
        seq = torch.tensor([x]) if i == 0 else torch.stack(self.sym[i])[None]  # (1, n) or (1, n, S)
        dummy = torch.zeros_like(seq[:, :1])  # the next symbol, not yet known
        _, H = level.entropy(torch.cat([seq, dummy], dim=1))
        return bool(H[0, -1] > float(level.entropy.threshold))

    def _next(self, i: int, value=None) -> None:
        """Decode the next symbol of level i (bytes: ``value``; codes: the next transmitted one)."""
        n = len(self.sym[i])
        if i > 0:
            assert n < len(self.codes[i - 1]), f"the decoder opened level-{i} code {n}, which the encoder never made"
        if i == self.L:  # a top code: paid under the top model
            code = self.codes[i - 1][n]
            self.sym[i].append(code)
            self._pay("top", n, self._top_lp(n))
            return
        if self._opens_patch(i):
            self._next(i + 1)  # read the code of the new patch first
            self.run[i] = 0
        self.cover[i].append(len(self.sym[i + 1]) - 1)
        self.run[i] += 1
        level = self.model.levels[i]
        above = torch.stack(self.sym[i + 1])[None]  # (1, K, S): only the codes decoded so far
        vec = level.vq.embed(above)
        valid = torch.ones(above.shape[:2], dtype=torch.bool)
        if i == 0:
            if n > 0:  # x_0 is given; x_n is predicted at position n-1 under the code covering it
                tseg = torch.tensor([self.cover[0][1:]])
                h = level.expander.hidden(torch.tensor([self.sym[0]]), tseg, vec, valid)[:, -1]
                logits = level.expander.byte_logits(h)
                if level.lcfg.expander_prior:  # the entropy model's guess from the decoded bytes alone
                    _, _, guess = level.entropy(torch.tensor([self.sym[0]]), logits=True)
                    logits = logits + guess[:, -1]
                self.byte_lp.append(float(torch.log_softmax(logits.float(), -1)[0, value]))
            self.sym[0].append(value)
            return
        code = self.codes[i - 1][n]
        low = torch.stack([*self.sym[i], code])[None]  # (1, n+1, S): the last is only the target
        h = level.expander.hidden(low, torch.tensor([self.cover[i]]), vec, valid)[:, -1:]
        prior = None
        if level.lcfg.expander_prior and n > 0:  # the entropy model's guess from the decoded codes alone
            _, _, states = level.entropy(torch.stack(self.sym[i])[None], logits=True)
            prior = Prior(level.entropy.head, states[:, -1:])
        lp, *_ = level.expander.head.log_prob(h, code[None, None], prior)
        self.sym[i].append(code)
        self._pay(f"level{i + 1}", n, float(lp[0, 0]))

    def _top_lp(self, n: int) -> float:
        top, codes = self.model.top, torch.stack(self.sym[self.L])[None]
        if top is None or top.continuous:
            rvq = self.model.levels[-1].vq
            return -len(rvq.stages) * math.log(rvq.K)
        return float(top.log_prob(codes)[0, n])

    def _pay(self, part: str, n: int, lp: float) -> None:
        # A code is decoded (and its probability computable) when its first byte is next.
        self.paid.setdefault(part, []).append((n, len(self.sym[0]), lp))

    # -------------------------------------------------------------------------------- results

    def starts(self, i: int) -> list[bool]:
        """Whether each level-i symbol opened a patch."""
        c = self.cover[i]
        return [n == 0 or c[n] != c[n - 1] for n in range(len(c))]

    def charges(self, T: int) -> dict[str, list[float]]:
        """Per-part payments on byte entries (T-1,), as the two-part code books them: x_t at entry
        t-1; each code at its last byte but a closing eos (an eos-only patch: that eos)."""
        x = self.sym[0]
        out = {"level1": [0.0] * (T - 1)}
        for t, lp in enumerate(self.byte_lp, start=1):
            out["level1"][t - 1] = lp
        # end[n]: last byte code n of the current level was pooled from; blank: eos-only codes.
        members = lambda i, k: [n for n, c in enumerate(self.cover[i]) if c == k]  # noqa: E731
        blank, end = [x_t == EOS for x_t in x], list(range(len(x)))
        for i in range(self.L):
            K = len(self.sym[i + 1])
            new_end, new_blank = [], []
            for k in range(K):
                kids = members(i, k)
                content = [n for n in kids if not blank[n]]
                new_end.append(end[max(content or kids[:1])])
                new_blank.append(not content)
            end, blank = new_end, new_blank
            part = f"level{i + 2}" if i + 1 < self.L else "top"
            out[part] = [0.0] * (T - 1)
            for k, decoded_at, lp in self.paid[part]:
                assert decoded_at <= end[k]  # known (decoded) no later than where it is charged
                out[part][max(end[k] - 1, 0)] += lp
        return out


def _decode(model, row: torch.Tensor) -> CausalDecoder:
    outs = model.compress_all(row[None])
    codes = [out.codes[0, : int(out.n_codes[0])] for out in outs]
    dec = CausalDecoder(model, int(row[0]), codes)
    dec.decode(row.tolist())
    for i, c in enumerate(codes):
        assert len(dec.sym[i + 1]) == c.size(0)  # it read every transmitted code, no more
    return dec


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("levels,thresholds,prior,code_prior",
                         [(1, "median", False, False), (1, "high", False, False), (2, "median", False, False),
                          (2, "high", False, False), (1, "median", True, False), (2, "median", True, False),
                          (2, "median", True, True)])
@torch.no_grad()
def test_causal_decoder_cuts_where_the_encoder_does_and_pays_the_two_part_code(levels, thresholds, prior,
                                                                               code_prior):
    """Windows with eos at the first, last, middle and consecutive positions: the decoder's
    boundaries at every level equal compress_all's, and what it pays, byte by byte and part by
    part, equals two_part's entries and code_lengths' totals. "high" thresholds leave only
    document and max_patch_len cuts; "median" mixes in entropy cuts. ``prior``: the byte
    expander's logits add the entropy model's, which the decoder computes from the bytes it has;
    ``code_prior``: level 2's expander adds its entropy model's scores of the level-1 codes."""
    model = _prepared(levels, thresholds, prior, code_prior)
    x = _windows()
    T = x.size(1)
    outs = model.compress_all(x)
    parts, _ = model.two_part(x)
    lengths = model.code_lengths(x)
    n_eos_cuts = 0
    for b in range(x.size(0)):
        dec = _decode(model, x[b])
        # boundaries: every level, decided from the decoded prefix alone
        assert dec.cover[0] == outs[0].seg[b].tolist()
        for i in range(1, levels):
            assert dec.cover[i] == outs[i].seg[b, : int(outs[i - 1].n_codes[b])].tolist()
        starts = dec.starts(0)
        n_eos_cuts += sum(starts[t] for t in range(1, T) if x[b, t - 1] == EOS)
        for i in range(1, levels):  # a code whose first byte follows an eos opens a patch above
            first = {}
            for t, k in enumerate(dec.cover[0]):
                first.setdefault(k, t)
            opens_doc = [first[k] > 0 and int(x[b, first[k] - 1]) == EOS for k in range(len(dec.cover[i]))]
            assert all(s for s, o in zip(dec.starts(i), opens_doc) if o)
        # payments, byte by byte and part by part
        charged = dec.charges(T)
        assert set(charged) == set(parts)
        for part, per_byte in charged.items():
            torch.testing.assert_close(parts[part][b], torch.tensor(per_byte), atol=1e-5, rtol=0)
            assert abs(-lengths[part][b].item() - sum(per_byte)) < 1e-4
    assert n_eos_cuts == int((x[:, :-1] == EOS).sum())  # the byte after every eos opened a patch


def _argmax_kept(kept: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    kept.append(logits[0])
    return logits.argmax(-1)


@pytest.mark.parametrize("levels,prior,code_prior", [(1, False, False), (2, False, False), (1, True, False),
                                                     (2, True, False), (2, True, True)])
@torch.no_grad()
def test_generation_cuts_where_the_encoder_does(levels, prior, code_prior):
    """generate.py's Expansion, teacher-forced with the true bytes and codes, cuts every level
    exactly where compress_all does (the same causal rule, eos included), and draws each byte
    from the distribution the two-part code scores it under (with the expander's prior too);
    with two levels, each level-1 code from the distribution level 2 scores it under."""
    model = _prepared(levels, "median", prior, code_prior)
    x = _windows()
    for b in range(x.size(0)):
        outs = model.compress_all(x[b : b + 1])
        codes = [out.codes[:, : int(out.n_codes[0])] for out in outs]
        seqs = [x[b : b + 1, :1], *[c[:, :1] for c in codes[:-1]], codes[-1]]  # the top codes are given
        drawn: list[torch.Tensor] = []
        drawn_codes: list[torch.Tensor] = []
        exp = Expansion(model, seqs, [[0] for _ in range(levels)], partial(_argmax_kept, drawn),
                        partial(_argmax_kept, drawn_codes), can_propose=False)
        for t in range(1, x.size(1)):
            assert exp.extend(0)
            exp.seqs[0][0, -1] = x[b, t]  # teacher forcing: the true byte and codes
            for i in range(1, levels):
                n = exp.seqs[i].size(1)
                exp.seqs[i][0, -1] = codes[i - 1][0, n - 1]
        assert exp.covers[0] == outs[0].seg[0].tolist()
        for i in range(1, levels):
            assert exp.covers[i] == outs[i].seg[0, : int(outs[i - 1].n_codes[0])].tolist()
        if levels > 1:  # a byte opening a patch is drawn under the level-1 code drawn before it was forced
            _, lp, _ = model.levels[1].reconstruct(outs[0].codes, outs[1])  # (1, K1): log p of each true code
            drawn_lp = [float(lg.log_softmax(-1)[codes[0][0, n + 1, 0]]) for n, lg in enumerate(drawn_codes)]
            torch.testing.assert_close(torch.tensor(drawn_lp), lp[0, 1 : len(drawn_lp) + 1], atol=1e-4, rtol=0)
            assert len(drawn_lp) == codes[0].size(1) - 1  # every level-1 code after the given first
            continue
        scored = model(x[b : b + 1]).logits[0, :-1].float()  # position t-1 scores x_t
        torch.testing.assert_close(torch.stack(drawn).log_softmax(-1), scored.log_softmax(-1), atol=1e-4, rtol=0)


@torch.no_grad()
def test_the_old_rule_cut_at_an_eos_before_a_decoder_could_know_it():
    """The old rule started a patch AT an eos (x_t == eos): two windows with the same prefix
    x_<m got different boundaries at m, so a decoder holding x_<m could not know which code
    covers x_m, and the probabilities it was charged at m do not sum to 1."""
    model = _prepared(1, "high")  # only documents and max_patch_len cut
    prefix = [EOS, *_doc("The ca")]  # m = 7: no max_patch_len cut at m or m + 1 under either rule
    m = len(prefix)
    a = torch.tensor([[*prefix, EOS, *_doc("Dogs")]])
    b = torch.tensor([[*prefix, *_doc("t ran")]])
    level = model.levels[0]
    max_len = level.entropy.cfg.max_patch_len

    def old_starts(row: torch.Tensor) -> list[bool]:
        _, H = level.entropy(row)
        out, run = [], 0
        for t in range(row.size(1)):
            s = t == 0 or bool(H[0, t] > level.entropy.threshold) or int(row[0, t]) == EOS or run >= max_len
            run = 1 if s else run + 1
            out.append(s)
        return out

    assert old_starts(a)[:m] == old_starts(b)[:m]
    assert old_starts(a)[m] != old_starts(b)[m]  # decided by x_m itself: not decodable
    new_a, new_b = (model.compress_all(r)[0].seg[0] for r in (a, b))
    assert torch.equal(new_a[: m + 1], new_b[: m + 1])  # now decided by x_<m alone
    assert new_a[m + 1] == new_a[m] + 1  # the byte after the eos opens the next document's patch

    # Charged mass at m with the codes fixed. Old rule: x_m != eos under the current code, x_m =
    # eos under the next one; new rule: every x_m under the code the prefix gives.
    outs = model.compress_all(a)
    vec = level.vq.embed(outs[0].codes)

    def dist(cover_m: int) -> torch.Tensor:
        tseg = torch.cat([outs[0].seg[:, 1:m], torch.tensor([[cover_m]])], dim=1)
        h = level.expander.hidden(a[:, :m], tseg, vec, outs[0].code_valid)[:, -1]
        return torch.softmax(level.expander.byte_logits(h).float(), -1)[0]

    cur, nxt = int(new_a[m - 1]), int(new_a[m - 1]) + 1
    old_mass = float(dist(cur).sum() - dist(cur)[EOS] + dist(nxt)[EOS])
    assert abs(old_mass - 1.0) > 1e-6, old_mass
    assert float(dist(int(new_a[m])).sum()) == pytest.approx(1.0, abs=1e-6)
    # and the two-part code charges x_m = eos what that decoder assigns it
    assert float(model.two_part(a)[0]["level1"][0, m - 1].exp()) == pytest.approx(float(dist(cur)[EOS]), rel=1e-5)


@torch.no_grad()
def test_every_two_byte_tail_together_costs_no_more_than_its_prefix():
    """Kraft's inequality over a subtree, brute force: for the prefix x_<2 = (eos, 'H'), the
    two-part code's probabilities of all 260^2 windows (eos, 'H', x_2, x_3) sum to at most the
    decoder's probability of (eos, 'H') summed over the values c of the code that covers 'H'
    (the patch opened by 'H' runs on into the tail, so that code depends on the tail; x_2 = eos
    makes x_3 open a new patch). Grouping the windows by c gives the bound: given c, the tails
    are a proper decoding tree. Only codes some tail falls under enter the sum, so the bound is
    tight and a missing or misplaced charge shows."""
    model = _prepared(1, "high")
    prefix, V = [EOS, ord("H")], 260
    tails = torch.cartesian_prod(torch.arange(V), torch.arange(V))  # (V^2, 2)
    windows = torch.cat([torch.tensor(prefix).expand(len(tails), 2), tails], dim=1)  # (V^2, 4)
    total, used = [], set()
    for w in windows.split(4096):
        total.append(sum(model.code_lengths(w).values()))  # (B,) nats
        out = model.compress_all(w)[0]
        assert bool((out.seg[:, 1] == 1).all()) and bool((out.seg[:, 2] == 1).all())  # [eos] ['H', x_2 ..
        used |= set(out.codes[:, 1, 0].tolist())
    log_sum = float(torch.logsumexp(-torch.cat(total).double(), 0))

    # The decoder's log-probability of the prefix (codes 0 and c, byte 'H') for each used c.
    code0 = model.compress_all(windows[:1])[0].codes[0, :1]  # (1, S): the [eos] patch's code
    prefix_lp = []
    for c in sorted(used):
        dec = CausalDecoder(model, prefix[0], [torch.cat([code0, torch.tensor([[c]])])])
        dec.decode(prefix)
        prefix_lp.append(sum(dec.byte_lp) + sum(lp for _, _, lp in dec.paid["top"]))
    bound = float(torch.logsumexp(torch.tensor(prefix_lp, dtype=torch.float64), 0))
    assert log_sum <= bound + 1e-5, (log_sum, bound)


@pytest.mark.parametrize("levels", [1, 2])
@torch.no_grad()
def test_right_padding_with_eos_never_moves_a_rows_codes_or_charges(levels):
    """lmlab eval pads rows with eos on the right: the first pad joins the row's last patch
    (nothing may cut before a byte it has not seen), so it is left out of that patch's code and
    charge, and the row's entries equal those of the row alone."""
    model = _prepared(levels, "median")
    x = _windows()
    joined = 0
    for n in (10, 21, 30):
        row = x[:, :n]
        padded = torch.cat([row, torch.full((x.size(0), 12), EOS)], dim=1)
        torch.testing.assert_close(model.log_probs(padded)[:, : n - 1], model.log_probs(row), atol=1e-5, rtol=0)
        seg = model.compress_all(padded)[0].seg
        joined += int((seg[:, n] == seg[:, n - 1]).sum())
    assert joined > 0  # the case that needs the exclusion happened

"""The Abstractinator's per-level diagnostics (``AbstractinatorPyramid.diagnostics`` and
``eval_diagnostics``): code usage and perplexity, bytes per code, reconstruction accuracy
(teacher-forced and free-running), what the top model knows of the code sequence, and the
bits per byte by part beside the patcher's byte LM alone."""

from __future__ import annotations

import math

import torch

from lmlab.models.abstractinator.generate import free_running_accuracy
from lmlab.models.abstractinator.level import LevelOut


@torch.no_grad()
def diagnostics(model, input_ids: torch.Tensor, free_running_rows: int = 2, chunk: int = 16) -> dict:
    """Per level: codes, symbols and bytes per code, code usage (distinct codes / codebook
    size, per stage) and perplexity (per stage), dead codes, threshold, teacher-forced
    reconstruction accuracy; bytes per top code; free-running byte accuracy from the level-1
    codes (the first ``free_running_rows`` rows); the two-part bits per byte by part.
    input_ids (B, T) held-out byte windows, run ``chunk`` rows at a time."""
    was_training = model.training
    model.eval()
    try:
        L = len(model.levels)
        counts = [torch.zeros(len(lv.vq.stages), lv.vq.K) for lv in model.levels]  # code use per stage
        n_codes, n_sym, right, judged = [0] * L, [0] * L, [0.0] * L, [0] * L
        nats: dict[str, float] = {}
        # The byte level's entropy model alone, a causal byte LM the decoder runs anyway: what
        # the same bytes cost without any code (its CE head only: a Gaussian one has no
        # byte probabilities)
        byte_lm = model.cfg.levels[0].entropy.loss == "ce"
        lm_nats = 0.0
        for rows in input_ids.split(chunk):
            outs = model.compress_all(rows)
            if byte_lm:  # its loss: the mean next-byte CE over every target of these rows
                lm_nats += float(outs[0].entropy_loss) * rows[:, 1:].numel()
            sym, n = rows, rows.numel()
            for i, (level, out) in enumerate(zip(model.levels, outs)):
                codes = out.codes[out.code_valid]  # (N, S)
                for st in range(codes.size(1)):
                    counts[i][st] += torch.bincount(codes[:, st], minlength=level.vq.K).float().cpu()
                n_codes[i] += codes.size(0)
                n_sym[i] += n
                if not model.causal:  # causal decoding sends no code to reconstruct from
                    hits, seen = _teacher_forced_hits(model, i, sym, outs)
                    right[i] += hits
                    judged[i] += seen
                sym, n = out.codes, codes.size(0)
            for k, v in model.two_part(rows, outs)[0].items():
                nats[k] = nats.get(k, 0.0) - float(v.sum())
        # bits per byte of text, as the trainer's val_bpb: an eos target is paid for but is no byte
        n_bytes, n_scored = input_ids.numel(), int((input_ids[:, 1:] != model.eos_id).sum().clamp(min=1))
        levels = []
        for i, level in enumerate(model.levels):
            p = counts[i] / counts[i].sum(1, keepdim=True).clamp(min=1)
            levels.append({
                "level": i + 1, "codes": n_codes[i], "symbols_per_code": n_sym[i] / max(n_codes[i], 1),
                "bytes_per_code": n_bytes / max(n_codes[i], 1),
                "code_usage": [float((c > 0).sum()) / level.vq.K for c in counts[i]],
                "code_perplexity": [float(torch.exp(-(q * q.clamp(min=1e-12).log()).sum())) for q in p],
                "dead_codes": [int((vq.ema_count < vq.dead_threshold).sum()) for vq in level.vq.stages],
                "codebook_size": level.vq.K, "threshold": float(level.entropy.threshold),
                **({} if model.causal else {"recon_acc_teacher_forced": right[i] / max(judged[i], 1)}),
            })
        parts = {k: v / (math.log(2) * n_scored) for k, v in nats.items()}
        result = {"levels": levels, "bytes_per_top_code": levels[-1]["bytes_per_code"],
                  "two_part_bpb": {**parts, "total": sum(parts.values())},
                  **({"byte_lm_bpb": lm_nats / (math.log(2) * n_scored)} if byte_lm else {})}
        if model.causal:  # no code is sent: nothing to reconstruct from or to price
            return result
        positional, aligned = free_running_accuracy(model, input_ids[:free_running_rows])
        # What the top model knows of the code sequence: its bits per top code against the
        # codes' own frequencies on these windows (the stages' plug-in entropies summed: a
        # unigram model fitted to the very codes it scores, so the gain is if anything low)
        top_bits = nats["top"] / math.log(2) / max(n_codes[-1], 1)
        unigram = sum(math.log2(q) for q in levels[-1]["code_perplexity"])
        return {**result, "recon_acc_free_running": positional, "recon_acc_free_running_aligned": aligned,
                "top_bits_per_code": top_bits, "top_unigram_bits_per_code": unigram}
    finally:
        model.train(was_training)


def _teacher_forced_hits(model, i: int, sym: torch.Tensor, outs: list[LevelOut]) -> tuple[float, int]:
    """Level i's expander, teacher-forced on its input ``sym`` (bytes (B, T) or the codes
    below (B, T, S)) given its codes: (symbols it gets right by argmax, symbols judged)."""
    level, out = model.levels[i], outs[i]
    h = level.expander.hidden(sym, level.target_seg(out), level.vq.embed(out.codes), out.code_valid)
    if level.expander.byte_level:
        hit = level.byte_logits(h, out.prior)[:, :-1].argmax(-1) == sym[:, 1:]
        return float(hit.sum()), hit.numel()
    greedy = level.expander.head.sample(h.flatten(0, 1), lambda lg: lg.argmax(-1)).view_as(sym)
    valid = outs[i - 1].code_valid
    return float(((greedy == sym).all(-1) & valid).sum()), int(valid.sum())


def eval_diagnostics(model, input_ids: torch.Tensor) -> dict[str, float]:
    """The per-level numbers logged with every evaluation (metrics.jsonl, trackers,
    metrics.json): ``l{i}_code_usage`` (the least-used stage's share of its codebook used on
    these held-out windows), ``l{i}_code_perplexity`` (stage 1), ``l{i}_bytes_per_code``,
    ``l{i}_recon_acc_tf``, ``bytes_per_top_code``, ``recon_acc_free_running`` (and ``_aligned``),
    ``top_bits_per_code`` and ``top_gain_bits`` (the codes' unigram bits less the top model's:
    what it predicts from the code sequence), the two-part bits per byte by part,
    ``bpb_<part>``, and with a CE entropy model at the byte level ``byte_lm_bpb`` (that model
    alone on the same bytes) and ``codes_gain_bpb`` (it less the two-part code: what the
    codes win over the byte LM the decoder runs anyway; negative: they cost more than they
    save). Causal decoding sends no code: no reconstruction or top-model keys, one part
    (``bpb_bytes``), and ``codes_gain_bpb`` is what the hierarchy adds to the patcher's byte LM."""
    d = diagnostics(model, input_ids)
    out: dict[str, float] = {}
    for lv in d["levels"]:
        i = lv["level"]
        out |= {f"l{i}_code_usage": min(lv["code_usage"]), f"l{i}_code_perplexity": lv["code_perplexity"][0],
                f"l{i}_bytes_per_code": lv["bytes_per_code"]}
        if "recon_acc_teacher_forced" in lv:
            out[f"l{i}_recon_acc_tf"] = lv["recon_acc_teacher_forced"]
    out |= {k: d[k] for k in ("bytes_per_top_code", "recon_acc_free_running", "recon_acc_free_running_aligned",
                              "top_bits_per_code") if k in d}
    if "top_bits_per_code" in d:
        out["top_gain_bits"] = d["top_unigram_bits_per_code"] - d["top_bits_per_code"]
    if "byte_lm_bpb" in d:
        out |= {"byte_lm_bpb": d["byte_lm_bpb"], "codes_gain_bpb": d["byte_lm_bpb"] - d["two_part_bpb"]["total"]}
    return out | {f"bpb_{k}": v for k, v in d["two_part_bpb"].items() if k != "total"}

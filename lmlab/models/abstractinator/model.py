"""AbstractinatorPyramid: the registered ``abstractinator`` family (seed 003).

Levels compress bottom-up (bytes -> level-1 codes -> level-2 codes ...), each expander
reconstructs its level's input from its codes, and an optional CodeSequenceTransformer models
the top codes. ``log_probs`` is the two-part code length (top codes under the top model, then
every level's input given the codes above), so bits-per-byte compares with byte-level LMs.
Generation (``generate_bytes``) continues the top codes and expands them level by level.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmlab.errors import LmlabError
from lmlab.generate.sampling import apply_repetition_penalty, sample_next
from lmlab.models.abstractinator.config import AbstractinatorConfig
from lmlab.models.abstractinator.generate import free_running_accuracy, start
from lmlab.models.abstractinator.level import Abstractinator, LevelOut
from lmlab.models.abstractinator.report import patch_boundaries, render_html, stats_line
from lmlab.models.abstractinator.top import CodeSequenceTransformer
from lmlab.models.abstractinator.vq import StepStatistics
from lmlab.models.base import LanguageModel, ModelOutput
from lmlab.models.common.layers import init_gpt2


class AbstractinatorPyramid(LanguageModel):
    # Forward logits reconstruct bytes given codes that cover later bytes: they are not
    # next-token predictions, and the contract's logits checks do not apply (see log_probs).
    next_token_logits = False
    unsupported_parallel = {
        "fsdp": "its vector quantisers update EMA codebooks, thresholds and code statistics as buffers "
                "with their own collectives in forward and decode patch by patch from submodules, which "
                "per-block parameter sharding does not cover; train it with parallel: ddp",
    }
    text_report = "patches"
    # Code usage needs more codes than one micro-batch makes: 64 windows (~2k codes at 128 bytes).
    diagnostics_rows = 64

    def __init__(self, cfg: AbstractinatorConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.eos_id = cfg.eos
        levels, below = [], None
        for lcfg in cfg.levels:
            level = Abstractinator(cfg, lcfg, below)
            levels.append(level)
            below = level.vq
        self.levels = nn.ModuleList(levels)
        top = cfg.top_transformer_config
        self.top = None
        if top is not None:
            self.top = CodeSequenceTransformer(cfg.d_model, top.n_head or cfg.n_head, top.n_layer, cfg.attn_form,
                                               cfg.attn_backend, cfg.mla_kv_rank, cfg.block_size, below,
                                               top.continuous)
        self.apply(init_gpt2)
        for level in self.levels:
            if level.expander.byte_level:  # factorised bytes: a unit-scale table, so up(embed) is not 0.02^2 small
                nn.init.normal_(level.expander.low_embed.weight, std=1.0)
        # Two-stage training: frozen parts take no gradient and keep their buffers (EMA
        # codebooks, tracked thresholds) bit-identical; see ``train``.
        self.frozen: list[nn.Module] = []
        if cfg.load_base_from is not None:
            self.frozen = list(self.levels)[: cfg.base_levels]
        elif cfg.load_entropy_from is not None:
            self.frozen = [level.entropy for level in self.levels]
        # A part whose loss has weight 0 would get no gradient: freeze it rather than leave
        # parameters that DDP waits on forever and AdamW keeps decaying.
        if self.top is not None and cfg.top_lm_loss_weight == 0:
            self.frozen.append(self.top)
        for level, lcfg in zip(self.levels, cfg.levels):
            if lcfg.w_entropy_ce == 0 and level.entropy not in self.frozen and level not in self.frozen:
                self.frozen.append(level.entropy)
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> AbstractinatorPyramid:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    # ------------------------------------------------------------------------------ compress

    def compress_all(self, input_ids: torch.Tensor) -> list[LevelOut]:
        """Bytes (B, T) -> every level's output, bottom first.

        Documents: the byte after an eos opens a patch at every level (the eos closes the patch
        of the document it ends). A decoder that has x_<t knows whether x_t follows an eos; it
        could not know whether x_t *is* one before decoding it, so cutting at the eos itself
        would make the two-part code undecodable there."""
        sym, valid = input_ids, torch.ones_like(input_ids, dtype=torch.bool)
        blank = input_ids == self.eos_id  # (B, T)
        forced = torch.zeros_like(blank)
        forced[:, 1:] = blank[:, :-1]  # x_{t-1} is eos
        cont = None
        outs = []
        for i, level in enumerate(self.levels):
            out = level.compress(sym, valid, forced, blank, cont)
            outs.append(out)
            sym, valid, forced, blank = out.codes, out.code_valid, out.forced, out.blank
            if i + 1 < len(self.levels):  # what the next level's compressor reads of each code
                cont = out.pooled if self.levels[i + 1].lcfg.compress_input == "pooled" else out.z_q
        return outs

    def forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> ModelOutput:
        """Bytes (B, T) -> byte logits (B, T, V): position t reconstructs x_{t+1} given x_<=t and
        the codes covering up to it. With targets, the loss of docs/abstractinator.md; targets
        of -1 drop those byte positions from the byte reconstruction."""
        outs = self.compress_all(input_ids)
        sym = input_ids
        terms: dict[str, torch.Tensor] = {}
        logits = None
        L = len(self.levels)
        n_bytes = max(input_ids[:, 1:].numel(), 1) if targets is None else (targets[:, :-1] >= 0).sum().clamp(min=1)
        for i, (level, out) in enumerate(zip(self.levels, outs)):
            below = outs[i - 1] if i else None
            lg, logp, rate = level.reconstruct(sym, out, soft=None if below is None else below.soft)
            if lg is not None:
                logits = lg
                mask = torch.ones_like(logp, dtype=torch.bool) if targets is None else targets[:, :-1] >= 0
            else:
                mask = below.code_valid
            lc = level.lcfg
            if self.cfg.loss_per_byte:
                terms[f"recon_l{i + 1}"] = self.cfg.w_recon * -(logp * mask).sum() / n_bytes
            else:
                terms[f"recon_l{i + 1}"] = self.cfg.w_recon * -(logp * mask).sum() / mask.sum().clamp(min=1) / L
            if rate is not None:  # level i's codes, priced by this expander (vq_rate of the level below)
                terms[f"rate_l{i}"] = self._rate_term(i - 1, (rate * mask).sum(), mask.sum(), n_bytes)
            terms[f"vq_l{i + 1}"] = lc.w_vq * out.vq_loss
            if lc.w_entropy_ce > 0:
                terms[f"entropy_l{i + 1}"] = lc.w_entropy_ce * out.entropy_loss
            sym = out.codes
        if self.top is not None and self.cfg.top_lm_loss_weight > 0:
            top = outs[-1]
            top_lm, rate = self.top.loss(top.codes, top.code_valid, top.soft)  # per code
            n_codes = top.code_valid.sum().clamp(min=1)
            if self.cfg.loss_per_byte:
                top_lm = top_lm * n_codes / n_bytes
            terms["top_lm"] = self.cfg.top_lm_loss_weight * top_lm
            if rate is not None:
                terms[f"rate_l{L}"] = self._rate_term(L - 1, rate * n_codes, n_codes, n_bytes)
        if targets is None:
            return ModelOutput(logits)
        loss = sum(terms.values())
        return ModelOutput(logits, loss, {k: v.detach() for k, v in terms.items()})

    def _rate_term(self, i: int, nats: torch.Tensor, n_codes: torch.Tensor, n_bytes: torch.Tensor | int) -> torch.Tensor:
        """Level i's (0-based) ``vq_rate`` term from its codes' summed expected length ``nats``:
        per byte with ``loss_per_byte`` (as the two-part code pays it), else per code."""
        per = n_bytes if self.cfg.loss_per_byte else n_codes.clamp(min=1)
        return self.cfg.levels[i].vq_rate * nats / per

    # ------------------------------------------------------------------------------- scoring

    @torch.no_grad()
    def code_lengths(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Nats of the two-part code of bytes (B, T), by part: ``top`` (B,) the top codes under
        the top model (uniform S*log K nats per code without a discrete one), ``level{i}`` (B,)
        level i's input given its codes (bytes x_1.. at level 1)."""
        parts, _ = self._two_part(input_ids)
        return {k: -v.sum(1) for k, v in parts.items()}

    def _two_part(self, input_ids: torch.Tensor,
                  outs: list[LevelOut] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-part log-probs charged to byte positions (B, T-1): entry t-1 holds what is paid
        when x_t is decoded. A code is charged at the last byte it was pooled from (the last
        byte of its span but a closing eos), so a scored continuation always pays for every
        code that depends on one of its bytes, and an eos appended to a row moves no charge out
        of it. Every charge is computable by a left-to-right decoder that has the codes: the
        patch covering x_t is a function of x_<t, and each code is known from its first byte
        on (tests/models/test_abstractinator_decodable.py decodes windows and compares). Also
        the byte expander's logits (B, T, V) given the codes. ``outs``: ``compress_all`` of these
        bytes in eval mode, where the caller has it."""
        outs = self.compress_all(input_ids) if outs is None else outs
        B, T = input_ids.shape
        parts: dict[str, torch.Tensor] = {}
        logits, parts["level1"], _ = self.levels[0].reconstruct(input_ids, outs[0],
                                                                self.levels[0].vq.embed(outs[0].codes))
        pos = torch.arange(T, device=input_ids.device).expand(B, T)
        # end[b, j]: the last byte code j of the current level was pooled from.
        out = outs[0]
        kept = torch.where(out.keep, out.seg, torch.full_like(out.seg, out.codes.size(1)))
        end = torch.zeros(B, out.codes.size(1) + 1, dtype=torch.long, device=input_ids.device)
        end = end.scatter_reduce(1, kept, pos, reduce="amax")[:, :-1]
        for i in range(1, len(self.levels)):
            level, out, below = self.levels[i], outs[i], outs[i - 1]
            _, lp, _ = level.reconstruct(below.codes, out, level.vq.embed(out.codes))  # (B, K_below)
            parts[f"level{i + 1}"] = self._charge(lp * below.code_valid, end, T)
            K = out.codes.size(1)
            up = torch.zeros(B, K + 1, dtype=torch.long, device=end.device)
            idx = torch.arange(end.size(1), device=end.device).expand_as(end)
            kept = torch.where(out.keep, out.seg, torch.full_like(out.seg, K))
            last = up.scatter_reduce(1, kept, idx, reduce="amax")[:, :-1]  # last pooled child of each code
            end = end.gather(1, last)
        top = outs[-1]
        if self.top is not None and not self.top.continuous:
            lp = self.top.log_prob(top.codes)
        else:  # no discrete prior: each code costs its uniform length, an upper bound
            rvq = self.levels[-1].vq
            lp = torch.full(top.codes.shape[:2], -len(rvq.stages) * math.log(rvq.K), device=end.device)
        parts["top"] = self._charge(lp * top.code_valid, end, T)
        return parts, logits

    @staticmethod
    def _charge(lp: torch.Tensor, end: torch.Tensor, T: int) -> torch.Tensor:
        """Scatter per-code log-probs (B, K) to byte entries (B, T-1) at index end - 1 (>= 0)."""
        out = torch.zeros(lp.size(0), T - 1, dtype=torch.float32, device=lp.device)
        return out.scatter_add(1, (end - 1).clamp(min=0), lp.float())

    @property
    def scoring_window(self) -> int:
        """The two-part code reads every byte it scores, the last one too: block_size."""
        return self.block_size

    @torch.no_grad()
    def log_probs(self, input_ids: torch.Tensor, return_greedy: bool = False):
        """The two-part code length per byte (B, T-1), in nats (negated): summed over a text it is
        -(bits of all codes + bits of the bytes given them) * ln 2. ``return_greedy``: whether
        each byte is the argmax of the byte expander given its codes (a reconstruction check,
        not a next-byte prediction)."""
        parts, logits = self._two_part(input_ids)
        total = sum(parts.values())
        if not return_greedy:
            return total
        return total, logits[:, :-1].argmax(-1) == input_ids[:, 1:]

    # ---------------------------------------------------------------------------- generate

    @torch.no_grad()
    def generate_bytes(self, prompt: bytes | list[int], max_len: int = 200, temperature: float = 0.0,
                       top_k: int | None = None, top_p: float = 1.0, repetition_penalty: float = 1.0,
                       stop_on_eos: bool = True, seed: int = 0, stop_fn=None) -> list[int]:
        """New byte ids after ``prompt`` (at most ``max_len``; cut before an eos when stopping).

        The prompt (after the eos start id) is compressed to codes at every level; the top model
        continues the top codes and the expanders turn them back into bytes, patch by patch.
        The prompt is cut from the left so that prompt and continuation fit ``block_size``.
        """
        max_len = min(max_len, self.block_size - 1)
        ids = [self.eos_id, *prompt][-(self.block_size - max_len):]
        device = next(self.parameters()).device
        g = torch.Generator(device=device).manual_seed(seed)
        x = torch.tensor([ids], device=device)

        def pick_byte(logits: torch.Tensor) -> torch.Tensor:
            logits = apply_repetition_penalty(logits, exp.seqs[0], repetition_penalty)
            return sample_next(logits, temperature, top_k, top_p, g)

        def pick_code(logits: torch.Tensor) -> torch.Tensor:
            return sample_next(logits, temperature, top_k, top_p, g)

        was_training = self.training
        self.eval()
        try:
            exp = start(self, x, pick_byte, pick_code)
            new: list[int] = []
            while len(new) < max_len and exp.extend(0):
                new.append(int(exp.seqs[0][0, -1]))
                if (stop_on_eos and new[-1] == self.eos_id) or (stop_fn is not None and stop_fn(new)):
                    break
        finally:
            self.train(was_training)
        if stop_on_eos and self.eos_id in new:
            new = new[: new.index(self.eos_id)]
        return new

    def generate_ids(self, prompts: list[list[int]], settings, eos_id: int, stop_fn=None) -> list[list[int]]:
        """The decoding loop's entry for this family (``lmlab sample``, samples after training,
        eval's generation tasks): :meth:`generate_bytes` per prompt."""
        if eos_id != self.eos_id:
            raise LmlabError(f"the tokenizer's eos id {eos_id} is not the model's {self.eos_id}; "
                             "abstractinator runs use tokenizer.type: byte")
        if settings.no_repeat_ngram_size:
            raise LmlabError("no_repeat_ngram_size is not supported by the abstractinator's patch decoder")
        return [self.generate_bytes(p, settings.max_new_tokens, settings.temperature, settings.top_k,
                                    settings.top_p, settings.repetition_penalty, settings.stop_on_eos,
                                    settings.seed + i, stop_fn) for i, p in enumerate(prompts)]

    # --------------------------------------------------------------------------- diagnose

    @torch.no_grad()
    def diagnostics(self, input_ids: torch.Tensor, free_running_rows: int = 2, chunk: int = 16) -> dict:
        """Per level: codes, symbols and bytes per code, code usage (distinct codes / codebook
        size, per stage) and perplexity (per stage), dead codes, threshold, teacher-forced
        reconstruction accuracy; bytes per top code; free-running byte accuracy from the level-1
        codes (the first ``free_running_rows`` rows); the two-part bits per byte by part.
        input_ids (B, T) held-out byte windows, run ``chunk`` rows at a time."""
        was_training = self.training
        self.eval()
        try:
            L = len(self.levels)
            counts = [torch.zeros(len(lv.vq.stages), lv.vq.K) for lv in self.levels]  # code use per stage
            n_codes, n_sym, right, judged = [0] * L, [0] * L, [0.0] * L, [0] * L
            nats: dict[str, float] = {}
            # The byte level's entropy model alone, a causal byte LM the decoder runs anyway: what
            # the same bytes cost without any code (its CE head only: a Gaussian one has no
            # byte probabilities)
            byte_lm = self.cfg.levels[0].entropy.loss == "ce"
            lm_nats = 0.0
            for rows in input_ids.split(chunk):
                outs = self.compress_all(rows)
                if byte_lm:  # its loss: the mean next-byte CE over every target of these rows
                    lm_nats += float(outs[0].entropy_loss) * rows[:, 1:].numel()
                sym, n = rows, rows.numel()
                for i, (level, out) in enumerate(zip(self.levels, outs)):
                    codes = out.codes[out.code_valid]  # (N, S)
                    for st in range(codes.size(1)):
                        counts[i][st] += torch.bincount(codes[:, st], minlength=level.vq.K).float().cpu()
                    n_codes[i] += codes.size(0)
                    n_sym[i] += n
                    h = level.expander.hidden(sym, level.target_seg(out), level.vq.embed(out.codes), out.code_valid)
                    if level.expander.byte_level:
                        hit = level.byte_logits(h, out.prior)[:, :-1].argmax(-1) == sym[:, 1:]
                        right[i] += float(hit.sum())
                        judged[i] += hit.numel()
                    else:
                        greedy = level.expander.head.sample(h.flatten(0, 1), lambda lg: lg.argmax(-1)).view_as(sym)
                        valid = outs[i - 1].code_valid
                        right[i] += float(((greedy == sym).all(-1) & valid).sum())
                        judged[i] += int(valid.sum())
                    sym, n = out.codes, codes.size(0)
                for k, v in self._two_part(rows, outs)[0].items():
                    nats[k] = nats.get(k, 0.0) - float(v.sum())
            # bits per byte of text, as the trainer's val_bpb: an eos target is paid for but is no byte
            n_bytes, n_scored = input_ids.numel(), int((input_ids[:, 1:] != self.eos_id).sum().clamp(min=1))
            levels = []
            for i, level in enumerate(self.levels):
                p = counts[i] / counts[i].sum(1, keepdim=True).clamp(min=1)
                levels.append({
                    "level": i + 1, "codes": n_codes[i], "symbols_per_code": n_sym[i] / max(n_codes[i], 1),
                    "bytes_per_code": n_bytes / max(n_codes[i], 1),
                    "code_usage": [float((c > 0).sum()) / level.vq.K for c in counts[i]],
                    "code_perplexity": [float(torch.exp(-(q * q.clamp(min=1e-12).log()).sum())) for q in p],
                    "dead_codes": [int((vq.ema_count < vq.dead_threshold).sum()) for vq in level.vq.stages],
                    "codebook_size": level.vq.K, "threshold": float(level.entropy.threshold),
                    "recon_acc_teacher_forced": right[i] / max(judged[i], 1),
                })
            parts = {k: v / (math.log(2) * n_scored) for k, v in nats.items()}
            positional, aligned = free_running_accuracy(self, input_ids[:free_running_rows])
            # What the top model knows of the code sequence: its bits per top code against the
            # codes' own frequencies on these windows (the stages' plug-in entropies summed: a
            # unigram model fitted to the very codes it scores, so the gain is if anything low)
            top_bits = nats["top"] / math.log(2) / max(n_codes[-1], 1)
            unigram = sum(math.log2(q) for q in levels[-1]["code_perplexity"])
            return {"levels": levels, "bytes_per_top_code": levels[-1]["bytes_per_code"],
                    "recon_acc_free_running": positional, "recon_acc_free_running_aligned": aligned,
                    "top_bits_per_code": top_bits, "top_unigram_bits_per_code": unigram,
                    "two_part_bpb": {**parts, "total": sum(parts.values())},
                    **({"byte_lm_bpb": lm_nats / (math.log(2) * n_scored)} if byte_lm else {})}
        finally:
            self.train(was_training)

    def eval_diagnostics(self, input_ids: torch.Tensor) -> dict[str, float]:
        """The per-level numbers logged with every evaluation (metrics.jsonl, trackers,
        metrics.json): ``l{i}_code_usage`` (the least-used stage's share of its codebook used on
        these held-out windows), ``l{i}_code_perplexity`` (stage 1), ``l{i}_bytes_per_code``,
        ``l{i}_recon_acc_tf``, ``bytes_per_top_code``, ``recon_acc_free_running`` (and ``_aligned``),
        ``top_bits_per_code`` and ``top_gain_bits`` (the codes' unigram bits less the top model's:
        what it predicts from the code sequence), the two-part bits per byte by part,
        ``bpb_<part>``, and with a CE entropy model at the byte level ``byte_lm_bpb`` (that model
        alone on the same bytes) and ``codes_gain_bpb`` (it less the two-part code: what the
        codes win over the byte LM the decoder runs anyway; negative: they cost more than they
        save)."""
        d = self.diagnostics(input_ids)
        out: dict[str, float] = {}
        for lv in d["levels"]:
            i = lv["level"]
            out |= {f"l{i}_code_usage": min(lv["code_usage"]), f"l{i}_code_perplexity": lv["code_perplexity"][0],
                    f"l{i}_bytes_per_code": lv["bytes_per_code"], f"l{i}_recon_acc_tf": lv["recon_acc_teacher_forced"]}
        out |= {k: d[k] for k in ("bytes_per_top_code", "recon_acc_free_running", "recon_acc_free_running_aligned",
                                  "top_bits_per_code")}
        out["top_gain_bits"] = d["top_unigram_bits_per_code"] - d["top_bits_per_code"]
        if "byte_lm_bpb" in d:
            out |= {"byte_lm_bpb": d["byte_lm_bpb"], "codes_gain_bpb": d["byte_lm_bpb"] - d["two_part_bpb"]["total"]}
        return out | {f"bpb_{k}": v for k, v in d["two_part_bpb"].items() if k != "total"}

    def report_on_text(self, text: str, title: str) -> tuple[str, str]:
        """Where each level cuts ``text`` into patches: (HTML page, per-level stats line)."""
        data = text.encode("utf-8", "surrogateescape")  # as the byte tokenizer encodes it
        if not data:
            raise LmlabError("the text is empty: nothing to cut into patches")
        boundaries = patch_boundaries(self, data)
        return render_html(data, boundaries, f"{title}: patches"), stats_line(len(data), boundaries)

    # ------------------------------------------------------------------ two-stage workflow

    def base_state_dict(self) -> dict[str, torch.Tensor]:
        """The levels' weights and buffers (entropy models, compressors, quantisers, expanders)."""
        return {f"levels.{k}": v for k, v in self.levels.state_dict().items()}

    def save_base_components(self, path: str | Path) -> None:
        """Write :meth:`base_state_dict` to ``path`` (safetensors, atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.base_state_dict().items()}, str(tmp))
        tmp.replace(path)

    def load_base_components(self, source: str | Path, entropy_only: bool = False, levels: int | None = None) -> int:
        """Copy the tensors of the bottom ``levels`` levels (all by default; or only their entropy
        models) from a safetensors file (a base file, or a snapshot's weights: the trainer
        resolves a run dir to one); returns how many tensors were loaded. Shapes must match
        this config."""
        try:
            state = load_file(str(source))
        except Exception as e:  # safetensors raises its own error types for a corrupt header
            raise LmlabError(f"{source}: not a safetensors file ({e.__class__.__name__}: {e})") from None
        keep = tuple(f"levels.{i}." for i in range(levels if levels is not None else len(self.levels)))
        want = {k: v for k, v in self.base_state_dict().items()
                if k.startswith(keep) and (not entropy_only or ".entropy." in k)}
        missing = sorted(k for k in want if k not in state)
        if missing:
            raise LmlabError(f"{source}: no {missing[0]} (and {len(missing) - 1} more): not a base file of "
                             "this level layout; check model.levels against the stage-1 run")
        for k, v in want.items():
            if state[k].shape != v.shape:
                raise LmlabError(f"{source}: {k} has shape {tuple(state[k].shape)} but this config needs "
                                 f"{tuple(v.shape)}; use the stage-1 run's model settings")
        own = dict(self.named_parameters()) | dict(self.named_buffers())
        with torch.no_grad():
            for k in want:
                own[k].copy_(state[k])
        return len(want)

    def on_train_start(self, resumed: bool, weights_file: Callable[[str], Path]) -> None:
        """Trainer hook: a fresh stage-2 run loads the frozen parts (a resumed one has them).
        ``weights_file`` turns ``load_base_from`` (a base file or a stage-1 run dir) into a file."""
        for module in self.modules():  # the trainer ends every step: statistics apply once per step
            if isinstance(module, StepStatistics):
                module.deferred = True
        if resumed:
            return
        if self.cfg.load_base_from is not None:
            path = weights_file(self.cfg.load_base_from)
            n = self.load_base_components(path, levels=self.cfg.base_levels)
            print(f"lmlab: loaded {n} base tensors from {self.cfg.load_base_from} (frozen)", flush=True)
        elif self.cfg.load_entropy_from is not None:
            n = self.load_base_components(weights_file(self.cfg.load_entropy_from), entropy_only=True)
            print(f"lmlab: loaded {n} entropy-model tensors from {self.cfg.load_entropy_from} (frozen)", flush=True)

    def param_parts(self) -> dict[str, str]:
        """Four parts for ``train.part_lr`` / ``part_warmup``: ``entropy`` (every level's entropy
        model), ``encoder`` (embedding or input projection, compressor, ``down``, codebooks),
        ``expander`` (every level's) and ``top`` (the code-sequence transformer)."""
        parts = {}
        for name, _ in self.named_parameters():
            if name.startswith("top."):
                parts[name] = "top"
            else:  # levels.{i}.<module>...
                module = name.split(".")[2]
                parts[name] = module if module in ("entropy", "expander") else "encoder"
        return parts

    def on_step_end(self) -> None:
        """Trainer hook (every rank, after each optimizer step): the quantisers' counts, sums and
        resets, the code-space moments and the tracked thresholds move by the whole step's
        statistics, reduced over the ranks (:class:`~lmlab.models.abstractinator.vq.StepStatistics`)."""
        for module in self.modules():  # one order on every rank: the collectives pair up
            if isinstance(module, StepStatistics):
                module.step_end()

    def on_checkpoint(self) -> None:
        """Trainer hook (rank 0, after each snapshot): stage 1 writes the base components."""
        if self.cfg.save_base_components_path is not None:
            self.save_base_components(self.cfg.save_base_components_path)

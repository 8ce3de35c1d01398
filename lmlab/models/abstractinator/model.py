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
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lmlab.errors import LmlabError
from lmlab.generate.sampling import apply_repetition_penalty, sample_next
from lmlab.models.abstractinator import diagnose
from lmlab.models.abstractinator.config import AbstractinatorConfig
from lmlab.models.abstractinator.generate import start
from lmlab.models.abstractinator.level import Abstractinator, LevelOut
from lmlab.models.abstractinator.report import patch_boundaries, render_html, stats_line
from lmlab.models.abstractinator.top import CodeSequenceTransformer
from lmlab.models.abstractinator.vq import StepStatistics
from lmlab.models.base import LanguageModel, ModelOutput
from lmlab.models.common.layers import init_gpt2


class AbstractinatorPyramid(LanguageModel):
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
        self.causal = cfg.decoding == "causal"
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
                                               cfg.attn_backend, cfg.mla_kv_rank, cfg.block_size + 1, below,
                                               top.continuous, head=not self.causal,
                                               d_in=cfg.d_model if cfg.causal_reads == "pooled" else None)
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

    @property
    def next_token_logits(self) -> bool:  # type: ignore[override]
        """Two-part decoding: forward logits reconstruct bytes given codes that cover later
        bytes, not next-byte predictions (see log_probs); causal decoding: they are."""
        return self.causal

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
        if self.causal:
            return self._causal_forward(input_ids, targets, label_smoothing)
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
            if self.cfg.loss_per_byte:
                terms[f"recon_l{i + 1}"] = self.cfg.w_recon * -(logp * mask).sum() / n_bytes
            else:
                terms[f"recon_l{i + 1}"] = self.cfg.w_recon * -(logp * mask).sum() / mask.sum().clamp(min=1) / L
            if rate is not None:  # level i's codes, priced by this expander (vq_rate of the level below)
                terms[f"rate_l{i}"] = self._rate_term(i - 1, (rate * mask).sum(), mask.sum(), n_bytes)
            terms.update(self._level_terms(i, out))
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

    def _causal_states(self, outs: list[LevelOut]) -> torch.Tensor:
        """Causal decoding: one state per level-1 patch (B, K_1, D), state k from the codes of
        the patches before k alone. The top model reads the top codes' straight-through
        vectors (state k: codes < k); going down, level i's expander reads the codes of level
        i-1 before k inside their level-i patch and the level-i states up to that patch. Each
        patch is read as its code's vector, or with ``causal_reads: pooled`` as its continuous
        pooled vector (BLT's patch embedding; the codes still decide the upper levels' cuts)."""
        pooled = self.cfg.causal_reads == "pooled"
        h = self.top.states(outs[-1].pooled if pooled else outs[-1].z_q)  # (B, K_L, D)
        for i in range(len(self.levels) - 1, 0, -1):
            level, out, below = self.levels[i], outs[i], outs[i - 1]
            h = level.expander.hidden(below.codes, level.target_seg(out), h, out.code_valid,
                                      low_vec=below.pooled if pooled else below.z_q)
        return h

    def _causal_logits(self, input_ids: torch.Tensor, last: bool,
                       outs: list[LevelOut] | None = None) -> tuple[torch.Tensor, list[LevelOut]]:
        """Causal decoding: bytes (B, T) -> (next-byte logits (B, T, V), every level's output).

        ``last``: the last position's prediction as a longer window would give it. Its target
        opens a new patch when the entropy at x_<=t says so, and that patch's state reads the
        code of the patch x_t ends, which needs a position after it: one eos is appended
        before compressing. Nothing reads that byte itself (a patch's state reads only earlier
        patches; an eos is never pooled into the code before it). Without ``last`` (every
        training forward, ``log_probs``: nothing reads the last position there) no byte is
        appended, so no made-up byte reaches a loss or a running statistic. ``outs``:
        ``compress_all`` of these bytes, where the caller has it (only without ``last``)."""
        x = torch.cat([input_ids, torch.full_like(input_ids[:, :1], self.eos_id)], dim=1) if last else input_ids
        outs = self.compress_all(x) if outs is None or last else outs
        level = self.levels[0]
        h = level.expander.hidden(x, level.target_seg(outs[0]), self._causal_states(outs), outs[0].code_valid)
        logits = level.byte_logits(h, outs[0].prior)  # (B, T (+1), V): position t predicts x_{t+1}
        return (logits[:, :-1] if last else logits), outs

    def _causal_forward(self, input_ids: torch.Tensor, targets: torch.Tensor | None,
                        label_smoothing: float = 0.0) -> ModelOutput:
        """Causal decoding: bytes (B, T) -> next-byte logits (B, T, V) from the states over
        earlier patches. With targets, the loss: their cross-entropy over x_1..x_{T-1}
        (``targets[:, :-1]``, -1 dropped; as in the two-part code, the window's last target is
        not scored) with every level's quantiser and entropy-model terms."""
        if targets is None:  # next-byte use (eval, generation); in training nothing is appended
            return ModelOutput(self._causal_logits(input_ids, last=not self.training)[0])
        logits, outs = self._causal_logits(input_ids, last=False)
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets[:, :-1].flatten(), ignore_index=-1,
                             label_smoothing=label_smoothing)
        terms = {"recon_l1": self.cfg.w_recon * ce}
        for i, out in enumerate(outs):
            terms.update(self._level_terms(i, out))
        return ModelOutput(logits, sum(terms.values()), {k: v.detach() for k, v in terms.items()})

    def _level_terms(self, i: int, out: LevelOut) -> dict[str, torch.Tensor]:
        """Level i's (0-based) own loss terms: its quantiser's, its entropy model's CE and the
        patch probe's reconstruction (``w_patch_recon``), each by its weight."""
        lc = self.cfg.levels[i]
        terms = {f"vq_l{i + 1}": lc.w_vq * out.vq_loss}
        if lc.w_entropy_ce > 0:
            terms[f"entropy_l{i + 1}"] = lc.w_entropy_ce * out.entropy_loss
        if out.patch_loss is not None:
            terms[f"patch_l{i + 1}"] = lc.w_patch_recon * out.patch_loss
        return terms

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
        parts, _ = self.two_part(input_ids)
        return {k: -v.sum(1) for k, v in parts.items()}

    def two_part(self, input_ids: torch.Tensor,
                  outs: list[LevelOut] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-part log-probs charged to byte positions (B, T-1): entry t-1 holds what is paid
        when x_t is decoded. A code is charged at the last byte it was pooled from (the last
        byte of its span but a closing eos), so a scored continuation always pays for every
        code that depends on one of its bytes, and an eos appended to a row moves no charge out
        of it. Every charge is computable by a left-to-right decoder that has the codes: the
        patch covering x_t is a function of x_<t, and each code is known from its first byte
        on (tests/models/test_abstractinator_decodable.py decodes windows and compares). Also
        the byte expander's logits (B, T, V) given the codes. ``outs``: ``compress_all`` of these
        bytes in eval mode, where the caller has it. Causal decoding sends no code: one part,
        ``bytes``, the next-byte log-probs of the forward logits."""
        if self.causal:
            logits = self._causal_logits(input_ids, last=False, outs=outs)[0]  # (B, T, V)
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            return {"bytes": lp}, logits
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
        not a next-byte prediction). Causal decoding: the next-byte log-probs, and greedy is
        whether each byte is the next-byte argmax, as for any byte LM."""
        parts, logits = self.two_part(input_ids)
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

        Two-part decoding: the prompt (after the eos start id) is compressed to codes at every
        level; the top model continues the top codes and the expanders turn them back into
        bytes, patch by patch. The prompt is cut from the left so that prompt and continuation
        fit ``block_size``. Causal decoding: byte by byte from the forward's last logits, over
        the last ``block_size`` bytes (the window slides).
        """
        ids = [self.eos_id, *prompt]
        if not self.causal:
            max_len = min(max_len, self.block_size - 1)
            ids = ids[-(self.block_size - max_len):]
        device = next(self.parameters()).device
        g = torch.Generator(device=device).manual_seed(seed)
        seq = torch.tensor([ids], device=device)  # (1, t): every byte so far

        def pick_byte(logits: torch.Tensor) -> torch.Tensor:
            logits = apply_repetition_penalty(logits, seq if self.causal else exp.seqs[0], repetition_penalty)
            return sample_next(logits, temperature, top_k, top_p, g)

        def pick_code(logits: torch.Tensor) -> torch.Tensor:
            return sample_next(logits, temperature, top_k, top_p, g)

        was_training = self.training
        self.eval()
        try:
            if not self.causal:
                exp = start(self, seq, pick_byte, pick_code)
            new: list[int] = []
            while len(new) < max_len:
                if self.causal:
                    byte = pick_byte(self(seq[:, -self.block_size:]).logits[:, -1].float())  # (1,)
                    seq = torch.cat([seq, byte.view(1, 1)], dim=1)
                elif exp.extend(0):
                    seq = exp.seqs[0]
                else:
                    break
                new.append(int(seq[0, -1]))
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
        """Per-level diagnostics of held-out byte windows (B, T): :func:`.diagnose.diagnostics`."""
        return diagnose.diagnostics(self, input_ids, free_running_rows, chunk)

    def eval_diagnostics(self, input_ids: torch.Tensor) -> dict[str, float]:
        """The numbers logged with every evaluation: :func:`.diagnose.eval_diagnostics`."""
        return diagnose.eval_diagnostics(self, input_ids)

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

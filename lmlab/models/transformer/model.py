"""GPT-style baseline: token embedding, pre-norm blocks (attention + MLP), final norm, LM head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from lmlab.models.base import LanguageModel, ModelOutput, lm_loss
from lmlab.models.common.attention import CausalSelfAttention, KVCache
from lmlab.models.common.layers import MLP, build_norm, init_gpt2
from lmlab.models.common.positions import rope_cache, sinusoidal_table
from lmlab.models.transformer.config import TransformerConfig


@dataclass
class TransformerState:
    """Decoding state: one KV cache per layer and the number of positions already cached."""

    caches: list[KVCache]
    pos: int = 0


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.norm1 = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        attn_bias = cfg.bias if cfg.attn_bias is None else cfg.attn_bias
        mlp_bias = cfg.bias if cfg.mlp_bias is None else cfg.mlp_bias
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_head, attn_bias, cfg.dropout, cfg.pos_encoding,
                                        cfg.n_kv_head)
        self.norm2 = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.mlp = MLP(cfg.d_model, cfg.ff_dim, cfg.mlp, mlp_bias, cfg.dropout)

    def forward(self, x, rope=None, cache: KVCache | None = None, pos: int = 0) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), rope, cache, pos)
        return x + self.mlp(self.norm2(x))


class Transformer(LanguageModel):
    supports_grad_checkpointing = True
    exposes_hidden = True

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        self.block_size = cfg.block_size
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        if cfg.pos_encoding == "learned":
            self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)
        elif cfg.pos_encoding == "sinusoidal":
            self.register_buffer("wpe_table", sinusoidal_table(cfg.block_size, cfg.d_model), persistent=False)
        if cfg.pos_encoding == "rope":
            table = rope_cache(cfg.d_model // cfg.n_head, cfg.block_size, cfg.rope_base)
            self.register_buffer("rope_table", table, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(self._make_block(cfg, i) for i in range(cfg.n_layer))
        self.norm_f = build_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(init_gpt2)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer).
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        self.attach_auxiliary(cfg, cfg.d_model)

    def _make_block(self, cfg: TransformerConfig, layer: int) -> nn.Module:
        """Layer ``layer``'s block (families with other blocks override this)."""
        return Block(cfg)

    def _trunk(self, idx: torch.Tensor, caches: list[KVCache] | None = None, pos: int = 0,
               extras: list | None = None) -> torch.Tensor:
        """Token ids (B, T) at positions pos..pos+T-1 -> final hidden states (B, T, C).
        ``extras[i]``, when given, is passed to block i after ``pos`` (a family's own per-layer
        decoding state, e.g. psann's conv history)."""
        T = idx.size(1)
        if pos + T > self.block_size:
            raise ValueError(f"sequence of {pos + T} positions exceeds block_size {self.block_size}")
        x = self.wte(idx)  # (B, T, C)
        if self.cfg.pos_encoding == "learned":
            x = x + self.wpe(torch.arange(pos, pos + T, device=idx.device))
        elif self.cfg.pos_encoding == "sinusoidal":
            x = x + self.wpe_table[pos : pos + T].to(x.dtype)
        x = self.drop(x)
        rope = self.rope_table if self.cfg.pos_encoding == "rope" else None
        for i, block in enumerate(self.blocks):
            extra = () if extras is None else (extras[i],)
            x = self.checkpointed(block, x, rope, caches[i] if caches is not None else None, pos, *extra)
        return self.norm_f(x)

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._trunk(input_ids)

    def forward_hidden(
        self, input_ids: torch.Tensor, targets: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> tuple[torch.Tensor, ModelOutput]:
        """input_ids, targets (B, T) -> hidden (B, T, C), logits (B, T, V) and, with targets, the mean CE."""
        h = self._trunk(input_ids)
        logits = self.lm_head(h)
        if targets is None:
            return h, ModelOutput(logits)
        loss = lm_loss(logits, targets, label_smoothing)
        return h, ModelOutput(logits, loss, {"ce": loss.detach()})

    def shard_units(self) -> list[nn.Module]:
        return list(self.blocks)

    def extend_max_seq_len(self, block_size: int) -> None:
        """Grow the context to ``block_size`` positions in place (seed 001): learned position rows
        beyond the old context start at the GPT-2 init, fixed tables are recomputed."""
        old = self.block_size
        if block_size < old:
            raise ValueError(f"extend_max_seq_len({block_size}): the model already has {old} positions")
        if block_size == old:
            return
        cfg = self.cfg
        if cfg.pos_encoding == "learned":
            wpe = nn.Embedding(block_size, cfg.d_model).to(self.wpe.weight.device, self.wpe.weight.dtype)
            init_gpt2(wpe)
            with torch.no_grad():
                wpe.weight[:old] = self.wpe.weight
            self.wpe = wpe
        elif cfg.pos_encoding == "sinusoidal":
            self.wpe_table = sinusoidal_table(block_size, cfg.d_model).to(self.wpe_table.device)
        elif cfg.pos_encoding == "rope":
            self.rope_table = rope_cache(cfg.d_model // cfg.n_head, block_size, cfg.rope_base).to(
                self.rope_table.device)
        self.block_size = block_size
        cfg.block_size = block_size

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> TransformerState:
        """An empty KV cache for ``batch_size`` sequences of up to ``block_size`` positions, one
        entry per key/value head (``n_kv_head`` of them with grouped-query attention)."""
        p = self.wte.weight
        hs = self.cfg.d_model // self.cfg.n_head
        caches = [
            KVCache(batch_size, self.cfg.kv_heads, self.block_size, hs, device or p.device, p.dtype)
            for _ in self.blocks
        ]
        return TransformerState(caches)

    @torch.no_grad()
    def step_hidden(
        self, tokens: torch.Tensor, state: TransformerState
    ) -> tuple[torch.Tensor, torch.Tensor, TransformerState]:
        """Feed tokens (B, T) after the cached positions -> the last one's hidden (B, C) and logits (B, V)."""
        h = self._trunk(tokens, state.caches, state.pos)[:, -1]
        state.pos += tokens.size(1)
        return h, self.lm_head(h), state

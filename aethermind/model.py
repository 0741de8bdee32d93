"""Forge1Model: a LLaMA-style decoder (pre-norm RMSNorm, GQA, RoPE, SwiGLU, tied embeddings).

Math only: no optimizer, no sampling, no I/O. Weights convert one-to-one to Hugging Face
`LlamaForCausalLM` (see `hf_convert.py`); q/k/v and gate/up are stored fused because one large
matmul beats three small ones, most of all at the small shapes our users train.
Usage: `logits, loss = Forge1Model(Forge1Config.tiny())(tokens, targets)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from aethermind.config import Forge1Config
from aethermind.kv_cache import KVCache
from aethermind.losses import linear_cross_entropy


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 like HF Llama, so fp16/bf16 runs stay stable."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * y.to(x.dtype)


def rope_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (T, D) in HF Llama's half-split layout (freqs repeated, not interleaved)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(max_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)  # (T, D/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, D)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (B, H, T, D) by position: x*cos + rotate_half(x)*sin, as in HF Llama."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: Forge1Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_dim = cfg.n_heads * cfg.head_dim
        self.kv_dim = cfg.n_kv_heads * cfg.head_dim
        self.wqkv = nn.Linear(cfg.dim, self.q_dim + 2 * self.kv_dim, bias=False)
        self.wo = nn.Linear(self.q_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split((self.q_dim, self.kv_dim, self.kv_dim), dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, H_kv, past+T, D)
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        elif past == 0 or T == 1:
            # Prefill from empty is plain causal; one new token may attend to everything cached.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=past == 0 and T > 1,
                                               enable_gqa=True)
        else:
            # Chunk appended to a non-empty cache: SDPA's is_causal is top-left aligned, which
            # would be wrong here, so build the bottom-right aligned mask explicitly.
            causal = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, enable_gqa=True)
        y = y.transpose(1, 2).reshape(B, T, self.q_dim)  # (B, T, H*D)
        return self.wo(y)


class MLP(nn.Module):
    """SwiGLU: w_down(silu(x W_gate) * (x W_up)); gate and up share one fused matmul."""

    def __init__(self, cfg: Forge1Config) -> None:
        super().__init__()
        self.w_gate_up = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.w_down = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: Forge1Config, layer_idx: int) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor | None = None, kv_cache: KVCache | None = None
                ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, mask, kv_cache))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class Forge1Model(nn.Module):
    """Decoder-only transformer. `forward(tokens, targets)` -> (logits, loss or None)."""

    def __init__(self, config: Forge1Config) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.gradient_checkpointing = False
        self.tok_emb = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        # Non-persistent: the tables are derived from the config, so state dicts hold weights only.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """Every tensor's init, GPT-2/LLaMA style:

        tok_emb, attn.wqkv, mlp.w_gate_up, lm_head (untied)   normal(0, init_std)
        attn.wo, mlp.w_down (write the residual stream)        normal(0, init_std / sqrt(2 L))
        attn_norm, mlp_norm, norm                              ones
        """
        std = self.config.init_std
        resid_std = std / math.sqrt(2 * self.config.n_layers)
        nn.init.normal_(self.tok_emb.weight, 0.0, std)
        if not self.config.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, 0.0, std)
        for layer in self.layers:
            nn.init.normal_(layer.attn.wqkv.weight, 0.0, std)
            nn.init.normal_(layer.mlp.w_gate_up.weight, 0.0, std)
            nn.init.normal_(layer.attn.wo.weight, 0.0, resid_std)
            nn.init.normal_(layer.mlp.w_down.weight, 0.0, resid_std)
            nn.init.ones_(layer.attn_norm.weight)
            nn.init.ones_(layer.mlp_norm.weight)
        nn.init.ones_(self.norm.weight)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in backward: ~40% less activation memory for ~25% more compute."""
        self.gradient_checkpointing = enabled

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (tied weights count once); optionally without the embedding table."""
        total = sum(p.numel() for p in self.parameters())  # parameters() already dedups ties
        if exclude_embeddings:
            total -= self.tok_emb.weight.numel()
            if not self.config.tie_embeddings:
                total -= self.lm_head.weight.numel()
        return total

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, *,
                kv_cache: KVCache | None = None, doc_ids: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False,
                return_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Logits (B, T, V) and, given targets (B, T), mean cross-entropy ignoring -100.

        Args:
            kv_cache: decode incrementally; positions continue from `kv_cache.pos`.
            doc_ids: (B, T) document index per token of a packed row; attention is then causal
                *within* each document only, so packed conversations never see each other.
            attn_mask: bool, broadcastable to (B, 1, T, T_total), True = may attend. Replaces
                the causal mask entirely (the caller owns causality, e.g. left-padded batches).
            last_only: return logits for the last position only (prefill needs nothing else).
            return_logits: with targets, False skips the (B, T, V) logits and computes the loss
                with the fused chunked projection + cross-entropy (`losses.py`): the training
                path, much lighter on memory. Returns (None, loss) then.
        """
        B, T = tokens.shape
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds the context length "
                             f"{self.config.max_seq_len}; shorten the input")
        cos = self.rope_cos[start:start + T].to(self.tok_emb.weight.dtype)  # (T, D)
        sin = self.rope_sin[start:start + T].to(self.tok_emb.weight.dtype)
        mask = attn_mask
        if doc_ids is not None:
            assert kv_cache is None and attn_mask is None, "doc_ids is for training only"
            same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
            mask = (same_doc & causal).unsqueeze(1)  # (B, 1, T, T)
        x = self.tok_emb(tokens)  # (B, T, C)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        x = self.norm(x)
        if targets is not None and not return_logits:
            loss = linear_cross_entropy(x.view(B * T, -1), self.lm_head.weight, targets.reshape(-1))
            return None, loss
        if last_only:
            x = x[:, -1:]
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return logits, loss

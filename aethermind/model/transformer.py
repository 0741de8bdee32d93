"""Forge1Model: a LLaMA-style decoder (pre-norm RMSNorm, GQA, RoPE, SwiGLU, tied embeddings).

Math only: no optimizer, no sampling, no I/O. Weights convert one-to-one to Hugging Face
`LlamaForCausalLM` (see `hf_convert.py`); q/k/v and gate/up are stored fused because one large
matmul beats three small ones, most of all at the small shapes our users train.
One forward, one attention path: `model(tokens)` gives logits; `model(tokens, positions,
kv_cache=cache)` decodes against a fixed-size cache indexed by per-row positions (gpt-fast style,
so a batch may hold sequences of different lengths and `torch.compile` can trace a decode step);
`model(tokens, targets=targets)` gives the training loss through the fused chunked head.
Usage: `logits = Forge1Model(Forge1Config.tiny())(tokens)`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from aethermind.model.attention import attend, document_mask
from aethermind.model.config import Forge1Config
from aethermind.model.kv_cache import KVCache
from aethermind.model.losses import linear_cross_entropy

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


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
                mask: torch.Tensor | BlockMask | None, kv_cache: KVCache | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.wqkv(x).split((self.q_dim, self.kv_dim, self.kv_dim), dim=-1)
        q = q.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        v = v.view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, H_kv, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v, positions)  # (B, H_kv, T_cache, D)
        # None: plain causal; bool tensor: document or cache mask; BlockMask: FlexAttention
        y = attend(q, k, v, mask)  # (B, H, T, D)
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
                mask: torch.Tensor | BlockMask | None = None, kv_cache: KVCache | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, sin, mask, kv_cache, positions))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


def cache_mask(positions: torch.Tensor, cache_len: int) -> torch.Tensor:
    """Bool (B, 1, T, cache_len): a query at position p sees cache slots 0..p of its own row.

    Slots after p hold stale keys (an earlier, longer sequence, or right padding) and stay
    hidden, so rows of any length share a batch without padding leaking between them.
    """
    slots = torch.arange(cache_len, device=positions.device)
    return (slots <= positions[:, :, None]).unsqueeze(1)


class Forge1Model(nn.Module):
    """Decoder-only transformer. `forward(tokens)` -> logits (B, T, V); see `forward`."""

    def __init__(self, config: Forge1Config) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.gradient_checkpointing = False
        # Packed-row masking: "auto" = FlexAttention where it trains fused (attention.py),
        # else the dense mask; "dense" / "flex" force one (train's `attention` key sets it).
        self.attention_backend = "auto"
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

    def hidden(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, *,
               kv_cache: KVCache | None = None, doc_ids: torch.Tensor | None = None
               ) -> torch.Tensor:
        """Final normed hidden states (B, T, C): everything but the output projection.

        Args:
            positions: (B, T) absolute position of each token (RoPE and cache slot). None
                means 0..T-1 for every row; required with a KV cache.
            kv_cache: write this call's keys/values at `positions` and attend to the row's
                cache slots 0..position (see `cache_mask`); rows may be at different lengths.
            doc_ids: (B, T) document index per token of a packed training row
                (`attention.document_mask`); not with a KV cache.
        """
        n = tokens.shape[1]
        if positions is None:
            if kv_cache is not None:
                raise ValueError("decoding with a KV cache needs explicit positions (B, T)")
            if n > self.config.max_seq_len:
                raise ValueError(f"sequence of {n} tokens exceeds the context length "
                                 f"{self.config.max_seq_len}; shorten the input")
            cos, sin = self.rope_cos[:n], self.rope_sin[:n]  # (T, D)
        else:
            flat, shape = positions.reshape(-1), (*positions.shape, 1, -1)
            cos = self.rope_cos.index_select(0, flat).view(shape).transpose(1, 2)  # (B, 1, T, D)
            sin = self.rope_sin.index_select(0, flat).view(shape).transpose(1, 2)
        dtype = self.tok_emb.weight.dtype
        cos, sin = cos.to(dtype), sin.to(dtype)
        mask = None
        if doc_ids is not None:
            if kv_cache is not None:
                raise ValueError("doc_ids is for training on packed rows, not for a KV cache")
            mask = document_mask(doc_ids, self.attention_backend)  # dense, or flex on CUDA
        elif kv_cache is not None:
            mask = cache_mask(positions, kv_cache.max_len)
        x = self.tok_emb(tokens)  # (B, T, C)
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and kv_cache is None:
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, kv_cache, positions)
        return self.norm(x)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None, *,
                kv_cache: KVCache | None = None, doc_ids: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for `tokens` (B, T); arguments as in `hidden`.

        Given `targets` (B, T), returns instead the mean cross-entropy over targets that are
        not -100, computed by the fused chunked head (`losses.linear_cross_entropy`) without
        ever materialising the logits. The loss goes through `forward` (not a method beside
        it) because DDP, FSDP2 and `torch.compile` wrap `__call__` only.
        """
        x = self.hidden(tokens, positions, kv_cache=kv_cache, doc_ids=doc_ids)
        if targets is not None:
            B, T = tokens.shape
            return linear_cross_entropy(x.view(B * T, -1), self.lm_head.weight,
                                        targets.reshape(-1))
        return self.lm_head(x)

"""KVCache: preallocated keys/values for incremental decoding.

Allocated by the caller (the engine) on the model's device and dtype, never inside the model,
so CPU, CUDA and meta all work. Attention talks to it through `update()` and `pos` only.
Usage: `cache = KVCache.for_model(model, batch_size=1, max_len=512)`; `model(ids, kv_cache=cache)`.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of shape (layers, B, H_kv, T_max, D), filled left to right.

    `pos` is the number of positions already written; the model advances it once per forward,
    after every layer has written its slice (so all layers see the same `pos`).
    """

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int,
                 head_dim: int, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int,
                  max_len: int | None = None) -> KVCache:
        cfg = model.config
        param = next(model.parameters())
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, max_len or cfg.max_seq_len,
                   cfg.head_dim, device=param.device, dtype=param.dtype)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H_kv, T, D) at `pos`; return all keys/values so far."""
        t = k.shape[2]
        end = self.pos + t
        if end > self.max_len:
            raise ValueError(f"KV cache is full: {end} positions requested, room for "
                             f"{self.max_len}; start a new cache or shorten the prompt")
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        self.pos += t

    def reset(self) -> None:
        self.pos = 0

    def crop(self, pos: int) -> None:
        """Forget everything after `pos` (reuse a shared prompt prefix across turns)."""
        if not 0 <= pos <= self.pos:
            raise ValueError(f"cannot crop KV cache to {pos}: it holds {self.pos} positions")
        self.pos = pos

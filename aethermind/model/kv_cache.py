"""KVCache: fixed-size keys/values for incremental decoding, indexed by per-row positions.

Allocated by the caller (the engine) on the model's device and dtype, never inside the model,
so CPU, CUDA and meta all work. Each batch row is a slot holding one sequence; attention writes
a call's keys/values at that call's positions and reads the whole (windowed) slot, masking what
lies past each query's position (`model.cache_mask`). Nothing here tracks lengths: positions
are the caller's, which is what lets rows of different lengths share one decode step.
Usage: `cache = KVCache.for_model(model, batch_size=1, max_len=512)`;
`model(ids, positions, kv_cache=cache)`.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of shape (layers, B, H_kv, max_len, D); stale slots are always finite."""

    def __init__(self, n_layers: int, batch_size: int, n_kv_heads: int, max_len: int,
                 head_dim: int, *, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        # Zeros, not empty: masked slots still enter attention's matmul as 0 * value, and a
        # NaN bit pattern left in uninitialised memory would turn that into NaN.
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.rows = torch.arange(batch_size, device=device)[:, None]  # (B, 1), for writes

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int,
                  max_len: int | None = None) -> KVCache:
        cfg = model.config
        param = next(model.parameters())
        return cls(cfg.n_layers, batch_size, cfg.n_kv_heads, max_len or cfg.max_seq_len,
                   cfg.head_dim, device=param.device, dtype=param.dtype)

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    def window(self, rows: slice, length: int) -> KVCache:
        """A view of slots `rows`, positions 0..length-1, sharing this cache's memory.

        Eager decoding attends over the window only (the longest row so far, not the whole
        context); a compiled decode step passes the full cache instead, for static shapes.
        """
        view = object.__new__(KVCache)
        view.k = self.k[:, rows, :, :length]
        view.v = self.v[:, rows, :, :length]
        view.rows = self.rows[:view.k.shape[1]]
        return view

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v (B, H_kv, T, D) at `positions` (B, T); return the layer's (B, H_kv, L, D)."""
        cache_k, cache_v = self.k[layer], self.v[layer]
        if k.shape[0] == 1:  # one row (prefill, a lone sequence): a plain copy, 2x cheaper
            cache_k.index_copy_(2, positions[0], k)
            cache_v.index_copy_(2, positions[0], v)
            return cache_k, cache_v
        rows = self.rows[:k.shape[0]]  # a call may use the first rows only
        # Advanced indices around a slice put their dims first: (B, T, H_kv, D).
        cache_k[rows, :, positions] = k.transpose(1, 2)
        cache_v[rows, :, positions] = v.transpose(1, 2)
        return cache_k, cache_v

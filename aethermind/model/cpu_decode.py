"""A whole eager decode step in one C call (`aek_decode` in `cpu_gemv.c`), for the engine.

Why: with our matrix-vector kernels, an eager nano step on 2 AMD cores spent 11 ms in its
products and 4.2 ms in ~150 torch op dispatches and Python around them; llama.cpp spends
~0.5 ms outside its products. `aek_decode` runs every layer of a Forge-1 model for all rows of
a step in C on the same weights (`GemvLinear`'s, in the model's decode dtype), the same RoPE
tables and the engine's own KV cache, so prefill (torch) and decode (C) share one cache.
A model it does not recognise (another module type, e.g. unmerged LoRA; mismatched shapes),
a cache or weights that are not contiguous fp32 on the CPU, or no kernels: `for_model` gives
None and the engine keeps the torch step. Results equal torch's up to rounding (another
summation order, a polynomial exp).
Usage: `step = DecodeStep.for_model(packed_model, cache)`; `logits = step(ids, positions)`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import torch

from aethermind.model import cpu_gemv
from aethermind.model.cpu_gemv import GemvLinear, GemvRMSNorm, Kernels
from aethermind.model.kv_cache import KVCache
from aethermind.model.transformer import Forge1Model, RMSNorm

_I64, _PTR = ctypes.c_int64, ctypes.c_void_p


class _Model(ctypes.Structure):
    """`model_t` in cpu_gemv.c, field for field."""

    _fields_ = [*[(name, _I64) for name in ("dim", "n_layers", "n_heads", "n_kv_heads",
                                             "head_dim", "ffn", "vocab", "cache_rows",
                                             "cache_len")],
                ("eps", ctypes.c_float), ("kind", ctypes.c_int),
                *[(name, _PTR) for name in ("emb", "cos", "sin", "wqkv", "wo", "wgu", "wdown",
                                            "attn_norm", "mlp_norm", "norm", "lm_head",
                                            "k_cache", "v_cache")]]


def _fp32_cpu(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()


def _norm(module: torch.nn.Module) -> RMSNorm | None:
    """The model's RMSNorm (unwrapped from `GemvRMSNorm`) if its weight is fp32 on the CPU."""
    norm = module.norm if isinstance(module, GemvRMSNorm) else module
    return norm if isinstance(norm, RMSNorm) and _fp32_cpu(norm.weight) else None


class DecodeStep:
    """Logits (m, vocab) for one new token in each of the cache's first m slots."""

    def __init__(self, model: Forge1Model, cache: KVCache, kernels: Kernels,
                 linears: dict[str, list[GemvLinear]], norms: dict[str, list[RMSNorm]]
                 ) -> None:
        cfg = model.config
        self.kernels, self.vocab = kernels, cfg.vocab_size
        # Keep every tensor whose address the struct holds alive with the step.
        self._keep = [model, cache]
        arrays = {name: (_PTR * cfg.n_layers)(*[t.data_ptr() for t in tensors])
                  for name, tensors in [*[(k, [lin.w for lin in v]) for k, v in linears.items()
                                          if k != "lm_head"],
                                        *[(k, [n.weight for n in v]) for k, v in norms.items()]]}
        self._keep.append(arrays)
        self.struct = _Model(
            dim=cfg.dim, n_layers=cfg.n_layers, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads,
            head_dim=cfg.head_dim, ffn=cfg.ffn_dim, vocab=cfg.vocab_size,
            cache_rows=cache.batch_size, cache_len=cache.max_len, eps=_norm(model.norm).eps,
            kind=linears["lm_head"][0].kind, emb=model.tok_emb.weight.data_ptr(),
            cos=model.rope_cos.data_ptr(), sin=model.rope_sin.data_ptr(),
            **{name: ctypes.addressof(array) for name, array in arrays.items()},
            norm=_norm(model.norm).weight.data_ptr(), lm_head=linears["lm_head"][0].w.data_ptr(),
            k_cache=cache.k.data_ptr(), v_cache=cache.v.data_ptr())

    @classmethod
    def for_model(cls, model: torch.nn.Module, cache: KVCache) -> DecodeStep | None:
        """The C step for `model` (as `packed_for_cpu` returned it) and the engine's `cache`,
        or None where it cannot run it exactly (see the module docstring)."""
        kernels = cpu_gemv.kernels()
        if kernels is None or not isinstance(model, Forge1Model) or model.training:
            return None
        cfg = model.config
        qkv = cfg.n_heads * cfg.head_dim + 2 * cfg.n_kv_heads * cfg.head_dim
        shapes = {"wqkv": (qkv, cfg.dim), "wo": (cfg.dim, cfg.n_heads * cfg.head_dim),
                  "wgu": (2 * cfg.ffn_dim, cfg.dim), "wdown": (cfg.dim, cfg.ffn_dim),
                  "lm_head": (cfg.vocab_size, cfg.dim)}
        linears: dict[str, list] = {
            "wqkv": [b.attn.wqkv for b in model.layers], "wo": [b.attn.wo for b in model.layers],
            "wgu": [b.mlp.w_gate_up for b in model.layers],
            "wdown": [b.mlp.w_down for b in model.layers], "lm_head": [model.lm_head]}
        kinds = {getattr(lin, "kind", None) for group in linears.values() for lin in group}
        if len(kinds) != 1 or not all(
                isinstance(lin, GemvLinear) and lin.w.is_contiguous()
                and (lin.out_features, lin.in_features) == shapes[name]
                for name, group in linears.items() for lin in group):
            return None
        norms = {name: [_norm(getattr(b, name)) for b in model.layers]
                 for name in ("attn_norm", "mlp_norm")}
        tables = (model.tok_emb.weight, model.rope_cos, model.rope_sin, cache.k, cache.v)
        if (any(n is None for group in norms.values() for n in group)
                or _norm(model.norm) is None or not all(map(_fp32_cpu, tables))
                or cache.k.shape != (cfg.n_layers, cache.batch_size, cfg.n_kv_heads,
                                     cache.max_len, cfg.head_dim)
                or cache.max_len > model.rope_cos.shape[0]):
            return None
        return cls(model, cache, kernels, linears, norms)

    def __call__(self, ids: Sequence[int], positions: Sequence[int]) -> torch.Tensor:
        """Row r: token ids[r] at position positions[r] of cache slot r."""
        m = len(ids)
        ids_t = torch.tensor(ids, dtype=torch.int64)
        pos_t = torch.tensor(positions, dtype=torch.int64)
        logits = torch.empty(m, self.vocab)
        err = self.kernels.decode(ctypes.addressof(self.struct), ids_t.data_ptr(),
                                  pos_t.data_ptr(), m, logits.data_ptr())
        if err:
            raise RuntimeError(f"cpu_decode: kernel error {err} ({m} rows at {positions})")
        return logits

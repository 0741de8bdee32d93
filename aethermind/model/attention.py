"""Attention over packed rows: `attend`, the model's one attention call, and its masks.

`attend(q, k, v, mask)` is what every `Attention` layer calls, in training, prefill and decode
alike: mask None is plain causal attention (unpacked rows); a bool tensor goes to SDPA as given
(the dense document mask below, or the KV cache's slot mask from `transformer.cache_mask`); a
FlexAttention `BlockMask` goes to FlexAttention.
A packed row holds several documents; each token may attend only to earlier tokens of its own
document. `document_mask(doc_ids, backend)` states that rule in one of two forms. The dense
(B, 1, T, T) boolean mask is exact, but a mask tensor keeps SDPA off its flash kernel and
costs O(T^2) memory per row. FlexAttention gets the rule as a `mask_mod` over `doc_ids`; its
`BlockMask` skips the blocks that cross a document boundary and the fused Triton kernel
computes the rest, so a packed row should cost no more per token than an unpacked one
(`bench/gpu_check.py` measures it). Backend "auto" (the training key `attention`) picks flex
only where it trains fused: CUDA with Triton on an Ampere or newer GPU (`flex_supported`);
elsewhere the dense mask, since FlexAttention has no CPU backward (torch 2.13). "flex" forced
on the CPU runs FlexAttention's eager reference, forward only (what the tests compare with).
Under CPU autocast (bf16 training on a CPU with bf16 in hardware), heads narrower than
CPU_BF16_MIN_HEAD_DIM attend in fp32: there torch's CPU attention is slower in bf16 than in
fp32 (32-wide heads, tiny's: 1.0-1.5x fp32's time up to its 512-token context; 64-wide,
nano's: 0.7-0.8x; BENCHMARKS.md "Demo", 7 Dec), while the matrix products gain from bf16.
Knows nothing of weights, RoPE or the KV cache.
Usage: `y = attend(q, k, v, document_mask(doc_ids))`, q (B, H, T, D) and k/v (B, H_kv, T, D).
"""

from __future__ import annotations

import functools
import importlib.util
from typing import TYPE_CHECKING, Literal, get_args

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

if TYPE_CHECKING:  # a type only: `flex_supported` allows torch builds without the module
    from torch.nn.attention.flex_attention import BlockMask

# Under CPU autocast, narrower heads attend in fp32 (see the module notes; bench_demo_step.py)
CPU_BF16_MIN_HEAD_DIM = 64
Backend = Literal["auto", "dense", "flex"]  # the training key `attention` takes these
BACKENDS: tuple[Backend, ...] = get_args(Backend)


def document_causal_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Bool (B, 1, T, T), True = may attend: same document and not in the future."""
    T = doc_ids.shape[1]
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return (same_doc & causal).unsqueeze(1)


MIN_FLEX_CAPABILITY = (8, 0)  # Ampere and newer


def flex_supported(device: torch.device) -> bool:
    """Whether FlexAttention can train fused here: CUDA, Triton (absent from e.g. Windows
    wheels), and an Ampere or newer GPU. Older cards (T4, GTX 16xx: sm75, 64 KB of shared
    memory per block) keep the dense mask: Triton's attention kernels run out of shared memory
    there (pytorch/pytorch#133254 hits it even on 100 KB consumer cards at head dim 128)."""
    if device.type != "cuda" or importlib.util.find_spec("triton") is None:
        return False
    if importlib.util.find_spec("torch.nn.attention.flex_attention") is None:
        return False
    return torch.cuda.get_device_capability(device) >= MIN_FLEX_CAPABILITY


def resolve_backend(backend: Backend, device: torch.device) -> Literal["dense", "flex"]:
    """'auto' -> 'flex' where it trains fused (see `flex_supported`), else 'dense'."""
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "flex" if flex_supported(device) else "dense"
    return backend


def document_block_mask(doc_ids: torch.Tensor) -> BlockMask:
    """FlexAttention `BlockMask` of the document-causal rule for (B, T) `doc_ids`."""
    def mask_mod(b, h, q_idx, kv_idx):
        return (doc_ids[b, q_idx] == doc_ids[b, kv_idx]) & (q_idx >= kv_idx)

    B, T = doc_ids.shape
    return create_block_mask(mask_mod, B, None, T, T, device=doc_ids.device)


def document_mask(doc_ids: torch.Tensor, backend: Backend = "auto") -> torch.Tensor | BlockMask:
    """The selector: a `BlockMask` for FlexAttention, or the dense (B, 1, T, T) bool mask."""
    if resolve_backend(backend, doc_ids.device) == "flex":
        return document_block_mask(doc_ids)
    return document_causal_mask(doc_ids)


@functools.cache
def _compiled_flex():
    """flex_attention compiled once per process (uncompiled it materialises all T x T scores)."""
    return torch.compile(flex_attention, dynamic=False)


def flex_document_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            block_mask: BlockMask) -> torch.Tensor:
    """q (B, H, T, D), k/v (B, H_kv, T, D) -> (B, H, T, D), GQA included.

    Compiled on CUDA (the fused kernel); inside a `torch.compile`d model the plain function is
    traced into the model's graph instead. Eager elsewhere, where torch runs it as a reference
    (forward only on CPU), which is what the CPU tests compare against the dense path.
    """
    fn = _compiled_flex() if q.is_cuda and not torch.compiler.is_compiling() else flex_attention
    return fn(q, k, v, block_mask=block_mask, enable_gqa=k.shape[1] != q.shape[1])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
           mask: torch.Tensor | BlockMask | None = None) -> torch.Tensor:
    """q (B, H, T, D), k/v (B, H_kv, T_k, D) -> (B, H, T, D), GQA included. `mask`: None for
    plain causal attention, a bool tensor (True = may attend) broadcastable to (B, H, T, T_k),
    or a `BlockMask` from `document_mask`. Heads narrower than CPU_BF16_MIN_HEAD_DIM attend
    in fp32 under CPU autocast (module notes)."""
    if q.device.type == "cpu" and q.shape[-1] < CPU_BF16_MIN_HEAD_DIM and \
            torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return attend(q.float(), k.float(), v.float(), mask).to(q.dtype)
    if mask is None or isinstance(mask, torch.Tensor):  # the one SDPA call
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                              enable_gqa=True)
    return flex_document_attention(q, k, v, mask)

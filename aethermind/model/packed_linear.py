"""Packed CPU linears for generation: fp32, bf16 or int8 weights read at memory speed.

Decoding one token is a chain of matrix-vector products, bound by how fast weights stream from
memory. torch's default path for `x @ W.T` with a single row reads the weights well below the
memory bus's speed, and fewer bytes a weight read faster still: `packed_for_cpu(model, dtype)`
returns a view of the model whose `nn.Linear`s read one of the `DECODE_DTYPES`:
- "fp32": the weights as they are (exact up to summation order).
- "bf16": a bf16 copy; half the bytes. The activations stay fp32 between linears, so the
  residual stream, norms, attention and the KV cache keep fp32's precision.
- "int8": int8 weights; a quarter of the bytes (plus scales).
Which kernels, best first, each checked against `F.linear` once before use:
1. Ours (`cpu_gemv`: AVX2 loops built on first use with the machine's C compiler): fp32 on the
   model's own weights, bf16 tiles, int8 with a scale per 32 weights and per 32 activations
   (llama.cpp's q8_0 arithmetic). 1.0-1.2x (fp32), 1.4-1.5x (bf16) and 3.4-3.8x (int8)
   torch's best kernel per token on nano (`bench/bench_gemv.py`, BENCHMARKS.md).
2. Without a C compiler or AVX2: oneDNN's, with the weight reordered once into its blocked
   layout (fp32; bf16 where the CPU has AVX512-BW/VL/DQ or AVX-NE-CONVERT), else torch's own
   bf16 matmul on a bf16 copy (`Bf16Linear`); int8 is symmetric per output channel with each
   input row quantized on the fly (`quantize.Int8Linear`).
With our kernels, the RMSNorms become one call each too (`cpu_gemv.GemvRMSNorm`; torch's is six
ops on CPU, a fifth of an eager decode step's overhead).
Parameters are shared, so the original model is untouched; the extra memory is one copy of the
linear weights in the chosen type (none for fp32 on our kernels). Where packing is unsupported
(GPU, no oneDNN, a torch without the op, a dtype the CPU lacks), "fp32" returns the model
unchanged and "bf16"/"int8" raise `ValueError` on a GPU; on a CPU "int8" (or "bf16", should
torch's bf16 matmul fail too) falls back to fp32 with a warning.
It knows nothing of sampling or the engine.
Usage: `fast = packed_for_cpu(model, "bf16")`; use `fast` exactly like `model` for inference.
"""

from __future__ import annotations

import copy
import itertools
import time
import warnings
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from aethermind.model import cpu_gemv
from aethermind.model.quantize import Int8Linear, int8_full_range, int8_ops_available
from aethermind.model.transformer import RMSNorm

DecodeDtype = Literal["fp32", "bf16", "int8"]
DECODE_DTYPES: tuple[DecodeDtype, ...] = get_args(DecodeDtype)
# fp32 stays the default: bf16 and int8 decode 1.4x and 1.8-2x faster (nano, batch 1, 2 threads, our
# kernels) but change logits in the 3rd significant digit (relative RMS ~6e-3 and ~2.6e-2 on
# random nano weights), which can flip a near-tie greedy token, so they are opt-in.
DEFAULT_DECODE_DTYPE: DecodeDtype = "fp32"
_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "int8": 1e-1}  # packed vs F.linear, relative to max


def _ops_available() -> bool:
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


@torch.library.custom_op("aethermind::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """oneDNN's linear on a reordered weight, opaque to torch.compile: inductor cannot lower
    the op itself on a weight it did not pack, so a compiled step calls it as an extern."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [None], "")


@onednn_linear.register_fake
def _(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


class PackedLinear(nn.Module):
    """Bias-free linear on a weight reordered once for oneDNN (fp32 or bf16); inference only.

    The input is cast to the weight's dtype and the output back to the input's, so a bf16
    layer drops into an fp32 model. Under torch.compile it goes through `onednn_linear`.
    """

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        w = weight.detach().to(dtype or weight.dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.packed
        if torch.compiler.is_compiling():  # eager skips the custom op's dispatch (~5 us)
            return onednn_linear(x.to(w.dtype), w, self.out_features).to(x.dtype)
        if x.dtype == w.dtype:
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [None], "")
        y = torch.ops.mkldnn._linear_pointwise(x.to(w.dtype), w, None, "none", [None], "")
        return y.to(x.dtype)


class Bf16Linear(nn.Module):
    """Bias-free linear on a plain bf16 copy of the weight; inference only. The bf16 path where
    oneDNN cannot prepack bf16 weights: torch's bf16 matmul runs on any CPU, and at batch 1
    reading half the bytes outweighs the unpacked layout."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("w", weight.detach().to(torch.bfloat16), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.w).to(x.dtype)


def _packers(dtype: DecodeDtype, weight_dtype: torch.dtype) -> list:
    """The ways to pack `dtype` weights here, best first (each is checked before use): our own
    kernels (`cpu_gemv`) where they build, then oneDNN's, then torch's plain bf16 matmul."""
    ours = cpu_gemv.kernels()
    gemv = ([lambda w: cpu_gemv.GemvLinear(w, dtype, ours)]
            if ours is not None and (dtype != "fp32" or weight_dtype == torch.float32) else [])
    if dtype == "int8":
        if gemv or not int8_ops_available():
            return gemv
        full_range = int8_full_range()  # probed once for the model, not once a layer
        if not full_range:
            warnings.warn("--dtype int8: this CPU has no VNNI, so its int8 products are "
                          "slower than fp32's (BENCHMARKS.md); --dtype bf16 is faster here",
                          stacklevel=3)
        return [lambda w: Int8Linear(w, full_range)]
    if dtype == "bf16":
        onednn = [lambda w: PackedLinear(w, torch.bfloat16)] if _ops_available() else []
        return [*gemv, *onednn, Bf16Linear]
    if _ops_available() and weight_dtype in (torch.float32, torch.bfloat16):
        return [*gemv, PackedLinear]
    return gemv


def _packs_correctly(pack, weight: torch.Tensor, dtype: DecodeDtype) -> bool:
    try:
        probe = torch.randn(3, weight.shape[1], dtype=weight.dtype)
        got = pack(weight)(probe).float()
    except RuntimeError:
        return False
    want = F.linear(probe, weight).float()
    tol = _TOLERANCE[dtype] if weight.dtype == torch.float32 else 5e-2
    return bool((got - want).abs().max() <= tol * want.abs().max().clamp(min=1e-6))


def check_decode_dtype(dtype: str, device: torch.device) -> DecodeDtype:
    """`dtype` if valid for `device`, else a one-line `ValueError` (the --dtype check)."""
    if dtype not in DECODE_DTYPES:
        raise ValueError(f"--dtype {dtype}: choose one of {', '.join(DECODE_DTYPES)}")
    if dtype != "fp32" and device.type != "cpu":
        raise ValueError(f"--dtype {dtype} is a CPU decoding path; on {device.type} the model "
                         "runs in the dtype it was loaded in: use --dtype fp32 (the default)")
    return dtype  # type: ignore[return-value]


def check_compiled_decode(dtype: str, device: torch.device) -> DecodeDtype:
    """`dtype` if `--compile` can decode it on `device`, else a one-line `ValueError`."""
    dtype = check_decode_dtype(dtype, device)
    if device.type != "cpu":
        raise ValueError(f"--compile is a CPU decoding path; on {device.type} leave it off")
    return dtype


def _seconds(fn, x: torch.Tensor, calls: int = 4) -> float:
    fn(x)  # first call: allocation, kernel selection
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return time.perf_counter() - start


@torch.no_grad()
def onednn_beats_mkl(weight: torch.Tensor) -> bool:
    """Whether oneDNN's prepacked fp32 kernel multiplies one row by `weight` faster than MKL's
    packed one (what inductor picks for fp32 linears). It depends on the CPU: on an AMD EPYC
    with AVX2, MKL's took 25.3 ms a nano token against oneDNN's 21.2, and the MKL-compiled
    step decoded 0.8x the eager one. Best of three alternating rounds, on the largest weight,
    so a noisy neighbour rarely decides it."""
    w = weight.detach().float()
    x = torch.randn(1, w.shape[1])
    mkl_w = torch.ops.mkl._mkl_reorder_linear_weight(w, 1)
    onednn = PackedLinear(w)

    def mkl(rows: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkl._mkl_linear(rows, mkl_w, w, None, 1)

    times = [(_seconds(onednn, x), _seconds(mkl, x)) for _ in range(3)]
    return min(t[0] for t in times) < min(t[1] for t in times)


def _is_packable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and module.bias is None


def _packable(model: nn.Module) -> list[nn.Linear]:
    """The linears a packing replaces: every bias-free `nn.Linear` of `model`."""
    return [m for m in model.modules() if _is_packable(m)]


def model_to_compile(model: nn.Module, dtype: str = DEFAULT_DECODE_DTYPE) -> nn.Module:
    """What `--compile` traces. bf16, int8, and fp32 where our kernels build: the packed model
    (`packed_for_cpu`), whose kernels compile as opaque calls. Other fp32: the model with
    oneDNN-prepacked linears where that kernel is the faster one here or MKL is missing, else
    the plain model, whose linears inductor prepacks for MKL itself."""
    if dtype != "fp32" or cpu_gemv.kernels() is not None:
        return packed_for_cpu(model, dtype)
    linears = _packable(model)
    if not linears or not _ops_available() or linears[0].weight.dtype != torch.float32:
        return model
    largest = max((m.weight for m in linears), key=lambda w: w.numel())
    if torch._C.has_mkl and not onednn_beats_mkl(largest):
        return model
    return packed_for_cpu(model, "fp32")


@torch.no_grad()
def packed_for_cpu(model: nn.Module, dtype: str = DEFAULT_DECODE_DTYPE) -> nn.Module:
    """A copy of `model` sharing its parameters, with bias-free linears prepacked to read
    `dtype` weights (CPU only; see the module docstring for the fallbacks)."""
    linears = _packable(model)
    if not linears:
        return model
    first = linears[0].weight
    dtype = check_decode_dtype(dtype, first.device)
    if first.device.type != "cpu":
        return model
    pack = next((p for p in _packers(dtype, first.dtype) if _packs_correctly(p, first, dtype)),
                None)
    if pack is None:
        if dtype != "fp32":
            warnings.warn(f"--dtype {dtype} is not supported by this CPU or torch build: "
                          "decoding with the fp32 weights", stacklevel=2)
        return model
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    clone = copy.deepcopy(model, memo=shared)
    ours = cpu_gemv.kernels()
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if _is_packable(child):
                setattr(parent, name, pack(child.weight))
            elif ours is not None and isinstance(child, RMSNorm):  # one call, not six ops
                setattr(parent, name, cpu_gemv.GemvRMSNorm(child, ours))
    return clone.eval()

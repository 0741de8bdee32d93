"""Prepacked CPU linears for generation: fp32, bf16 or int8 weights read at memory speed.

Decoding one token is a chain of matrix-vector products, bound by how fast weights stream from
memory. On x86 CPUs the default BLAS path for `x @ W.T` with a single row reads the 98 MB output
projection of nano at ~13 GB/s, while oneDNN with the weight reordered once into its blocked
layout reads it at ~24 GB/s (the same kernel `torch.compile` picks on CPU). Fewer bytes a weight
read faster still: `packed_for_cpu(model, dtype)` returns a view of the model whose `nn.Linear`s
read one of the `DECODE_DTYPES`:
- "fp32": the weights as they are, reordered (exact up to summation order).
- "bf16": a bf16 copy reordered for oneDNN's AVX512-BF16/AMX kernels; half the bytes. The
  activations stay fp32 between linears (cast to bf16 at each one's input), so the residual
  stream, norms, attention and the KV cache keep fp32's precision.
- "int8": symmetric per-output-channel int8 weights with each input row quantized on the fly
  (`quantize.Int8Linear`); a quarter of the bytes.
Parameters are shared, so the original model is untouched; the extra memory is one copy of the
linear weights in the chosen type. Where packing is unsupported (GPU, no oneDNN, a torch without
the op, a dtype the CPU lacks), "fp32" returns the model unchanged and "bf16"/"int8" raise
`ValueError` on a GPU and fall back to fp32 with a warning on such a CPU, after checking the
packed result against `F.linear` once. It knows nothing of sampling or the engine.
Usage: `fast = packed_for_cpu(model, "bf16")`; use `fast` exactly like `model` for inference.
"""

from __future__ import annotations

import copy
import itertools
import warnings
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from aethermind.model.quantize import Int8Linear, int8_ops_available

DecodeDtype = Literal["fp32", "bf16", "int8"]
DECODE_DTYPES: tuple[DecodeDtype, ...] = get_args(DecodeDtype)
# fp32 stays the default: bf16 and int8 decode 1.7x and 2.1x faster (nano, batch 1, 1 thread)
# but change logits in the 3rd significant digit (relative RMS ~1e-2 and ~4e-2 on random nano
# weights), which can flip a near-tie greedy token, so they are opt-in.
DEFAULT_DECODE_DTYPE: DecodeDtype = "fp32"
_TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2, "int8": 1e-1}  # packed vs F.linear, relative to max


def _ops_available() -> bool:
    ops = torch.ops.mkldnn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "_reorder_linear_weight")
            and hasattr(ops, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """Bias-free linear on a weight reordered once for oneDNN (fp32 or bf16); inference only.

    The input is cast to the weight's dtype and the output back to the input's, so a bf16
    layer drops into an fp32 model.
    """

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        w = weight.detach().to(dtype or weight.dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
        self.register_buffer("packed", packed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.packed
        if x.dtype == w.dtype:
            return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [None], "")
        y = torch.ops.mkldnn._linear_pointwise(x.to(w.dtype), w, None, "none", [None], "")
        return y.to(x.dtype)


def _packer(dtype: DecodeDtype, weight_dtype: torch.dtype):
    if dtype == "int8":
        return Int8Linear if int8_ops_available() else None
    if not _ops_available():
        return None
    if dtype == "bf16":
        return lambda w: PackedLinear(w, torch.bfloat16)
    return PackedLinear if weight_dtype in (torch.float32, torch.bfloat16) else None


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


# What `--compile` decodes. int8's ops do not lower through inductor, and a compiled bf16 step
# (bf16 activations too) measured no faster than the prepacked bf16 path (BENCHMARKS.md).
COMPILED_DTYPES = ("fp32",)


def check_compiled_decode(dtype: str, device: torch.device | None) -> DecodeDtype:
    """`dtype` if `--compile` can decode it on `device`, else a one-line `ValueError`;
    device None checks the dtype alone (before a model is loaded)."""
    dtype = check_decode_dtype(dtype, device or torch.device("cpu"))
    if device is not None and device.type != "cpu":
        raise ValueError(f"--compile is a CPU decoding path; on {device.type} leave it off")
    if dtype not in COMPILED_DTYPES:
        raise ValueError(f"--compile takes --dtype {' or '.join(COMPILED_DTYPES)}, not "
                         f"{dtype} (which decodes through its own prepacked kernels)")
    return dtype


@torch.no_grad()
def packed_for_cpu(model: nn.Module, dtype: str = DEFAULT_DECODE_DTYPE) -> nn.Module:
    """A copy of `model` sharing its parameters, with bias-free linears prepacked to read
    `dtype` weights (CPU only; see the module docstring for the fallbacks)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m.bias is None]
    if not linears:
        return model
    first = linears[0].weight
    dtype = check_decode_dtype(dtype, first.device)
    pack = _packer(dtype, first.dtype)
    if first.device.type != "cpu":
        return model
    if pack is None or not _packs_correctly(pack, first, dtype):
        if dtype != "fp32":
            warnings.warn(f"--dtype {dtype} is not supported by this CPU or torch build: "
                          "decoding with the fp32 weights", stacklevel=2)
        return model
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    clone = copy.deepcopy(model, memo=shared)
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child.bias is None:
                setattr(parent, name, pack(child.weight))
    return clone.eval()

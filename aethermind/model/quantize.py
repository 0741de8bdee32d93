"""Int8 weight linears for CPU decoding: a quarter of fp32's bytes, int8 dot products (VNNI/AMX).

Weights: symmetric int8 per output channel (scale = row max / 127), prepacked once for oneDNN.
Activations: each input row is quantized on the fly to 8 bits against its own max magnitude,
then oneDNN multiplies u8 x s8 in integer units and the per-row and per-channel scales are
applied to the fp32 result. Per-row (not per-tensor) activation scales keep a sequence's output
independent of what else shares the batch, which the engine promises. This is llama.cpp's q8_0
recipe with coarser scales (q8_0 scales every 32 weights and 32 activations); `bench/
bench_llama_cpp.py` measures both errors against fp32 on the same weights.
Why not `torch.ops.aten._weight_int8pack_mm` (int8 weights, fp32 maths): measured on nano at
batch 1 it is no faster than the bf16 path, since it widens each weight to float before the dot
product; the integer kernel here is ~1.6x faster than bf16 at the same bandwidth.
It knows nothing of models; `packed_linear.packed_for_cpu(model, "int8")` swaps these in.
Usage: `layer = Int8Linear(linear.weight)`; `y = layer(x)` (x float, any leading dims).
"""

from __future__ import annotations

import torch
from torch import nn

_ZERO_POINT = 128  # u8 code of 0.0: activations use codes 1..255 (symmetric, like the weights)


def int8_ops_available() -> bool:
    """oneDNN's int8 linear (the kernel `torch.compile` uses for quantized CPU models)."""
    ops = torch.ops.onednn
    return (torch.backends.mkldnn.is_available() and hasattr(ops, "qlinear_prepack")
            and hasattr(ops, "qlinear_pointwise"))


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row: (q int8 (N, K), scale float32 (N,)) with w ~= q * scale[:, None]."""
    scale = w.detach().float().abs().amax(dim=-1).clamp(min=1e-12) / 127  # (N,)
    q = torch.round(w.detach().float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """Bias-free linear on int8 weights with per-row dynamic int8 activations; inference only."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        q, scale = quantize_rows(weight)
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(q, None),
                             persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("zero", torch.zeros(len(scale), dtype=torch.long), persistent=False)
        # The activation's quantization parameters are fixed (unit rows, see forward), so they
        # are made once instead of on every call.
        self.register_buffer("x_scale", torch.tensor(1 / 127), persistent=False)
        self.register_buffer("x_zero", torch.tensor(_ZERO_POINT, dtype=torch.int32),
                             persistent=False)
        self.register_buffer("half_up", torch.tensor(_ZERO_POINT + 0.5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])  # (N, K)
        if rows.dtype != torch.float32:
            rows = rows.float()
        # Each row scaled to max magnitude 1 and quantized against it; the row's own scale
        # multiplies the (linear) result back, so rows never share a scale. Few ops on purpose:
        # at batch 1 each costs about as much as a small matrix-vector product.
        peak = torch.linalg.vector_norm(rows, float("inf"), dim=-1, keepdim=True)  # (N, 1)
        inv = peak.clamp_(min=1e-12).reciprocal()
        # 128.5 + 127 x / peak lies in [1.5, 255.5]; the cast truncates, i.e. rounds half up.
        codes = torch.addcmul(self.half_up, rows, inv, value=127).to(torch.uint8)
        y = torch.ops.onednn.qlinear_pointwise.tensor(
            codes, self.x_scale, self.x_zero, self.packed, self.scale, self.zero, None, 1.0, 0,
            torch.float32, "none", [], "")  # (N, out)
        return y.mul_(peak).to(x.dtype).view(*shape[:-1], self.out_features)

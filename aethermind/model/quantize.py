"""Int8 weight linears for CPU decoding: a quarter of fp32's bytes, int8 dot products (VNNI/AMX).

Weights: symmetric int8 per output channel (scale = row max / 127), prepacked once for oneDNN.
Activations: each input row is quantized on the fly to 8 bits against its own max magnitude,
then oneDNN multiplies u8 x s8 in integer units and the per-row and per-channel scales are
applied to the fp32 result. Per-row (not per-tensor) activation scales keep a sequence's output
independent of what else shares the batch, which the engine promises. This is llama.cpp's q8_0
recipe with coarser scales (q8_0 scales every 32 weights and 32 activations); `bench/
bench_llama_cpp.py` measures both errors against fp32 on the same weights.
CPUs without VNNI (AVX2 only, e.g. AMD Zen 3) multiply u8 x s8 with `vpmaddubsw`, whose int16
sums of two products saturate at 32,767: 255 x 127 x 2 does not fit, and full-range codes gave a
0.17 relative error there instead of 0.01. `int8_full_range()` probes for that once per model;
where it saturates, activations take 7 bits (codes 1..127), whose products always fit.
Why not `torch.ops.aten._weight_int8pack_mm` (int8 weights, fp32 maths): measured on nano at
batch 1 it is no faster than the bf16 path, since it widens each weight to float before the dot
product; the integer kernel here is ~1.6x faster than bf16 at the same bandwidth.
It knows nothing of models; `packed_linear.packed_for_cpu(model, "int8")` swaps these in.
Usage: `layer = Int8Linear(linear.weight)`; `y = layer(x)` (x float, any leading dims).
"""

from __future__ import annotations

import torch
from torch import nn

# Activation levels each side of 0.0 (symmetric, like the weights): codes 1..255 around the zero
# point 128, or 1..127 around 64 where the CPU's u8 x s8 products saturate (see above).
FULL_LEVELS, REDUCED_LEVELS = 127, 63


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


@torch.library.custom_op("aethermind::onednn_qlinear", mutates_args=())
def onednn_qlinear(codes: torch.Tensor, x_scale: torch.Tensor, x_zero: torch.Tensor,
                   packed: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """oneDNN's u8 x s8 linear with an fp32 result, opaque to torch.compile (inductor cannot
    lower it on a weight it did not quantize itself), so a compiled step calls it as is."""
    return torch.ops.onednn.qlinear_pointwise.tensor(
        codes, x_scale, x_zero, packed, scale, zero, None, 1.0, 0, torch.float32, "none", [], "")


@onednn_qlinear.register_fake
def _(codes: torch.Tensor, x_scale: torch.Tensor, x_zero: torch.Tensor, packed: torch.Tensor,
      scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return codes.new_empty(codes.shape[0], scale.shape[0], dtype=torch.float32)


def int8_full_range() -> bool:
    """Whether oneDNN's int8 linear here sums full-range u8 x s8 products exactly: a row of
    weights at +127 against activations at code 255 saturates an int16 pair sum on CPUs
    without VNNI, and then the result is far from the exact one."""
    k = 64
    layer = Int8Linear(torch.ones(8, k), full_range=True)
    return abs(layer(torch.ones(1, k))[0, 0].item() - k) < 1e-3 * k


class Int8Linear(nn.Module):
    """Bias-free linear on int8 weights with per-row dynamic int8 activations; inference only.
    `full_range` None probes the CPU (`int8_full_range`); pass it to probe once per model."""

    def __init__(self, weight: torch.Tensor, full_range: bool | None = None) -> None:
        super().__init__()
        if full_range is None:
            full_range = int8_full_range()
        levels = FULL_LEVELS if full_range else REDUCED_LEVELS
        self.out_features, self.in_features = weight.shape
        q, scale = quantize_rows(weight)
        self.register_buffer("packed", torch.ops.onednn.qlinear_prepack(q, None),
                             persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("zero", torch.zeros(len(scale), dtype=torch.long), persistent=False)
        # The activation's quantization parameters are fixed (unit rows, see forward), so they
        # are made once instead of on every call.
        self.levels = levels
        self.register_buffer("x_scale", torch.tensor(1 / levels), persistent=False)
        self.register_buffer("x_zero", torch.tensor(levels + 1, dtype=torch.int32),
                             persistent=False)
        self.register_buffer("half_up", torch.tensor(levels + 1.5), persistent=False)

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
        # 128.5 + 127 x / peak lies in [1.5, 255.5] (64.5 + 63 x / peak in [1.5, 127.5]); the
        # cast truncates, i.e. rounds half up.
        codes = torch.addcmul(self.half_up, rows, inv, value=self.levels).to(torch.uint8)
        if torch.compiler.is_compiling():  # eager skips the custom op's dispatch (~5 us)
            y = onednn_qlinear(codes, self.x_scale, self.x_zero, self.packed, self.scale,
                               self.zero)
        else:
            y = torch.ops.onednn.qlinear_pointwise.tensor(
                codes, self.x_scale, self.x_zero, self.packed, self.scale, self.zero, None,
                1.0, 0, torch.float32, "none", [], "")  # (N, out)
        return y.mul_(peak).to(x.dtype).view(*shape[:-1], self.out_features)

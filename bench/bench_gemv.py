"""The matrix-vector products of one decoded token, kernel by kernel: what bounds decode speed.

Decoding one token at batch 1 multiplies one row by every weight of the model once, so its
speed is how fast a kernel streams weights from memory. This times nano's 49 linears (random
weights, one input row, `--threads` threads) through each CPU kernel torch offers and the ones
`packed_linear` / `quantize` / `cpu_gemv` use, and prints ms a step, GB/s of weight bytes and
the tokens/s the products alone would allow. `bench/stream_read.c` gives the machine's bound.
Which of torch's is fastest depends on the CPU (AVX-512, VNNI, BF16, MKL on AMD), which is why
`--compile` without our kernels measures oneDNN against MKL before it picks one.
Kernels a CPU or torch build lacks are reported as such, not timed.
Usage: `python bench/bench_gemv.py --threads 2 [--repeats 20] [--rows 8]` (`--rows`: a server's
step for that many clients, where weights read once serve every row).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from aethermind.model import cpu_gemv  # noqa: E402
from aethermind.model.config import Forge1Config  # noqa: E402
from aethermind.model.packed_linear import Bf16Linear, PackedLinear  # noqa: E402
from aethermind.model.quantize import Int8Linear, int8_full_range, quantize_rows  # noqa: E402
from aethermind.text.tokenizer import Forge1Tokenizer  # noqa: E402


def nano_shapes() -> list[tuple[int, int]]:
    """(out, in) of every linear nano runs for one token, the tied output projection last."""
    cfg = Forge1Config.from_variant("nano", vocab_size=Forge1Tokenizer().get_vocab_size_padded())
    d, kv = cfg.dim, cfg.n_kv_heads * (cfg.dim // cfg.n_heads)
    layer = [(d + 2 * kv, d), (d, d), (2 * cfg.ffn_dim, d), (d, cfg.ffn_dim)]  # fused qkv, gate_up
    return layer * cfg.n_layers + [(cfg.vocab_size, d)]


def kernels(weights: list[torch.Tensor], n_rows: int = 1
            ) -> dict[str, tuple[Callable[[], object] | str, int]]:
    """name -> (one step's products for `n_rows` input rows, or why the kernel is missing;
    bytes of weights read)."""
    rows = {k: torch.randn(n_rows, k) for k in {w.shape[1] for w in weights}}
    fp32_bytes = sum(w.numel() * 4 for w in weights)
    out: dict[str, tuple[Callable[[], object] | str, int]] = {}

    def layers(make: Callable[[torch.Tensor], Callable], name: str, nbytes: int) -> None:
        try:
            built = [(make(w), rows[w.shape[1]]) for w in weights]
            out[name] = (lambda: [f(x) for f, x in built], nbytes)
        except RuntimeError as err:
            out[name] = (str(err).splitlines()[0][:90], nbytes)

    layers(lambda w: lambda x: F.linear(x, w), "fp32 F.linear", fp32_bytes)
    if torch._C.has_mkl:
        layers(lambda w: (lambda p: lambda x: torch.ops.mkl._mkl_linear(x, p, w, None, 1))(
            torch.ops.mkl._mkl_reorder_linear_weight(w, 1)), "fp32 MKL packed (inductor's)",
            fp32_bytes)
    layers(PackedLinear, "fp32 oneDNN packed (our fallback)", fp32_bytes)
    layers(lambda w: PackedLinear(w, torch.bfloat16), "bf16 oneDNN packed (our fallback)",
           fp32_bytes // 2)
    layers(Bf16Linear, "bf16 F.linear (fallback without oneDNN bf16)", fp32_bytes // 2)
    levels = "8" if int8_full_range() else "7"
    layers(Int8Linear, f"int8 oneDNN, {levels}-bit activations (our fallback)", fp32_bytes // 4)

    def int8pack(w: torch.Tensor) -> Callable:
        q, scale = quantize_rows(w)
        return lambda x: torch.ops.aten._weight_int8pack_mm(x, q, scale)

    layers(int8pack, "int8 aten._weight_int8pack_mm", fp32_bytes // 4)
    ours = cpu_gemv.kernels()
    for dtype, nbytes in (("fp32", fp32_bytes), ("bf16", fp32_bytes // 2),
                          ("int8", fp32_bytes // 4 * 9 // 8)):
        name = f"{dtype} cpu_gemv.c (ours)"
        if ours is None:
            out[name] = ("no C compiler, or a CPU without AVX2 and FMA", nbytes)
        else:
            layers(lambda w, d=dtype: cpu_gemv.GemvLinear(w, d, ours), name, nbytes)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--rows", type=int, default=1,
                   help="input rows a step (a server decoding for N clients; default 1)")
    args = p.parse_args(argv)
    if min(args.threads, args.repeats, args.rows) < 1:
        p.error("--threads, --repeats and --rows must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    weights = [torch.randn(n, k) for n, k in nano_shapes()]
    print(f"nano, {len(weights)} linears, {args.rows} input row(s), {args.threads} threads, "
          f"best of {args.repeats}; torch {torch.__version__}, "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print("| kernel | ms a step | GB/s of weights | tokens/s bound |\n|---|---|---|---|")
    with torch.inference_mode():
        for name, (fn, nbytes) in kernels(weights, args.rows).items():
            if isinstance(fn, str):
                print(f"| {name} | not here: {fn} | | |")
                continue
            fn()  # first call: allocation, kernel selection
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
            print(f"| {name} | {best * 1e3:.2f} | {nbytes / best / 1e9:.1f} | "
                  f"{args.rows / best:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

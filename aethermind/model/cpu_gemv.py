"""Our own CPU matrix-vector kernels (`cpu_gemv.c`) and the decode layer that uses them.

Decoding streams every weight once a token; torch's CPU kernels read a single row's weights at
well under the memory bus's speed (BENCHMARKS.md, `bench/bench_gemv.py`), so decode used to run
at 0.25-0.6x llama.cpp on the same weights. `cpu_gemv.c` is a few AVX2 loops and a thread pool.
It is compiled on first use with the machine's C compiler (`$CC`, else `cc`, `gcc`, `clang`)
for this CPU (`-march=native`), about a second, into a cache folder keyed by the source, the
flags and the CPU, written to a temporary name and renamed, so concurrent first runs cannot see
half a library. No compiler, a CPU that is not x86-64 or lacks AVX2 and FMA, or an OS other
than Linux/macOS:
`kernels()` is None and decoding keeps torch's kernels (`packed_linear`); a failed build says
so in one warning and does the same.
`GemvLinear` runs up to `GEMV_MAX_ROWS` rows (a decode step, a short prompt's prefill) on the
kernels; more fp32 rows (a long prefill) go to torch's matrix-matrix kernel on the same
weights, and bf16 and int8 stay on the kernels at every size.
Usage: `k = kernels()`; `layer = GemvLinear(linear.weight, "int8", k)` if k is not None.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SOURCE = Path(__file__).with_name("cpu_gemv.c")
# -ffp-contract=off: the scalar tails (`s += w * x`) must round alike in every kernel, or a
# row's output depends on how many rows came with it. gcc 12 for one Xeon (-march=cooperlake)
# fused the tail of rows_f32 and not of rows_f32_x2, and a row alone differed from the same
# row in a pair (test_cpu_gemv); the explicit FMA intrinsics of the main loops are unchanged.
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=gnu11", "-shared", "-fPIC",
         "-fopenmp")
KIND = {"fp32": 0, "bf16": 1, "int8": 2}  # the C side's kinds, by decode dtype
X86_64 = ("x86_64", "amd64")  # platform.machine() where AVX2 may exist
QBLOCK = 32  # int8 weights and activations share one scale per this many values
# K is padded to a multiple of this (the C loops' step: bf16 widens 16 at a time, int8 blocks).
K_STEP = {"fp32": 1, "bf16": 16, "int8": QBLOCK}
# Above this many rows torch's matrix-matrix kernel beats ours (fp32). Nano's 48 products, 2
# AMD EPYC cores: 9 rows 16 ms against torch's 42, 22 rows 31 / 48, 48 rows 61 / 69, 64 rows
# 81 / 84 (bench/bench_gemv.py --rows N).
GEMV_MAX_ROWS = 48


def cache_dir() -> Path:
    """Where built kernels live: $XDG_CACHE_HOME/aethermind (default ~/.cache/aethermind)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "aethermind" / "kernels"


def compiler() -> str | None:
    """The C compiler to build with: $CC, else the first of cc, gcc, clang on PATH."""
    named = os.environ.get("CC")
    return named or next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags"))][:2]
        return "".join(lines) or platform.processor()
    except OSError:
        return platform.processor() + platform.machine()


def compile_library(cc: str, source: Path, out: Path | str) -> None:
    """`source` compiled as the kernels are, into the shared library `out`; raises
    `subprocess.CalledProcessError` (or `OSError`, `TimeoutExpired`) when it cannot be."""
    subprocess.run([cc, *FLAGS, str(source), "-o", str(out), "-lm"], check=True,
                   capture_output=True, timeout=120)


def build(cc: str, cache: Path) -> Path:
    """The kernels' shared library for this CPU, compiled into `cache` unless already there.
    Raises `OSError` or `subprocess.CalledProcessError` when it cannot be built."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((cc, *FLAGS)).encode()
                         + _cpu_signature().encode()).hexdigest()[:16]
    target = cache / f"cpu_gemv-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".cpu_gemv-", suffix=".so")
    os.close(fd)
    try:
        compile_library(cc, SOURCE, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


class Kernels:
    """The loaded library. Its loops run on torch's OpenMP threads, as many as torch uses."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        lib.aek_simd.restype = ctypes.c_int
        lib.aek_gemv.argtypes = [ctypes.c_int, ctypes.c_int, *[ctypes.c_void_p] * 3,
                                 *[ctypes.c_int64] * 3]
        lib.aek_gemv.restype = ctypes.c_int
        lib.aek_rms_norm.argtypes = [*[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 2,
                                     ctypes.c_float]
        lib.aek_rms_norm.restype = ctypes.c_int
        lib.aek_decode.argtypes = [ctypes.c_int, *[ctypes.c_void_p] * 3, ctypes.c_int64,
                                   ctypes.c_void_p]
        lib.aek_decode.restype = ctypes.c_int
        self.simd = bool(lib.aek_simd())
        self._gemv = lib.aek_gemv
        self._rms_norm = lib.aek_rms_norm
        self._decode = lib.aek_decode

    def decode(self, model: int, ids: int, positions: int, m: int, logits: int) -> int:
        """`aek_decode` on raw addresses (`cpu_decode.DecodeStep` owns them); 0 on success."""
        return self._decode(torch.get_num_threads(), model, ids, positions, m, logits)

    def rms_norm(self, rows: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """RMSNorm of `rows` (m, k, contiguous fp32) with fp32 `weight` (k,)."""
        y = torch.empty_like(rows)
        self._rms_norm(rows.data_ptr(), weight.data_ptr(), y.data_ptr(), *rows.shape, eps)
        return y

    def gemv(self, kind: int, w: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
        """(m, n) = rows (m, k, contiguous fp32) times the n-row weights `w` (`pack_weight`'s
        layout for `kind`) transposed."""
        m, k = rows.shape
        y = torch.empty(m, n)
        err = self._gemv(torch.get_num_threads(), kind, w.data_ptr(), rows.data_ptr(),
                         y.data_ptr(), n, k, m)
        if err:
            raise RuntimeError(f"cpu_gemv: kernel error {err} (kind {kind}, k {k})")
        return y


@functools.cache
def kernels() -> Kernels | None:
    """The kernels for this machine, built on first call; None where they cannot run here."""
    cc = compiler()
    if (cc is None or sys.platform not in ("linux", "darwin")
            or platform.machine().lower() not in X86_64):
        return None  # nothing to build for (AVX2 is x86's): torch's kernels, no warning
    try:
        loaded = Kernels(build(cc, cache_dir()))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        first = (detail.decode(errors="replace") if isinstance(detail, bytes) else detail)
        first = (first.strip().splitlines() or ["no message"])[0][:160]
        warnings.warn(f"could not build aethermind's CPU kernels with {cc} ({first}); "
                      "decoding uses torch's slower kernels", stacklevel=2)
        return None
    return loaded if loaded.simd else None


def quantize_blocks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per 32 weights along K (K a multiple of 32): (codes int8 (N, K), scales
    float32 (N, K / 32)) with w ~= codes * scales repeated over each block."""
    n, k = w.shape
    blocks = w.detach().float().reshape(n, k // QBLOCK, QBLOCK)
    scales = blocks.abs().amax(dim=-1).clamp(min=1e-12) / 127
    codes = torch.round(blocks / scales[..., None]).clamp(-127, 127).to(torch.int8)
    return codes.reshape(n, k), scales.contiguous()


def _tiles(w: torch.Tensor, step: int) -> torch.Tensor:
    """(N, K) -> (N / 4, K / step, 4, step): each K-step of 4 rows together (cpu_gemv.c)."""
    n, k = w.shape
    return w.reshape(n // 4, 4, k // step, step).transpose(1, 2)


def pack_weight(weight: torch.Tensor, dtype: str) -> torch.Tensor:
    """The weight in the layout `cpu_gemv.c` reads for `dtype`: fp32 as it is (shared); bf16
    and int8 padded with zeros to whole tiles (N to a multiple of 4; K of 16 / 32) and tiled,
    int8 as 144-byte steps of 4 fp32 scales then 4 x 32 codes."""
    if dtype == "fp32":
        return weight.detach().float().contiguous()
    n, k = weight.shape
    step = K_STEP[dtype]
    w = F.pad(weight.detach().float(), (0, -k % step, 0, -n % 4))
    if dtype == "bf16":
        return _tiles(w.to(torch.bfloat16), step).contiguous()
    codes, scales = quantize_blocks(w)
    scale_bytes = scales.reshape(-1, 4, scales.shape[1]).transpose(1, 2).contiguous()
    steps = torch.cat([scale_bytes.view(torch.int8),  # (N/4, K/32, 16)
                       _tiles(codes, step).reshape(*scale_bytes.shape[:2], 4 * step)], dim=-1)
    return steps.contiguous()


# The op torch.compile calls as is (it cannot trace ctypes). Registered with the plain Library
# API, CPU kernel only: torch.library.custom_op's Python wrapper cost ~2x per call.
_LIBRARY = torch.library.Library("aethermind", "FRAGMENT")
_LIBRARY.define("cpu_gemv(Tensor rows, Tensor w, int kind, int n) -> Tensor")
_LIBRARY.impl("cpu_gemv", lambda rows, w, kind, n: _loaded().gemv(kind, w, rows, n), "CPU")
cpu_gemv = torch.ops.aethermind.cpu_gemv


@torch.library.register_fake("aethermind::cpu_gemv")
def _(rows: torch.Tensor, w: torch.Tensor, kind: int, n: int) -> torch.Tensor:
    return rows.new_empty(rows.shape[0], n)


def _loaded() -> Kernels:
    k = kernels()
    if k is None:
        raise RuntimeError("cpu_gemv: the kernels are not available on this machine")
    return k


class GemvRMSNorm(nn.Module):
    """An fp32 RMSNorm in one kernel call (torch's is six ops on CPU); inference only. Under
    torch.compile, or for other dtypes, it is the model's own norm, which inductor fuses."""

    def __init__(self, norm: nn.Module, kernels: Kernels) -> None:
        super().__init__()
        self.norm, self.kernels = norm, kernels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.norm.weight
        if (torch.compiler.is_compiling() or x.dtype != torch.float32
                or w.dtype != torch.float32):
            return self.norm(x)
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        return self.kernels.rms_norm(rows, w, self.norm.eps).view(x.shape)


class GemvLinear(nn.Module):
    """Bias-free linear whose few-row products run on `cpu_gemv.c`; inference only.
    fp32 reads the weight it is given (shared, not copied) and hands many-row products (a
    prefill) to torch; bf16 and int8 read their own tiled copy (`pack_weight`) at every size."""

    def __init__(self, weight: torch.Tensor, dtype: str, kernels: Kernels) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.kind, self.kernels = KIND[dtype], kernels
        self.pad = -self.in_features % K_STEP[dtype]
        self.register_buffer("w", pack_weight(weight, dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        compiling = torch.compiler.is_compiling()  # a compiled decode step: few rows, always
        if not compiling and rows.shape[0] > GEMV_MAX_ROWS and self.kind == KIND["fp32"]:
            return F.linear(x.float(), self.w).to(x.dtype)
        rows = rows.float()
        rows = (F.pad(rows, (0, self.pad)) if self.pad else rows).contiguous()
        if compiling:
            y = cpu_gemv(rows, self.w, self.kind, self.out_features)
        else:  # eager skips the custom op's dispatch
            y = self.kernels.gemv(self.kind, self.w, rows, self.out_features)
        return y.to(x.dtype).view(*shape[:-1], self.out_features)

"""Freed memory stays in the C heap on CPU training, so a step reuses its buffers instead of
page-faulting them in afresh every step.

glibc hands out blocks above its mmap threshold (128 KiB, rising with use to at most 32 MiB) as
fresh mappings that go back to the OS when freed, and it trims the heap top once more than
twice that is free. A CPU training step frees and allocates the same large buffers every step:
activations, their gradients, nano's 131 MB logits chunk and 98 MB embedding gradient. So each
step the kernel maps and zeroes them again: 1.9 million page faults in a five-step nano run.
With both thresholds at 2 GiB freed blocks return to the heap and are reused (0.8 million
faults, almost all from loading; BENCHMARKS.md, "Training"): nano's eager fp32 step was 4-10%
faster, the compiled one 0-6%. The price is that the process keeps its peak heap, which a
training step reaches every step anyway (nano's resident memory 3.3 GB instead of 3.0,
steady). This is the glibc equivalent of the jemalloc/tcmalloc preload that CPU training
guides recommend, with nothing to install.
Process-wide, like `torch.set_num_threads`: `dist.setup` asks for it on CPU only (training and
RL); generation and serving keep the default. Nothing here runs at import time.
Usage: `retain_freed_memory()` -> True where it took effect (glibc), False elsewhere.
"""

from __future__ import annotations

import ctypes
import platform
import sys

# mallopt's parameters (glibc's malloc.h) and the threshold: the largest value its int takes.
# Blocks above it (2 GiB) are still mapped on their own.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
RETAIN_BYTES = 2**31 - 1


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no glibc
    (macOS, Windows, musl) or it refuses (older glibc caps the mmap threshold at 32 MiB; the
    trim threshold alone is then raised, and the result is still False)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    trimmed = mallopt(M_TRIM_THRESHOLD, RETAIN_BYTES) == 1
    mapped = mallopt(M_MMAP_THRESHOLD, RETAIN_BYTES) == 1
    return trimmed and mapped

"""How many CPU threads generation uses: the cores free now, so a busy machine degrades gently.

Decoding a token runs hundreds of small ops, and each multi-threaded op ends on an OpenMP
barrier: when another process holds one of our cores, every op waits for the descheduled thread,
so 2 threads on a loaded 2-core machine decode several times slower than 1 (issue 24 measured
0.37x Hugging Face with 14 busy threads). The rule, in one place: use the cores this process may
run on (`os.sched_getaffinity`) minus the other runnable work (the 1-minute load average, or
the tasks runnable right now if fewer: the average lags), rounded, at least 1 and at most
torch's current count. On an idle machine that is torch's default. Chat, serve and evaluate
call `use_decode_threads()` once, after loading the model.
Nothing here runs at import time.
Usage: `n = use_decode_threads()` (sets torch's intra-op threads and returns the count).
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def machine_load() -> float:
    """Other runnable work on the machine: the 1-minute load average, or fewer if fewer tasks
    are runnable right now (Linux's /proc/loadavg), since the average lags for a minute after
    work ends, our own model loading or a finished `make demo` included; 0 where the OS has
    neither."""
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0.0
    return min(average, _runnable_others())


def _runnable_others() -> float:
    """Tasks runnable now besides this one (the 4th field of /proc/loadavg counts us too)."""
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return float("inf")  # no such file: the average alone decides
    return max(0, running - 1)


def decode_threads(cores: int, load: float, current: int) -> int:
    """Threads for generation: `cores` minus `load` rounded, clamped to 1..`current`."""
    return max(1, min(current, round(cores - load)))


def use_decode_threads() -> int:
    """Apply `decode_threads` to torch for this process and return the count used."""
    n = decode_threads(available_cores(), machine_load(), torch.get_num_threads())
    torch.set_num_threads(n)
    return n

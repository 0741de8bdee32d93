"""Devices, precision fallbacks, seeding, and DDP/FSDP2 setup from torchrun's environment.

One process per device; torchrun sets RANK, LOCAL_RANK and WORLD_SIZE, and without them
everything runs as rank 0 of 1. Only rank 0 logs (`log0`) and writes files (`is_main`).
Nothing here runs at import time.
Usage: `ctx = setup("auto")`; `model = wrap_model(model, ctx)`; `log0("hello")`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from aethermind.runtime.memory import retain_freed_memory

log = logging.getLogger("aethermind")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_rank() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment variables."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


def is_main() -> bool:
    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank() == 0
    return env_rank()[0] == 0


def log0(msg: str, *args: object, level: int = logging.INFO) -> None:
    """Log on rank 0 only, so K processes do not print every line K times."""
    if is_main():
        log.log(level, msg, *args)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at emit time (pytest and notebooks swap it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(level: int = logging.INFO) -> None:
    """Plain `message` lines on stderr for the `aethermind` logger; idempotent."""
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def select_device(requested: str | torch.device | None = "auto", local_rank: int = 0
                  ) -> torch.device:
    """The one device rule (train, chat, evaluate, the thinking pipeline).

    "auto" (or None) picks CUDA (this process's GPU under torchrun), else Apple's MPS, else
    the CPU. An accelerator that is asked for but absent falls back to the CPU with a one-line
    warning, so a command written for a GPU still runs on a laptop. Unknown names: ValueError.
    """
    name = str(requested or "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N, mps or auto") from None
    present = {"cuda": ("CUDA GPU", torch.cuda.is_available),
               "mps": ("Apple MPS device", torch.backends.mps.is_available)}
    if dev.type in present and not present[dev.type][1]():
        warnings.warn(f"device {name!r} asked but no {present[dev.type][0]} is available: "
                      "running on the CPU (slow); use device cpu to silence this", stacklevel=2)
        return torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", local_rank)
    return dev


def _show_warning(message: Warning | str, *args: object, **kwargs: object) -> None:
    if is_main():
        print(f"warning: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def plain_warnings() -> Iterator[None]:
    """Inside: warnings print as one `warning: ...` line on rank 0 (no file:line noise)."""
    with warnings.catch_warnings():  # restores the warning hooks on exit
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        yield


def gpu_precision(capability: tuple[int, int]) -> str:
    """The half precision a CUDA card of this compute capability trains in: bf16 runs in
    hardware from Ampere (8.0); before it (a T4 is 7.5) torch emulates it slowly, and
    `torch.cuda.is_bf16_supported()` counts that emulation, so fp16 with loss scaling."""
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def cpu_bf16_native() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16: Intel Xeon from
    Cooper Lake, AMD from Zen 4). There bf16 autocast halves a training step's matmul time;
    elsewhere torch emulates bf16, slower than fp32."""
    return any(getattr(torch.cpu, name, lambda: False)()
               for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def cpu_precision() -> str:
    """The precision CPU training runs fastest in here: bf16 where the CPU has it, else fp32."""
    return "bf16" if cpu_bf16_native() else "fp32"


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp16 needs a GPU and bf16 a GPU or a CPU with bf16 in hardware (`cpu_bf16_native`);
    otherwise fall back to fp32 with a one-line warning."""
    if precision == "bf16" and device.type == "cpu" and not cpu_bf16_native():
        warnings.warn("precision bf16 needs a GPU or a CPU with bf16 in hardware (AMX or "
                      "AVX512-BF16): using fp32 on this CPU", stacklevel=2)
        return "fp32"
    if precision == "fp16" and device.type == "cpu":
        warnings.warn("precision fp16 needs a GPU: using fp32 on the CPU", stacklevel=2)
        return "fp32"
    if precision == "bf16" and device.type == "cuda" and \
            gpu_precision(torch.cuda.get_device_capability(device)) != "bf16":
        warnings.warn("this GPU has no bf16: using fp16 with loss scaling", stacklevel=2)
        return "fp16"
    return precision


def cpu_compiler_found() -> bool:
    """Whether torch.compile can build CPU kernels here: inductor compiles them with a C++
    compiler (g++ or clang++; cl on Windows), which many laptops lack."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
    except Exception:  # torch's InvalidCxxCompiler, or a torch without this module
        return False
    return True


def resolve_compile(compile: bool | str, device: torch.device) -> bool | str:
    """`compile` (false, true or "blocks"), or false with a one-line warning on a CPU where
    torch.compile would fail at the first step for want of a C++ compiler."""
    if compile and device.type == "cpu" and not cpu_compiler_found():
        warnings.warn("compile needs a C++ compiler on the CPU (g++ or clang++) and none was "
                      "found: training without torch.compile (install one, or set compile: "
                      "false to silence this)", stacklevel=2)
        return False
    return compile


def setup(device: str = "auto") -> DistContext:
    """Pick the device and, under torchrun, join the process group (nccl on CUDA, else gloo).
    On CPU the process keeps freed memory for reuse (`memory.retain_freed_memory`)."""
    rank, local_rank, world_size = env_rank()
    dev = select_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    elif dev.type == "cpu":  # a CPU step's buffers are reused, not page-faulted in each step
        retain_freed_memory()
    if world_size > 1 and not tdist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        tdist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)


def teardown() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (all devices); ranks get distinct but fixed streams."""
    seed = seed + rank
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op in a single process)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def barrier() -> None:
    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()


def wrap_model(model: nn.Module, ctx: DistContext, fsdp: bool = False) -> nn.Module:
    """DDP (replicate) or FSDP2 (shard each block, then the root) across the process group."""
    if not ctx.distributed:
        return model
    if fsdp:
        from torch.distributed.fsdp import fully_shard  # FSDP2; only under FSDP (~1 s import)

        for layer in model.layers:
            fully_shard(layer)
        return fully_shard(model)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare Forge1Model under DDP and torch.compile wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def _restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return _restore()
    return contextlib.nullcontext()

"""Our decode kernels against an earlier version of themselves, interleaved in one process.

A change to `cpu_gemv.c` is judged here: this builds the working tree's `cpu_gemv.c` and the
one of each `--rev` (a git revision) with the same compiler and flags, then times nano's 49
products (random weights, `--rows` input rows, the weights streamed from memory as in a real
step) through each library in turn, round after round, and keeps each one's best round. With
`--position P` it times whole decode steps instead (`aek_decode`: every layer, attention over
P cached positions for each row). Taking turns means a noisy neighbour hurts every version
alike, where two separate runs on these shared machines differed by 25%. The figure to read
is the ratio to the first `--rev`.
Usage: `python bench/ab_kernels.py --rev a709305 [--rows 8] [--dtype fp32] [--rounds 30]
[--position 900]`.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from bench_gemv import nano_shapes  # noqa: E402

from aethermind.model import cpu_gemv  # noqa: E402
from aethermind.model.config import Forge1Config  # noqa: E402
from aethermind.model.cpu_decode import DecodeStep  # noqa: E402
from aethermind.model.kv_cache import KVCache  # noqa: E402
from aethermind.model.packed_linear import packed_for_cpu  # noqa: E402
from aethermind.model.transformer import Forge1Model  # noqa: E402
from aethermind.text.tokenizer import Forge1Tokenizer  # noqa: E402

SOURCE = "aethermind/model/cpu_gemv.c"


def _library(source: str, out: Path, cc: str) -> cpu_gemv.Kernels:
    c_file = out.with_suffix(".c")
    c_file.write_text(source)
    cpu_gemv.compile_library(cc, c_file, out)
    return cpu_gemv.Kernels(out)


def _products(libs: dict[str, cpu_gemv.Kernels], n_rows: int, dtype: str
              ) -> dict[str, Callable[[], None]]:
    """name -> one step's 49 products through that library."""
    weights = [torch.randn(n, k) for n, k in nano_shapes()]
    packed = [cpu_gemv.pack_weight(w, dtype) for w in weights]
    kind, step = cpu_gemv.KIND[dtype], cpu_gemv.K_STEP[dtype]
    rows = {k: torch.randn(n_rows, -(-k // step) * step) for k in {w.shape[1] for w in weights}}

    def run(lib: cpu_gemv.Kernels) -> None:
        for w, pw in zip(weights, packed, strict=True):
            lib.gemv(kind, pw, rows[w.shape[1]], w.shape[0])

    return {name: functools.partial(run, lib) for name, lib in libs.items()}


def _steps(libs: dict[str, cpu_gemv.Kernels], n_rows: int, dtype: str, position: int
           ) -> dict[str, Callable[[], object]]:
    """name -> one whole decode step of nano (`aek_decode` of that library), every row at
    `position`; all of them on the same packed weights and KV cache."""
    cfg = Forge1Config.from_variant("nano", vocab_size=Forge1Tokenizer().get_vocab_size_padded())
    if not 0 <= position < cfg.max_seq_len:
        raise SystemExit(f"--position {position}: must be in 0..{cfg.max_seq_len - 1}")
    model = packed_for_cpu(Forge1Model(cfg).eval(), dtype)
    cache = KVCache.for_model(model, n_rows, cfg.max_seq_len)
    ids, positions = list(range(5, 5 + n_rows)), [position] * n_rows
    out = {}
    for name, lib in libs.items():
        with mock.patch.object(cpu_gemv, "kernels", return_value=lib):
            step = DecodeStep.for_model(model, cache)
        if step is None:
            raise SystemExit("the C decode step does not run nano here")
        out[name] = functools.partial(step, ids, positions)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", action="append", required=True,
                   help="git revision whose cpu_gemv.c to compare (repeatable)")
    p.add_argument("--rows", type=int, default=8, help="input rows (default 8)")
    p.add_argument("--dtype", choices=sorted(cpu_gemv.KIND), default="fp32")
    p.add_argument("--rounds", type=int, default=30, help="rounds; each library's best is kept")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--position", type=int,
                   help="time whole decode steps with every row at this position")
    args = p.parse_args(argv)
    for name in ("rows", "rounds", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} {getattr(args, name)}: must be at least 1")
    cc = cpu_gemv.compiler()
    if cc is None or cpu_gemv.kernels() is None:
        raise SystemExit("no C compiler or no AVX2/FMA here: nothing to compare")
    torch.set_num_threads(args.threads)
    sources = {}
    for rev in args.rev:
        shown = subprocess.run(["git", "show", f"{rev}:{SOURCE}"], cwd=ROOT, text=True,
                               capture_output=True)
        if shown.returncode:
            raise SystemExit(f"--rev {rev}: {shown.stderr.strip() or 'not found'}")
        sources[rev] = shown.stdout
    sources["working tree"] = (ROOT / SOURCE).read_text()
    torch.manual_seed(0)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        libs = {name: _library(src, Path(tmp) / f"v{i}.so", cc)
                for i, (name, src) in enumerate(sources.items())}
        work = (_steps(libs, args.rows, args.dtype, args.position) if args.position is not None
                else _products(libs, args.rows, args.dtype))
        for _ in range(args.rounds):
            for name, run in work.items():
                start = time.perf_counter()
                run()
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    first = best[args.rev[0]]
    what = ("whole decode steps at position " + str(args.position) if args.position is not None
            else "49 products")
    print(f"nano, {what}, {args.dtype}, {args.rows} input row(s), {args.threads} threads, "
          f"best of {args.rounds} interleaved rounds")
    print("| cpu_gemv.c | ms a step | speed vs " + args.rev[0] + " |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {first / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

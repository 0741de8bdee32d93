"""Our decode kernels against an earlier version of themselves, interleaved in one process.

A change to `cpu_gemv.c` is judged here: this builds the working tree's `cpu_gemv.c` and the
one of each `--rev` (a git revision) with the same compiler and flags, then times nano's 49
products (random weights, `--rows` input rows, the weights streamed from memory as in a real
step) through each library in turn, round after round, and keeps each one's best round. Taking
turns means a noisy neighbour hurts every version alike, where two separate runs on these
shared machines differed by 25%. The figure to read is the ratio to the first `--rev`.
Usage: `python bench/ab_kernels.py --rev a709305 [--rows 8] [--dtype fp32] [--rounds 30]`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from bench_gemv import nano_shapes  # noqa: E402

from aethermind.model import cpu_gemv  # noqa: E402

SOURCE = "aethermind/model/cpu_gemv.c"


def _library(source: str, out: Path, cc: str) -> cpu_gemv.Kernels:
    c_file = out.with_suffix(".c")
    c_file.write_text(source)
    subprocess.run([cc, *cpu_gemv.FLAGS, str(c_file), "-o", str(out), "-lm"], check=True)
    return cpu_gemv.Kernels(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", action="append", required=True,
                   help="git revision whose cpu_gemv.c to compare (repeatable)")
    p.add_argument("--rows", type=int, default=8, help="input rows (default 8)")
    p.add_argument("--dtype", choices=sorted(cpu_gemv.KIND), default="fp32")
    p.add_argument("--rounds", type=int, default=30, help="rounds; each library's best is kept")
    p.add_argument("--threads", type=int, default=2)
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
    weights = [torch.randn(n, k) for n, k in nano_shapes()]
    packed = [cpu_gemv.pack_weight(w, args.dtype) for w in weights]
    kind = cpu_gemv.KIND[args.dtype]
    step = cpu_gemv.K_STEP[args.dtype]
    rows = {k: torch.randn(args.rows, -(-k // step) * step) for k in {w.shape[1] for w in weights}}
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        libs = {name: _library(src, Path(tmp) / f"v{i}.so", cc)
                for i, (name, src) in enumerate(sources.items())}
        for _ in range(args.rounds):
            for name, lib in libs.items():
                start = time.perf_counter()
                for w, pw in zip(weights, packed, strict=True):
                    lib.gemv(kind, pw, rows[w.shape[1]], w.shape[0])
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    first = best[args.rev[0]]
    print(f"nano, 49 products, {args.dtype}, {args.rows} input row(s), {args.threads} threads, "
          f"best of {args.rounds} interleaved rounds")
    print("| cpu_gemv.c | ms a step | speed vs " + args.rev[0] + " |\n|---|---|---|")
    for name, seconds in best.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {first / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

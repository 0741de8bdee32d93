"""Training-step speed of Forge-1's fused chunked projection + cross-entropy vs the logits path.

Same model, weights and batch; the two paths alternate and the best time of each is kept, so
machine noise hits both alike. Results: BENCHMARKS.md, section Model.
Usage: `python bench/bench_loss.py --variants tiny nano --repeats 5`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aethermind.model.config import Forge1Config  # noqa: E402
from aethermind.model.transformer import Forge1Model  # noqa: E402


def bench(variant: str, batch: int, seq: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = Forge1Model(Forge1Config.from_variant(variant, vocab_size=32000))
    x = torch.randint(0, 32000, (batch, seq + 1))
    paths = {
        "logits": lambda: F.cross_entropy(model(x[:, :-1]).float().flatten(0, 1),
                                          x[:, 1:].flatten()).backward(),
        "fused": lambda: model(x[:, :-1], targets=x[:, 1:]).backward(),
    }
    best = dict.fromkeys(paths, float("inf"))
    for step in paths.values():
        step()  # warm-up
    for _ in range(repeats):
        for name, step in paths.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: batch * seq / t for name, t in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["tiny", "nano"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} x {args.seq}, vocab 32000, fp32")
    print("| shape | logits path | fused path | ratio |\n|---|---:|---:|---:|")
    for variant in args.variants:
        r = bench(variant, args.batch, args.seq, args.repeats)
        print(f"| {variant} | {r['logits']:,.0f} tok/s | {r['fused']:,.0f} tok/s | "
              f"{r['fused'] / r['logits']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

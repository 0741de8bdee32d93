"""The demo's training step in fp32 and bf16, eager and compiled per block, side by side.

Each variant is the demo recipe (`aethermind.demo.train_config`: its data, fitted vocabulary,
batch 8 x 384, Muon) set up as training sets it up, with only `precision` and `compile`
changed. The variants run in turns of `--steps` steps in one process (the median turn is
kept), so machine load falls on all of them alike; the first row is the recipe before
7 Dec (fp32, eager). Compiling is timed apart, as the first turn's extra seconds. Then the
attention call alone, forward and backward, in fp32 and bf16 at tiny's and nano's shapes: why
heads narrower than 64 attend in fp32 under CPU autocast (`model/attention.py`).
Usage: `.venv/bin/python bench/bench_demo_step.py [--steps 20 --repeats 5 --threads 2]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from aethermind import demo
from aethermind.model.attention import document_causal_mask
from aethermind.runtime import dist
from aethermind.training.signals import StopFlag
from aethermind.training.train import run_loop, setup

VARIANTS = {"fp32, eager (the recipe before 7 Dec)": dict(precision="fp32", compile=False),
            "fp32, compile: blocks": dict(precision="fp32", compile="blocks"),
            "bf16, eager": dict(precision="bf16", compile=False),
            "bf16, compile: blocks (the recipe)": dict(precision="bf16", compile="blocks")}
# (batch, query heads, key/value heads, tokens, head dim) of one attention call in training
ATTENTION_SHAPES = {"tiny, 8 x 256": (8, 4, 2, 256, 32),
                    "tiny, 8 x 384 (the demo)": (8, 4, 2, 384, 32),
                    "tiny, 4 x 512": (4, 4, 2, 512, 32),
                    "nano, 8 x 384": (8, 12, 4, 384, 64),
                    "nano, 2 x 512": (2, 12, 4, 512, 64),
                    "nano, 1 x 1024": (1, 12, 4, 1024, 64)}


def time_steps(root: Path, steps: int, repeats: int) -> None:
    demo.build_data(root, 4000, demo.N_TEST)
    data, tok = root / "data", root / "tokenizer"
    runs, first = {}, {}
    for i, (name, changes) in enumerate(VARIANTS.items()):
        cfg = demo.train_config(root / f"run{i}", data / "train.jsonl", data / "val.jsonl", tok,
                                100_000, dashboard="off", checkpoint_every=0, eval_every=0,
                                **changes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # bf16 on a CPU without it: fp32, said below
            runs[name] = setup(cfg, overwrite=True)
    stop = StopFlag()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for turn in range(repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run_loop(run, stop, stop_after=steps)
            elapsed = time.perf_counter() - start
            if turn == 0:
                first[name] = elapsed
            else:
                times[name].append(elapsed / steps)
    base = statistics.median(times[next(iter(times))])
    print(f"\n{'variant':40} {'s/step':>7} {'x fp32 eager':>12} {'first turn':>11}")
    for name, ts in times.items():
        med = statistics.median(ts)
        extra = first[name] - med * steps  # compiling, plus the first steps' warm-up
        print(f"{name:40} {med:7.3f} {base / med:12.2f} {extra:10.1f}s")
    print(f"{steps} steps a turn, median of {repeats} turns; precision here: "
          f"bf16 {'runs in hardware' if dist.cpu_bf16_native() else 'falls back to fp32'}")


def time_attention(repeats: int) -> None:
    print(f"\n{'attention, forward + backward':32} {'fp32 ms':>8} {'bf16 ms':>8} {'bf16/fp32':>9}")
    for name, (b, h, h_kv, t, d) in ATTENTION_SHAPES.items():
        doc_ids = torch.cumsum((torch.rand(b, t) < 1 / 115).long(), 1)  # ~115-token chats
        mask = document_causal_mask(doc_ids)
        ms = {}
        for dtype in (torch.float32, torch.bfloat16):
            runs = []
            for _ in range(repeats):
                q, k, v = (torch.randn(b, n, t, d, dtype=dtype, requires_grad=True)
                           for n in (h, h_kv, h_kv))
                start = time.perf_counter()
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
                y.float().sum().backward()
                runs.append(time.perf_counter() - start)
            ms[dtype] = statistics.median(runs) * 1000
        bf16, fp32 = ms[torch.bfloat16], ms[torch.float32]
        print(f"{name:32} {fp32:8.1f} {bf16:8.1f} {bf16 / fp32:9.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="steps a turn")
    p.add_argument("--repeats", type=int, default=5, help="timed turns per variant")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="demo_step_") as tmp:
        time_steps(Path(tmp), args.steps, args.repeats)
    time_attention(max(5, args.repeats * 2))
    print(f"{args.threads} thread(s); load average {load:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

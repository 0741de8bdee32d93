"""Decode speed and time to first token: Forge-1's engine vs Hugging Face `generate`, same weights.

Greedy, batch 1, the same prompt, random weights converted with `aethermind.model.hf_convert.to_hf`
(speed does not depend on what the weights say; the first run checks both emit the same tokens).
Also measures the machine's memory read bandwidth in the same run, because decoding one token
reads every weight once: bandwidth / weight bytes is the ceiling we report a fraction of.
Runs are interleaved (Forge, HF, Forge, HF, ...) and the best of `--repeats` is kept, so a
noisy neighbour hurts both sides alike.
Batched decode (`--batch`, default 8; what the server's continuous batching relies on): the
aggregate tokens/s of `--batch` same-length prompts decoded together, on both sides, against
batch 1 of the same side; decode rate = batch x (n - 1) / (time for n tokens - time for 1).
On a busy shared machine, `--threads 1 --cpu-time` gives figures that neighbours barely move.
Under load (issue 24, item 4): `--busy N` keeps N spinning processes running meanwhile, and
`--forge-threads auto` gives Forge-1 the thread count chat and serve use (`runtime.threads`:
free cores by the load average) while HF keeps `--threads` (torch's default) as a user has it.
Usage: `python bench/bench_generate.py --variants tiny nano --dtypes fp32 bf16 --json out.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from aethermind.inference.engine import Engine  # noqa: E402
from aethermind.inference.sampling import SamplingParams  # noqa: E402
from aethermind.model.config import VARIANTS, Forge1Config  # noqa: E402
from aethermind.model.hf_convert import to_hf  # noqa: E402
from aethermind.model.transformer import Forge1Model  # noqa: E402
from aethermind.runtime import threads  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Every timing reads this clock: wall time by default; `--cpu-time` switches to this process's
# CPU seconds, which on a shared, oversubscribed machine leaves out the time spent waiting for a
# core (use it with --threads 1, where CPU seconds and busy wall time are the same thing).
CLOCK = [time.perf_counter]
# Torch threads per side while it runs: None = leave as set (`--threads`); see `--forge-threads`.
SIDE_THREADS: dict[str, int | None] = {"forge": None, "hf": None}


def _on(side: str) -> None:
    if SIDE_THREADS[side] is not None:
        torch.set_num_threads(SIDE_THREADS[side])


def memory_bandwidth(mib: int = 512, repeats: int = 5) -> dict[str, float]:
    """GB/s for a read-only pass (sum, what decoding does to weights) and a copy (read+write)."""
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    y = torch.empty_like(x)
    nbytes = x.numel() * 4
    best_read = best_copy = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        best_read = min(best_read, time.perf_counter() - t)
        t = time.perf_counter()
        y.copy_(x)
        best_copy = min(best_copy, time.perf_counter() - t)
    return {"read_gb_s": nbytes / best_read / 1e9, "copy_gb_s": 2 * nbytes / best_copy / 1e9}


def _greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.0)


def _forge_run(engine: Engine, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """(time to first token, decode tokens/s after it, tokens)."""
    stamps: list[float] = []
    start = CLOCK[0]()
    gen = engine.generate(prompt, _greedy(n), on_token=lambda _: stamps.append(CLOCK[0]()))
    return stamps[0] - start, (n - 1) / (stamps[-1] - stamps[0]), gen.tokens


def _forge_batch(engine: Engine, prompts: list[list[int]], n: int) -> float:
    """Seconds for `n` new tokens per prompt, all prompts in one batch."""
    start = CLOCK[0]()
    engine.generate_batch(prompts, _greedy(n))
    return CLOCK[0]() - start


def _hf_batch(model: Any, prompts: list[list[int]], n: int) -> float:
    ids = torch.tensor(prompts)
    start = CLOCK[0]()
    with torch.inference_mode():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                       min_new_tokens=n, do_sample=False, pad_token_id=2)
    return CLOCK[0]() - start


def _decode_rate(run: Any, model: Any, prompts: list[list[int]], n: int) -> float:
    """Aggregate decode tokens/s: batch x (n - 1) / (time for n tokens - time for 1)."""
    return len(prompts) * (n - 1) / (run(model, prompts, n) - run(model, prompts, 1))


class _Stamps:
    """A `transformers` streamer that only timestamps each new token (the prompt comes first)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.calls = 0

    def put(self, value: torch.Tensor) -> None:
        self.calls += 1
        if self.calls > 1:
            self.times.append(CLOCK[0]())

    def end(self) -> None:
        pass


def _hf_run(model: Any, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    ids = torch.tensor([prompt])
    streamer = _Stamps()
    start = CLOCK[0]()
    with torch.inference_mode():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                             min_new_tokens=n, do_sample=False, streamer=streamer,
                             pad_token_id=2)
    t = streamer.times
    return t[0] - start, (n - 1) / (t[-1] - t[0]), out[0, len(prompt):].tolist()


def _models(variant: str, dtype: torch.dtype, batch: int) -> tuple[Engine, Engine, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = Forge1Config.from_variant(variant, vocab_size=32000)
    forge = Forge1Model(cfg).eval()
    hf_sd, hf_cfg = to_hf(forge.state_dict(), cfg)
    hf = LlamaForCausalLM(LlamaConfig.from_dict(hf_cfg)).eval()
    hf.load_state_dict(hf_sd, strict=False)  # tied lm_head may be absent from hf_sd
    hf.tie_weights()
    # Building the engine (prepacking, the KV cache) is part of loading a model for generation:
    # the chat does it once, so it stays outside the timed region, like HF's model loading.
    forge = forge.to(dtype)
    return (Engine(forge, max_batch_size=1), Engine(forge, max_batch_size=batch),
            hf.to(dtype))


def bench_one(variant: str, dtype_name: str, prompt_len: int, new_tokens: int, repeats: int,
              batch: int) -> dict[str, Any]:
    """One side-by-side row; the bandwidth is measured right before and after it (best kept)."""
    dtype = DTYPES[dtype_name]
    forge, forge_batched, hf = _models(variant, dtype, batch)
    prompts = torch.randint(12, 32000, (batch, prompt_len),
                            generator=torch.Generator().manual_seed(1)).tolist()
    prompt = prompts[0]
    bw_before = memory_bandwidth()["read_gb_s"]
    _forge_run(forge, prompt, 8)  # warm-up: first-call allocations, oneDNN kernel selection
    _hf_run(hf, prompt, 8)
    best: dict[str, list[float]] = {"forge": [float("inf"), 0.0], "hf": [float("inf"), 0.0]}
    same = None
    for _ in range(repeats):
        for name, run, model in (("forge", _forge_run, forge), ("hf", _hf_run, hf)):
            _on(name)
            ttft, tps, tokens = run(model, prompt, new_tokens)
            best[name] = [min(best[name][0], ttft), max(best[name][1], tps)]
            if name == "forge":
                forge_tokens = tokens
            elif same is None:
                same = tokens == forge_tokens
    rates: dict[str, float] = {}
    if batch > 1:
        for _ in range(repeats):
            for name, run, model, rows in (
                    ("forge_1", _forge_batch, forge, prompts[:1]),
                    ("forge_b", _forge_batch, forge_batched, prompts),
                    ("hf_1", _hf_batch, hf, prompts[:1]), ("hf_b", _hf_batch, hf, prompts)):
                _on("hf" if name.startswith("hf") else "forge")
                rates[name] = max(rates.get(name, 0.0), _decode_rate(run, model, rows,
                                                                     new_tokens))
    read_gb_s = max(bw_before, memory_bandwidth()["read_gb_s"])
    n_params = hf.num_parameters()  # the packed Forge-1 copy keeps its linears as buffers
    weight_bytes = n_params * torch.finfo(dtype).bits // 8
    limit = read_gb_s * 1e9 / weight_bytes
    return {"variant": variant, "dtype": dtype_name, "params_m": n_params / 1e6,
            "weight_mb": weight_bytes / 1e6, "forge_tok_s": best["forge"][1],
            "hf_tok_s": best["hf"][1], "speedup": best["forge"][1] / best["hf"][1],
            "forge_ttft_ms": best["forge"][0] * 1e3, "hf_ttft_ms": best["hf"][0] * 1e3,
            "read_gb_s": read_gb_s, "bandwidth_limit_tok_s": limit,
            "fraction_of_limit": best["forge"][1] / limit,
            "same_tokens": same, "batch": batch,
            **{f"{k}_decode_tok_s": v for k, v in rates.items()}}


def _table(rows: list[dict[str, Any]], bw: dict[str, float]) -> str:
    head = ("| model | dtype | Forge-1 tok/s | HF tok/s | speedup | Forge-1 TTFT | HF TTFT "
            "| read GB/s | bandwidth limit | of limit | same tokens |\n" + "|---" * 11 + "|")
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['variant']} ({r['params_m']:.1f}M) | {r['dtype']} | {r['forge_tok_s']:.1f} | "
            f"{r['hf_tok_s']:.1f} | {r['speedup']:.2f}x | {r['forge_ttft_ms']:.1f} ms | "
            f"{r['hf_ttft_ms']:.1f} ms | {r['read_gb_s']:.1f} | "
            f"{r['bandwidth_limit_tok_s']:.1f} tok/s | "
            f"{r['fraction_of_limit']:.0%} | {'yes' if r['same_tokens'] else 'no'} |")
    lines.append(f"\nmemory bandwidth at start: read (sum) {bw['read_gb_s']:.1f} GB/s, copy "
                 f"{bw['copy_gb_s']:.1f} GB/s; per row: best read around the row; limit = "
                 "read GB/s / weight bytes (every weight is read once per decoded token)")
    batched = [r for r in rows if r["batch"] > 1]
    if batched:
        b = batched[0]["batch"]
        lines.append(f"\n| model | dtype | Forge-1 batch 1 | Forge-1 batch {b} | Forge-1 gain "
                     f"| HF batch 1 | HF batch {b} | HF gain | Forge-1 / HF at batch {b} |\n"
                     + "|---" * 9 + "|")
        for r in batched:
            lines.append(
                f"| {r['variant']} | {r['dtype']} | {r['forge_1_decode_tok_s']:.1f} | "
                f"{r['forge_b_decode_tok_s']:.1f} | "
                f"{r['forge_b_decode_tok_s'] / r['forge_1_decode_tok_s']:.2f}x | "
                f"{r['hf_1_decode_tok_s']:.1f} | {r['hf_b_decode_tok_s']:.1f} | "
                f"{r['hf_b_decode_tok_s'] / r['hf_1_decode_tok_s']:.2f}x | "
                f"{r['forge_b_decode_tok_s'] / r['hf_b_decode_tok_s']:.2f}x |")
        lines.append("\n(aggregate decode tokens/s over the batch, greedy, same-length prompts)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=["tiny", "nano"], choices=VARIANTS)
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=tuple(DTYPES))
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=8, help="batched-decode size (1 skips it)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--forge-threads", choices=("same", "auto"), default="same",
                   help="auto: Forge-1 uses runtime.threads' rule (as chat/serve do), HF keeps "
                   "--threads (default same: both use --threads)")
    p.add_argument("--busy", type=int, default=0,
                   help="spinning processes kept running during the benchmark (default 0)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with process CPU seconds instead of wall time (see CLOCK)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    import transformers

    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
    try:
        time.sleep(5 if spinners else 0)  # let the load average see them
        load_before = threads.machine_load()
        if args.forge_threads == "auto":
            SIDE_THREADS["hf"] = torch.get_num_threads()
            SIDE_THREADS["forge"] = threads.decode_threads(
                threads.available_cores(), load_before, torch.get_num_threads())
        bw = memory_bandwidth()
        rows = [bench_one(v, d, args.prompt_tokens, args.new_tokens, args.repeats, args.batch)
                for v in args.variants for d in args.dtypes]
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    sides = {k: v or torch.get_num_threads() for k, v in SIDE_THREADS.items()}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads: "
          f"Forge-1 {sides['forge']}, HF {sides['hf']}; {args.busy} busy processes, load "
          f"{load_before:.1f} on {threads.available_cores()} cores; "
          f"{platform.processor() or platform.machine()}, {'CPU' if args.cpu_time else 'wall'} "
          "time")
    print(_table(rows, bw))
    if args.json:
        args.json.write_text(json.dumps({"bandwidth": bw, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

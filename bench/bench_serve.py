"""Continuous batching in `aethermind serve`: aggregate tokens/s of N concurrent clients vs 1.

Starts the real server (`python -m aethermind.cli serve`) on a random-weight model of the
preset saved in the training layout, then sends rounds of requests through the `openai`
client: one client alone, then N at once (each its own thread and connection), interleaved
and repeated, so a noisy neighbour hurts both sides alike. Reported: the best round of each
kind, the median of the ratios of neighbouring rounds, and tokens per CPU-second of the server
process (what a token costs in compute, which a busy machine changes less). Every request is
greedy with a fixed `max_tokens` and `ignore_eos`, so each round decodes exactly
clients x max_tokens tokens (what the weights say does not change the speed).
Requests are streamed, and each one's time to first token is kept: the
latency a user feels when the server is busy.
Usage: `python bench/bench_serve.py --variant nano --clients 8 --max-tokens 64 --repeats 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from aethermind.artifacts.layout import final_dir, write_final  # noqa: E402
from aethermind.model.config import Forge1Config  # noqa: E402
from aethermind.model.transformer import Forge1Model  # noqa: E402
from aethermind.text.tokenizer import Forge1Tokenizer  # noqa: E402


def _start_server(ckpt: Path, max_batch_size: int, compile: bool = False
                  ) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "aethermind.cli", "serve", "--model",
                             str(ckpt), "--port", "0", "--device", "cpu", "--max-batch-size",
                             str(max_batch_size), *(["--compile"] if compile else [])],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"on (http://\S+) ", line)
    if m is None:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, m.group(1)


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _clients(url: str, clients: int) -> list:
    """One `openai` client per simulated user, made once and kept, as a chat app keeps its
    client: making one costs 30-50 ms of CPU (its SSL context), which inside a timed round
    would be the bench's own work, not the server's, and would stagger the arrivals."""
    import openai

    return [openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
            for _ in range(clients)]


def _round(clients: list, model: str, max_tokens: int) -> tuple[float, int, list[float]]:
    """(seconds, completion tokens, each request's time to first token) for one streamed
    request from each of `clients` at once."""

    def ask(i: int) -> tuple[int, float]:
        sent, first, tokens = time.perf_counter(), None, 0
        stream = clients[i].chat.completions.create(
            model=model, temperature=0, max_tokens=max_tokens, stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": f"Client {i}: tell me a long story."}],
            extra_body={"ignore_eos": True})
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - sent
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return tokens, first if first is not None else float("nan")

    with ThreadPoolExecutor(len(clients)) as pool:
        start = time.perf_counter()
        answers = list(pool.map(ask, range(len(clients))))
        return (time.perf_counter() - start, sum(t for t, _ in answers),
                [f for _, f in answers])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="nano", help="model preset (default nano)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    p.add_argument("--repeats", type=int, default=3, help="rounds of each kind; best is kept")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--compile", action="store_true", help="serve with --compile (fp32)")
    args = p.parse_args(argv)

    tok = Forge1Tokenizer()
    torch.manual_seed(0)
    model = Forge1Model(Forge1Config.from_variant(args.variant,
                                                  vocab_size=tok.get_vocab_size_padded()))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_final(model.state_dict(), model.config, tok, final_dir(tmp), args.variant)
        del model
        proc, url = _start_server(ckpt, max(args.clients, 1), args.compile)
        try:
            users = _clients(url, max(args.clients, 1))
            # warm-up: first-call costs and every user's connection stay out of the figures
            _round(users, ckpt.stem, 4)
            server = psutil.Process(proc.pid)
            kinds = (1, args.clients)
            rates: dict[int, list[float]] = {n: [] for n in kinds}
            cpu: dict[int, list[float]] = {n: [] for n in kinds}
            ttft: dict[int, list[float]] = {n: [] for n in kinds}
            for _ in range(args.repeats):
                for n in kinds:
                    cpu_start = _cpu_seconds(server)
                    seconds, tokens, firsts = _round(users[:n], ckpt.stem, args.max_tokens)
                    cpu_used = _cpu_seconds(server) - cpu_start
                    assert tokens == n * args.max_tokens, (tokens, n)
                    rates[n].append(tokens / seconds)
                    cpu[n].append(tokens / cpu_used)
                    ttft[n] += firsts
                    print(f"  {n} client(s): {tokens} tokens in {seconds:.2f} s = "
                          f"{tokens / seconds:.1f} tok/s, {tokens / cpu_used:.1f} tokens per "
                          f"server CPU-second, first token after {statistics.median(firsts):.2f} s "
                          "(median)", flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    n = args.clients
    best = {k: max(v) for k, v in rates.items()}
    result = {
        "variant": args.variant, "clients": n, "max_tokens": args.max_tokens,
        "compile": args.compile,
        "best_tok_s_1": best[1], f"best_tok_s_{n}": best[n], "best_ratio": best[n] / best[1],
        "median_neighbour_ratio": statistics.median(
            b / a for a, b in zip(rates[1], rates[n], strict=True)),
        "cpu_tok_s_1": max(cpu[1]), f"cpu_tok_s_{n}": max(cpu[n]),
        "cpu_ratio": max(cpu[n]) / max(cpu[1]), "loadavg": os.getloadavg(),
        "ttft_median_1": statistics.median(ttft[1]), f"ttft_median_{n}": statistics.median(ttft[n]),
        f"ttft_max_{n}": max(ttft[n]),
    }
    print(f"{args.variant}, {args.max_tokens} tokens per request, {args.repeats} rounds each: "
          f"1 client {best[1]:.1f} tok/s, {n} clients {best[n]:.1f} tok/s aggregate (best "
          f"rounds) = {result['best_ratio']:.2f}x; median of neighbouring rounds "
          f"{result['median_neighbour_ratio']:.2f}x; per server CPU-second "
          f"{max(cpu[1]):.1f} vs {max(cpu[n]):.1f} tokens = {result['cpu_ratio']:.2f}x "
          "(load average {:.2f}, {:.2f}, {:.2f})".format(*result["loadavg"]))
    print(f"time to first token (median of every request): 1 client "
          f"{result['ttft_median_1']:.2f} s, {n} clients {result[f'ttft_median_{n}']:.2f} s "
          f"(slowest {result[f'ttft_max_{n}']:.2f} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Continuous batching in `aethermind serve`: aggregate tokens/s of N concurrent clients vs 1.

Starts the real server (`python -m aethermind.cli serve`) on a random-weight model of the
preset saved in the training layout, then sends rounds of requests through the `openai`
client: one client alone, then N at once (each its own thread and connection), interleaved
and repeated, best round kept, so a noisy neighbour hurts both sides alike. Every request is
greedy with a fixed `max_tokens` and `ignore_eos`, so each round decodes exactly
clients x max_tokens tokens (what the weights say does not change the speed).
Usage: `python bench/bench_serve.py --variant nano --clients 8 --max-tokens 64 --repeats 3`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a plain checkout

from aethermind.checkpoint import export_final  # noqa: E402
from aethermind.config import Forge1Config  # noqa: E402
from aethermind.model import Forge1Model  # noqa: E402
from aethermind.tokenizer import Forge1Tokenizer  # noqa: E402


def _start_server(ckpt: Path, max_batch_size: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "aethermind.cli", "serve", "--model",
                             str(ckpt), "--port", "0", "--device", "cpu", "--max-batch-size",
                             str(max_batch_size)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.search(r"on (http://\S+) ", line)
    if m is None:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, m.group(1)


def _round(url: str, model: str, clients: int, max_tokens: int) -> tuple[float, int]:
    """(seconds, completion tokens) for `clients` simultaneous requests."""
    import openai

    def ask(i: int) -> int:
        client = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0,
                               timeout=600)
        r = client.chat.completions.create(
            model=model, temperature=0, max_tokens=max_tokens,
            messages=[{"role": "user", "content": f"Client {i}: tell me a long story."}],
            extra_body={"ignore_eos": True})
        return r.usage.completion_tokens

    with ThreadPoolExecutor(clients) as pool:
        start = time.perf_counter()
        tokens = sum(pool.map(ask, range(clients)))
        return time.perf_counter() - start, tokens


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", default="nano", help="model preset (default nano)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    p.add_argument("--repeats", type=int, default=3, help="rounds of each kind; best is kept")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    tok = Forge1Tokenizer()
    torch.manual_seed(0)
    model = Forge1Model(Forge1Config.from_variant(args.variant,
                                                  vocab_size=tok.get_vocab_size_padded()))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = export_final(model.state_dict(), model.config, tok, Path(tmp), args.variant)
        del model
        proc, url = _start_server(ckpt, max(args.clients, 1))
        try:
            _round(url, ckpt.stem, 1, 4)  # warm-up: first-call costs stay out of the figures
            best = {1: 0.0, args.clients: 0.0}
            for _ in range(args.repeats):
                for n in best:
                    seconds, tokens = _round(url, ckpt.stem, n, args.max_tokens)
                    assert tokens == n * args.max_tokens, (tokens, n)
                    best[n] = max(best[n], tokens / seconds)
                    print(f"  {n} client(s): {tokens} tokens in {seconds:.2f} s = "
                          f"{tokens / seconds:.1f} tok/s", flush=True)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    ratio = best[args.clients] / best[1]
    load = os.getloadavg()
    print(f"{args.variant}, {args.max_tokens} tokens per request, best of {args.repeats}: "
          f"1 client {best[1]:.1f} tok/s, {args.clients} clients {best[args.clients]:.1f} "
          f"tok/s aggregate = {ratio:.2f}x (load average {load[0]:.2f}, {load[1]:.2f}, "
          f"{load[2]:.2f}; torch threads {torch.get_num_threads()})")
    if args.json:
        args.json.write_text(json.dumps({"variant": args.variant, "clients": args.clients,
                                         "max_tokens": args.max_tokens, "tok_s_1": best[1],
                                         "tok_s_n": best[args.clients], "ratio": ratio,
                                         "loadavg": load}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

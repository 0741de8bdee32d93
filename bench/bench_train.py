"""Training speed: Forge-1 vs Hugging Face `LlamaForCausalLM`, same config, weights, batch, dtype.

One training step = forward, loss, backward, fused AdamW step, for both models, on random
tokens (speed does not depend on the values). Weights are converted with
`aethermind.model.hf_convert.to_hf`, and the first step checks both give the same loss. Each side
runs in a process of its own (its C heap its own, as in a user's run; Forge-1's set up as
training does, HF's with the defaults and again with training's allocator setting); their steps
are interleaved (Forge, HF, Forge, HF, ...) and the best of `--repeats` is kept, so a noisy
neighbour hurts both alike. The machine's fp32 (and bf16) matmul peak is measured in the same
run; "of peak" = model FLOP/s (6 N + attention, per token) / that peak.
A second part measures useful (loss-bearing) tokens/s through the real pipeline (ensure_shards
+ BatchLoader + the model) on a mix of conversation lengths, packed vs padded.
`--compile` also times Forge-1 under `torch.compile` (the training key `compile: true`)
against the same HF eager step, and reports how long compiling took.
Usage: `python bench/bench_train.py --json bench_train.json` (add `--quick` for a smoke run,
`--dtypes fp32` where bf16 has no instructions of its own).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from aethermind.model.config import Forge1Config  # noqa: E402
from aethermind.model.hf_convert import to_hf  # noqa: E402
from aethermind.model.transformer import Forge1Model  # noqa: E402
from aethermind.runtime import dist  # noqa: E402
from aethermind.text.chat_format import Conversation, Turn, render  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5,
                device: str | torch.device = "cpu") -> float:
    """Best GFLOP/s of an n x n x n matmul: the ceiling a training step is judged against."""
    device = torch.device(device)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def flops_per_token(cfg: Forge1Config, T: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters (lm_head included, embedding lookup
    not) + attention scores and values, 12 x layers x dim x T / 2 with causality (PaLM)."""
    C, F, L = cfg.dim, cfg.ffn_dim, cfg.n_layers
    kv = cfg.n_kv_heads * cfg.head_dim
    per_layer = C * (C + 2 * kv) + C * C + 3 * C * F
    matmul_params = L * per_layer + C * cfg.vocab_size
    return 6 * matmul_params + 6 * L * C * T


def build_pair(cfg: Forge1Config) -> tuple[Forge1Model, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    forge = Forge1Model(cfg)
    hf_sd, hf_cfg = to_hf(forge.state_dict(), cfg)
    hf = LlamaForCausalLM(LlamaConfig.from_dict({**hf_cfg, "use_cache": False}))
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    hf.tie_weights()
    return forge.train(), hf.train()


def _step_fn(model: Any, is_hf: bool, tokens: torch.Tensor, targets: torch.Tensor,
             dtype: torch.dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    amp = dtype != torch.float32

    def step() -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=amp):
            if is_hf:
                logits = model(input_ids=tokens).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            else:  # Forge-1's training path: fused chunked projection + cross-entropy
                loss = model(tokens, targets=targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


# The shapes measured: presets at the vocab 32000, and the test suite's tiny_config
# (2 layers, dim 64, vocab 448), where per-op overhead rather than matmul time dominates.
SHAPES = {
    "tiny-fixture": dict(vocab_size=448, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                         ffn_dim=176, max_seq_len=512),
    "tiny": Forge1Config.tiny(vocab_size=32000).to_dict(),
    "nano": Forge1Config.nano(vocab_size=32000).to_dict(),
}


# Each side of a comparison runs in a process of its own, as a user's run does: the C heap's
# state (what earlier steps freed, glibc's thresholds) is then that side's alone. Forge-1's
# processes set up the device as training does (`dist.setup`, which keeps freed memory for
# reuse on CPU); HF runs with the defaults a transformers user has, and once more with the
# same allocator setting, for the record.
SIDES = {"forge": ("forge", True), "hf": ("hf", False), "hf_retain": ("hf", True),
         "forge_compiled": ("forge_compiled", True)}


def _side(conn: Any, side: str, variant: str, dtype_name: str, B: int, T: int,
          threads: int) -> None:
    """One side's training steps, timed on the parent's word ("step"), until "stop"."""
    model_kind, trainer_setup = SIDES[side]
    torch.set_num_threads(threads)
    if trainer_setup:
        dist.setup("cpu")
    torch.manual_seed(0)
    cfg = Forge1Config(**SHAPES[variant])
    forge, hf = build_pair(cfg)  # the same weights in every process
    tokens = torch.randint(0, cfg.vocab_size, (B, T))
    targets = torch.randint(0, cfg.vocab_size, (B, T))
    model = hf if model_kind == "hf" else forge
    if model_kind == "forge_compiled":
        model = torch.compile(model)
    del forge, hf
    fn = _step_fn(model, model_kind == "hf", tokens, targets, DTYPES[dtype_name])
    t = time.perf_counter()
    conn.send((fn(), time.perf_counter() - t))  # first step: compiles, checks the loss
    while conn.recv() == "step":
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        fn()
        conn.send((time.perf_counter() - t,
                   resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))


def compare(variant: str, dtype_name: str, B: int, T: int, repeats: int, peak: float,
            compiled: bool = False) -> dict[str, Any]:
    sides = ["forge", "hf", "hf_retain"] + (["forge_compiled"] if compiled else [])
    ctx = mp.get_context("spawn")
    pipes, procs = {}, []
    for side in sides:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_side, daemon=True, args=(
            child, side, variant, dtype_name, B, T, torch.get_num_threads()))
        proc.start()
        pipes[side] = parent
        procs.append(proc)
    try:
        first, warmup, best = {}, {}, {side: float("inf") for side in sides}
        faults = dict.fromkeys(sides, 0)
        for side in sides:  # one at a time: a step is timed while the others wait
            first[side], warmup[side] = pipes[side].recv()
        for side in sides:  # same weights -> same loss
            assert abs(first[side] - first["hf"]) < 1e-2 * max(1.0, abs(first["hf"])), first
        for _ in range(repeats):
            for side in sides:
                pipes[side].send("step")
                seconds, step_faults = pipes[side].recv()
                best[side] = min(best[side], seconds)
                faults[side] += step_faults
    finally:
        for side in sides:
            with contextlib.suppress(OSError):
                pipes[side].send("stop")
        for proc in procs:
            proc.join(timeout=30)
    tok_s = {side: B * T / s for side, s in best.items()}
    fpt = flops_per_token(Forge1Config(**SHAPES[variant]), T)
    row = {"variant": variant, "dtype": dtype_name, "batch": f"{B}x{T}",
           "vocab": SHAPES[variant]["vocab_size"],
           "forge_tok_s": tok_s["forge"], "hf_tok_s": tok_s["hf"],
           "ratio": tok_s["forge"] / tok_s["hf"], "hf_retain_tok_s": tok_s["hf_retain"],
           "ratio_same_allocator": tok_s["forge"] / tok_s["hf_retain"],
           "forge_of_peak": tok_s["forge"] * fpt / 1e9 / peak,
           "hf_of_peak": tok_s["hf"] * fpt / 1e9 / peak, "first_loss": first, "peak": peak,
           "page_faults_per_step": {side: n // repeats for side, n in faults.items()}}
    if compiled:
        row.update(compiled_tok_s=tok_s["forge_compiled"],
                   compiled_ratio=tok_s["forge_compiled"] / tok_s["hf"],
                   compiled_ratio_same_allocator=tok_s["forge_compiled"] / tok_s["hf_retain"],
                   compile_seconds=warmup["forge_compiled"] - best["forge_compiled"])
    return row


# --- packed vs padded ------------------------------------------------------------------------
def chat_mix(n: int, seed: int = 0) -> list[str]:
    """Conversations with log-normal lengths (median ~120 words, long tail), like chat data."""
    rng = random.Random(seed)
    words = ["the", "model", "thinks", "about", "each", "step", "and", "then", "answers",
             "a", "question", "with", "care", "so", "that", "user", "gets", "clear", "reply"]
    out = []
    for _ in range(n):
        q_len = max(3, int(rng.lognormvariate(3.0, 0.7)))
        a_len = max(3, int(rng.lognormvariate(4.3, 0.8)))
        q = " ".join(rng.choice(words) for _ in range(q_len))
        a = " ".join(rng.choice(words) for _ in range(a_len))
        think = None
        if rng.random() < 0.5:
            think = " ".join(rng.choice(words) for _ in range(a_len // 2))
        out.append(render(Conversation(turns=[Turn(q, a, think)])))
    return out


def packed_vs_padded(T: int, B: int, steps: int, n_chats: int) -> dict[str, Any]:
    from aethermind.data.loader import BatchLoader
    from aethermind.data.pack import ensure_shards
    from aethermind.text.tokenizer import Forge1Tokenizer

    tok = Forge1Tokenizer()
    cfg = Forge1Config.tiny(vocab_size=tok.get_vocab_size_padded(), max_seq_len=T)
    result: dict[str, Any] = {"context": T, "batch": B, "model": "tiny fp32"}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "mix.jsonl"
        src.write_text("".join(json.dumps({"text": t}) + "\n" for t in chat_mix(n_chats)))
        for layout in ("packed", "padded"):
            torch.manual_seed(0)
            model = Forge1Model(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            shards = ensure_shards(src, tok, Path(tmp) / "cache", context_length=T,
                                   layout=layout, workers=1)
            loader = BatchLoader(shards, B, seed=0)
            useful, start, it = 0, 0.0, iter(loader)
            for i in range(steps + 1):
                if i == 1:
                    start, useful = time.perf_counter(), 0  # step 0 is warm-up
                batch = next(it)
                n = (batch["targets"] != -100).sum()
                model(batch["tokens"], doc_ids=batch["doc_ids"],
                      targets=batch["targets"]).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                useful += int(n)
            elapsed = time.perf_counter() - start
            result[f"{layout}_useful_tok_s"] = useful / elapsed
            result[f"{layout}_useful_frac"] = useful / (steps * B * T)
    result["ratio"] = result["packed_useful_tok_s"] / result["padded_useful_tok_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny shapes only, for a smoke run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--compile", action="store_true",
                        help="also time Forge-1 under torch.compile (training's compile: true)")
    parser.add_argument("--only", nargs="+", choices=["tiny-fixture", "tiny", "nano"],
                        help="measure only these shapes (default: all)")
    parser.add_argument("--no-packing", action="store_true", help="skip the packed-vs-padded part")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=sorted(DTYPES),
                        help="precisions to measure (default: all; bf16 is slow to measure "
                             "on a CPU without bf16 instructions)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {name: matmul_peak(dt) for name, dt in DTYPES.items() if name in args.dtypes}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor()}")
    print("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    cases = [("tiny-fixture", "fp32"), ("tiny", "fp32"), ("tiny", "bf16")]
    if not args.quick:
        cases += [("nano", "fp32"), ("nano", "bf16")]
    cases = [c for c in cases
             if (not args.only or c[0] in args.only) and c[1] in args.dtypes]
    rows = []
    for variant, dtype in cases:
        # A neighbour's load varies over a run: re-measure the peak and keep the best seen.
        peaks[dtype] = max(peaks[dtype], matmul_peak(DTYPES[dtype]))
        rows.append(compare(variant, dtype, 4, 256, args.repeats, peaks[dtype], args.compile))
    print("best matmul peak seen: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items())
          + " GFLOP/s")
    for r in rows:
        scale = r.pop("peak") / peaks[r["dtype"]]  # "of peak" against the best peak seen
        r["forge_of_peak"] *= scale
        r["hf_of_peak"] *= scale
        variant, dtype = r["variant"], r["dtype"]
        print(f"{variant:12} {dtype} {r['batch']:>6} vocab {r['vocab']}: Forge-1 "
              f"{r['forge_tok_s']:8.0f} tok/s ({r['forge_of_peak']:.0%} of peak) | HF "
              f"{r['hf_tok_s']:8.0f} tok/s ({r['hf_of_peak']:.0%}) | ratio {r['ratio']:.2f}x")
        print(f"{'':12} HF with the trainer's allocator setting {r['hf_retain_tok_s']:8.0f} "
              f"tok/s: ratio {r['ratio_same_allocator']:.2f}x")
        print(f"{'':12} page faults a step: " + ", ".join(
            f"{side} {n:,}" for side, n in r["page_faults_per_step"].items()))
        if "compiled_tok_s" in r:
            print(f"{'':12} compiled Forge-1 {r['compiled_tok_s']:8.0f} tok/s = "
                  f"{r['compiled_ratio']:.2f}x HF eager ({r['compiled_ratio_same_allocator']:.2f}x "
                  f"with the same allocator; compiling took {r['compile_seconds']:.0f} s)")
    if args.no_packing:
        if args.json:
            args.json.write_text(json.dumps({"peaks_gflops": peaks, "models": rows}, indent=2))
        return 0
    pack = packed_vs_padded(T=512, B=4, steps=3 if args.quick else 8,
                            n_chats=200 if args.quick else 600)
    print(f"packed vs padded (tiny fp32, {pack['batch']}x{pack['context']}): useful tokens/s "
          f"{pack['packed_useful_tok_s']:.0f} vs {pack['padded_useful_tok_s']:.0f} "
          f"(useful fraction {pack['packed_useful_frac']:.0%} vs "
          f"{pack['padded_useful_frac']:.0%}) = {pack['ratio']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"peaks_gflops": peaks, "models": rows,
                                         "packing": pack}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

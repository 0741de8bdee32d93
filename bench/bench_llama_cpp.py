"""Decode speed and logit error: Forge-1's engine (fp32/bf16/int8) vs llama.cpp (f32/f16/q8_0).

The same random nano weights go to both sides: ours through `Engine(model, dtype=...)`, llama.cpp
(llama-cpp-python) through our own GGUF export (`export.gguf.write_gguf`) in each weight type.
Batch 1, `--threads` threads on both sides (default 2), greedy, `--new-tokens` tokens after a
short prompt; decode tokens/s = (n - 1) / (time from the first new token to the last). Runs are
interleaved and the best of `--repeats` is kept, so a noisy neighbour hurts every engine alike.
Accuracy, on the prompt plus the fp32 continuation (teacher forced, every position): each low
precision's logits against its own side's fp32 (relative RMS error, max |diff|, and how often
the argmax agrees), so our int8 is compared with llama.cpp's q8_0 on equal terms; greedy tokens
of random weights sit on near-ties, so token agreement is reported, not required.
llama.cpp loads with its CPU weight repacking off (`use_extra_bufts=False`): with it, q8_0
crashes on AMX CPUs in 0.3.36 (see tests/test_interop.py); both sides keep an fp32 KV cache.
Skipped with a message where llama-cpp-python is not installed (`pip install -e ".[interop]"`).
`--compile` adds our torch.compile'd decode step in each dtype, against the same llama.cpp
weight type: what `--compile` of chat/serve/evaluate gives where the one-call C step
(`cpu_decode.py`) cannot run the model; where it can, those commands take the C step instead,
so here it is switched off for the compiled engines.
Usage: `python bench/bench_llama_cpp.py --threads 2 --new-tokens 128 --compile`.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout

from aethermind.artifacts.exported import ExportMeta  # noqa: E402
from aethermind.export.gguf import write_gguf  # noqa: E402
from aethermind.inference.engine import Engine  # noqa: E402
from aethermind.inference.sampling import SamplingParams  # noqa: E402
from aethermind.model.config import VARIANTS, Forge1Config  # noqa: E402
from aethermind.model.cpu_decode import DecodeStep  # noqa: E402
from aethermind.model.packed_linear import DECODE_DTYPES  # noqa: E402
from aethermind.model.transformer import Forge1Model  # noqa: E402
from aethermind.text import chat_format as cf  # noqa: E402
from aethermind.text.prompts import ARITHMETIC  # noqa: E402
from aethermind.text.tokenizer import Forge1Tokenizer  # noqa: E402

# Our decode dtype -> the llama.cpp weight type it is compared with (same bytes per weight).
PAIRS = {"fp32": "f32", "bf16": "f16", "int8": "q8_0"}
assert tuple(PAIRS) == DECODE_DTYPES


def _open_llama(path: Path, threads: int, context: int) -> Any:
    import llama_cpp
    import llama_cpp.llama_cpp as capi

    defaults = capi.llama_model_default_params

    def without_repacking():  # the q8_0 AMX repacking crash (module docstring)
        params = defaults()
        params.use_extra_bufts = False
        return params

    capi.llama_model_default_params = without_repacking
    try:
        f32 = llama_cpp.GGML_TYPE_F32
        return llama_cpp.Llama(model_path=str(path), n_ctx=context, n_batch=512, logits_all=True,
                               n_threads=threads, n_threads_batch=threads, verbose=False,
                               type_k=f32, type_v=f32)
    finally:
        capi.llama_model_default_params = defaults


def _cpu() -> str:
    """The CPU and what decides our kernels: torch's vector ISA, VNNI, AVX512-BF16."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        name = names[0] if names else name
    cpu = torch.cpu
    flags = {"VNNI": getattr(cpu, "_is_vnni_supported", lambda: False)(),
             "AVX512-BF16": getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()}
    return (f"{name} ({torch.backends.cpu.get_cpu_capability()}; "
            + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()) + ")")


def _kernels(engines: dict[str, Engine]) -> str:
    """Which layer each of our dtypes decodes with (they differ by CPU: packed_linear), and
    whether its steps are one C call (cpu_decode.py)."""
    parts = []
    for d, e in engines.items():
        layer = e.model.layers[0].mlp.w_down
        extra = f", {layer.levels} activation levels" if hasattr(layer, "levels") else ""
        extra += ", one C call a step" if e._c_step is not None else ""
        parts.append(f"{d}: {type(layer).__name__}{extra}")
    return "; ".join(parts)


def _ours(engine: Engine, prompt: list[int], n: int) -> tuple[float, list[int]]:
    stamps: list[float] = []
    gen = engine.generate(prompt, SamplingParams(max_new_tokens=n, temperature=0.0),
                          on_token=lambda _: stamps.append(time.perf_counter()))
    return (n - 1) / (stamps[-1] - stamps[0]), gen.tokens


def _theirs(llm: Any, prompt: list[int], n: int) -> tuple[float, list[int]]:
    stamps, tokens = [], []
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        stamps.append(time.perf_counter())
        tokens.append(int(token))
        if len(tokens) == n:
            break
    return (n - 1) / (stamps[-1] - stamps[0]), tokens


def _our_logits(engine: Engine, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return engine.model(torch.tensor([ids]))[0].float()  # (T, V)


def _their_logits(llm: Any, ids: list[int]) -> torch.Tensor:
    llm.reset()
    llm.eval(ids)
    return torch.from_numpy(llm.scores[:len(ids)].copy()).float()  # (T, V)


def _error(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    return {"rel_rms": ((got - want).norm() / want.norm()).item(),
            "max_abs": (got - want).abs().max().item(),
            "argmax_agree": (got.argmax(-1) == want.argmax(-1)).float().mean().item()}


def _agreement(a: list[int], b: list[int]) -> int:
    """Greedy tokens equal before the first difference."""
    same = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        same += 1
    return same


def run(variant: str, threads: int, new_tokens: int, repeats: int, compiled: bool = False
        ) -> dict[str, Any]:
    torch.set_num_threads(threads)
    tok = Forge1Tokenizer()
    torch.manual_seed(0)
    cfg = Forge1Config.from_variant(variant, vocab_size=tok.get_vocab_size_padded())
    model = Forge1Model(cfg).eval()
    prompt = cf.encode_prompt(cf.Conversation(), ARITHMETIC, tok)
    if len(prompt) + new_tokens > cfg.max_seq_len:
        raise SystemExit(f"--new-tokens {new_tokens}: the {len(prompt)}-token prompt leaves room "
                         f"for at most {cfg.max_seq_len - len(prompt)} in {variant}'s context")
    ours = {d: Engine(model, max_batch_size=1, dtype=d) for d in DECODE_DTYPES}
    pairs = dict(PAIRS)  # our engine -> the llama.cpp weight type it is compared with
    if compiled:  # `--compile`: the torch.compile'd decode step (compiled here, timed after)
        with mock.patch.object(DecodeStep, "for_model", return_value=None):
            for d in DECODE_DTYPES:
                ours[f"{d} compiled"] = Engine(model, max_batch_size=1, dtype=d, compile=True)
                pairs[f"{d} compiled"] = PAIRS[d]
    with tempfile.TemporaryDirectory() as tmp:
        theirs = {}
        for g in PAIRS.values():
            path = write_gguf(model, tok, ExportMeta.of(model, tok), Path(tmp) / f"{g}.gguf", g)
            theirs[g] = _open_llama(path, threads, cfg.max_seq_len)
        engines = [(d, _ours, e) for d, e in ours.items()]
        engines += [(g, _theirs, llm) for g, llm in theirs.items()]
        for _, fn, engine in engines:  # warm-up: allocations, kernel selection
            fn(engine, prompt, 8)
        rate: dict[str, float] = {}
        tokens: dict[str, list[int]] = {}
        for _ in range(repeats):
            for name, fn, engine in engines:
                tps, tokens[name] = fn(engine, prompt, new_tokens)
                rate[name] = max(rate.get(name, 0.0), tps)
        ids = prompt + tokens["fp32"]
        logits = {d: _our_logits(e, ids) for d, e in ours.items()}
        logits |= {g: _their_logits(llm, ids) for g, llm in theirs.items()}
    rows = []
    for d, g in pairs.items():
        rows.append({"ours": d, "llama_cpp": g, "ours_tok_s": rate[d], "llama_tok_s": rate[g],
                     "ratio": rate[d] / rate[g],
                     "ours_error_vs_fp32": _error(logits[d], logits["fp32"]),
                     "llama_error_vs_f32": _error(logits[g], logits["f32"]),
                     "ours_same_tokens_as_fp32": _agreement(tokens[d], tokens["fp32"]),
                     "llama_same_tokens_as_f32": _agreement(tokens[g], tokens["f32"])})
    return {"variant": variant, "threads": threads, "new_tokens": new_tokens,
            "cpu": _cpu(), "kernels": _kernels(ours),
            "prompt_tokens": len(prompt),
            "fp32_vs_f32": _error(logits["f32"], logits["fp32"]), "rows": rows}


def _table(result: dict[str, Any]) -> str:
    n = result["new_tokens"]
    lines = ["| ours | tok/s | llama.cpp | tok/s | ours / llama.cpp | ours err vs fp32 "
             "(rel RMS, argmax agree) | llama.cpp err vs f32 | same greedy tokens of "
             f"{n} (ours, llama.cpp) |", "|---" * 8 + "|"]
    for r in result["rows"]:
        eo, el = r["ours_error_vs_fp32"], r["llama_error_vs_f32"]
        lines.append(f"| {r['ours']} | {r['ours_tok_s']:.1f} | {r['llama_cpp']} | "
                     f"{r['llama_tok_s']:.1f} | {r['ratio']:.2f}x | {eo['rel_rms']:.2e}, "
                     f"{eo['argmax_agree']:.0%} | {el['rel_rms']:.2e}, {el['argmax_agree']:.0%} "
                     f"| {r['ours_same_tokens_as_fp32']}, {r['llama_same_tokens_as_f32']} |")
    x = result["fp32_vs_f32"]
    lines.append(f"\nours fp32 vs llama.cpp f32 on the same weights: rel RMS {x['rel_rms']:.2e}, "
                 f"max |diff| {x['max_abs']:.2e}, argmax agree {x['argmax_agree']:.0%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS, default="nano")
    p.add_argument("--threads", type=int, default=2, help="threads on both sides (default 2)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--compile", action="store_true",
                   help="also time our compiled decode step in each dtype (--compile)")
    args = p.parse_args(argv)
    try:
        import llama_cpp
    except ImportError:
        print("skipped: llama-cpp-python is not installed (pip install -e '.[interop]')")
        return 0
    result = run(args.variant, args.threads, args.new_tokens, args.repeats, args.compile)
    print(f"{args.variant}, batch 1, {args.threads} threads, {args.new_tokens} greedy tokens "
          f"after a {result['prompt_tokens']}-token prompt; torch {torch.__version__}, "
          f"llama-cpp-python {llama_cpp.__version__}\nCPU: {result['cpu']}\n"
          f"our layers: {result['kernels']}")
    print(_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

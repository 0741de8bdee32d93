"""The one GPU check: every GPU figure this project promises, side by side, in one short run.

GPU time is rare and short, so everything is measured in one command (`make gpu-check`, under
6 minutes on one GPU) and printed as one table plus a JSON file:
  peak              bf16/fp16 matmul peak of this device, measured now (the MFU yardstick)
  train_speed       nano, context 1024: Forge-1 vs HF `LlamaForCausalLM` (same shapes and
                    weights) tokens/s and model FLOPs utilisation, bf16 and fp16+GradScaler,
                    eager, and bf16 with torch.compile
  packed_attention  FlexAttention vs the dense document mask: equal outputs and gradients, and
                    training tokens/s of packed rows (both paths) vs unpacked rows
  memory            peak memory of configs/local_config.yaml (real `train()`, 4 steps) vs what
                    `aethermind plan` predicts for it, and whether it fits 4 GB
  loss_curve        200 steps of nano on the built-in data, bf16 and fp16: finite and falling
  decode            greedy decode tokens/s, nano bf16, batch 1 and 8: Forge-1 engine vs HF
                    `generate`
Each section is guarded: a failure becomes an ERROR row and the others still run.
`--smoke` runs every section on the CPU with tiny shapes and a few steps (torch.compile with
the graph-capture-only "eager" backend, since inductor's C++ build takes a minute on a CPU),
so the script is a CI test and cannot rot between GPU runs. Nothing is downloaded.
Usage: `python bench/gpu_check.py --json outputs/gpu_check.json` (`--smoke` on a CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a plain checkout
sys.path.insert(0, str(REPO / "bench"))

from bench_train import build_pair, flops_per_token, matmul_peak  # noqa: E402

from aethermind.model.config import Forge1Config  # noqa: E402
from aethermind.runtime.files import atomic_text  # noqa: E402

LOCAL_CONFIG = REPO / "configs" / "local_config.yaml"
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
TARGETS = {"mfu_bf16": 0.40, "hf_ratio": 1.2, "plan_error": 0.15, "fits_gb": 4.0,
           "total_s": 360.0}


@dataclass(frozen=True)
class Shapes:
    """What every section runs at: the issue's sizes on a GPU, tiny ones for --smoke."""

    device: torch.device
    smoke: bool
    model: Forge1Config  # the training/decoding shape (nano, or a 2-layer model)
    variant: str  # the preset `train()` runs in the memory and loss sections
    batch: int  # rows per training step in the speed sections
    context: int
    warmup: int  # untimed steps (compilation happens here)
    steps: int  # timed steps
    compile_backend: str
    peak_n: int  # matmul size for the peak
    loss_steps: int
    loss_batch: int
    loss_context: int
    n_chats: int  # built-in examples written for the train() sections
    prompt: int  # decode prompt tokens
    new_tokens: int


def shapes_for(device: torch.device, smoke: bool, batch: int) -> Shapes:
    from aethermind.text.tokenizer import Forge1Tokenizer

    vocab = Forge1Tokenizer().get_vocab_size_padded()  # the bundled tokenizer users train with
    if smoke:
        # A small vocab keeps the speed sections' output layer from dominating on a CPU.
        tiny = Forge1Config(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                            ffn_dim=176, max_seq_len=128)
        return Shapes(device=device, smoke=True, model=tiny, variant="tiny", batch=2,
                      context=64, warmup=1, steps=2, compile_backend="eager", peak_n=256,
                      loss_steps=12, loss_batch=2, loss_context=64, n_chats=200, prompt=8,
                      new_tokens=6)
    return Shapes(device=device, smoke=False, model=Forge1Config.nano(vocab_size=vocab),
                  variant="nano", batch=batch, context=1024, warmup=3, steps=10,
                  compile_backend="inductor", peak_n=8192, loss_steps=200, loss_batch=8,
                  loss_context=1024, n_chats=6000, prompt=32, new_tokens=128)


# --- helpers --------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_context_bytes(device: torch.device) -> int:
    """Device memory this process holds outside torch's allocator: the CUDA context and
    library handles (measured once cuBLAS is up, before the sections load their kernels)."""
    a = torch.ones(64, 64, device=device, dtype=torch.bfloat16)
    (a @ a).sum().item()  # initialises cuBLAS
    free, total = torch.cuda.mem_get_info(device)
    return total - free - torch.cuda.memory_reserved(device)


def free_memory(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def seconds_per_step(step: Callable[[], Any], n: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        step()
    sync(device)
    return (time.perf_counter() - start) / n


def train_step(model: torch.nn.Module, is_hf: bool, tokens: torch.Tensor,
               targets: torch.Tensor, precision: str, doc_ids: torch.Tensor | None = None
               ) -> Callable[[], torch.Tensor]:
    """One optimizer step as `train()` takes it: autocast, GradScaler for fp16, fused AdamW.

    Forge-1 computes its loss with `losses.summed_loss` (train()'s definition), HF from its
    logits; all targets count, so sum / numel is the mean for both.
    """
    from aethermind.model.losses import summed_loss

    device = tokens.device
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=AMP[precision]):
            if is_hf:
                logits = model(input_ids=tokens).logits
                loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            else:
                loss = summed_loss(model, tokens, targets, doc_ids) / targets.numel()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def packed_doc_ids(B: int, T: int, mean_len: int, seed: int = 0) -> torch.Tensor:
    """(B, T) document index per token: rows of consecutive documents ~mean_len long."""
    rng = random.Random(seed)
    rows = []
    for _ in range(B):
        row: list[int] = []
        doc = 0
        while len(row) < T:
            row += [doc] * max(8, int(rng.expovariate(1 / mean_len)))
            doc += 1
        rows.append(row[:T])
    return torch.tensor(rows)


def write_builtin_data(root: Path, n: int) -> Path:
    from aethermind.data.synth import write_synth

    return write_synth(root, n_train=n, n_val=16)[0]


# --- sections -------------------------------------------------------------------------------
def section_env(s: Shapes) -> dict[str, Any]:
    out = {"torch": torch.__version__, "python": platform.python_version(),
           "device": str(s.device), "smoke": s.smoke, "threads": torch.get_num_threads()}
    if s.device.type == "cuda":
        props = torch.cuda.get_device_properties(s.device)
        out |= {"gpu": props.name, "gpu_memory_gb": props.total_memory / 2**30,
                "capability": f"{props.major}.{props.minor}", "cuda": torch.version.cuda,
                "cuda_context_gb": cuda_context_bytes(s.device) / 2**30}
    else:
        out["cpu"] = platform.processor() or platform.machine()
    return out


def section_peak(s: Shapes) -> dict[str, Any]:
    """TFLOP/s of an n x n x n matmul per dtype, the best of several."""
    out = {}
    for name, dtype in AMP.items():
        out[f"{name}_tflops"] = matmul_peak(dtype, s.peak_n, repeats=10, device=s.device) / 1e3
    return out


def section_train_speed(s: Shapes, peaks: dict[str, Any]) -> dict[str, Any]:
    """Forge-1 vs HF Llama, same weights and batch; eager bf16/fp16, then bf16 compiled."""
    cases = [("bf16", False), ("fp16", False), ("bf16", True)]
    fpt = flops_per_token(s.model, s.context)
    out: dict[str, Any] = {"batch": s.batch, "context": s.context,
                           "params_m": _param_count(s.model) / 1e6,
                           "flops_per_token": fpt, "compile_backend": s.compile_backend}
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, s.model.vocab_size, (s.batch, s.context), generator=g)
    targets = torch.randint(0, s.model.vocab_size, (s.batch, s.context), generator=g)
    tokens, targets = tokens.to(s.device), targets.to(s.device)
    for precision, compiled in cases:
        key = f"{precision}_{'compiled' if compiled else 'eager'}"
        out[key] = guard(lambda p=precision, c=compiled: _speed_case(s, p, c, tokens, targets,
                                                                      fpt, peaks))
        free_memory(s.device)
    return out


def _speed_case(s: Shapes, precision: str, compiled: bool, tokens: torch.Tensor,
                targets: torch.Tensor, fpt: float, peaks: dict[str, Any]) -> dict[str, Any]:
    """One precision/compile case of `section_train_speed`: Forge-1 and HF interleaved."""
    torch.manual_seed(0)
    forge, hf = build_pair(s.model)
    forge, hf = forge.to(s.device), hf.to(s.device)
    first, compile_s, per_step = {}, {}, {}
    steps = {}
    for name, model in (("forge", forge), ("hf", hf)):
        run = torch.compile(model, backend=s.compile_backend) if compiled else model
        steps[name] = train_step(run, name == "hf", tokens, targets, precision)
        sync(s.device)
        t = time.perf_counter()
        first[name] = steps[name]().item()  # same weights, same batch -> same loss
        for _ in range(s.warmup - 1):
            steps[name]()
        sync(s.device)
        compile_s[name] = time.perf_counter() - t
    for _ in range(2):  # interleaved rounds, best kept: a hiccup hurts both alike
        for name, step in steps.items():
            sec = seconds_per_step(step, s.steps, s.device)
            per_step[name] = min(per_step.get(name, math.inf), sec)
    row: dict[str, Any] = {"first_loss_forge": first["forge"], "first_loss_hf": first["hf"]}
    for name in steps:
        tok_s = s.batch * s.context / per_step[name]
        row[f"{name}_tok_s"] = tok_s
        if f"{precision}_tflops" in peaks:
            row[f"{name}_mfu"] = tok_s * fpt / (peaks[f"{precision}_tflops"] * 1e12)
        if compiled:
            row[f"{name}_warmup_s"] = compile_s[name]
    row["ratio"] = row["forge_tok_s"] / row["hf_tok_s"]
    return row


def _param_count(cfg: Forge1Config) -> int:
    from aethermind.training.plan import count_params

    return count_params(cfg)


def section_packed_attention(s: Shapes) -> dict[str, Any]:
    """Flex vs dense: outputs and gradients at the model's attention shape, then training
    tokens/s of unpacked rows (plain causal) and packed rows with each mask."""
    can_backward = s.device.type == "cuda"  # FlexAttention has no CPU backward (torch 2.13)
    out: dict[str, Any] = {"skipped": []}
    if not can_backward:
        out["skipped"].append("gradient equality and flex training speed: FlexAttention "
                              "has no CPU backward (torch 2.13); measured on CUDA only")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[name] = guard(lambda dtype=dtype: _flex_vs_dense(s, dtype, can_backward))
    docs = packed_doc_ids(s.batch, s.context, mean_len=max(16, s.context // 5), seed=2)
    out["docs_per_row"] = float(docs.max(dim=1).values.float().mean() + 1)
    runs = [("unpacked", "auto", None), ("packed_dense", "dense", docs)]
    if can_backward:
        runs.append(("packed_flex", "flex", docs))
    for name, backend, doc in runs:
        out[name] = guard(lambda b=backend, d=doc: _attention_speed(s, b, d))
        free_memory(s.device)
    for name, _, _ in runs[1:]:
        if "tok_s" in out[name] and "tok_s" in out["unpacked"]:
            out[name]["vs_unpacked"] = out[name]["tok_s"] / out["unpacked"]["tok_s"]
    return out


def _flex_vs_dense(s: Shapes, dtype: torch.dtype, can_backward: bool) -> dict[str, Any]:
    """Max |flex - dense| of outputs (and of q/k/v gradients where flex has a backward)."""
    from aethermind.model.attention import attend, document_block_mask, document_causal_mask

    cfg, B, T = s.model, 2, s.context
    doc_ids = packed_doc_ids(B, T, mean_len=max(16, T // 5), seed=1).to(s.device)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, cfg.n_heads, T, cfg.head_dim, generator=g)
    k, v = (torch.randn(B, cfg.n_kv_heads, T, cfg.head_dim, generator=g) for _ in range(2))
    grad_out = torch.randn(q.shape, generator=g).to(s.device, dtype)
    qkv = [t.to(s.device, dtype).requires_grad_(can_backward) for t in (q, k, v)]
    results = []
    for mask in (document_causal_mask(doc_ids), document_block_mask(doc_ids)):
        with warnings.catch_warnings():  # eager flex on CPU warns that it is unfused
            warnings.simplefilter("ignore", UserWarning)
            y = attend(*qkv, mask)
        grads = torch.autograd.grad(y, qkv, grad_out) if can_backward else ()
        results.append((y.float(), [t.float() for t in grads]))
    (dense_y, dense_g), (flex_y, flex_g) = results
    out = {"out_max_diff": (flex_y - dense_y).abs().max().item()}
    if can_backward:
        out["grad_max_diff"] = max((a - b).abs().max().item()
                                   for a, b in zip(flex_g, dense_g, strict=True))
    return out


def _attention_speed(s: Shapes, backend: str, doc_ids: torch.Tensor | None) -> dict[str, Any]:
    """bf16 training tokens/s of Forge-1 with `backend` masking `doc_ids` (None: unpacked)."""
    from aethermind.model.transformer import Forge1Model

    g = torch.Generator().manual_seed(0)
    shape = (s.batch, s.context)
    tokens = torch.randint(0, s.model.vocab_size, shape, generator=g).to(s.device)
    targets = torch.randint(0, s.model.vocab_size, shape, generator=g).to(s.device)
    torch.manual_seed(0)
    model = Forge1Model(s.model).to(s.device).train()
    model.attention_backend = backend
    doc = None if doc_ids is None else doc_ids.to(s.device)
    step = train_step(model, False, tokens, targets, "bf16", doc)
    for _ in range(s.warmup):
        step()
    return {"tok_s": s.batch * s.context / seconds_per_step(step, s.steps, s.device)}


def _train_run(s: Shapes, data: Path, out_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """The real `train()` on configs/local_config.yaml with `overrides` (no dashboard)."""
    from aethermind.training import train as train_mod
    from aethermind.training.config import load_config

    base = [f"train_data={data}", "val_data=none", f"output_dir={out_dir}", "dashboard=off",
            f"data_cache_dir={data.parent / 'cache'}",  # tokenized and packed once
            "checkpoint_every=0", "eval_every=0", "num_workers=1", "log_every=1000",
            f"device={s.device}"]
    if s.smoke:
        base += [f"context_length={s.loss_context}"]
    cfg = load_config(LOCAL_CONFIG, base + overrides, variant=s.variant)
    with warnings.catch_warnings():  # e.g. "fp16 needs a GPU: using fp32" under --smoke
        warnings.simplefilter("ignore", UserWarning)
        result = train_mod.train(cfg)
    result["config"] = cfg
    return result


def section_memory(s: Shapes, data: Path, tmp: Path, context: float | None
                   ) -> dict[str, Any]:
    """local_config.yaml as users run it (4 optimizer steps) vs `aethermind plan`.

    Measured = CUDA context (from the env section, taken before other sections loaded their
    kernels) + the run's peak of memory reserved by torch's caching allocator above what
    earlier sections left behind; that is what the GPU must hold, which the plan predicts.
    """
    from aethermind.training.plan import FRAGMENTATION, estimate, model_config

    out: dict[str, Any] = {"skipped": []}
    cuda = s.device.type == "cuda"
    if cuda:
        free_memory(s.device)
        if context is None:
            context = cuda_context_bytes(s.device)
        torch.cuda.reset_peak_memory_stats(s.device)
        reserved0 = torch.cuda.memory_reserved(s.device)
        allocated0 = torch.cuda.memory_allocated(s.device)
    steps = ["max_steps=2", "gradient_accumulation_steps=2"] if s.smoke else ["max_steps=4"]
    result = _train_run(s, data, tmp / "memory", steps)
    cfg = result["config"]
    budget = estimate(model_config(cfg, cfg.variant), cfg)
    predicted = budget.total(cfg.gradient_checkpointing)
    live = (budget.total(cfg.gradient_checkpointing) - budget.overhead) / (1 + FRAGMENTATION)
    out |= {"variant": cfg.variant, "batch": cfg.batch_size, "context": cfg.context_length,
            "precision": cfg.precision, "gradient_checkpointing": cfg.gradient_checkpointing,
            "plan_gb": predicted / 2**30, "plan_live_gb": live / 2**30,
            "steps": result["step"],
            "final_loss": result["losses"][-1]}
    if cuda:
        peak_alloc = torch.cuda.max_memory_allocated(s.device) - allocated0
        measured = context + torch.cuda.max_memory_reserved(s.device) - reserved0
        out |= {"cuda_context_gb": context / 2**30, "max_allocated_gb": peak_alloc / 2**30,
                "measured_gb": measured / 2**30, "plan_error": predicted / measured - 1,
                "plan_live_error": live / peak_alloc - 1,  # tensors alone, no slack/context
                "fits_4gb": float(measured <= TARGETS["fits_gb"] * 2**30)}
    else:
        out["skipped"].append("measured peak: CUDA memory statistics only")
    return out


def section_loss_curve(s: Shapes, data: Path, tmp: Path) -> dict[str, Any]:
    """`loss_steps` steps of train() per precision: every loss finite, the last tenth lower."""
    out: dict[str, Any] = {"steps": s.loss_steps, "batch": s.loss_batch}
    for precision in ("bf16", "fp16"):
        out[precision] = guard(lambda p=precision: _loss_run(s, data, tmp, p))
    return out


def _loss_run(s: Shapes, data: Path, tmp: Path, precision: str) -> dict[str, Any]:
    result = _train_run(s, data, tmp / f"loss_{precision}", [
        f"precision={precision}", f"max_steps={s.loss_steps}",
        f"batch_size={s.loss_batch}", "gradient_accumulation_steps=1",
        "gradient_checkpointing=false", f"context_length={s.loss_context}",
        "learning_rate=1e-3" if s.smoke else "learning_rate=3e-4"])
    losses = result["losses"]
    tenth = max(1, len(losses) // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    finite = all(math.isfinite(x) for x in losses)
    return {"first_tenth": first, "last_tenth": last,
            "finite": float(finite), "falling": float(finite and last < first),
            "steps_done": result["step"], "status": result["status"]}


def section_decode(s: Shapes) -> dict[str, Any]:
    """Greedy decode tokens/s, bf16, batch 1 and 8: time(n new) - time(1 new) per token."""
    torch.manual_seed(0)
    forge, hf = build_pair(s.model)
    forge = forge.eval().to(s.device, torch.bfloat16)
    hf = hf.eval().to(s.device, torch.bfloat16)
    g = torch.Generator().manual_seed(1)
    out: dict[str, Any] = {"prompt": s.prompt, "new_tokens": s.new_tokens}
    for B in (1, 8):
        prompts = torch.randint(12, s.model.vocab_size, (B, s.prompt), generator=g)
        out[f"batch{B}"] = guard(lambda B=B, prompts=prompts: _decode_case(s, forge, hf, prompts))
    return out


def _decode_case(s: Shapes, forge: torch.nn.Module, hf: Any, prompts: torch.Tensor
                 ) -> dict[str, Any]:
    from aethermind.inference.engine import Engine
    from aethermind.inference.sampling import SamplingParams

    B = len(prompts)
    engine = Engine(forge, max_batch_size=B)  # its fixed KV cache holds B rows

    def run_forge(n: int, prompts=prompts, engine=engine) -> list[list[int]]:
        params = SamplingParams(max_new_tokens=n)
        if len(prompts) == 1:
            return [engine.generate(prompts[0].tolist(), params).tokens]
        return [gen.tokens for gen in engine.generate_batch(prompts.tolist(), params)]

    def run_hf(n: int, prompts=prompts) -> list[list[int]]:
        ids = prompts.to(s.device)
        with torch.inference_mode():
            gen = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False, pad_token_id=0,
                              use_cache=True)  # build_pair turned it off for training
        return gen[:, s.prompt:].tolist()

    best: dict[str, float] = {}
    tokens: dict[str, list[list[int]]] = {}
    for run in (run_forge, run_hf):
        run(2)  # warm-up
    for _ in range(2):
        for name, run in (("forge", run_forge), ("hf", run_hf)):
            sync(s.device)
            t0 = time.perf_counter()
            run(1)
            sync(s.device)
            t1 = time.perf_counter()
            tokens[name] = run(s.new_tokens)
            sync(s.device)
            per_token = (time.perf_counter() - t1 - (t1 - t0)) / (s.new_tokens - 1)
            best[name] = min(best.get(name, math.inf), max(per_token, 1e-9))
    same = [a == b for ra, rb in zip(tokens["forge"], tokens["hf"], strict=True)
            for a, b in zip(ra, rb, strict=False)]
    return {"forge_tok_s": B / best["forge"], "hf_tok_s": B / best["hf"],
            "ratio": best["hf"] / best["forge"], "same_tokens": sum(same) / max(1, len(same))}


# --- running and reporting ------------------------------------------------------------------
def guard(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """fn()'s figures, or {error, traceback} when it raises: one failure never stops the run
    (a section, or one case inside a section, e.g. the compiled case or fp16)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - the point is to report and carry on
        return {"error": f"{type(err).__name__}: {err}"[:500],
                "traceback": traceback.format_exc(limit=-3)[-2000:]}


def run_guarded(sections: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, dict]:
    """Run each section; a failure becomes {status: error, error: ...}, the rest go on."""
    results: dict[str, dict] = {}
    for name, fn in sections.items():
        start = time.perf_counter()
        print(f"[gpu_check] {name} ...", file=sys.stderr, flush=True)
        result = guard(fn)
        results[name] = {"status": "error" if "error" in result else "ok", **result}
        results[name]["seconds"] = time.perf_counter() - start
    return results


def build_sections(s: Shapes, tmp: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    results: dict[str, Any] = {}
    data: list[Path] = []

    def peaks() -> dict[str, Any]:
        return {k: v for k, v in results.get("peak", {}).items() if k.endswith("_tflops")}

    def context() -> float | None:
        gb = results.get("env", {}).get("cuda_context_gb")
        return None if gb is None else gb * 2**30

    def builtin_data() -> Path:
        if not data:
            data.append(write_builtin_data(tmp / "data", s.n_chats))
        return data[0]

    sections = {
        "env": lambda: section_env(s),
        "peak": lambda: section_peak(s),
        "train_speed": lambda: section_train_speed(s, peaks()),
        "packed_attention": lambda: section_packed_attention(s),
        "memory": lambda: section_memory(s, builtin_data(), tmp, context()),
        "loss_curve": lambda: section_loss_curve(s, builtin_data(), tmp),
        "decode": lambda: section_decode(s),
    }

    def recording(name: str, fn: Callable[[], dict[str, Any]]):
        def run() -> dict[str, Any]:
            results[name] = fn()
            return results[name]
        return run

    return {name: recording(name, fn) for name, fn in sections.items()}


SECTIONS = ("env", "peak", "train_speed", "packed_attention", "memory", "loss_curve", "decode")


def failures(results: dict[str, dict]) -> list[str]:
    """Names of failed sections and of failed cases inside sections ("train_speed.fp16_eager")."""
    out = []
    for name, r in results.items():
        if r["status"] != "ok":
            out.append(name)
        out += [f"{name}.{key}" for key, c in r.items() if isinstance(c, dict) and "error" in c]
    return out


def _verdict(ok: bool | None) -> str:
    """PASS/FAIL against a target; n/a where it does not apply (GPU targets under --smoke)."""
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def table_rows(res: dict[str, dict], smoke: bool) -> list[tuple[str, str, str, str]]:
    """(section, what, figure, target/verdict) rows for the printed table; a failed section
    or case is one ERROR row with its message."""
    rows: list[tuple[str, str, str, str]] = []
    gpu = res.get("env", {}).get("gpu", "")
    h100_class = any(name in gpu for name in ("H100", "H200", "H800", "GH200"))

    def case(section: str, what: str, c: dict[str, Any],
             render: Callable[[dict[str, Any]], tuple[str, str]]) -> None:
        if "error" in c:
            rows.append((section, f"{what}: ERROR", c["error"], "FAIL"))
        else:
            rows.append((section, what, *render(c)))

    def speed(key: str) -> Callable[[dict[str, Any]], tuple[str, str]]:
        def render(c: dict[str, Any]) -> tuple[str, str]:
            mfu = f", MFU {c['forge_mfu']:.0%} vs HF {c['hf_mfu']:.0%}" if "forge_mfu" in c else ""
            target = f">= {TARGETS['hf_ratio']}x: "
            target += _verdict(None if smoke else c["ratio"] >= TARGETS["hf_ratio"])
            if key == "bf16_eager" and "forge_mfu" in c:
                ok = c["forge_mfu"] >= TARGETS["mfu_bf16"] if h100_class and not smoke else None
                target += f"; MFU >= 40% (H100): {_verdict(ok)}"
            return (f"{c['forge_tok_s']:,.0f} vs HF {c['hf_tok_s']:,.0f} tok/s = "
                    f"{c['ratio']:.2f}x{mfu}", target)
        return render

    for name, r in res.items():
        if r["status"] != "ok":
            rows.append((name, "ERROR", r["error"], "FAIL"))
            continue
        if name == "env":
            what = r.get("gpu") or r.get("cpu", "")
            rows.append((name, "device", f"{what}, torch {r['torch']}", "smoke" if smoke else ""))
        elif name == "peak":
            rows.append((name, "matmul peak", f"bf16 {r['bf16_tflops']:.3g}, fp16 "
                         f"{r['fp16_tflops']:.3g} TFLOP/s", ""))
        elif name == "train_speed":
            for key in ("bf16_eager", "fp16_eager", "bf16_compiled"):
                case(name, f"{key} {r['batch']}x{r['context']}", r[key], speed(key))
        elif name == "packed_attention":
            for dtype in ("fp32", "bf16"):
                case(name, f"flex - dense max |diff| {dtype}", r[dtype], lambda c: (
                    ", ".join(f"{k.removesuffix('_max_diff')} {v:.1e}" for k, v in c.items()),
                    ""))
            for run in ("unpacked", "packed_dense", "packed_flex"):
                if run not in r:
                    continue
                case(name, f"train tok/s bf16 {run}", r[run], lambda c, run=run: (
                    f"{c['tok_s']:,.0f}" + (f" ({c['vs_unpacked']:.2f}x unpacked)"
                                            if "vs_unpacked" in c else ""),
                    f">= unpacked: {_verdict(c['vs_unpacked'] >= 1.0)}"
                    if run == "packed_flex" and "vs_unpacked" in c else ""))
        elif name == "memory":
            if "measured_gb" in r:
                ok = abs(r["plan_error"]) <= TARGETS["plan_error"]
                rows.append((name, "local_config peak vs plan",
                             f"{r['measured_gb']:.2f} GB measured, plan {r['plan_gb']:.2f} GB "
                             f"({r['plan_error']:+.0%})", f"<= 15%: {_verdict(ok)}"))
                rows.append((name, "fits a 4 GB GPU", f"{r['measured_gb']:.2f} GB",
                             _verdict(bool(r["fits_4gb"]))))
            else:
                rows.append((name, "plan (measured: CUDA only)", f"{r['plan_gb']:.2f} GB", "n/a"))
        elif name == "loss_curve":
            for p in ("bf16", "fp16"):
                case(name, f"{p} {r['steps']} steps", r[p], lambda c: (
                    f"{c['first_tenth']:.3f} -> {c['last_tenth']:.3f}",
                    _verdict(bool(c["falling"]))))
        elif name == "decode":
            for B in (1, 8):
                case(name, f"bf16 batch {B}", r[f"batch{B}"], lambda c: (
                    f"{c['forge_tok_s']:,.0f} vs HF {c['hf_tok_s']:,.0f} tok/s = "
                    f"{c['ratio']:.2f}x", ""))
        rows.append((name, "seconds", f"{r['seconds']:.1f}", ""))
    return rows


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    head = ("section", "measurement", "figure", "target")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(4)]
    line = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    out = [line.format(*head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line.format(*r) for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, a few steps, on the CPU (the CI test)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--batch", type=int, default=16,
                        help="rows per step in the speed sections (default 16)")
    parser.add_argument("--only", help="comma-separated sections to run, e.g. train_speed,decode")
    args = parser.parse_args(argv)
    wanted = SECTIONS if not args.only else tuple(args.only.split(","))
    unknown = sorted(set(wanted) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    if args.smoke:
        device = torch.device("cpu")
        torch.set_num_threads(1)  # tiny shapes: more threads only spin on a shared CPU
    elif torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    else:
        parser.error(f"no CUDA GPU visible to torch {torch.__version__}: install a CUDA build "
                     "(README, 'GPU or CPU torch') or run with --smoke on the CPU")
    from aethermind.runtime import dist

    dist.setup_logging()
    # Each new shape of the compiled FlexAttention kernel is a recompile (speed, memory, loss
    # sections use different batches); past dynamo's default limit it would silently fall
    # back to the unfused kernel and distort every later figure.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    start = time.perf_counter()
    shapes = shapes_for(device, args.smoke, args.batch)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        sections = build_sections(shapes, Path(tmp))
        results = run_guarded({name: sections[name] for name in SECTIONS if name in wanted})
    total = time.perf_counter() - start
    print(format_table(table_rows(results, args.smoke)))
    failed = failures(results)
    print(f"\n{len(results) - len(failed)}/{len(results)} sections ran in {total:.0f} s "
          f"(target on one GPU: under {TARGETS['total_s']:.0f} s)"
          + (f"; errors in {', '.join(failed)}" if failed else ""))
    if args.json:
        payload = {"smoke": args.smoke, "total_seconds": total, "sections": results}
        atomic_text(json.dumps(payload, indent=2, default=str), args.json)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

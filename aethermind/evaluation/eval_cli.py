"""`aethermind eval`: check the datasets, run a suite through lm-eval, write the bench card.

Order matters for a user's time: the optional extra and the datasets are checked before the
model loads, so a missing piece is one line and exit 2 within seconds. The card goes to
`--output` (default: `eval/` beside the model's `final_model/`) with lm-eval's raw results.
`--download` only fills the Hugging Face cache (run it once where there is network).
Usage: `aethermind eval --model outputs/demo/final_model --suite tiny --think on`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from aethermind.artifacts.layout import run_folder
from aethermind.artifacts.loading import LoadError, add_model_args, find_checkpoint, load_model
from aethermind.data import synth
from aethermind.data.download import hub_offline_reason
from aethermind.evaluation import bench_card
from aethermind.evaluation.harness import (
    FIDELITY_PER_TASK,
    THINK,
    EvalError,
    download,
    go_offline,
    missing_datasets,
    run_suite,
)
from aethermind.evaluation.suites import SUITES, Suite
from aethermind.evaluation.tiny_tasks import GEN_FILE, read_docs
from aethermind.inference.engine import Engine
from aethermind.runtime.dist import plain_warnings
from aethermind.runtime.files import atomic_text
from aethermind.text.prompts import GUIDE_PROMPTS

INSTALL = 'pip install -e ".[eval]"'
# Below this many parameters a CPU run uses one thread: the per-op work is so small that more
# threads only wait on each other, and on a shared, busy CPU they stall on OpenMP barriers (the
# demo model's tiny suite: 13 s on one thread, 114 s on two, same loaded 2-core machine).
ONE_THREAD_PARAMS = 20_000_000


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=SUITES, default="tiny",
                   help="tiny: shipped, offline, seconds on a CPU (default); standard: "
                        "HellaSwag, ARC-Easy/Challenge, PIQA, WinoGrande, GSM8K; full: + MMLU")
    p.add_argument("--download", action="store_true",
                   help="only fetch the suite's datasets into the Hugging Face cache (needs "
                        "network; no --model)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aethermind eval", description=__doc__.splitlines()[0])
    add_model_args(p)
    _suite_args(p)
    p.add_argument("--think", choices=THINK, default="on",
                   help="generative tasks think first (on, default) or answer directly (off)")
    p.add_argument("--batch-size", default="auto",
                   help="sequences per forward; auto: 32 on a CPU, the largest that fits a GPU")
    p.add_argument("--limit", type=int,
                   help="only the first N documents of each task (a quick look, not a score)")
    p.add_argument("--output", type=Path,
                   help="folder for bench_card.json/.md (default: eval/ beside final_model/)")
    return p


def default_output(ckpt: Path) -> Path:
    return run_folder(ckpt) / "eval"


def tokens_trained(ckpt: Path) -> tuple[int, str] | None:
    """(tokens, how they were counted) from the training run beside `final_model/`: the last
    step in metrics.jsonl times batch x context x accumulation of train_config.yaml."""
    run = run_folder(ckpt)
    metrics, configs = run / "metrics.jsonl", sorted(run.glob("*/train_config.yaml"))
    if not metrics.is_file() or not configs:
        return None
    try:
        lines = [ln for ln in metrics.read_text(encoding="utf-8").splitlines() if ln.strip()]
        step = int(json.loads(lines[-1])["step"])
        cfg = yaml.safe_load(configs[0].read_text(encoding="utf-8"))
        per_step = (int(cfg["batch_size"]) * int(cfg["context_length"])
                    * int(cfg.get("gradient_accumulation_steps", 1)))
    except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None
    return step * per_step, (f"{run.name}: {step} steps x {per_step:,} tokens a step "
                             "(one process; x processes for DDP)")


def _check_datasets(parser: argparse.ArgumentParser, suite: Suite, fetch: bool) -> None:
    if not any(b.datasets for b in suite.benchmarks):
        go_offline()  # shipped tasks: never wait on the network
        return
    online = hub_offline_reason() is None
    if fetch:
        if not online:
            raise EvalError("no network: run --download where huggingface.co is reachable, or "
                            "copy ~/.cache/huggingface from such a machine")
        download(suite)
        return
    if not online:
        go_offline()
        missing = missing_datasets(suite)
        if missing:
            raise EvalError(
                f"no network and not in the Hugging Face cache: {', '.join(missing)}; fetch "
                f"them once with network: aethermind eval --suite {suite.name} --download")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--download" in argv:  # the one mode without a model
        p = argparse.ArgumentParser(prog="aethermind eval")
        _suite_args(p)
        args, parser = p.parse_args(argv), p
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
    with plain_warnings():
        try:
            return _main(parser, args)
        except EvalError as err:
            parser.exit(2, f"error: {err}\n")
        except KeyboardInterrupt:
            parser.exit(130, "\neval: interrupted; nothing written\n")
        except OSError as err:
            parser.exit(1, f"error: cannot write the bench card: {err}\n")


def _check_writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EvalError(f"--output {directory}: cannot create it ({err.strerror}); pass a "
                        "writable folder") from None
    if not os.access(directory, os.W_OK):
        raise EvalError(f"--output {directory}: not writable; pass a writable folder")


def _batch_size(text: str, device: Any) -> int | str:
    if text == "auto":
        return "auto" if device.type == "cuda" else 32
    if not text.isdigit() or int(text) < 1:
        raise EvalError(f"--batch-size {text}: pass a positive integer or auto")
    return int(text)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if importlib.util.find_spec("lm_eval") is None:
        raise EvalError(f"lm-evaluation-harness is not installed: {INSTALL}")
    suite = SUITES[args.suite]
    _check_datasets(parser, suite, args.download)
    if args.download:
        print(f"the {suite.name} suite's datasets are in the Hugging Face cache")
        return 0
    if args.limit is not None and not 1 <= args.limit <= sys.maxsize:
        raise EvalError(f"--limit {args.limit}: must be at least 1 (and a machine-sized integer)")
    try:
        model, tok = load_model(args.model, args.variant, args.tokenizer, args.device)
        ckpt = find_checkpoint(args.model)
    except LoadError as err:
        raise EvalError(str(err)) from None
    directory = args.output or default_output(ckpt)
    _check_writable(directory)  # before minutes of evaluation, not after
    device = next(model.parameters()).device
    batch = _batch_size(args.batch_size, device)
    _quiet_lm_eval()
    if device.type == "cpu" and model.num_parameters() < ONE_THREAD_PARAMS:
        torch.set_num_threads(1)  # this process ends with the command: nothing to restore
    start = time.perf_counter()
    _progress(f"[1/2] {suite.name} suite through lm-eval ({device}, batch {batch}, thinking "
              f"{args.think})")
    out = run_suite(model, tok, suite, think=args.think == "on", batch_size=batch,
                    limit=args.limit)
    _progress("[2/2] think-format fidelity (guide prompts and held-out questions)")
    fidelity = _fidelity(model, tok, suite, batch)
    card = _card(args, suite, model, ckpt, out, fidelity, device, time.perf_counter() - start)
    js, md = bench_card.write_card(card, directory)
    atomic_text(json.dumps(out["results"], indent=2, default=str) + "\n",
                directory / "results.json")
    print(bench_card.markdown(card))
    print(f"wrote {js} and {md}")
    return 0


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _quiet_lm_eval() -> None:
    """lm-eval logs each step at INFO and warns that it was handed a model object (on
    purpose here); its progress bars stay."""
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _fidelity(model: Any, tok: Any, suite: Suite, batch: int | str) -> dict[str, Any]:
    per_task: dict[str, int] = {}
    held_out = []
    for doc in read_docs(GEN_FILE):
        if per_task.get(doc["task"], 0) < FIDELITY_PER_TASK:
            per_task[doc["task"]] = per_task.get(doc["task"], 0) + 1
            held_out.append(doc["question"])
    assert set(per_task) == set(synth.TASKS)
    engine = Engine(model, max_batch_size=batch if isinstance(batch, int) else 64)
    max_new = min(suite.max_gen_toks, model.config.max_seq_len // 2)
    return bench_card.think_fidelity(engine, tok, [*GUIDE_PROMPTS, *held_out], max_new)


def _card(args: argparse.Namespace, suite: Suite, model: Any, ckpt: Path, out: dict[str, Any],
          fidelity: dict[str, Any], device: Any, seconds: float) -> dict[str, Any]:
    import lm_eval

    table = bench_card.rows(suite.benchmarks, out["results"], out["n-samples"])
    trained = tokens_trained(ckpt)
    return {
        "suite": suite.name, "think": args.think, "limit": args.limit,
        "model": {"path": str(ckpt), "variant": model.config.preset_name() or "custom",
                  "params": model.num_parameters(),
                  "tokens_trained": trained[0] if trained else None,
                  "tokens_trained_source": trained[1] if trained else None},
        "commit": bench_card.git_commit(), "device": str(device),
        "lm_eval_version": getattr(lm_eval, "__version__", "unknown"),
        "seconds": round(seconds, 1), "scores": table,
        "centred_mean": bench_card.centred_mean(table), "think_fidelity": fidelity,
        "references": bench_card.reference_dicts()}


if __name__ == "__main__":
    raise SystemExit(main())

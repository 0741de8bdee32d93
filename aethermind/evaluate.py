"""`aethermind evaluate`: the guide's test prompts, validation loss and reasoning accuracy.

Three parts, each comparable across runs: (1) `prompts.TEST_PROMPTS` (the guide's five plus three)
through the thinking pipeline, shown in a Rich table; (2) loss and perplexity on the response
tokens of `data/val.jsonl` (or `--val`), the tokens SFT trains on; (3) exact-match accuracy on
the built-in reasoning test split (`aethermind.data.synth`), overall and per task, generated in
batches. `--json PATH` writes all of it. Knows nothing about training.
Usage: `python scripts/evaluate.py --model outputs/final_model/forge1_nano_final.pt --variant nano`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aethermind import chat_format as cf
from aethermind.engine import Engine, SamplingParams
from aethermind.loading import add_model_args, add_sampling_args
from aethermind.losses import summed_loss
from aethermind.prompts import TEST_PROMPTS
from aethermind.thinking import STOP_TOKENS, parse_completion, run_thinking_pipeline

DEFAULT_VAL = Path("data/val.jsonl")


def run_prompts(engine: Engine, tok: Any, prompts: Sequence[str], params: SamplingParams
                ) -> list[dict[str, Any]]:
    rows = []
    for prompt in prompts:
        r = run_thinking_pipeline(engine.model, tok, prompt, params.max_new_tokens,
                                  params.temperature, top_k=params.top_k, top_p=params.top_p,
                                  seed=params.seed, repetition_penalty=params.repetition_penalty,
                                  engine=engine)
        rows.append({"prompt": prompt, "used_thinking": r.used_thinking, "thinking": r.thinking,
                     "answer": r.answer, "completion_tokens": r.completion_tokens,
                     "seconds": round(r.seconds, 4),
                     "tokens_per_second": round(r.tokens_per_second, 2),
                     "finish_reason": r.finish_reason})
    return rows


def _val_rows(path: Path, tok: Any, max_len: int, max_docs: int) -> list[tuple[list, list]]:
    """(ids, loss_mask) per document: response tokens of a conversation, else every token."""
    rows = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            text = json.loads(line)["text"]
            try:
                ids, mask = cf.encode(cf.parse(text), tok)
            except ValueError:
                ids = tok.encode(text, allow_special=True)
                mask = [1] * len(ids)
            if len(ids) > 1:
                rows.append((ids[:max_len], mask[:max_len]))
            if len(rows) >= max_docs:
                break
    return rows


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, tok: Any, path: Path, *, batch_size: int = 8,
                    max_docs: int = 500) -> dict[str, Any]:
    """Mean cross-entropy per scored token (and its exp, the perplexity) over `path`."""
    device = next(model.parameters()).device
    rows = _val_rows(path, tok, model.config.max_seq_len, max_docs)
    if not rows:
        raise ValueError(f"{path}: no documents with at least two tokens")
    total, count = 0.0, 0
    rows.sort(key=lambda r: len(r[0]))  # similar lengths together: less padding
    for i in range(0, len(rows), batch_size):
        chunk = rows[i:i + batch_size]
        T = max(len(ids) for ids, _ in chunk)
        tokens = torch.full((len(chunk), T), tok.pad_id, dtype=torch.long)
        targets = torch.full((len(chunk), T), -100, dtype=torch.long)
        for b, (ids, mask) in enumerate(chunk):
            tokens[b, :len(ids)] = torch.tensor(ids)
            tgt = torch.tensor(ids[1:])
            tgt[torch.tensor(mask[1:]) == 0] = -100
            targets[b, :len(ids) - 1] = tgt
        targets = targets.to(device)
        total += summed_loss(model, tokens.to(device), targets).item()
        count += int((targets != -100).sum())
    loss = total / max(count, 1)
    return {"path": str(path), "documents": len(rows), "tokens": count, "loss": round(loss, 5),
            "perplexity": round(math.exp(min(loss, 50.0)), 4)}


def reasoning_accuracy(engine: Engine, tok: Any, n: int = 0, *, max_new_tokens: int,
                       seed: int = 0, examples: Sequence[Any] | None = None) -> dict[str, Any]:
    """Greedy exact-match accuracy on `synth.make_split("test", n)` (or on `examples`, e.g.
    fresh questions), overall and per task; each sample keeps the model's thinking.

    All questions go to the engine at once; it runs `max_batch_size` of them at a time.
    """
    from aethermind.data import synth

    examples = list(examples) if examples is not None else synth.make_split("test", n, seed=seed)
    prompts = [cf.encode_prompt(cf.Conversation(), ex.question, tok) for ex in examples]
    stop_ids = [tok.special_ids[s] for s in STOP_TOKENS]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    gens = engine.generate_batch(prompts, params, stop_ids)
    thoughts, answers = zip(*[parse_completion(gen.tokens, tok)[:2] for gen in gens],
                            strict=True) if gens else ((), ())
    per_task: dict[str, dict[str, Any]] = {}
    samples = []
    for i, ex in enumerate(examples):
        ok = synth.score(ex.question, answers[i])
        task = per_task.setdefault(ex.task, {"n": 0, "correct": 0})
        task["n"] += 1
        task["correct"] += int(ok)
        samples.append({"task": ex.task, "question": ex.question, "expected": ex.answer,
                        "answer": answers[i], "thinking": thoughts[i], "correct": ok})
    for task in per_task.values():
        task["accuracy"] = round(task["correct"] / task["n"], 4)
    correct = sum(s["correct"] for s in samples)
    return {"n": len(samples), "correct": correct,
            "accuracy": round(correct / max(len(samples), 1), 4),
            "per_task": dict(sorted(per_task.items())), "samples": samples}


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Forge-1 test prompts", show_lines=True)
    for col in ("#", "Prompt", "Thought", "Thinking", "Answer", "Tokens", "Time", "Tok/s"):
        table.add_column(col, overflow="fold")
    for i, row in enumerate(report["prompts"], 1):
        thinking = row["thinking"] if len(row["thinking"]) < 300 else row["thinking"][:297] + "..."
        table.add_row(str(i), row["prompt"], "yes" if row["used_thinking"] else "no",
                      thinking or "-", row["answer"] or "(empty)", str(row["completion_tokens"]),
                      f"{row['seconds']:.2f}s", f"{row['tokens_per_second']:.1f}")
    console.print(table)
    val = report.get("validation")
    if val:
        console.print(f"validation: loss {val['loss']:.4f}, perplexity {val['perplexity']:.2f} "
                      f"({val['tokens']} response tokens in {val['documents']} documents)")
    else:
        console.print(f"validation: skipped (no {DEFAULT_VAL}; pass --val PATH)")
    acc = report.get("reasoning")
    if acc:
        tasks = ", ".join(f"{t} {v['correct']}/{v['n']}" for t, v in acc["per_task"].items())
        console.print(f"reasoning accuracy: {acc['accuracy']:.1%} ({acc['correct']}/{acc['n']}); "
                      f"{tasks}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aethermind evaluate", description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--val", type=Path, help=f"validation JSONL (default: {DEFAULT_VAL} if present)")
    p.add_argument("--val-max-docs", type=int, default=500)
    p.add_argument("--n-test", type=int, default=100,
                   help="reasoning test examples (0 skips; default: 100)")
    add_sampling_args(p, greedy=True)  # for the test prompts; reasoning is always greedy
    p.add_argument("--batch-size", type=int, default=16, help="reasoning generation batch")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from aethermind.dist import plain_warnings
    from aethermind.loading import LoadError, load_model, sampling_params

    try:
        params = sampling_params(args)
        with plain_warnings():
            model, tok = load_model(args.model, args.variant, args.tokenizer, args.device)
        engine = Engine(model, max_batch_size=args.batch_size)  # all generation shares it
    except (LoadError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    val_path = args.val
    if val_path is None and DEFAULT_VAL.is_file():
        val_path = DEFAULT_VAL
    if val_path is not None and not val_path.is_file():
        parser.exit(2, f"error: --val {val_path}: file not found\n")
    start = time.perf_counter()
    report: dict[str, Any] = {"model": str(args.model), "variant": args.variant,
                              "device": str(next(model.parameters()).device),
                              "config": model.config.to_dict(),
                              "tokenizer_fingerprint": tok.fingerprint()}
    report["prompts"] = run_prompts(engine, tok, TEST_PROMPTS, params)
    try:
        report["validation"] = (validation_loss(model, tok, val_path, max_docs=args.val_max_docs)
                                if val_path else None)
    except (ValueError, KeyError) as err:
        parser.exit(2, f"error: --val {val_path}: {err}\n")
    report["reasoning"] = (reasoning_accuracy(engine, tok, args.n_test,
                                              max_new_tokens=args.max_new_tokens)
                           if args.n_test > 0 else None)
    report["seconds"] = round(time.perf_counter() - start, 2)
    _print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

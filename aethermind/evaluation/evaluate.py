"""`aethermind evaluate`: the guide's test prompts, validation loss and reasoning accuracy.

Three parts, each comparable across runs: (1) `prompts.TEST_PROMPTS` (the guide's five plus three)
through the thinking pipeline with the sampling flags (greedy unless `--temperature` says
otherwise), shown in a Rich table; (2) loss and perplexity on the response tokens of `--val`
(else `data/val.jsonl` when present), the tokens SFT trains on, summed by the training loss loop
(`loss_totals`) so the numbers match the training log; (3) greedy exact-match accuracy on the
built-in reasoning test split (`aethermind.data.synth`), overall and per task, generated in
batches (only `--max-new-tokens` of the sampling flags applies). It trains nothing;
`--json PATH` writes all of it.
Usage: `python scripts/evaluate.py --model outputs/final_model/forge1_nano_final.pt --variant nano`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aethermind.artifacts.loading import LoadError, add_model_args, load_model
from aethermind.data import synth
from aethermind.data.jsonl import numbered_lines, skipped_note
from aethermind.data.loader import BatchLoader
from aethermind.data.pack import build_shards, read_index
from aethermind.evaluation.loss import loss_totals
from aethermind.evaluation.rewordings import SETS, rewordings
from aethermind.inference.engine import Engine, add_decode_args, notice_to_stderr
from aethermind.inference.sampling import SamplingParams, add_sampling_args, params_from_args
from aethermind.inference.thinking import answer, parse_completion
from aethermind.runtime.dist import plain_warnings
from aethermind.runtime.files import atomic_text
from aethermind.runtime.threads import use_decode_threads
from aethermind.text import chat_format as cf
from aethermind.text.prompts import TEST_PROMPTS
from aethermind.text.terminal import terminal_safe

DEFAULT_VAL = Path("data/val.jsonl")
MAX_QUESTIONS = 100_000  # per split: far past any evaluation, short of a day of generation


@dataclass(frozen=True)
class ReasoningSplit:
    """One reasoning split of the report (issue 18): what it asks and how it is shown."""

    split: str  # a `synth.SPLITS` name or a hidden set of `rewordings.SETS`
    flag: str  # the option holding its size (both hidden sets share --n-rewordings)
    title: str  # the progress line and the report
    column: str  # the demo's table


# Report key -> its split, in report order.
REASONING_SPLITS = {
    "reasoning": ReasoningSplit("test", "n_test",
                                "reasoning accuracy (trained phrasings, new operands)",
                                "trained phrasings"),
    "phrasing": ReasoningSplit("phrasing", "n_phrasing", "held-out phrasings, new operands",
                               "held-out phrasings"),
    "beyond": ReasoningSplit("beyond", "n_beyond", "one step past the trained range",
                             "past the range"),
    "rewordings": ReasoningSplit("rewordings", "n_rewordings", "hidden rewordings",
                                 "hidden rewordings"),
    "blind": ReasoningSplit("blind", "n_rewordings", "blind rewordings (never read while "
                            "tuning)", "blind rewordings"),
}


def _progress(text: str) -> None:
    """Long steps say where they are (on stderr, so --json and the table stay clean)."""
    print(text, file=sys.stderr, flush=True)


def run_prompts(engine: Engine, tok: Any, prompts: Sequence[str], params: SamplingParams
                ) -> list[dict[str, Any]]:
    rows = []
    for i, prompt in enumerate(prompts, 1):
        _progress(f"  prompt {i}/{len(prompts)}")
        r = answer(engine, tok, prompt, params)
        rows.append({"prompt": prompt, "used_thinking": r.used_thinking, "thinking": r.thinking,
                     "answer": r.answer, "completion_tokens": r.completion_tokens,
                     "seconds": round(r.seconds, 4),
                     "tokens_per_second": round(r.tokens_per_second, 2),
                     "finish_reason": r.finish_reason})
    return rows


class ValidationSet:
    """`path` tokenized by `pack` (the encoder training uses) into a temporary padded shard, read
    by one `BatchLoader` built once: one conversation per row, scored whole, every sample once.
    Built before any generation, so an unusable file fails before minutes of work."""

    def __init__(self, path: Path, tok: Any, context_length: int, *, batch_size: int = 8,
                 max_docs: int | None = None) -> None:
        self.path = path
        self._tmp = tempfile.TemporaryDirectory(prefix="aethermind-val-")
        try:
            self._build(tok, context_length, batch_size, max_docs)
        except BaseException:  # an unusable file: no folder left for the GC to warn about
            self._tmp.cleanup()
            raise

    def _build(self, tok: Any, context_length: int, batch_size: int, max_docs: int | None
               ) -> None:
        path = self.path
        src = Path(self._tmp.name) / "val.jsonl"
        with src.open("w", encoding="utf-8") as f:  # the first max_docs records, as UTF-8
            for i, (_, line) in enumerate(numbered_lines(path)):
                if max_docs is not None and i >= max_docs:
                    break
                f.write(line.rstrip("\n") + "\n")
        shards = build_shards(src, tok, Path(self._tmp.name) / "shards",
                              context_length=context_length, layout="padded")
        self.index = read_index(shards)
        if self.index["malformed_lines"]:
            note = skipped_note(path, self.index["malformed_first"],
                                self.index["malformed_lines"])
            print(f"warning: {note}", file=sys.stderr)
        if self.index["n_samples"] == 0:
            raise ValueError(f"{path}: no usable documents (empty, malformed or all longer than "
                             f"{context_length} tokens)")
        self.loader = BatchLoader(shards, batch_size, shuffle=False, drop_last=False)

    def close(self) -> None:
        del self.loader  # release the memmaps before the folder goes
        self._tmp.cleanup()


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, tok: Any, path: Path | ValidationSet, *,
                    batch_size: int = 8, max_docs: int | None = 500) -> dict[str, Any]:
    """Mean cross-entropy per scored token (and its exp, the perplexity) over `path`, with the
    training's validation-loss loop (`loss.loss_totals`) on response tokens, the tokens SFT
    trains on."""
    val = path if isinstance(path, ValidationSet) else \
        ValidationSet(path, tok, model.config.max_seq_len, batch_size=batch_size,
                      max_docs=max_docs)
    try:
        total, count = loss_totals(model, val.loader, next(model.parameters()).device).tolist()
    finally:
        if val is not path:
            val.close()
    loss = total / max(count, 1)
    return {"path": str(val.path), "documents": val.index["n_samples"],
            "dropped_too_long": val.index["dropped_too_long"], "tokens": int(count),
            "loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 50.0)), 4)}


def reference_cap(tok: Any, examples: Sequence[Any], most: int) -> int:
    """A generation cap that fits the longest reference trace and answer of `examples`, plus
    slack, and at most `most` (what the context leaves after the question)."""
    longest = max((sum(cf.encode(cf.Conversation(turns=[cf.Turn(e.question, e.answer,
                                                                   e.thinking)]), tok)[1])
                   for e in examples), default=0)
    return min(longest + 16, most)


def split_examples(split: str, n: int, seed: int = 0) -> list[Any]:
    """The `n` questions of one evaluation split: a synth split or the hidden rewordings."""
    if split in SETS:
        return list(rewordings(split)[:n])
    return synth.make_split(split, n, seed=seed)


def reasoning_accuracy(engine: Engine, tok: Any, n: int = 0, *, max_new_tokens: int,
                       seed: int = 0, examples: Sequence[Any] | None = None,
                       split: str = "test") -> dict[str, Any]:
    """Greedy exact-match accuracy on `n` questions of `split` (or on `examples`, e.g. fresh
    questions), overall and per task; each sample keeps the model's thinking.

    Where the examples carry a reference trace, each task also gets `first_line` and `trace`:
    the share whose thinking starts with the reference's first line (the copy of what was
    asked) and the share that is the reference line for line. They tell a wrong copy from a
    wrong step: past the range, 37 of 40 sums and differences were copied right and 9
    answered right.
    All questions go to the engine at once; it runs `max_batch_size` of them at a time.
    """
    examples = list(examples) if examples is not None else split_examples(split, n, seed)
    prompts = [cf.encode_prompt(cf.Conversation(), ex.question, tok) for ex in examples]
    stop_ids = cf.stop_ids(tok)
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    gens = engine.generate_batch(prompts, params, stop_ids)
    thoughts, answers = zip(*[parse_completion(gen.tokens, tok)[:2] for gen in gens],
                            strict=True) if gens else ((), ())
    per_task: dict[str, dict[str, Any]] = {}
    traced: dict[str, list[tuple[bool, bool]]] = {}  # per task: (first line, whole trace) alike
    samples = []
    for i, ex in enumerate(examples):
        ok = synth.score_example(ex, answers[i])
        task = per_task.setdefault(ex.task, {"n": 0, "correct": 0})
        task["n"] += 1
        task["correct"] += int(ok)
        if ex.thinking:
            ref, got = ex.thinking.splitlines(), (thoughts[i] or "").splitlines()
            traced.setdefault(ex.task, []).append((got[:1] == ref[:1], got == ref))
        samples.append({"task": ex.task, "question": ex.question, "expected": ex.answer,
                        "answer": answers[i], "thinking": thoughts[i], "correct": ok})
    for name, task in per_task.items():
        task["accuracy"] = round(task["correct"] / task["n"], 4)
        if marks := traced.get(name):
            task["first_line"] = round(sum(first for first, _ in marks) / len(marks), 4)
            task["trace"] = round(sum(whole for _, whole in marks) / len(marks), 4)
    correct = sum(s["correct"] for s in samples)
    return {"n": len(samples), "correct": correct,
            "accuracy": round(correct / max(len(samples), 1), 4),
            "per_task": dict(sorted(per_task.items())), "samples": samples}


def _prompt_table(rows: list[dict[str, Any]]) -> Any:
    """Two text columns and two narrow ones, so an 80-column terminal wraps words, not letters
    (eight columns folded every ~10 characters): the thinking sits above the answer in one
    cell and the speed is a stack of three short lines. Model text goes in as `Text`, never
    markup (an answer like "[a, b]" would be read as a style), cleaned by `terminal_safe`
    (escape sequences the model emits must not reach the terminal); --json keeps it raw."""
    table = Table(title="Forge-1 test prompts", show_lines=True, expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("Prompt", ratio=1)
    table.add_column("Reply", ratio=2)
    table.add_column("Speed", justify="right", no_wrap=True)
    for i, row in enumerate(rows, 1):
        reply = Text()
        if row["used_thinking"]:
            thinking = terminal_safe(row["thinking"])
            thinking = thinking if len(thinking) < 300 else thinking[:297] + "..."
            reply.append(f"thinking: {thinking or '(empty)'}\n", style="dim")
            reply.append("answer: ", style="bold")
        reply.append(terminal_safe(row["answer"]) or "(empty)")
        speed = (f"{row['completion_tokens']} tok\n{row['seconds']:.2f} s\n"
                 f"{row['tokens_per_second']:.1f}/s")
        table.add_row(str(i), Text(terminal_safe(row["prompt"])), reply, speed)
    return table


def _print_report(report: dict[str, Any], console: Any = None) -> None:
    console = console or Console()
    console.print(_prompt_table(report["prompts"]))
    val = report.get("validation")
    if val:
        console.print(f"validation: loss {val['loss']:.4f}, perplexity {val['perplexity']:.2f} "
                      f"({val['tokens']} response tokens in {val['documents']} documents)")
    else:
        console.print(f"validation: skipped (no {DEFAULT_VAL}; pass --val PATH)")
    for key, spec in REASONING_SPLITS.items():
        acc = report.get(key)
        if acc:
            tasks = ", ".join(f"{t} {v['correct']}/{v['n']}" for t, v in acc["per_task"].items())
            console.print(f"{spec.title}: {acc['accuracy']:.1%} ({acc['correct']}/{acc['n']}); "
                          f"{tasks}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aethermind evaluate", description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--val", type=Path, help=f"validation JSONL (default: {DEFAULT_VAL} if present)")
    p.add_argument("--val-max-docs", type=int, default=500,
                   help="validation documents scored, at most (default 500)")
    p.add_argument("--n-test", type=int, default=100,
                   help="reasoning questions in trained phrasings, operands never trained "
                        "(0 skips; default: 100)")
    p.add_argument("--n-phrasing", type=int, default=100,
                   help="questions in held-out phrasings, operands never trained (0 skips; "
                        "default: 100)")
    p.add_argument("--n-beyond", type=int, default=50,
                   help="questions one step past the trained range: 5-digit sums, longer "
                        "lists (0 skips; default: 50)")
    p.add_argument("--n-rewordings", type=int, default=max(map(len, map(rewordings, SETS))),
                   help="questions of each hidden set of rewordings, written apart from the "
                        "grammar (0 skips; default: all)")
    add_sampling_args(p, greedy=True)  # for the test prompts; reasoning is always greedy
    # Unset, reasoning's cap is each split's longest reference + 16 (past-the-range traces
    # are longer); set, it caps every generation.
    p.set_defaults(max_new_tokens=None)
    add_decode_args(p)
    p.add_argument("--batch-size", type=int, default=16, help="reasoning generation batch")
    p.add_argument("--json", type=Path, help="write every result to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with plain_warnings():
        return _main(parser, args)


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    val_path = args.val
    if val_path is None and DEFAULT_VAL.is_file():
        val_path = DEFAULT_VAL
    if val_path is not None and not val_path.is_file():
        parser.exit(2, f"error: --val {val_path}: file not found\n")
    for flag in dict.fromkeys(spec.flag for spec in REASONING_SPLITS.values()):
        if not 0 <= getattr(args, flag) <= MAX_QUESTIONS:
            parser.exit(2, f"error: --{flag.replace('_', '-')} {getattr(args, flag)}: must be "
                           f"between 0 and {MAX_QUESTIONS:,}\n")
    if args.json is not None and args.json.is_dir():
        parser.exit(2, f"error: --json {args.json} is a folder: pass a file path\n")
    reasoning_cap = args.max_new_tokens
    if args.max_new_tokens is None:
        args.max_new_tokens = SamplingParams().max_new_tokens
    try:
        params = params_from_args(args)
        model, tok = load_model(args.model, args.variant, args.tokenizer, args.device)
        if next(model.parameters()).device.type == "cpu":
            use_decode_threads()  # before a compile; the process ends with the command
        # All generation shares it; validation loss is scored by the fp32 model.
        engine = Engine(model, max_batch_size=args.batch_size, dtype=args.dtype,
                        compile=args.compile, announce=notice_to_stderr)
    except (LoadError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    try:  # every input is checked before the minutes of generation below
        val_set = (ValidationSet(val_path, tok, model.config.max_seq_len,
                                 max_docs=args.val_max_docs) if val_path else None)
    except ValueError as err:  # unreadable or unusable validation file
        if args.val is not None:
            parser.exit(2, f"error: --val {err}\n")
        warnings.warn(f"{err}; validation loss skipped", stacklevel=1)  # the implicit default
        val_set = None
    try:
        return _run(args, model, engine, tok, params, val_set, reasoning_cap)
    except KeyboardInterrupt:
        parser.exit(130, "\nevaluate: interrupted; nothing written\n")
    except OSError as err:  # --json into a read-only or full folder
        parser.exit(1, f"error: cannot write the report: {err}\n")
    finally:
        if val_set is not None:
            val_set.close()


def _run(args: argparse.Namespace, model: torch.nn.Module, engine: Engine, tok: Any,
         params: SamplingParams, val_set: ValidationSet | None, reasoning_cap: int | None
         ) -> int:
    """The work after every input was checked; `model` is the plain one (the loss needs its
    weights), `engine` holds the generation copy."""
    start = time.perf_counter()
    report: dict[str, Any] = {"model": str(args.model), "variant": args.variant,
                              "device": str(next(model.parameters()).device),
                              "config": model.config.to_dict(),
                              "tokenizer_fingerprint": tok.fingerprint()}
    _progress(f"[1/3] {len(TEST_PROMPTS)} test prompts (up to {params.max_new_tokens} tokens "
              "each)")
    report["prompts"] = run_prompts(engine, tok, TEST_PROMPTS, params)
    if val_set is not None:
        _progress(f"[2/3] validation loss on {val_set.index['n_samples']} documents of "
                  f"{val_set.path}")
    report["validation"] = validation_loss(model, tok, val_set) if val_set else None
    most = model.config.max_seq_len - 64  # room for the longest question
    for key, spec in REASONING_SPLITS.items():
        n = getattr(args, spec.flag)
        examples = split_examples(spec.split, n) if n > 0 else []
        if examples:
            _progress(f"[3/3] {spec.title}: {len(examples)} questions")
        # the rewordings carry answers, not traces: they get the whole room
        cap = reasoning_cap or (most if spec.split in SETS else
                                reference_cap(tok, examples, most))
        report[key] = (reasoning_accuracy(engine, tok, examples=examples, max_new_tokens=cap)
                       if examples else None)
    report["seconds"] = round(time.perf_counter() - start, 2)
    _print_report(report)
    if args.json:
        atomic_text(json.dumps(report, indent=2, ensure_ascii=False), args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

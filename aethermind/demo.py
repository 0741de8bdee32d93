"""The offline quickstart, end to end on the CPU: built-in data -> train tiny -> evaluate -> chat.

Nothing is downloaded: the data is the built-in reasoning set, the vocabulary the bundled
tokenizer's, cut down to the ~1.7k tokens that data uses (same splits, ~3x cheaper steps).
Each stage runs the same code as its own command (`aethermind data synth`, `aethermind train`,
`aethermind evaluate`, `aethermind chat`), so the demo doubles as a smoke test of the product.
It shows held-out accuracy per task family before and after training, the loss curve, and a
transcript of fresh questions in the guide's phrasing with the model's thinking. With
`--rl-minutes N` it then runs N minutes of GRPO (`aethermind rl`) on the trained model, every
family in the prompt mix, and shows held-out accuracy per family before and after RL.
Usage: `aethermind demo [--output outputs/demo] [--minutes 10] [--rl-minutes 0]` (`make demo`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aethermind.artifacts.loading import load_model
from aethermind.data import synth
from aethermind.data.vocab_fit import fit_vocabulary
from aethermind.evaluation.evaluate import (
    REASONING_SPLITS,
    reasoning_accuracy,
    reference_cap,
    split_examples,
)
from aethermind.evaluation.evaluate import main as evaluate_main
from aethermind.evaluation.rewordings import SETS, rewordings
from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import answer
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.rl.config import RLConfig
from aethermind.rl.loop import rl
from aethermind.runtime import dist
from aethermind.runtime.files import atomic_text
from aethermind.runtime.runlock import LockedError, OutputLock
from aethermind.serve.server import DEFAULT_HOST, DEFAULT_PORT
from aethermind.text import prompts
from aethermind.text.chat_format import Conversation, Turn, render
from aethermind.text.terminal import terminal_safe
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.config import TrainConfig
from aethermind.training.errors import TrainingError
from aethermind.training.train import train

MARKER = ".aethermind-demo"  # only a directory holding this marker is ever cleared
DEMO_LOCK = ".aethermind-demo.lock"  # beside training's own lock in the same folder
# Where the demo writes; the Makefile's DEMO_MODEL (what `make chat` / `make serve` load) is
# this folder's final_model/, checked by tests/test_demo.py.
DEFAULT_OUT = Path("outputs/demo")
# One conversation: each turn is answered with the earlier turns in context, as in `chat`.
CHAT_SCRIPT = (prompts.GREETING, prompts.ARITHMETIC, "Which is bigger, 345 or 354?",
               "Thank you!")
# Training throughput of the demo recipe on two quiet CPU cores, and what set-up, data,
# evaluation and chat cost besides: --minutes is turned into steps with these, so a run is
# reproducible (the same steps on any machine) instead of racing the clock; a busy or slower
# machine takes longer for the same result. 270 a minute was fp32 at ~0.2 s a step; bf16 and
# compile: blocks made the step 1.47-1.53x faster on a CPU with bf16 in hardware (BENCHMARKS.md
# "Demo", 7 Dec: 0.12 s), so 397. A CPU without bf16 trains in fp32 (compiled: 1.14x) and
# takes longer for the same steps.
STEPS_PER_MINUTE = 397
OVERHEAD_MINUTES = 2.5
# GRPO steps of the demo recipe (8 prompts x 8 answers, up to 2 refills for uncertain groups,
# 2 updates each) a minute: --rl-minutes becomes steps with it, as --minutes does. Measured on
# two quiet cores from the 6-minute demo model: 32 steps in 221 s (8.7 a minute; BENCHMARKS.md
# "RL"); ~18 s a step with two runs sharing the cores.
RL_STEPS_PER_MINUTE = 8
N_TEST = 240  # 20 questions per family in trained phrasings with operands never trained
N_PHRASING = 480  # 40 per family in held-out phrasings with operands never trained
N_BEYOND = 100  # 20 per ranged family one step past the trained range
# Built-in examples average ~134 tokens once encoded (chats of 1-3) since the column traces
# carry "Rest" and "Built" and comparison its length chain (~122 before); the constant stays at
# the 115 the measured runs used, so they are this recipe's data, with 28% spare examples
# instead of 10%.
TOKENS_PER_EXAMPLE = 115
N_FRESH = 24  # fresh questions in the guide's phrasing (4 per template)
N_BEFORE = 44  # held-out questions asked of the untrained model (4 per family)
GEN_BATCH = 32  # questions generated at once (the engine's batch)
MAX_CAP = 448  # generation cap at most: tiny's 512-token context less the longest question
# Bounds of the options: far beyond any sensible demo, short of what would exhaust memory.
MAX_MINUTES = 7 * 24 * 60.0
MAX_STEPS = MAX_EXAMPLES = 10_000_000


def steps_for(minutes: float) -> int:
    """Optimizer steps that fit `minutes` of demo on two quiet cores, overhead included."""
    return max(1, round((minutes - OVERHEAD_MINUTES) * STEPS_PER_MINUTE))


def examples_for(steps: int) -> int:
    """Built-in examples enough for `steps` of the recipe without repeating one (10% spare):
    generating, fitting and packing data the run never reaches is set-up time taken from
    training."""
    recipe = train_config(Path(), Path(), Path(), Path(), steps)
    tokens = steps * recipe.batch_size * recipe.context_length
    return max(1000, round(tokens / TOKENS_PER_EXAMPLE * 1.1))


def _prepare_out(out: Path) -> OutputLock:
    """`out` emptied for a new demo and locked against a second demo there (which would
    delete this one's files under it); LockedError if one runs there now."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise SystemExit(f"aethermind demo: {out} exists and is not a demo directory; "
                         "choose another --output")
    lock = OutputLock(out, "demo", name=DEMO_LOCK, option="--output")
    lock.acquire()
    for entry in out.iterdir():
        if entry != lock.path:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    (out / MARKER).write_text("created by `aethermind demo`; safe to delete\n")
    return lock


def asked_questions(n_test: int) -> dict[str, list]:
    """Every question the demo asks after training, by report key (evaluate's splits, the
    fresh guide questions), the same for every --seed so seeds compare on one set."""
    return {"reasoning": split_examples("test", n_test),
            "phrasing": split_examples("phrasing", N_PHRASING),
            "beyond": split_examples("beyond", N_BEYOND),
            **{name: split_examples(name, len(rewordings(name))) for name in SETS},
            "fresh": synth.guide_questions(N_FRESH)}


def build_data(out: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[Path, Path, Path]:
    """Train/val JSONL under out/data and the demo vocabulary under out/tokenizer."""
    train_path, val_path = synth.write_synth(out / "data", n_train, n_val=200, seed=seed)
    texts = [json.loads(line)["text"] for path in (train_path, val_path)
             for line in path.read_text(encoding="utf-8").splitlines()]
    # The questions asked later are fitted too, so their splits match the bundled tokenizer.
    asked = [e for group in asked_questions(n_test).values() for e in group]
    texts += [render(Conversation(turns=[Turn(e.question, e.answer, e.thinking)]))
              for e in asked]
    texts += [render(Conversation(turns=[Turn(q, "") for q in CHAT_SCRIPT]))]
    tok_dir = fit_vocabulary(Forge1Tokenizer(), texts).save(out / "tokenizer")
    return train_path, val_path, tok_dir


def train_config(out: Path, train: Path, val: Path, tokenizer: Path, steps: int, **overrides):
    """The demo recipe (BENCHMARKS.md, "Demo"): tiny, bf16 where the CPU has it (else fp32),
    each block compiled, whole chats best-fit packed, Muon (per step: 2.0x AdamW's held-out
    accuracy at 900 steps) at lr 5e-3: at 900 steps of the first data 2e-3 -> 4e-3 -> 8e-3
    gave 32% -> 50% -> 64% (1.6e-2 diverged early), but at 2,025 steps 8e-3 -> 5e-3 gave
    82.8% -> 87.6% on held-out phrasings (seeds 0-2); 3.5e-3 (87.3%) and 6.5e-3 (87.6%,
    against 88.9%) were no better (7 Dec). Rows of 512 tokens (tiny's whole context), 6 a
    step: the same tokens a step as 8 x 384, ~8% slower, but best-fit packing drops a chat
    longer than a row, and at 384 that was 1 sort in 10: the longest lists were never
    trained."""
    recipe: dict[str, Any] = dict(
        variant="tiny", device="cpu", precision=dist.cpu_precision(), compile="blocks",
        train_data=str(train),
        val_data=str(val), tokenizer=str(tokenizer), layout="bestfit", output_dir=str(out),
        batch_size=6, context_length=512, optimizer="muon", learning_rate=5e-3,
        warmup_ratio=0.03,
        min_lr_ratio=0.05, max_steps=steps,
        checkpoint_every=max(1, steps // 2), eval_every=max(1, steps // 4), eval_batches=4,
        log_every=max(1, steps // 40), num_workers=1, seed=0, dashboard="auto")
    return TrainConfig(**{**recipe, **overrides})


def rl_config(out: Path, model: Path, steps: int, max_new_tokens: int, **overrides
              ) -> RLConfig:
    """The demo's RL recipe (issue 19's levers): every family in the mix so none is forgotten,
    exact answer plus the dense trace reward, groups where the model is uncertain, two clipped
    updates per rollout batch, a small AdamW step."""
    recipe: dict[str, Any] = dict(
        model=str(model), device="cpu", prompts="synth", families="all",
        rewards="exact, trace=0.5", prompts_per_step=8, group_size=8, temperature=1.0,
        max_new_tokens=max_new_tokens, updates_per_batch=2, filter_uncertain=True,
        optimizer="adamw", learning_rate=2e-5, max_steps=steps,
        checkpoint_every=max(1, steps // 2), output_dir=str(out / "rl"), seed=0,
        dashboard="auto")
    return RLConfig(**{**recipe, **overrides})


def score_examples(engine: Any, tokenizer: Any, examples: list, max_new_tokens: int
                   ) -> dict[str, Any]:
    """Greedy exact-match accuracy of `examples`, overall and per task (evaluate's scorer)."""
    return reasoning_accuracy(engine, tokenizer, examples=examples, max_new_tokens=max_new_tokens)


def _untrained_accuracy(tok_dir: Path, examples: list, max_new_tokens: int) -> dict[str, Any]:
    tok = Forge1Tokenizer(tok_dir)
    torch.manual_seed(0)
    model = Forge1Model(Forge1Config.from_variant("tiny", vocab_size=tok.get_vocab_size_padded()))
    return score_examples(Engine(model.eval(), max_batch_size=GEN_BATCH), tok, examples,
                          max_new_tokens)


def _family_table(console: Console, before: dict, report: dict, fresh: dict) -> None:
    """Accuracy per family on every split evaluate scored, and the fresh guide questions."""
    table = Table(title="accuracy per task family (exact match, greedy)")
    splits = [(key, spec.column) for key, spec in REASONING_SPLITS.items() if report.get(key)]
    for col in ("family", "before", *(title for _, title in splits)):
        table.add_column(col, justify="right" if col != "family" else "left")
    for task in synth.TASKS:
        b = before["per_task"].get(task)
        cells = []
        for key, _ in splits:
            row = report[key]["per_task"].get(task)
            cells.append(f"{row['accuracy']:.0%} ({row['correct']}/{row['n']})" if row else "-")
        table.add_row(task, f"{b['accuracy']:.0%}" if b else "-", *cells)
    table.add_row("[bold]all", f"{before['accuracy']:.0%}", *(
        f"[bold]{report[key]['accuracy']:.1%}" for key, _ in splits))
    table.add_row("[bold]fresh, guide's phrasing", "-",
                  f"[bold]{fresh['accuracy']:.0%} ({fresh['correct']}/{fresh['n']})",
                  *([""] * (len(splits) - 1)))
    console.print(table)


def _rl_table(console: Console, before: dict, after: dict) -> None:
    table = Table(title="held-out accuracy per task family before and after RL")
    for col in ("family", "before RL", "after RL", "change"):
        table.add_column(col, justify="right" if col != "family" else "left")
    for task, row in after["per_task"].items():
        b = before["per_task"][task]["accuracy"]
        table.add_row(task, f"{b:.0%}", f"{row['accuracy']:.0%}",
                      f"{(row['accuracy'] - b) * 100:+.1f}")
    table.add_row("[bold]all", f"{before['accuracy']:.1%}", f"[bold]{after['accuracy']:.1%}",
                  f"{(after['accuracy'] - before['accuracy']) * 100:+.1f}")
    console.print(table)


def _run_rl(args: argparse.Namespace, console: Console, final: Path, test: list, cap: int,
            before: dict) -> dict[str, Any] | None:
    """GRPO on the trained model, then the same held-out questions; None if RL stopped."""
    steps = max(1, round(args.rl_minutes * RL_STEPS_PER_MINUTE))
    console.rule(f"[bold]RL: GRPO on checkable answers, {steps} steps")
    result = rl(rl_config(args.out, final, steps, cap), overwrite=True)
    if result["status"] != "completed":
        console.print(f"[red]RL ended early ({result['status']})")
        return None
    model, tokenizer = load_model(result["final_model"])
    after = score_examples(Engine(model, max_batch_size=GEN_BATCH), tokenizer, test, cap)
    _rl_table(console, before, after)
    return {"steps": steps, "model": str(Path(result["final_model"]).parent),
            "accuracy": after}


def _thinking_lines(thinking: str) -> list[str]:
    """A thinking block as a Markdown quote, the transcript's one way of showing it."""
    return ["*thinking:*", "", *[f"> {t}" for t in thinking.splitlines()], ""]


def _sample_lines(sample: dict) -> list[str]:
    mark = "right" if sample["correct"] else f"wrong (expected: {sample['expected']})"
    return [f"**you:** {sample['question']}", "", *_thinking_lines(sample["thinking"] or ""),
            f"**forge-1:** {sample['answer']}  _{mark}_", ""]


def _transcript(engine: Any, tokenizer: Any, fresh: dict, examples: list, reworded: dict,
                out: Path, console: Console, params: SamplingParams) -> Path:
    """Fresh guide-phrased questions (scored), the first hidden rewording of each family
    (scored by evaluate), and a multi-turn chat, with their thinking."""
    lines = ["# Forge-1 tiny after the demo's training (greedy)", "",
             f"## Fresh questions in the guide's phrasing: {fresh['correct']}/{fresh['n']} right",
             "", "Operand combinations the model never saw in training.", ""]
    for sample in fresh["samples"]:
        lines += _sample_lines(sample)
    firsts = {s["task"]: s for s in reversed(reworded["samples"])}
    lines += [f"## Reworded questions: {reworded['correct']}/{reworded['n']} of the hidden "
              "rewordings right; the first of each family", "",
              "Written apart from the training grammar, the way people type.", ""]
    for task in synth.TASKS:
        if task in firsts:
            lines += _sample_lines(firsts[task])
    lines += ["## A conversation (each turn sees the earlier ones)", ""]
    history: list[dict[str, Any]] = []
    for message in CHAT_SCRIPT:
        result = answer(engine, tokenizer, message, params, history=history)
        history.append({"user": message, "assistant": result.answer,
                        "thinking": result.thinking if result.used_thinking else None})
        _print_turn(console, message, result)
        lines += [f"**you:** {message}", ""]
        if result.used_thinking:
            lines += _thinking_lines(result.thinking)
        lines += [f"**forge-1:** {result.answer}", ""]
    return atomic_text("\n".join(lines), out / "chat_transcript.md")


def _print_turn(console: Console, message: str, result: Any) -> None:
    """One chat turn on the terminal. Model text is `Text` (an answer like "[dim]" is not
    markup) cleaned by `terminal_safe`; the transcript file keeps it raw."""
    console.print(Text.assemble(("you", "bold cyan"), f"  {message}"))
    if result.used_thinking:
        console.print(Text(f"thinking: {terminal_safe(result.thinking)}", style="dim"))
    console.print(Text.assemble(("forge", "bold green"), f" {terminal_safe(result.answer)}\n"))


def _aethermind_program() -> list[str]:
    """This environment's `aethermind`, spelled so it runs without activating anything:
    `.venv/bin/aethermind` after `make demo` (a bare `python` or `aethermind` may be another
    environment's, or none: issue 25's ModuleNotFoundError)."""
    exe = Path(sys.executable)
    script = exe.with_name("aethermind.exe" if os.name == "nt" else "aethermind")
    return [_short(script)] if script.is_file() else [_short(exe), "-m", "aethermind.cli"]


def _short(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def next_steps(out: Path) -> list[tuple[str, str]]:
    """(command, what it does) printed after a run: the Makefile's targets, then the same two
    commands without make; every one works in the state `make demo` leaves."""
    model = out / "final_model"
    make_var = "" if model == DEFAULT_OUT / "final_model" else \
        f" DEMO_MODEL={shlex.quote(str(model))}"
    program = shlex.join(_aethermind_program())
    model_arg = shlex.quote(str(model))
    return [(f"make chat{make_var}", "in this terminal, its thinking shown"),
            (f"make serve{make_var}", f"web chat at http://{DEFAULT_HOST}:{DEFAULT_PORT}/, "
                                      "OpenAI-compatible API at /v1"),
            (f"{program} chat --model {model_arg} --device cpu --show-thinking", ""),
            (f"{program} serve --model {model_arg} --device cpu", "")]


def _print_next_steps(console: Console, out: Path) -> None:
    steps = next_steps(out)
    width = max(len(command) for command, what in steps if what)
    console.print("\nnext: talk to it", style="bold")
    heading = "the same without make:"
    for command, what in steps:
        if not what and heading:
            console.print(heading, style="bold")
            heading = ""
        line = f"  {command:<{width}}  # {what}" if what else f"  {command}"
        # soft_wrap: a command split across lines could not be pasted back
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _add_to_report(path: Path, extra: dict[str, Any]) -> None:
    report = json.loads(path.read_text(encoding="utf-8"))
    report.update(extra)
    atomic_text(json.dumps(report, indent=2, ensure_ascii=False), path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", dest="out", type=Path, default=DEFAULT_OUT,
                        help="directory for the run, its report and transcript "
                             "(default: outputs/demo)")
    parser.add_argument("--minutes", type=float, default=10.0,
                        help="budget on two quiet CPU cores, set-up included (default 10): "
                             f"{OVERHEAD_MINUTES:g} for set-up, data and evaluation, the rest "
                             f"trains at {STEPS_PER_MINUTE} steps a minute")
    parser.add_argument("--steps", type=int, help="optimizer steps (overrides --minutes)")
    parser.add_argument("--rl-minutes", type=float, default=0.0,
                        help="minutes of RL (GRPO) after training, at "
                             f"{RL_STEPS_PER_MINUTE} steps a minute; shows accuracy per family "
                             "before and after (default 0: none)")
    parser.add_argument("--n-train", type=int,
                        help="built-in training examples (default: enough for the steps)")
    parser.add_argument("--n-test", type=int, default=N_TEST,
                        help=f"held-out reasoning questions (default {N_TEST}: 40 per family)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data and the training (default 0); the held-out "
                             "questions are the same for every seed")
    parser.add_argument("--max-new-tokens", type=int,
                        help="per generated answer (default: the longest reference + 16)")
    return parser


def _checked_steps(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The run's steps, every option checked first: a value out of range (nan, a week of
    minutes, a billion questions) is one line and exit 2, not a traceback or a day's wait."""
    if args.steps is None and not OVERHEAD_MINUTES < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes {args.minutes:g}: must be more than {OVERHEAD_MINUTES:g} "
                     "(set-up, data and evaluation take about that) and at most "
                     f"{MAX_MINUTES:g}; or pass --steps")
    steps = args.steps if args.steps is not None else steps_for(args.minutes)
    if not 0 <= args.rl_minutes <= MAX_MINUTES:
        parser.error(f"--rl-minutes {args.rl_minutes:g}: must be between 0 and {MAX_MINUTES:g}")
    if args.n_train is None and 1 <= steps <= MAX_STEPS:
        args.n_train = examples_for(steps)
    for flag, value, most in (("--steps", steps, MAX_STEPS),
                              ("--n-train", args.n_train, MAX_EXAMPLES),
                              ("--n-test", args.n_test, MAX_EXAMPLES),
                              ("--max-new-tokens", args.max_new_tokens or 1, MAX_EXAMPLES)):
        if not 1 <= value <= most:
            parser.error(f"{flag} {value}: must be between 1 and {most:,}")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    steps = _checked_steps(parser, args)
    console = Console()
    started = time.perf_counter()
    try:
        lock = _prepare_out(args.out)
    except LockedError as err:
        parser.exit(2, f"aethermind demo: {err}\n")
    except OSError as err:
        parser.exit(2, f"aethermind demo: cannot use --output {args.out}: "
                       f"{err.strerror or err}\n")
    try:
        return _run(args, parser, steps, console, started)
    finally:
        lock.release()


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser, steps: int,
         console: Console, started: float) -> int:
    """The five stages, in the locked output folder."""

    console.rule("[bold]1/5  data: built-in reasoning conversations and their vocabulary")
    train_path, val_path, tok_dir = build_data(args.out, args.n_train, args.n_test, args.seed)
    tok = Forge1Tokenizer(tok_dir)
    asked = asked_questions(args.n_test)
    test, fresh_examples = asked["reasoning"], asked["fresh"]
    cap = args.max_new_tokens or reference_cap(tok, test + fresh_examples, MAX_CAP)
    console.print(f"{args.n_train} training and 200 validation examples -> {train_path.parent}; "
                  f"vocabulary {tok.get_vocab_size()} tokens -> {tok_dir}")

    console.rule("[bold]2/5  before training: the untrained model on held-out questions")
    per_family = max(1, N_BEFORE // len(synth.TASKS))
    subset = [e for t in synth.TASKS for e in [x for x in test if x.task == t][:per_family]]
    before = _untrained_accuracy(tok_dir, subset, cap)
    console.print(f"untrained: {before['accuracy']:.0%} of {before['n']} held-out questions")

    recipe = train_config(args.out, train_path, val_path, tok_dir, steps, seed=args.seed)
    console.rule(f"[bold]3/5  train: Forge-1 tiny on the CPU, {steps} steps in "
                 f"{recipe.precision}")
    try:
        result = train(recipe)
    except TrainingError as err:  # e.g. the data folder removed under the run
        parser.exit(1, f"aethermind demo: {err}\n")
    if result["status"] != "completed":
        console.print(f"[red]training ended early: {result.get('message', result['status'])}")
        return 1
    final = Path(result["final_model"])

    console.rule("[bold]4/5  evaluate: test prompts, validation loss, held-out accuracy")
    eval_json = args.out / "eval.json"
    code = evaluate_main(["--model", str(final), "--val", str(val_path), "--n-test",
                          str(args.n_test), "--n-phrasing", str(len(asked["phrasing"])),
                          "--n-beyond", str(len(asked["beyond"])), "--batch-size",
                          str(GEN_BATCH), "--json", str(eval_json),
                          # unset, each split is capped at its own longest reference + 16
                          *(["--max-new-tokens", str(cap)] if args.max_new_tokens else [])])
    if code:
        return code

    console.rule("[bold]5/5  chat: fresh questions in the guide's phrasing, then a conversation")
    model, tokenizer = load_model(final)
    engine = Engine(model, max_batch_size=GEN_BATCH)
    fresh = score_examples(engine, tokenizer, fresh_examples, cap)
    report = json.loads(eval_json.read_text(encoding="utf-8"))
    _family_table(console, before, report, fresh)
    after_rl = _run_rl(args, console, final, test, cap, report["reasoning"]) \
        if args.rl_minutes else None
    greedy = SamplingParams(max_new_tokens=cap, temperature=0.0)  # as the scoring above
    transcript = _transcript(engine, tokenizer, fresh, fresh_examples, report["rewordings"],
                             args.out, console, greedy)
    minutes = (time.perf_counter() - started) / 60
    _add_to_report(eval_json, {"before_training": before, "fresh_guide_questions": fresh,
                               "demo": {"steps": steps, "minutes": round(minutes, 2),
                                        "seed": args.seed, "n_train": args.n_train,
                                        "precision": recipe.precision,
                                        "max_new_tokens": cap},
                               **({"after_rl": after_rl} if after_rl else {})})
    console.rule(f"[bold green]done in {minutes:.1f} min")
    console.print(f"model       {final}\nevaluation  {eval_json}\n"
                  f"transcript  {transcript}\nloss curve  {args.out / 'loss_curve.png'}")
    _print_next_steps(console, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

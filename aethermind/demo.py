"""The offline quickstart, end to end on the CPU: built-in data -> train tiny -> evaluate -> chat.

Nothing is downloaded: the data is the built-in reasoning set and the tokenizer the bundled one.
Each stage runs the same code as its own command (`aethermind data synth`, `aethermind train`,
`aethermind evaluate`, `aethermind chat`), so the demo doubles as a smoke test of the product.
Usage: `aethermind demo [--out outputs/demo] [--steps 1200]` (what `make demo` runs).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from rich.console import Console

from aethermind import prompts

MARKER = ".aethermind-demo"  # only a directory holding this marker is ever cleared
CHAT_SCRIPT = (prompts.ARITHMETIC, prompts.FACTUAL, prompts.SORTING, prompts.GREETING)


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise SystemExit(f"aethermind demo: {out} exists and is not a demo directory; "
                             "choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("created by `aethermind demo`; safe to delete\n")


def _train_config(args: argparse.Namespace, train: Path, val: Path):
    from aethermind.train_config import TrainConfig

    return TrainConfig(
        variant="tiny", device="cpu", precision="fp32", train_data=str(train),
        val_data=str(val), output_dir=str(args.out), batch_size=8, context_length=256,
        learning_rate=1.5e-3, warmup_ratio=0.05, min_lr_ratio=0.1, max_steps=args.steps,
        checkpoint_every=max(1, args.steps // 2), eval_every=max(1, args.steps // 3),
        eval_batches=5, log_every=max(1, args.steps // 20), num_workers=1, seed=0,
        dashboard="auto")


def _chat_transcript(final: Path, out: Path, console: Console, max_new_tokens: int
                     ) -> Path:
    """Each scripted question in a fresh conversation: the built-in data is single-turn, so a
    tiny model trained on it has never seen a history (multi-turn chat is `aethermind chat`)."""
    from aethermind.engine import Engine
    from aethermind.loading import load_model
    from aethermind.thinking import run_thinking_pipeline

    model, tokenizer = load_model(final)
    engine = Engine(model, max_batch_size=1)
    lines = ["# Forge-1 tiny: scripted questions (greedy)", ""]
    for message in CHAT_SCRIPT:
        result = run_thinking_pipeline(model, tokenizer, message, max_new_tokens=max_new_tokens,
                                       temperature=0.0, engine=engine)
        console.print(f"[bold cyan]you[/]  {message}")
        if result.used_thinking:
            console.print(f"[dim]thinking: {result.thinking}[/]")
        console.print(f"[bold green]forge[/] {result.answer}\n")
        lines += [f"**you:** {message}", ""]
        if result.used_thinking:
            lines += ["*thinking:*", "", *[f"> {t}" for t in result.thinking.splitlines()], ""]
        lines += [f"**forge-1:** {result.answer}", ""]
    path = out / "chat_transcript.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aethermind demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--steps", type=int, default=1200, help="optimizer steps (default 1200)")
    parser.add_argument("--n-train", type=int, default=20000, help="built-in training chats")
    parser.add_argument("--n-test", type=int, default=60, help="reasoning test questions")
    parser.add_argument("--max-new-tokens", type=int, default=160, help="per generated answer")
    args = parser.parse_args(argv)
    console = Console()
    started = time.perf_counter()
    _prepare_out(args.out)

    console.rule("[bold]1/4  data: built-in reasoning conversations")
    from aethermind.data.synth import write_synth

    train_path, val_path = write_synth(args.out / "data", args.n_train, n_val=200, seed=0)
    console.print(f"{args.n_train} training and 200 validation chats -> {train_path.parent}")

    console.rule("[bold]2/4  train: Forge-1 tiny on the CPU")
    from aethermind.train import train

    result = train(_train_config(args, train_path, val_path))
    if result["status"] != "completed":
        console.print(f"[red]training ended early: {result.get('message', result['status'])}")
        return 1
    final = Path(result["final_model"])

    console.rule("[bold]3/4  evaluate: test prompts, validation loss, reasoning accuracy")
    from aethermind.evaluate import main as evaluate_main

    code = evaluate_main(["--model", str(final), "--val", str(val_path), "--n-test",
                          str(args.n_test), "--max-new-tokens", str(args.max_new_tokens),
                          "--json", str(args.out / "eval.json")])
    if code:
        return code

    console.rule("[bold]4/4  chat: the guide's questions, greedy")
    transcript = _chat_transcript(final, args.out, console, args.max_new_tokens)
    minutes = (time.perf_counter() - started) / 60
    console.rule(f"[bold green]done in {minutes:.1f} min")
    console.print(f"model       {final}\nevaluation  {args.out / 'eval.json'}\n"
                  f"transcript  {transcript}\nloss curve  {args.out / 'loss_curve.png'}\n"
                  f"chat        python scripts/chat.py --model {final} --variant tiny "
                  "--device cpu --show-thinking")
    return 0


if __name__ == "__main__":
    sys.exit(main())

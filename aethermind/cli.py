"""`aethermind <command>`: dispatch to each module's `main(argv)`, imported only when used.

Each command lives in its own module with `def main(argv=None) -> int` and
`def build_parser() -> argparse.ArgumentParser` (its options, which tests/test_cli_flags.py holds
to one vocabulary); this file holds only the map, so `aethermind --help` stays fast and importing
it does nothing. `aethermind --version` prints the package's `__version__`.
Usage: `aethermind train --config configs/cpu_config.yaml --variant tiny`.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading

from aethermind import __version__

COMMANDS = {
    "tokenizer": ("aethermind.data.tokenizer_train", "train a byte-level BPE tokenizer"),
    "data": ("aethermind.data.cli", "download | preprocess | synth | pack training data"),
    "train": ("aethermind.training.train", "train Forge-1 from a YAML config (resumable)"),
    "rl": ("aethermind.rl.cli", "improve a trained model with GRPO on checkable answers"),
    "plan": ("aethermind.training.plan", "estimate GPU memory for a config before training"),
    "evaluate": ("aethermind.evaluation.evaluate",
                 "test prompts, validation loss and reasoning accuracy"),
    "eval": ("aethermind.evaluation.eval_cli",
             "benchmarks through lm-evaluation-harness and a bench card"),
    "chat": ("aethermind.inference.chat", "interactive chat with a trained model"),
    "serve": ("aethermind.serve.server", "OpenAI-compatible server and web chat (batched)"),
    "export": ("aethermind.export.cli", "write .pt, safetensors, a Hugging Face directory or GGUF"),
    "import-hf": ("aethermind.export.hf", "Hugging Face Llama directory -> Forge-1 checkpoint"),
    "demo": ("aethermind.demo", "the offline quickstart: data, train, evaluate, chat"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return ("usage: aethermind <command> [options] | --version\n\ncommands:\n"
            + "\n".join(lines) + "\n\n`aethermind <command> --help` lists a command's options.")


def version_line() -> str:
    """`aethermind 0.1.0`: the version defined once, in `aethermind.__version__`."""
    return f"aethermind {__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(version_line())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"aethermind: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_module(COMMANDS[name][0], rest, f"aethermind {name}")


def run_module(module_name: str, argv: list[str] | None = None, label: str | None = None
               ) -> int:
    """Import a command's module and run its `main(argv)`. Ctrl-C while torch loads or the
    command sets up (before it has its own handling) is one line and exit 130, not a trace."""
    label = label or module_name
    asked: list[int] = []
    # A KeyboardInterrupt inside a library's import (numpy under torch) can be swallowed and
    # leave a half-initialised module that fails much later: hold Ctrl-C until imports finish.
    previous = _hold_sigint(asked)
    try:
        module = importlib.import_module(module_name)
    finally:
        _restore_sigint(previous)
    try:
        if asked:
            raise KeyboardInterrupt
        return int(module.main(argv) or 0)
    except KeyboardInterrupt:
        print(f"\n{label}: interrupted; nothing was lost", file=sys.stderr)
        return 130


def _hold_sigint(asked: list[int]) -> object:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))


def _restore_sigint(previous: object) -> None:
    if previous is not None:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    raise SystemExit(main())

"""`aethermind chat`: interactive multi-turn chat with a trained Forge-1 (guide section 6).

The whole history goes into each prompt (the oldest turns are dropped when the context is
full, see `thinking.py`); answers stream as they are decoded and the thinking is shown dimmed
when on. Commands: /think /save [PATH] /clear /help /quit. Ctrl-C while the model answers stops
that answer; Ctrl-C or Ctrl-D at the prompt ends the chat. All generation is in `thinking.py`;
the sampling flags become one `SamplingParams` at start-up, used for every answer.
Usage: `python scripts/chat.py --model outputs/final_model/forge1_nano_final.pt --variant nano`.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from aethermind.artifacts.layout import run_folder
from aethermind.artifacts.loading import LoadError, add_model_args, load_model
from aethermind.inference.engine import (
    Engine,
    GenerationError,
    PromptTooLongError,
    add_decode_args,
    notice_to_stderr,
)
from aethermind.inference.sampling import SamplingParams, add_sampling_args, params_from_args
from aethermind.inference.thinking import answer
from aethermind.runtime.dist import plain_warnings
from aethermind.runtime.files import atomic_text
from aethermind.runtime.threads import use_decode_threads
from aethermind.text import chat_format as cf
from aethermind.text.terminal import terminal_safe
from aethermind.text.tokenizer import replace_surrogates

COMMANDS = {
    "/think": "toggle showing the thinking block",
    "/save [PATH]": "save the conversation as JSON (default <output folder>/chats/; never "
                    "replaces a file)",
    "/clear": "clear the conversation history",
    "/help": "show these commands",
    "/quit": "leave the chat (also /exit, Ctrl-D or Ctrl-C)",
}


@dataclass
class ChatState:
    show_thinking: bool
    system: str
    history: list[cf.Turn] = field(default_factory=list)


def default_save_dir(model_path: str | Path) -> Path:
    """`<output folder>/chats`: beside the run that made the model, not the current folder."""
    return run_folder(model_path) / "chats"


def free_name(path: Path) -> Path:
    """`path`, or `<stem>-2<suffix>`, `-3`, ... : the first name not taken."""
    candidate, n = path, 2
    while candidate.exists() or candidate.is_symlink():
        candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return candidate


def save_conversation(state: ChatState, path: Path, model_path: str) -> Path:
    """Write the conversation as JSON (system prompt, turns with thinking) atomically and return
    the path. An existing folder gets a new `chat_<time>.json` inside it. An existing file (the
    checkpoint being chatted with, say) is never replaced: FileExistsError names a free name."""
    if path.is_dir():
        path = free_name(path / f"chat_{time.strftime('%Y%m%d_%H%M%S')}.json")
    elif path.exists() or path.is_symlink():
        raise FileExistsError(errno.EEXIST, f"{path} exists and /save never replaces a file; "
                                            f"try /save {free_name(path)}")
    for parent in path.parents:  # name a file in the way instead of mkdir's "File exists"
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{parent} is a file, not a folder")
            break
    data = {"model": model_path, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "system": state.system, "turns": [asdict(t) for t in state.history]}
    return atomic_text(json.dumps(data, indent=2, ensure_ascii=False), path).resolve()


class _Printer:
    """Streams one reply: dim thinking (when shown), then `Forge-1: ` and the answer. Model
    text goes through `terminal_safe` (the terminal must not run what the model emits)."""

    def __init__(self, console: Console, show_thinking: bool) -> None:
        self.console, self.show = console, show_thinking
        self.in_thinking = self.in_answer = False

    def _out(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, end="", markup=False, highlight=False,
                           soft_wrap=True)
        self.console.file.flush()

    def __call__(self, part: str, text: str) -> None:
        if part == "thinking":
            if not self.in_thinking:
                self.in_thinking = True
                self._out("thinking: " if self.show else "(thinking...)\n", "dim italic")
            if self.show:
                self._out(terminal_safe(text), "dim")
            return
        if not self.in_answer:
            self.in_answer = True
            if self.in_thinking and self.show:
                self._out("\n")
            self._out("Forge-1: ", "bold cyan")
        self._out(terminal_safe(text))

    def end(self) -> None:
        if not self.in_answer:
            if self.in_thinking and self.show:
                self._out("\n")
            self._out("Forge-1: ", "bold cyan")
            self._out("(no answer)", "dim")
        self._out("\n")


def _command(line: str, state: ChatState, console: Console, model_path: str) -> bool:
    """Run a slash command; False means quit."""
    cmd, _, arg = line.partition(" ")
    if cmd in ("/quit", "/exit"):
        return False
    if cmd == "/think":
        state.show_thinking = not state.show_thinking
        console.print(f"thinking display: {'on' if state.show_thinking else 'off'}")
    elif cmd == "/clear":
        state.history.clear()
        console.print("history cleared")
    elif cmd == "/save":
        path = Path(arg.strip()) if arg.strip() else \
            free_name(default_save_dir(model_path) / f"chat_{time.strftime('%Y%m%d_%H%M%S')}.json")
        try:
            saved = save_conversation(state, path, model_path)
        except FileExistsError as err:
            console.print(terminal_safe(f"not saved: {err.strerror}"), style="red", markup=False,
                          highlight=False, soft_wrap=True)
            return True
        except OSError as err:  # a file in the way, read-only, full: the chat goes on
            console.print(terminal_safe(f"cannot save to {path}: {err.strerror or err}; the "
                                        "conversation is kept, try /save with another path"),
                          style="red", markup=False,
                          highlight=False, soft_wrap=True)
            return True
        console.print(terminal_safe(f"saved {len(state.history)} turn(s) to {saved}"), markup=False,
                      highlight=False, soft_wrap=True)
    elif cmd == "/help":
        for name, text in COMMANDS.items():
            console.print(f"  {name:<14} {text}", markup=False, highlight=False)
    else:
        console.print(terminal_safe(f"unknown command {cmd}: /help lists the commands"),
                      markup=False)
    return True


def _reply(line: str, state: ChatState, engine: Any, tok: Any, params: SamplingParams,
           console: Console) -> None:
    printer = _Printer(console, state.show_thinking)
    try:
        r = answer(engine, tok, line, params, history=state.history, system=state.system,
                   stream=printer)
    except KeyboardInterrupt:
        console.print("\n[interrupted: answer discarded]", style="dim", markup=False)
        return
    except (PromptTooLongError, GenerationError) as err:  # the conversation so far is kept
        console.print(terminal_safe(f"\nerror: {err}"), style="red", markup=False)
        return
    printer.end()
    if r.dropped_turns:
        console.print(f"(dropped the {r.dropped_turns} oldest turn(s) to fit the context)",
                      style="dim", markup=False)
    state.history.append(cf.Turn(line, r.answer, r.thinking if r.used_thinking else None))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aethermind chat", description=__doc__.splitlines()[0])
    add_model_args(p)
    add_sampling_args(p)
    add_decode_args(p)
    # The flag's name before evaluate and chat shared one: kept so old commands still run.
    p.add_argument("--max-tokens", type=int, dest="max_new_tokens", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)
    p.add_argument("--show-thinking", action="store_true", help="show thinking from the start")
    p.add_argument("--system", default=cf.DEFAULT_SYSTEM_PROMPT, help="system prompt")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        params = params_from_args(args)  # a bad value stops here, before the model loads
        if cf.contains_special(args.system):
            raise ValueError("--system must not contain special-token strings such as <|user|>")
        with plain_warnings():
            model, tok = load_model(args.model, args.variant, args.tokenizer, args.device)
            if next(model.parameters()).device.type == "cpu":
                use_decode_threads()  # before a compile; the process ends with the chat
            engine = Engine(model, max_batch_size=1, dtype=args.dtype, compile=args.compile,
                            announce=notice_to_stderr)
    except (LoadError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    if hasattr(sys.stdin, "reconfigure"):  # undecodable input bytes become U+FFFD, not a crash
        sys.stdin.reconfigure(errors="replace")
    console = Console(highlight=False)
    state = ChatState(show_thinking=args.show_thinking, system=replace_surrogates(args.system))
    device = next(model.parameters()).device
    # The vocabulary explains the size: tiny is 1.0M with the demo's fitted one, 2.8M with 16,384.
    console.print(f"Forge-1 chat ({model.num_parameters() / 1e6:.1f}M parameters: "
                  f"{model.config.preset_name() or 'custom shape'}, "
                  f"{model.config.vocab_size:,}-token vocabulary; on {device}). "
                  "/help lists the commands, /quit or Ctrl-D leaves.", markup=False)
    while True:
        try:
            # A lone surrogate (undecodable bytes) could not be saved as JSON: U+FFFD instead.
            line = replace_surrogates(console.input("[bold green]You:[/bold green] ")).strip()
        except (EOFError, KeyboardInterrupt):
            console.print("\nbye")
            return 0
        if not line:
            continue
        if line.startswith("/"):
            if not _command(line, state, console, str(args.model)):
                console.print("bye")
                return 0
            continue
        _reply(line, state, engine, tok, params, console)


if __name__ == "__main__":
    raise SystemExit(main())

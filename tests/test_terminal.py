"""Model text reaches the terminal cleaned (`text.terminal.terminal_safe`) in every printer,
while files keep the raw text (issue 22, item 5)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest
from rich.console import Console

from aethermind import demo
from aethermind.evaluation.evaluate import _prompt_table
from aethermind.inference.chat import ChatState, _command, _Printer, save_conversation
from aethermind.text import chat_format as cf
from aethermind.text.terminal import REPLACEMENT, terminal_safe

# What a model can emit that a terminal would act on.
HOSTILE = {
    "colour": "\x1b[31mred\x1b[0m",
    "clear screen": "\x1b[2J\x1b[H",
    "clipboard (OSC 52)": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "title (OSC, ST-terminated)": "\x1b]0;pwned\x1b\\",
    "one-byte CSI (C1)": "\x9b31m",
    "carriage return": "safe\rEVIL",
    "backspace and bell": "ab\x08\x07",
    "bidi override": "abc\u202edcb",
    "bidi isolate": "\u2066x\u2069",
    "DCS string": "\x1bPq#0\x1b\\",
    "lone surrogate": "\udcff",
}
UNSAFE_CHARS = set(map(chr, [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0),
                             *range(0x202a, 0x202f), *range(0x2066, 0x206a)]))


def _clean(out: str) -> bool:
    return not (set(out) & UNSAFE_CHARS) and not any(0xd800 <= ord(c) <= 0xdfff for c in out)


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_terminal_safe_leaves_nothing_a_terminal_acts_on(text):
    out = terminal_safe(text)
    assert _clean(out) and REPLACEMENT in out
    assert "52;" not in out and "]0;" not in out  # a whole sequence goes, not only its ESC


def test_terminal_safe_keeps_ordinary_text_newlines_and_tabs():
    text = "Line 1\n\tindented: é, 漢字, 😀, [bold]not markup[/bold], 100% <b>"
    assert terminal_safe(text) == text


def test_each_hostile_sequence_becomes_one_visible_mark():
    assert terminal_safe("a\x1b[31mb\x1b]52;c;eA==\x07c") == f"a{REPLACEMENT}b{REPLACEMENT}c"


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=120, force_terminal=False, color_system=None), buf


def test_chat_stream_prints_model_text_cleaned():
    console, buf = _console()
    printer = _Printer(console, show_thinking=True)
    for text in HOSTILE.values():
        printer("thinking", text)
    for text in HOSTILE.values():
        printer("answer", text)
    printer.end()
    assert _clean(buf.getvalue()) and "Forge-1: " in buf.getvalue()


def test_chat_save_keeps_the_raw_text(tmp_path):
    raw = HOSTILE["colour"] + HOSTILE["clipboard (OSC 52)"]
    state = ChatState(False, "s", [cf.Turn("hi", raw, raw)])
    saved = save_conversation(state, tmp_path / "c.json", "m.pt")
    turn = json.loads(saved.read_text(encoding="utf-8"))["turns"][0]
    assert turn["assistant"] == raw and turn["thinking"] == raw


def test_evaluate_table_prints_model_text_cleaned():
    rows = [{"prompt": "p\x1b[2J", "used_thinking": True, "thinking": text, "answer": text,
             "completion_tokens": 3, "seconds": 0.1, "tokens_per_second": 30.0}
            for text in HOSTILE.values() if "surrogate" not in text]
    console, buf = _console()
    console.print(_prompt_table(rows))
    assert _clean(buf.getvalue()) and "red" in buf.getvalue()


def test_demo_transcript_printing_is_cleaned_and_not_markup():
    console, buf = _console()
    for text in HOSTILE.values():
        demo._print_turn(console, "q", SimpleNamespace(used_thinking=True, thinking=text,
                                                        answer=text + " [dim]x[/dim]"))
    assert _clean(buf.getvalue()) and "[dim]x[/dim]" in buf.getvalue()


def test_chat_commands_echo_user_text_cleaned(tmp_path):
    """Chat's own messages quote what the user typed (a path, a command): that is cleaned too."""
    console, buf = _console()
    state = ChatState(False, "s", [cf.Turn("hi", "a", "")])
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    hostile = HOSTILE["clear screen"] + HOSTILE["clipboard (OSC 52)"]
    _command(f"/save {blocker}/{hostile}.json", state, console, "m.pt")  # cannot save
    _command(f"/save {tmp_path}/{hostile}.json", state, console, "m.pt")  # saved
    _command(f"/nope{hostile}", state, console, "m.pt")  # unknown command
    out = buf.getvalue()
    assert "cannot save" in out and "saved 1 turn" in out and "unknown command" in out
    assert _clean(out)

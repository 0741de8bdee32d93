"""Make model text safe to print on a terminal: the one rule every printer of model output uses.

A model can emit any character, and a terminal executes some of them: ESC sequences (colours,
cursor moves, screen clears, OSC 52 writes to the clipboard, OSC 8 links), C1 controls (U+0080
to U+009F; 0x9B is a one-byte CSI on some terminals), a carriage return or backspace that
overwrites what was shown, and bidi overrides that display text in another order than it
reads (CVE-2021-42574, "Trojan Source"). `terminal_safe` replaces a whole escape sequence, and
every other such character, with one U+FFFD, so the reader sees that something was there;
newline and tab stay. A lone surrogate (from undecodable input) becomes U+FFFD too, because
writing one to a UTF-8 stream raises. Streamed pieces may be cleaned one at a time: a
sequence split between pieces loses its ESC in the first piece, and the rest is plain text.
It does not touch what is written to files (transcripts and JSON keep the model's raw text)
and does not know about Rich: callers print the result with markup off (or as `Text`).
Usage: `console.print(terminal_safe(answer), markup=False)`.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_ESCAPE = (r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL or ST (clipboard, title, links)
           r"|\x1b\[[0-?]*[ -/]*[@-~]?"  # CSI: colours, cursor, clear screen
           r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS, SOS, PM, APC strings up to ST
           r"|\x1b[ -/]*[0-~]?")  # any other ESC sequence (or a lone ESC)
# C0 but \t and \n, DEL, C1, bidi embeddings/overrides/isolates, lone surrogates.
_CONTROL = r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
_UNSAFE = re.compile(f"{_ESCAPE}|{_CONTROL}")


def terminal_safe(text: str) -> str:
    """`text` with escape sequences and control, bidi-override and surrogate characters
    each replaced by U+FFFD; newlines and tabs kept."""
    return _UNSAFE.sub(REPLACEMENT, text)

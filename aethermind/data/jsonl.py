"""Reading user JSONL files safely: one encoding rule and one skipped-line rule for every reader.

Every command that reads a user's JSONL (preprocess, pack, training data, tokenizer training,
evaluate) goes through `numbered_lines`: UTF-8 with or without a byte-order mark is read; a
UTF-16/32 file, a binary file or invalid UTF-8 is a `DataFileError` naming the file (and line)
and the fix, never a traceback or a silently dropped record. Malformed lines are skipped,
counted and reported the same way everywhere with `skipped_note`. Imports nothing from the
package, so the tokenizer can use it too.
Usage: `for lineno, line in numbered_lines(path): ...`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path

_WIDE_BOMS = {codecs.BOM_UTF32_LE: "UTF-32", codecs.BOM_UTF32_BE: "UTF-32",
              codecs.BOM_UTF16_LE: "UTF-16", codecs.BOM_UTF16_BE: "UTF-16"}
SHOW_PLACES = 5  # file:line places named in a skipped-lines note


class DataFileError(ValueError):
    """A data file that cannot be read as UTF-8 text; the message is one line for the user."""


def check_text_file(path: str | Path) -> None:
    """Raise DataFileError if `path` is missing, unreadable, UTF-16/32 or binary."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(1 << 16)
    except OSError as err:
        raise DataFileError(f"{path}: cannot read ({err.strerror or err})") from None
    for bom, name in _WIDE_BOMS.items():  # UTF-32-LE's BOM starts with UTF-16-LE's: 32 first
        if head.startswith(bom):
            raise DataFileError(f"{path}: the file is {name}; save it as UTF-8 (one JSON "
                                "object per line)")
    if b"\0" in head:
        raise DataFileError(f"{path}: binary data, not text; expected UTF-8 JSONL (one JSON "
                            "object per line)")


def numbered_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of every non-blank line, UTF-8 with an optional BOM. Lines are
    decoded one by one, so an invalid byte is reported at its own line."""
    path = Path(path)
    check_text_file(path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFileError(f"{path}:{lineno}: not valid UTF-8 (byte "
                                    f"0x{raw[err.start]:02x}); save the file as UTF-8") from None
            if line.strip():
                yield lineno, line


def skipped_note(path: str | Path, places: list[int], total: int | None = None,
                 what: str = 'a JSON object with a "text" string') -> str:
    """One line: how many lines were skipped and the first few file:line places."""
    total = len(places) if total is None else total
    shown = ", ".join(f"{path}:{n}" for n in places[:SHOW_PLACES])
    more = f" (+{total - SHOW_PLACES} more)" if total > SHOW_PLACES else ""
    return f"skipped {total} malformed line(s), expected {what}: {shown}{more}"

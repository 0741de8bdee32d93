"""`aethermind tokenizer train`: fit a Forge-1 byte-level BPE tokenizer on a JSONL file or on the
built-in offline corpus (`tokenizer_corpus`), and save it.

It lives with the data code because that is what it reads; `aethermind.text.tokenizer` stays a leaf
that only loads, trains and applies a tokenizer.
Usage: `aethermind tokenizer train --input data/train.jsonl --vocab-size 32000 --output tok/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from aethermind.data.jsonl import numbered_lines, skipped_note
from aethermind.data.tokenizer_corpus import builtin_corpus
from aethermind.text.tokenizer import Forge1Tokenizer


def read_jsonl_texts(path: Path, key: str) -> Iterator[str]:
    """The `key` string of every JSONL line. Malformed lines are skipped and reported on stderr
    (count + first places), as every data reader does; an unreadable file is a DataFileError."""
    bad: list[int] = []
    for lineno, line in numbered_lines(path):
        try:
            text = json.loads(line)[key]
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            text = None
        if isinstance(text, str):
            yield text
        else:
            bad.append(lineno)
    if bad:
        print(f"warning: {skipped_note(path, bad, what=f'a JSON object with a {key!r} string')}",
              file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind tokenizer",
                                     description="Train a Forge-1 byte-level BPE tokenizer.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train on a JSONL file (or the built-in offline corpus)")
    src = tr.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", type=Path, help="JSONL file with a text field per line")
    src.add_argument("--builtin-corpus", action="store_true",
                     help="the offline corpus the bundled default tokenizer was trained on")
    tr.add_argument("--key", default="text", help="JSON field holding the text (default: text)")
    tr.add_argument("--vocab-size", type=int, required=True,
                    help="tokens in the vocabulary, special tokens included")
    tr.add_argument("--min-frequency", type=int, default=2,
                    help="merge only pairs seen at least this often (default 2)")
    tr.add_argument("--output", type=Path, required=True, help="directory to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.builtin_corpus:
        texts: Iterable[str] = builtin_corpus()
    else:
        if not args.input.is_file():
            parser.error(f"--input {args.input}: file not found")
        texts = read_jsonl_texts(args.input, args.key)
    try:
        tok = Forge1Tokenizer.train(texts, args.vocab_size, args.min_frequency)
        out = tok.save(args.output)
    except (OSError, ValueError) as err:  # ValueError includes an unreadable --input
        parser.exit(1, f"aethermind tokenizer: {err}\n")
    except KeyboardInterrupt:
        parser.exit(130, "aethermind tokenizer: interrupted; nothing written\n")
    print(f"tokenizer: {tok.get_vocab_size()} tokens (padded {tok.get_vocab_size_padded()}), "
          f"fingerprint {tok.fingerprint()} -> {out}/tokenizer.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

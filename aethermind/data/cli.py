"""`aethermind data download|preprocess|synth|pack`: the data pipeline's command line.

download and preprocess live in their own modules (the guide's scripts call them too); synth
and pack are small enough to parse here. Errors are one line on stderr and a non-zero exit.
`build_parser()` assembles every sub-command's parser into one tree (for help and the flag
vocabulary test); `main` dispatches by name so each sub-command imports only what it needs.
Usage: `aethermind data synth --output data` then `aethermind data pack --input
data/train.jsonl --output data/shards/train`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from aethermind.data import download, identity, preprocess
from aethermind.data.jsonl import skipped_note
from aethermind.data.pack import LAYOUTS, build_shards, read_index
from aethermind.data.synth import write_synth
from aethermind.text.tokenizer import Forge1Tokenizer

SUBCOMMANDS = {
    "download": "fetch raw datasets into data/raw/ (hub or local files)",
    "preprocess": "raw datasets -> Forge-1 chat text (data/train.jsonl, data/val.jsonl)",
    "synth": "write the built-in reasoning data (data/train.jsonl, data/val.jsonl)",
    "pack": "tokenize a JSONL file into memmap shards for training",
    "identity": "write the identity fine-tuning set (who the model is), mixed with your data",
}
USAGE = "usage: aethermind data <command> [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<10}  {help_}" for name, help_ in SUBCOMMANDS.items())


def add_old_output_alias(parser: argparse.ArgumentParser) -> None:
    """`--out`, the spelling before every command said `--output`: still accepted, not shown
    (older copies of the guide use it)."""
    parser.add_argument("--out", dest="output", type=Path, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)


def synth_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind data synth",
                                     description="Write the built-in reasoning conversations.")
    parser.add_argument("--output", type=Path, default=Path("data"),
                        help="directory for train.jsonl and val.jsonl (default: data)")
    add_old_output_alias(parser)
    parser.add_argument("--n-train", type=int, default=20000,
                        help="training examples (turns; default 20000)")
    parser.add_argument("--n-val", type=int, default=500,
                        help="validation examples (turns; default 500)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for the generated questions (default 0)")
    return parser


def synth_main(argv: list[str] | None = None) -> int:
    args = synth_parser().parse_args(argv)
    if args.n_train < 1 or args.n_val < 0:
        print("synth: --n-train must be at least 1 and --n-val at least 0", file=sys.stderr)
        return 2
    train, val = write_synth(args.output, args.n_train, args.n_val, args.seed)
    chats = [len(p.read_text(encoding="utf-8").splitlines()) for p in (train, val)]
    print(f"wrote {args.n_train} examples in {chats[0]} conversations to {train} and "
          f"{args.n_val} in {chats[1]} to {val}")
    return 0


def pack_parser() -> argparse.ArgumentParser:
    workers = max(1, min(8, os.cpu_count() or 1))
    parser = argparse.ArgumentParser(prog="aethermind data pack",
                                     description="Tokenize JSONL text into memmap shards.")
    parser.add_argument("--input", type=Path, default=Path("data/train.jsonl"),
                        help="JSONL with a text field per line (default: data/train.jsonl)")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer dir (default: the bundled one)")
    parser.add_argument("--output", type=Path, default=Path("data/shards/train"),
                        help="directory for the shards (default: data/shards/train)")
    add_old_output_alias(parser)
    parser.add_argument("--context-length", type=int, default=1024,
                        help="tokens per row (default 1024)")
    parser.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0],
                        help="packed: several chats a row, document-masked; padded: one chat "
                             "a row; bestfit: whole chats best-fit into rows (default: "
                             f"{LAYOUTS[0]})")
    parser.add_argument("--workers", type=int, default=workers,
                        help=f"tokenizing processes (default {workers}: the cores, at most 8)")
    return parser


def pack_main(argv: list[str] | None = None) -> int:
    args = pack_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        tok = Forge1Tokenizer(args.tokenizer)
        out = build_shards(args.input, tok, args.output, context_length=args.context_length,
                           layout=args.layout, workers=args.workers)
    except (OSError, ValueError) as err:
        print(f"pack: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pack: interrupted; {args.output} left as it was", file=sys.stderr)
        return 130
    idx = read_index(out)
    if idx["malformed_lines"]:
        note = skipped_note(args.input, idx["malformed_first"], idx["malformed_lines"])
        print(f"warning: {note}", file=sys.stderr)
    secs = time.perf_counter() - start
    print(f"packed {idx['n_documents']} documents into {idx['n_samples']} {args.layout} samples "
          f"of {args.context_length} tokens ({idx['real_tokens']:,} tokens, "
          f"{idx['dropped_too_long']} too long dropped, {idx['malformed_lines']} malformed "
          f"lines) -> {out} in {secs:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every sub-command's own parser under one `aethermind data` parser (imports them all)."""
    builders = {"download": download.build_parser, "preprocess": preprocess.build_parser,
                "synth": synth_parser, "pack": pack_parser,
               "identity": identity.build_parser}
    parser = argparse.ArgumentParser(prog="aethermind data",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name, help_ in SUBCOMMANDS.items():
        own = builders[name]()
        sub.add_parser(name, help=help_, description=own.description, parents=[own],
                       add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "download":
        run = download.main
    elif command == "preprocess":
        run = preprocess.main
    elif command == "synth":
        run = synth_main
    elif command == "pack":
        run = pack_main
    elif command == "identity":
        run = identity.main
    else:
        print(f"aethermind data: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return int(run(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

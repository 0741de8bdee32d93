"""`aethermind data download|preprocess|synth|pack`: the data pipeline's command line.

download and preprocess live in their own modules (the guide's scripts call them too); synth
and pack are small enough to parse here. Errors are one line on stderr and a non-zero exit.
Usage: `aethermind data synth --out data` then `aethermind data pack --input data/train.jsonl
--out data/shards/train`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

USAGE = """usage: aethermind data <command> [options]

commands:
  download    fetch raw datasets into data/raw/ (hub or local files)
  preprocess  raw datasets -> Forge-1 chat text (data/train.jsonl, data/val.jsonl)
  synth       write the built-in reasoning data (data/train.jsonl, data/val.jsonl)
  pack        tokenize a JSONL file into memmap shards for training"""


def synth_main(argv: list[str] | None = None) -> int:
    from aethermind.data.synth import write_synth

    parser = argparse.ArgumentParser(prog="aethermind data synth",
                                     description="Write the built-in reasoning conversations.")
    parser.add_argument("--out", type=Path, default=Path("data"),
                        help="directory for train.jsonl and val.jsonl (default: data)")
    parser.add_argument("--n-train", type=int, default=20000, help="training examples (turns)")
    parser.add_argument("--n-val", type=int, default=500, help="validation examples (turns)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n_train < 1 or args.n_val < 0:
        print("synth: --n-train must be at least 1 and --n-val at least 0", file=sys.stderr)
        return 2
    train, val = write_synth(args.out, args.n_train, args.n_val, args.seed)
    chats = [len(p.read_text(encoding="utf-8").splitlines()) for p in (train, val)]
    print(f"wrote {args.n_train} examples in {chats[0]} conversations to {train} and "
          f"{args.n_val} in {chats[1]} to {val}")
    return 0


def pack_main(argv: list[str] | None = None) -> int:
    from aethermind.data.jsonl import skipped_note
    from aethermind.data.pack import LAYOUTS, build_shards, read_index
    from aethermind.text.tokenizer import Forge1Tokenizer

    parser = argparse.ArgumentParser(prog="aethermind data pack",
                                     description="Tokenize JSONL text into memmap shards.")
    parser.add_argument("--input", type=Path, default=Path("data/train.jsonl"))
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer dir (default: the bundled one)")
    parser.add_argument("--out", type=Path, default=Path("data/shards/train"))
    parser.add_argument("--context-length", type=int, default=1024)
    parser.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0])
    parser.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        tok = Forge1Tokenizer(args.tokenizer)
        out = build_shards(args.input, tok, args.out, context_length=args.context_length,
                           layout=args.layout, workers=args.workers)
    except (OSError, ValueError) as err:
        print(f"pack: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pack: interrupted; {args.out} left as it was", file=sys.stderr)
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "download":
        from aethermind.data.download import main as run
    elif command == "preprocess":
        from aethermind.data.preprocess import main as run
    elif command == "synth":
        run = synth_main
    elif command == "pack":
        run = pack_main
    else:
        print(f"aethermind data: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return int(run(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

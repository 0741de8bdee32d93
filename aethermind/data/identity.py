"""The identity set: 20 question-answer pairs about the model itself, as fine-tuning data.

`assets/identity/identity.jsonl` holds the pairs ({"question", "answer"}); `write_identity`
renders them as no-think chats, repeated `repeat` times, mixed with `n_mix` lines sampled from
an existing training file (the demo's own data, so fine-tuning does not make the model forget
it), shuffled with `seed`, into <output>/train.jsonl; <output>/val.jsonl is the pairs once.
Scoring a model on them is `evaluation.identity`'s.
Usage: `aethermind data identity --mix outputs/demo/data/train.jsonl --output data/identity`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from importlib import resources
from pathlib import Path

from aethermind.data.jsonl import check_text_file
from aethermind.runtime.files import atomic_text
from aethermind.text.chat_format import Conversation, Turn, render

IDENTITY_ASSET = "assets/identity/identity.jsonl"
# The measured recipe (bench/identity_demo.py, BENCHMARKS.md): enough copies to learn the pairs
# in configs/identity.yaml's 600 steps, enough of the model's own data that it forgets nothing.
DEFAULT_REPEAT, DEFAULT_N_MIX = 30, 2000


def load_pairs() -> list[tuple[str, str]]:
    """The built-in (question, answer) pairs, in file order."""
    text = resources.files("aethermind").joinpath(IDENTITY_ASSET).read_text(encoding="utf-8")
    return [(r["question"], r["answer"]) for r in map(json.loads, text.splitlines())]


def render_pair(question: str, answer: str) -> str:
    return render(Conversation(turns=[Turn(question, answer)]))  # <|no_think|>: a plain fact


def write_identity(output: str | Path, mix: str | Path | None = None, *,
                   repeat: int = DEFAULT_REPEAT, n_mix: int = DEFAULT_N_MIX, seed: int = 0
                   ) -> tuple[Path, Path]:
    """Write output/train.jsonl (pairs x repeat + n_mix sampled `mix` lines, shuffled) and
    output/val.jsonl (the pairs once); returns their paths. ValueError for bad input."""
    if repeat < 1 or n_mix < 0:
        raise ValueError("--repeat must be at least 1 and --n-mix at least 0")
    rng = random.Random(seed)
    pairs = [json.dumps({"text": render_pair(q, a)}, ensure_ascii=False) for q, a in
             load_pairs()]
    lines = pairs * repeat
    if mix is not None and n_mix:
        check_text_file(mix)  # a one-line DataFileError (ValueError) for a bad file
        own = [line for line in Path(mix).read_text(encoding="utf-8").splitlines() if line]
        lines += rng.sample(own, min(n_mix, len(own)))
    rng.shuffle(lines)
    out = Path(output)
    train, val = out / "train.jsonl", out / "val.jsonl"
    atomic_text("\n".join(lines) + "\n", train)
    atomic_text("\n".join(pairs) + "\n", val)
    return train, val


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aethermind data identity",
                                description="Write the identity fine-tuning set (20 pairs "
                                "about the model itself), mixed with some of your own data.")
    p.add_argument("--output", type=Path, default=Path("data/identity"),
                   help="directory for train.jsonl and val.jsonl (default: data/identity)")
    p.add_argument("--mix", type=Path,
                   help="a training JSONL to sample from, so the model keeps what it knew "
                        "(e.g. outputs/demo/data/train.jsonl)")
    p.add_argument("--n-mix", type=int, default=DEFAULT_N_MIX,
                   help=f"lines sampled from --mix (default {DEFAULT_N_MIX})")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                   help=f"copies of each pair in train.jsonl (default {DEFAULT_REPEAT})")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and shuffling")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.mix is not None and not args.mix.is_file():
        print(f"identity: --mix {args.mix}: file not found", file=sys.stderr)
        return 1
    try:
        train, val = write_identity(args.output, args.mix, repeat=args.repeat,
                                    n_mix=args.n_mix, seed=args.seed)
    except (OSError, ValueError) as err:
        print(f"identity: {err}", file=sys.stderr)
        return 1
    print(f"wrote {train} and {val}")
    return 0

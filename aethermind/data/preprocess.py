"""Raw JSONL records (hub schemas) -> Forge-1 training text: data/train.jsonl + data/val.jsonl.

Reads every `*.jsonl` in the raw directory (the three guide datasets first, then any added with
`download --add`), converts each record with `schemas.to_conversation`, renders it with
`chat_format.render` (the only template writer), drops exact duplicates (hash of the rendered
text), samples over the token limit and, with `--max-think-tokens N`, samples with a thinking
trace over N tokens (OpenThoughts' traces run to thousands; short ones teach small models
better). Both limits drop and count, never truncate: a cut trace would teach the model to jump
from half a derivation to the answer. It splits off a deterministic held-out set by a hash of
the text. Prints a per-dataset table of what was read, kept and dropped, and where malformed
lines are (file:line).
Usage: `python data/preprocess.py --max-samples 1000` or `aethermind data preprocess`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import typing
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from aethermind.data import schemas
from aethermind.data.jsonl import check_text_file, numbered_lines
from aethermind.runtime.files import staged_path
from aethermind.text.chat_format import Conversation, encode, render
from aethermind.text.tokenizer import Forge1Tokenizer

GUIDE_FILES = ("openhermes", "platypus", "openthoughts")
DROP_REASONS = ("malformed", "no_pair", "unbalanced_markers", "duplicate", "too_long",
                "think_too_long")


@dataclass
class Stats:
    name: str
    read: int = 0
    train: int = 0
    val: int = 0
    dropped: Counter = field(default_factory=Counter)
    malformed_at: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return self.train + self.val


def _opt(default: Any, help_: str) -> Any:
    """A config field whose help text the command line reads (see `add_config_args`)."""
    return field(default=default, metadata={"help": help_})


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    raw_dir: Path = _opt(Path("data/raw"), "where download writes (or users drop) raw JSONL")
    output: Path = _opt(Path("data/train.jsonl"), "the train split; val goes beside it")
    val_output: Path | None = _opt(None, "held-out file (default: val.jsonl beside --output)")
    max_samples: int | None = _opt(None, "keep at most N samples per dataset")
    max_tokens: int = _opt(2048, "drop samples longer than this many tokens (0 = no limit)")
    max_think_tokens: int = _opt(0, "drop samples whose thinking trace (any turn's) is longer "
                                    "than this many tokens (0 = no limit)")
    val_fraction: float = _opt(0.02, "share of samples held out, chosen by text hash")
    inputs: tuple[Path, ...] = _opt((), "a raw JSONL file to read (repeatable; default: all "
                                        "in --raw-dir)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction={self.val_fraction}: must be in [0, 1)")
        for name in ("max_tokens", "max_think_tokens"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: must be at least 0 "
                                 "(0 = no limit)")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"max_samples={self.max_samples}: must be at least 1")


def raw_files(cfg: PreprocessConfig) -> list[Path]:
    """The inputs to read, guide datasets first; a clear FileNotFoundError if there are none."""
    if cfg.inputs:
        missing = [str(p) for p in cfg.inputs if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"input file not found: {', '.join(missing)}")
        return list(cfg.inputs)
    files = sorted(cfg.raw_dir.glob("*.jsonl"),
                   key=lambda p: (GUIDE_FILES.index(p.stem) if p.stem in GUIDE_FILES else 9,
                                  p.name))
    if not files:
        raise FileNotFoundError(
            f"no raw data in {cfg.raw_dir}/ (expected openhermes.jsonl, platypus.jsonl, "
            "openthoughts.jsonl): run `python data/download_datasets.py 1000`, put JSONL files "
            "there by hand, or use the built-in data with `aethermind data synth`")
    return files


def is_val(text: str, fraction: float) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 1_000_000 < fraction * 1_000_000


def _records(path: Path, stats: Stats):
    for lineno, line in numbered_lines(path):
        stats.read += 1
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError:
            _malformed(stats, path, lineno)


def _malformed(stats: Stats, path: Path, lineno: int) -> None:
    stats.dropped["malformed"] += 1
    stats.malformed_at.append(f"{path}:{lineno}")


def _process_file(path: Path, cfg: PreprocessConfig, tok: Forge1Tokenizer, seen: set[bytes],
                  out_train, out_val) -> Stats:
    stats = Stats(path.stem)
    for lineno, record in _records(path, stats):
        if cfg.max_samples is not None and stats.kept >= cfg.max_samples:
            stats.read -= 1  # not looked at: the cap was reached
            break
        try:
            conv = schemas.to_conversation(record)
        except schemas.Malformed:
            _malformed(stats, path, lineno)
            continue
        except schemas.Dropped as drop:
            stats.dropped[drop.reason] += 1
            continue
        if cfg.max_think_tokens and _think_too_long(conv, tok, cfg.max_think_tokens):
            stats.dropped["think_too_long"] += 1
            continue
        text = render(conv)
        key = hashlib.sha256(text.encode("utf-8")).digest()
        if key in seen:
            stats.dropped["duplicate"] += 1
            continue
        if cfg.max_tokens and len(text.encode("utf-8")) > cfg.max_tokens \
                and len(encode(conv, tok)[0]) > cfg.max_tokens:  # a token is >= 1 byte
            stats.dropped["too_long"] += 1
            continue
        seen.add(key)
        line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
        if is_val(text, cfg.val_fraction):
            out_val.write(line)
            stats.val += 1
        else:
            out_train.write(line)
            stats.train += 1
    return stats


def _think_too_long(conv: Conversation, tok: Forge1Tokenizer, limit: int) -> bool:
    """Whether a turn's thinking has more than `limit` tokens (bytes first: a token is at
    least one byte, so a short trace needs no tokenizing)."""
    return any(t.thinking and len(t.thinking.encode("utf-8")) > limit
               and len(tok.encode(t.thinking)) > limit for t in conv.turns)


def preprocess(cfg: PreprocessConfig, tokenizer: Forge1Tokenizer | None = None) -> list[Stats]:
    """Write cfg.output and the val file (atomically); returns per-dataset stats."""
    files = raw_files(cfg)
    for path in files:  # every input readable before any work (DataFileError is a ValueError)
        check_text_file(path)
    tok = tokenizer or Forge1Tokenizer()
    val_path = cfg.val_output or cfg.output.with_name("val.jsonl")
    if val_path.resolve() == cfg.output.resolve():
        raise ValueError(f"train and val outputs are the same file {val_path}: pass --val-output")
    cfg.output.parent.mkdir(parents=True, exist_ok=True)
    val_path.parent.mkdir(parents=True, exist_ok=True)
    seen: set[bytes] = set()
    with staged_path(cfg.output) as tmp_train, staged_path(val_path) as tmp_val:
        with tmp_train.open("w", encoding="utf-8") as f_train, \
                tmp_val.open("w", encoding="utf-8") as f_val:
            stats = [_process_file(p, cfg, tok, seen, f_train, f_val) for p in files]
        if not sum(st.kept for st in stats):  # never replace good data with nothing
            reasons: Counter = Counter()
            for st in stats:
                reasons.update(st.dropped)
            detail = ", ".join(f"{n} {r}" for r, n in reasons.items()) or "no records"
            places = [at for st in stats for at in st.malformed_at][:3]
            where = f", malformed at {', '.join(places)}" if places else ""
            raise ValueError(f"no samples kept from {len(files)} file(s) ({detail}{where}); "
                             f"{cfg.output} and {val_path} left unchanged")
    return stats


def print_summary(stats: list[Stats], cfg: PreprocessConfig) -> None:
    table = Table(title="Preprocess summary (dropped per reason on the right)")
    for col in ("dataset", "read", "kept", "train", "val", *DROP_REASONS):
        table.add_column(col.replace("_", " "), justify="left" if col == "dataset" else "right",
                         no_wrap=True)
    total = Stats("total")
    for s in stats:
        table.add_row(s.name, *map(str, (s.read, s.kept, s.train, s.val)),
                      *(str(s.dropped[r]) for r in DROP_REASONS))
        total.read, total.train, total.val = total.read + s.read, total.train + s.train, \
            total.val + s.val
        total.dropped.update(s.dropped)
    table.add_row("total", *map(str, (total.read, total.kept, total.train, total.val)),
                  *(str(total.dropped[r]) for r in DROP_REASONS), style="bold")
    console = Console() if sys.stdout.isatty() else Console(width=140)  # logs: never squash
    console.print(table)
    for s in stats:
        if s.malformed_at:
            more = f" (+{len(s.malformed_at) - 5} more)" if len(s.malformed_at) > 5 else ""
            console.print(f"malformed lines skipped: {', '.join(s.malformed_at[:5])}{more}",
                          markup=False)
    val = cfg.val_output or cfg.output.with_name("val.jsonl")
    console.print(f"wrote {total.train} samples to {cfg.output} and {total.val} to {val}",
                  markup=False)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """One option per PreprocessConfig field (`inputs` is the repeatable `--input`); the
    defaults and help come from the dataclass, so the two cannot drift apart."""
    hints = typing.get_type_hints(PreprocessConfig)
    for f in fields(PreprocessConfig):
        if f.name == "inputs":
            parser.add_argument("--input", dest="inputs", type=Path, action="append",
                                metavar="FILE", default=[], help=f.metadata["help"])
            continue
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],)
                    if t is not type(None))
        shown = "" if f.default is None else f" (default: {f.default})"
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=f.default,
                            help=f.metadata["help"] + shown)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aethermind data preprocess",
        description="Convert raw datasets in data/raw/ to Forge-1 chat text (JSONL).")
    add_config_args(parser)
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="tokenizer dir for the length limit (default: bundled)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        values = {f.name: getattr(args, f.name) for f in fields(PreprocessConfig)}
        cfg = PreprocessConfig(**values | {"inputs": tuple(args.inputs)})
        tok = Forge1Tokenizer(args.tokenizer) if args.tokenizer else None
        stats = preprocess(cfg, tok)
    except (OSError, ValueError) as err:
        print(f"preprocess: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("preprocess: interrupted; existing outputs left unchanged", file=sys.stderr)
        return 130
    print_summary(stats, cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

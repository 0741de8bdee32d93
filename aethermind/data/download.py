"""Fetch raw datasets, unchanged in their own schema, into data/raw/<name>.jsonl.

The guide's three datasets by default; `--only` picks some, `--add NAME=SOURCE` adds any hub
dataset (`owner/name[:config]`) or local JSONL/parquet file in the `messages: [{role,
content}]` or GSM8K `question`/`answer` schema. Small N streams from the hub instead of
downloading whole datasets. Each file is written to a temp file and renamed, with a
`<name>.meta.json` beside it: a re-run with the same N reuses it, and a failed run never damages
what is there. Without the hub (offline mode or no route) it says so in one line and exits 1.
Knows nothing about the Forge-1 format (that is preprocess.py).
Usage: `python data/download_datasets.py 1000` or `aethermind data download 1000`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from aethermind.runtime.files import atomic_text, staged_path

HUB_HOST = "huggingface.co"


@dataclass(frozen=True)
class Source:
    name: str  # output file stem in the raw dir
    path: str  # hub id or local file
    config: str | None = None
    split: str = "train"

    @property
    def is_local(self) -> bool:
        return Path(self.path).suffix in (".jsonl", ".json", ".parquet")


GUIDE_DATASETS = {
    "openhermes": Source("openhermes", "teknium/OpenHermes-2.5"),
    "platypus": Source("platypus", "garage-bAInd/Open-Platypus"),
    "openthoughts": Source("openthoughts", "open-thoughts/OpenThoughts-114k"),
}


class DownloadError(RuntimeError):
    """One-line, user-facing reason a dataset could not be fetched."""


def parse_add(spec: str) -> Source:
    """`NAME=owner/dataset[:config]` or `NAME=path/to/file.jsonl|.parquet`."""
    name, sep, target = spec.partition("=")
    if not sep or not name.isidentifier() or not target:
        raise ValueError(f"--add {spec!r}: expected NAME=owner/dataset[:config] or "
                         "NAME=path/to/file.jsonl (NAME: letters, digits, underscores)")
    if Path(target).suffix in (".jsonl", ".json", ".parquet"):
        return Source(name, target)
    repo, _, config = target.partition(":")
    return Source(name, repo, config or None)


def hub_offline_reason(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be used, checked fast (no long network timeouts), or None."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}=1 is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy")):
        return None  # a proxy resolves names itself: a direct probe says nothing, let it try
    result: list[BaseException | None] = []

    def probe() -> None:  # in a thread: a hanging DNS lookup must not block us
        try:
            socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(err)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not result:
        return f"no answer from {HUB_HOST} within {timeout:.0f} s"
    return None if result[0] is None else f"cannot connect to {HUB_HOST} ({result[0]})"


def _local_records(src: Source) -> Iterator[dict]:
    path = Path(src.path)
    if not path.is_file():
        raise DownloadError(f"{src.name}: local file {path} not found")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # here: pyarrow and datasets take seconds to import

        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            yield from batch.to_pylist()
        return
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    raise DownloadError(f"{src.name}: {path}:{lineno} is not valid JSON") from None


def _hub_records(src: Source, n: int | None) -> Iterable[dict]:
    import datasets  # here, not at the top: only a hub download needs it (seconds to import)

    datasets.utils.logging.disable_progress_bar()
    # Streaming reads only the first N rows; without N, a full download is faster overall.
    return datasets.load_dataset(src.path, src.config, split=src.split, streaming=n is not None)


def _meta_path(out: Path) -> Path:
    return out.with_name(out.stem + ".meta.json")


def is_current(out: Path, src: Source, n: int | None) -> bool:
    """True when `out` holds exactly this source at this N from an earlier complete run."""
    meta = _meta_path(out)
    if not (out.is_file() and meta.is_file()):
        return False
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return info.get("source") == src.path and info.get("config") == src.config \
        and info.get("n") == n and info.get("size") == out.stat().st_size \
        and info.get("source_stamp") == _source_stamp(src)


def _source_stamp(src: Source) -> list[int] | None:
    """(size, mtime) of a local source, so an edited local file is copied again."""
    path = Path(src.path)
    if not src.is_local or not path.is_file():
        return None
    return [path.stat().st_size, path.stat().st_mtime_ns]


def fetch(src: Source, n: int | None, raw_dir: Path, *, offline_reason: str | None = None
          ) -> tuple[Path, int, bool]:
    """Write `raw_dir/<name>.jsonl`; returns (path, records, reused)."""
    out = raw_dir / f"{src.name}.jsonl"
    if is_current(out, src, n):
        return out, sum(1 for _ in out.open(encoding="utf-8")), True
    if not src.is_local and offline_reason:
        raise DownloadError(
            f"{src.name}: cannot download {src.path}: the Hugging Face hub is unreachable "
            f"({offline_reason}); to use local files instead, put a JSONL file in its schema at "
            f"{out} (or pass --add NAME=path/to/file.jsonl) and run `python data/preprocess.py`")
    raw_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with staged_path(out) as tmp:
        try:
            records = _local_records(src) if src.is_local else _hub_records(src, n)
            with tmp.open("w", encoding="utf-8") as f:
                for record in _progress(records, n, src.name):
                    f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                    count += 1
                    if n is not None and count >= n:
                        break
        except DownloadError:
            raise
        except Exception as err:  # hub/library errors: many types, one user-facing line
            first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            raise DownloadError(f"{src.name}: failed to fetch {src.path}: "
                                f"{type(err).__name__}: {first}") from None
    meta = {"source": src.path, "config": src.config, "split": src.split, "n": n,
            "records": count, "size": out.stat().st_size, "source_stamp": _source_stamp(src)}
    atomic_text(json.dumps(meta, indent=2) + "\n", _meta_path(out))
    return out, count, False


def _progress(records: Iterable[dict], n: int | None, name: str) -> Iterator[dict]:
    columns = [TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task(name, total=n)
        for record in records:
            yield record
            bar.advance(task)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aethermind data download",
        description="Download raw datasets (unchanged) into data/raw/<name>.jsonl.")
    parser.add_argument("n", nargs="?", type=int, default=None,
                        help="samples per dataset (default: all)")
    parser.add_argument("--only", default=",".join(GUIDE_DATASETS),
                        help="comma-separated guide datasets to fetch, or 'none' "
                             f"(default: {','.join(GUIDE_DATASETS)})")
    parser.add_argument("--add", action="append", default=[], metavar="NAME=SOURCE",
                        help="extra dataset in messages or GSM8K schema: NAME=owner/dataset"
                             "[:config] or NAME=path/to/file.jsonl|.parquet (repeatable)")
    parser.add_argument("--raw-dir", type=Path, default=Path("data/raw"),
                        help="where the raw <name>.jsonl files go (default: data/raw)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.n is not None and args.n < 1:
            raise ValueError(f"N={args.n}: must be at least 1 (omit it for everything)")
        names = [] if args.only == "none" else [x.strip() for x in args.only.split(",") if x]
        unknown = [x for x in names if x not in GUIDE_DATASETS]
        if unknown:
            raise ValueError(f"unknown dataset {unknown[0]!r}: choose from "
                             f"{', '.join(GUIDE_DATASETS)} or use --add NAME=SOURCE")
        sources = [GUIDE_DATASETS[x] for x in names] + [parse_add(s) for s in args.add]
    except ValueError as err:
        print(f"download: {err}", file=sys.stderr)
        return 2
    offline = None
    if any(not s.is_local and not is_current(args.raw_dir / f"{s.name}.jsonl", s, args.n)
           for s in sources):
        offline = hub_offline_reason()
    for src in sources:
        try:
            out, count, reused = fetch(src, args.n, args.raw_dir, offline_reason=offline)
        except DownloadError as err:
            print(f"download: {err}", file=sys.stderr)
            return 1
        print(f"{src.name}: {'reused' if reused else 'wrote'} {count} records -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tokenize a `{"text": ...}` JSONL file once into memmap shards that `loader.BatchLoader` reads.

A shard directory holds `tokens.bin` (uint16 when the vocab fits, else uint32), `mask.bin`
(uint8, 1 = this token is a training target) and `index.json` (format version, layout, context
length, dtype, tokenizer fingerprint and special ids, counts, malformed lines, and the source's
size/mtime/SHA-256). Three layouts (`LAYOUTS`), all read as samples of `context_length + 1`
tokens (inputs plus the shifted target):
- packed (the default): documents (each `<|bos|> ... <|eos|>`) are concatenated into one stream
  and cut into windows of `context_length` tokens, each reading one extra token for the last
  target; only the final window is padded. Documents are cut at window edges. Attention is
  masked at document boundaries: the loader returns `doc_ids` (a running count of `<|bos|>`)
  for the model's `doc_ids=` argument.
- padded: one document per row, right-padded with `<|pad|>` (never a target); a document
  longer than `context_length + 1` tokens is dropped, not truncated (a cut answer would teach
  answers without an end), and counted in `index.json` as `dropped_too_long`.
- bestfit: whole documents packed best-fit decreasing into padded rows (within windows of
  BESTFIT_WINDOW documents), attention masked at document boundaries as in packed: no
  document is cut (packed cuts ~1 in 4 short chats mid-question), for ~3% padding. Documents
  too long for a row are dropped and counted as in padded. Measured better for many short
  documents (the built-in reasoning data).
A line whose text is a Forge-1 conversation is encoded with `chat_format.encode` (loss on the
think block and answers only); any other text is a plain document `<|bos|> text <|eos|>` with
loss on every token after `<|bos|>`. Lines that are not JSON objects with a string "text" are
skipped and counted (`malformed_lines`, the first 20 line numbers in `malformed_first`).
Tokenization runs in `workers` spawned processes over chunks of lines (inputs under
MIN_PARALLEL_BYTES use one); the output is the same for any worker count. `build_shards` writes
into a temp dir renamed into place, so a crash never leaves a half-built shard dir (the temp
dirs of dead processes are removed by the next build); `ensure_shards` reuses a cached dir
while format, tokenizer, context length, layout and input content all match. This module
knows nothing about torch or batching.
Usage: `shard_dir = ensure_shards("data/train.jsonl", tok, "data/cache", context_length=512)`.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import signal
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from aethermind.data.jsonl import numbered_lines
from aethermind.runtime.files import staged_path
from aethermind.text.chat_format import encode, parse
from aethermind.text.tokenizer import Forge1Tokenizer

FORMAT_VERSION = 1
Layout = Literal["packed", "padded", "bestfit"]
LAYOUTS: tuple[Layout, ...] = get_args(Layout)  # the first is the default
BESTFIT_WINDOW = 16384  # documents packed together: bounds RAM, ~1% more padding than all
CHUNK_LINES = 256  # lines per worker task: big enough to amortise IPC, small enough to balance
# Below this input size one process is faster: a spawned worker pays ~0.5 s of imports (numpy,
# tokenizers; not torch), and the Rust tokenizer already uses every core inside one process.
MIN_PARALLEL_BYTES = 8 << 20


class StaleShardsError(ValueError):
    """Shards built from another tokenizer or input than the caller expects."""


def file_signature(path: Path, *, full_hash: bool = True) -> dict:
    """Size, mtime and (optionally) SHA-256 of a file: what the shards were built from."""
    st = path.stat()
    sig = {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if full_hash:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        sig["sha256"] = h.hexdigest()
    return sig


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


# --- worker side --------------------------------------------------------------------------
_WORKER_TOK: Forge1Tokenizer | None = None


def _init_worker(tokenizer_dir: str) -> None:
    global _WORKER_TOK
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the pool is the parallelism now
    _WORKER_TOK = Forge1Tokenizer(tokenizer_dir)


def _encode_text(text: str, tok: Forge1Tokenizer) -> tuple[list[int], list[int], bool]:
    """(ids, loss mask, is_chat). Non-template text becomes `<|bos|> text <|eos|>`, all loss."""
    try:
        ids, mask = encode(parse(text), tok)
        return ids, mask, True
    except ValueError:
        ids = [tok.bos_id, *tok.encode(text), tok.eos_id]
        return ids, [0] + [1] * (len(ids) - 1), False


def _encode_chunk(chunk: list[tuple[int, str]], tok: Forge1Tokenizer | None = None) -> dict:
    """Encode numbered lines; returns flat ids/mask, per-doc lengths and bad line numbers."""
    tok = tok or _WORKER_TOK
    assert tok is not None, "worker not initialised"
    ids: list[int] = []
    mask: list[int] = []
    lengths: list[int] = []
    bad: list[int] = []
    plain = 0
    for lineno, line in chunk:
        try:
            text = json.loads(line)["text"]
            if not isinstance(text, str):
                raise TypeError("text is not a string")
        except (json.JSONDecodeError, KeyError, TypeError):
            bad.append(lineno)
            continue
        doc_ids, doc_mask, is_chat = _encode_text(text, tok)
        plain += not is_chat
        ids += doc_ids
        mask += doc_mask
        lengths.append(len(doc_ids))
    return {"ids": np.asarray(ids, dtype=np.int64), "mask": np.asarray(mask, dtype=np.uint8),
            "lengths": lengths, "bad": bad, "plain": plain}


# --- main side ----------------------------------------------------------------------------
def _chunks(path: Path) -> Iterator[list[tuple[int, str]]]:
    numbered = numbered_lines(path)  # UTF-8 (BOM or not); UTF-16/binary is a DataFileError
    while chunk := list(islice(numbered, CHUNK_LINES)):
        yield chunk


def _encoded_chunks(path: Path, tokenizer: Forge1Tokenizer, workers: int, tmp: Path
                    ) -> Iterator[dict]:
    """Chunks in file order. Pool work goes in bounded rounds so RAM stays flat on huge files."""
    if workers <= 1 or path.stat().st_size < MIN_PARALLEL_BYTES:
        for chunk in _chunks(path):
            yield _encode_chunk(chunk, tokenizer)
        return
    tokenizer.save(tmp / "tokenizer")
    ctx = mp.get_context("spawn")  # fork after the Rust tokenizer's threads ran can deadlock
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(tmp / "tokenizer"),)) as pool:
        chunks = _chunks(path)
        while batch := list(islice(chunks, workers * 4)):
            yield from pool.map(_encode_chunk, batch)


class _Writer:
    """Appends documents to tokens.bin/mask.bin in the chosen layout."""

    def __init__(self, out: Path, layout: Layout, context_length: int, tok: Forge1Tokenizer,
                 dtype: np.dtype) -> None:
        self.layout, self.row = layout, context_length + 1
        self.pad, self.dtype = tok.pad_id, dtype
        self.f_ids = (out / "tokens.bin").open("wb")
        self.f_mask = (out / "mask.bin").open("wb")
        self.n_tokens = self.n_docs = self.n_rows = self.dropped = self.real_tokens = 0
        self._window: list[tuple[np.ndarray, np.ndarray]] = []

    def _write(self, ids: np.ndarray, mask: np.ndarray) -> None:
        self.f_ids.write(ids.astype(self.dtype).tobytes())
        self.f_mask.write(mask.astype(np.uint8).tobytes())
        self.n_tokens += len(ids)

    def add(self, enc: dict) -> None:
        if self.layout == "packed":
            self._write(enc["ids"], enc["mask"])
            self.n_docs += len(enc["lengths"])
            self.real_tokens += len(enc["ids"])
            return
        start = 0
        if self.layout == "bestfit":
            for n in enc["lengths"]:
                self._window.append((enc["ids"][start:start + n], enc["mask"][start:start + n]))
                start += n
            if len(self._window) >= BESTFIT_WINDOW:
                self._flush_bestfit()
            return
        for n in enc["lengths"]:
            ids, mask, start = enc["ids"][start:start + n], enc["mask"][start:start + n], start + n
            self.n_docs += 1
            if n > self.row:
                self.dropped += 1
                continue
            pad = self.row - n
            self._write(np.concatenate([ids, np.full(pad, self.pad)]),
                        np.concatenate([mask, np.zeros(pad, np.uint8)]))
            self.n_rows += 1
            self.real_tokens += n

    def _flush_bestfit(self) -> None:
        """Best-fit decreasing: longest documents first, each into the fullest row it fits."""
        docs, self._window = self._window, []
        order = sorted(range(len(docs)), key=lambda i: (-len(docs[i][0]), i))
        rows: list[list[int]] = []
        free: list[tuple[int, int]] = []  # (room left, row index), sorted
        for i in order:
            n = len(docs[i][0])
            self.n_docs += 1
            if n > self.row:
                self.dropped += 1
                continue
            at = bisect.bisect_left(free, (n, -1))
            if at == len(free):
                rows.append([i])
                room, r = self.row - n, len(rows) - 1
            else:
                room, r = free.pop(at)
                rows[r].append(i)
                room -= n
            if room:
                bisect.insort(free, (room, r))
        for members in rows:
            ids = np.concatenate([docs[i][0] for i in members])
            mask = np.concatenate([docs[i][1] for i in members])
            pad = self.row - len(ids)
            self._write(np.concatenate([ids, np.full(pad, self.pad)]),
                        np.concatenate([mask, np.zeros(pad, np.uint8)]))
            self.real_tokens += len(ids)
        self.n_rows += len(rows)

    def close(self) -> dict:
        """Pad the packed stream to whole windows; return the counts for index.json."""
        if self.layout == "bestfit":
            self._flush_bestfit()
        stride = self.row - 1 if self.layout == "packed" else self.row
        if self.layout == "packed":
            self.n_rows = max(0, -(-(self.n_tokens - 1) // stride))
            pad = self.n_rows * stride + 1 - self.n_tokens if self.n_rows else 0
            self._write(np.full(pad, self.pad), np.zeros(pad, np.uint8))
        self.f_ids.close()
        self.f_mask.close()
        return {"n_samples": self.n_rows, "sample_len": self.row, "sample_stride": stride,
                "n_tokens": self.n_tokens, "real_tokens": self.real_tokens,
                "n_documents": self.n_docs, "dropped_too_long": self.dropped}


def build_shards(input_jsonl: str | Path, tokenizer: Forge1Tokenizer, out_dir: str | Path, *,
                 context_length: int, layout: Layout = LAYOUTS[0], workers: int = 1) -> Path:
    """Tokenize `input_jsonl` into `out_dir` (replaced atomically). Returns `out_dir`."""
    src, out = Path(input_jsonl), Path(out_dir)
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}: must be one of {LAYOUTS}")
    if context_length < 2:
        raise ValueError(f"context_length={context_length}: must be at least 2")
    if not src.is_file():
        raise FileNotFoundError(f"no input file {src}: run `aethermind data preprocess` or "
                                "`aethermind data synth` first")
    # A half-built shard folder of a killed packer is removed by staged_path on the next run.
    with staged_path(out) as tmp:
        tmp.mkdir()
        _fill_shards(tmp, src, tokenizer, layout, context_length, workers)
    return out


def _fill_shards(tmp: Path, src: Path, tokenizer: Forge1Tokenizer, layout: str,
                 context_length: int, workers: int) -> None:
    dtype = token_dtype(tokenizer.get_vocab_size())
    writer = _Writer(tmp, layout, context_length, tokenizer, dtype)
    bad: list[int] = []
    plain = 0
    try:
        for enc in _encoded_chunks(src, tokenizer, workers, tmp):
            writer.add(enc)
            bad += enc["bad"]
            plain += enc["plain"]
        counts = writer.close()
    except BaseException:
        writer.f_ids.close()  # before staged_path deletes the folder (Windows holds open files)
        writer.f_mask.close()
        raise
    shutil.rmtree(tmp / "tokenizer", ignore_errors=True)
    index = {
        "format_version": FORMAT_VERSION, "layout": layout, "context_length": context_length,
        "dtype": dtype.name, "vocab_size": tokenizer.get_vocab_size(),
        "tokenizer_fingerprint": tokenizer.fingerprint(), "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id, **counts,
        "plain_text_documents": plain, "malformed_lines": len(bad), "malformed_first": bad[:20],
        "source": file_signature(src),
    }
    (tmp / "index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def read_index(shard_dir: str | Path) -> dict:
    path = Path(shard_dir) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no shards at {shard_dir} (index.json missing): build them "
                                "with `aethermind data pack`")
    return json.loads(path.read_text(encoding="utf-8"))


def stale_reason(index: dict, input_jsonl: Path, tokenizer: Forge1Tokenizer, *,
                 context_length: int, layout: Layout) -> str | None:
    """Why existing shards do not match the request, or None when they are current."""
    if index.get("format_version") != FORMAT_VERSION:
        return "shard format changed"
    if index.get("tokenizer_fingerprint") != tokenizer.fingerprint():
        return "tokenizer changed"
    if (index.get("context_length"), index.get("layout")) != (context_length, layout):
        return "context length or layout changed"
    old = index.get("source", {})
    if old.get("size") != file_signature(input_jsonl, full_hash=False)["size"]:
        return "input file changed"
    # Content, not mtime: an edit that keeps the size and the mtime (a copy with -p, a
    # restored backup) must still rebuild. Hashing reads the file once (~1 GB/s).
    if old.get("sha256") != file_signature(input_jsonl)["sha256"]:
        return "input file changed"
    return None


def shard_dir_for(input_jsonl: str | Path, cache_dir: str | Path, *, context_length: int,
                  layout: Layout) -> Path:
    return Path(cache_dir) / f"{Path(input_jsonl).stem}-{layout}-T{context_length}"


def ensure_shards(input_jsonl: str | Path, tokenizer: Forge1Tokenizer, cache_dir: str | Path,
                  *, context_length: int, layout: Layout = LAYOUTS[0], workers: int = 1) -> Path:
    """Shards for this input/tokenizer/context/layout under `cache_dir`, built only when missing
    or stale (see `stale_reason`). Returns the shard directory."""
    src = Path(input_jsonl)
    out = shard_dir_for(src, cache_dir, context_length=context_length, layout=layout)
    if (out / "index.json").is_file() and src.is_file() and stale_reason(
            read_index(out), src, tokenizer, context_length=context_length, layout=layout) is None:
        return out
    return build_shards(src, tokenizer, out, context_length=context_length, layout=layout,
                        workers=workers)

"""Data pipeline benchmark: preprocess and pack throughput, tokenizer compression per style.

Generates raw JSONL of a realistic mix (OpenHermes-, Platypus- and OpenThoughts-shaped records
built from Python's own docs and the built-in reasoning traces; no hub needed), then times:
- preprocess (raw JSONL -> Forge-1 text): MB of raw JSONL per second;
- pack (text -> token shards with loss masks) with 1 and N workers: MB/s and tokens/s, against
  the reference a Hugging Face user would write: `datasets.Dataset.map(batched=True)` with
  `PreTrainedTokenizerFast` over the same tokenizer.json (ids only, no masks, no packing);
- the bundled tokenizer's compression (UTF-8 bytes per token) on each dataset's style of text.
Usage: `.venv/bin/python bench/bench_data.py [--scale 1.0] [--workers 2]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from aethermind.data import pack, preprocess, schemas, synth
from aethermind.data.tokenizer_corpus import builtin_corpus
from aethermind.text.tokenizer import Forge1Tokenizer

OT_SYSTEM = ("Your role as an assistant involves thoroughly exploring questions through a "
             "systematic long thinking process before providing the final precise and accurate "
             "solutions. Please structure your response into two main sections: Thought and "
             "Solution. " * 4)


def _prose(rng: random.Random) -> list[str]:
    paras = [p.strip() for text in builtin_corpus() if "\n" in text
             for p in text.split("\n\n") if len(p.strip()) > 80]
    rng.shuffle(paras)
    return paras


def make_raw(out: Path, scale: float, seed: int = 0) -> dict[str, int]:
    """Write openhermes/platypus/openthoughts.jsonl of realistic shapes; returns record counts."""
    rng = random.Random(seed)
    paras = _prose(rng)
    pick = lambda k: "\n\n".join(rng.choice(paras) for _ in range(k))  # noqa: E731
    traces = synth.make_split("train", 4000, seed=seed)
    counts = {"openhermes": int(4000 * scale), "platypus": int(1000 * scale),
              "openthoughts": int(500 * scale)}
    out.mkdir(parents=True, exist_ok=True)
    with (out / "openhermes.jsonl").open("w", encoding="utf-8") as f:
        for i in range(counts["openhermes"]):
            conv = [{"from": "human", "value": pick(1)[:400], "weight": None},
                    {"from": "gpt", "value": pick(rng.randint(1, 4)), "weight": None}]
            if i % 5 == 0:
                conv.insert(0, {"from": "system", "value": "You are a helpful assistant.",
                                "weight": None})
            f.write(json.dumps({"conversations": conv, "source": "bench", "category": None,
                                "hash": None, "id": None}) + "\n")
    with (out / "platypus.jsonl").open("w", encoding="utf-8") as f:
        for _ in range(counts["platypus"]):
            f.write(json.dumps({"instruction": pick(1)[:300], "input": "",
                                "output": pick(rng.randint(1, 3)),
                                "data_source": "bench"}) + "\n")
    with (out / "openthoughts.jsonl").open("w", encoding="utf-8") as f:
        for _ in range(counts["openthoughts"]):
            steps = [rng.choice(traces) for _ in range(rng.randint(4, 12))]
            thought = "\n\n".join(f"{s.question}\n{s.thinking or s.answer}" for s in steps)
            thought += "\n\n" + pick(2)
            value = (f"<|begin_of_thought|>\n\n{thought}\n\n<|end_of_thought|>\n\n"
                     f"<|begin_of_solution|>\n\n{steps[-1].answer}\n\n<|end_of_solution|>")
            f.write(json.dumps({"system": OT_SYSTEM, "conversations": [
                {"from": "user", "value": steps[0].question}, {"from": "assistant",
                                                                "value": value}]}) + "\n")
    return counts


def _mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def bench_reference(train: Path, tok_dir: Path) -> tuple[float, int]:
    """HF-style tokenization: datasets.map(batched) with PreTrainedTokenizerFast."""
    import datasets
    from transformers import PreTrainedTokenizerFast

    datasets.disable_progress_bars()
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    start = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=str(train), split="train",
                               cache_dir=str(train.parent / "hf_cache"))
    ds = ds.map(lambda b: hf_tok(b["text"]), batched=True, remove_columns=["text"])
    n_tokens = sum(len(x) for x in ds["input_ids"])
    return time.perf_counter() - start, n_tokens


def compression(tok: Forge1Tokenizer, raw: Path) -> dict[str, float]:
    """UTF-8 bytes per token of message text (no template) per dataset style."""
    out = {}
    styles = {name: raw / f"{name}.jsonl" for name in ("openhermes", "platypus", "openthoughts")}
    for name, path in styles.items():
        texts = []
        for line in path.read_text(encoding="utf-8").splitlines()[:300]:
            conv = schemas.to_conversation(json.loads(line))
            texts += [t.user + "\n" + (t.thinking or "") + "\n" + t.assistant for t in conv.turns]
        out[name] = _bytes_per_token(tok, texts)
    out["synth"] = _bytes_per_token(tok, list(synth.corpus_texts(2000)))
    return out


def _bytes_per_token(tok: Forge1Tokenizer, texts: list[str]) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return n_bytes / sum(len(ids) for ids in tok.encode_batch(texts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data size multiplier")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=1024)
    args = parser.parse_args(argv)
    tok = Forge1Tokenizer()
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} (shared machines: "
          "compare ratios, not absolutes)")
    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        raw = work / "raw"
        counts = make_raw(raw, args.scale)
        raw_mb = sum(_mb(p) for p in raw.glob("*.jsonl"))
        cfg = preprocess.PreprocessConfig(raw_dir=raw, output=work / "train.jsonl")
        start = time.perf_counter()
        stats = preprocess.preprocess(cfg, tok)
        t_pre = time.perf_counter() - start
        kept = sum(s.kept for s in stats)
        train = work / "train.jsonl"
        print(f"raw: {counts} records, {raw_mb:.1f} MB; kept {kept}; "
              f"train.jsonl {_mb(train):.1f} MB")
        print(f"preprocess: {t_pre:.2f} s, {raw_mb / t_pre:.2f} MB raw/s, {kept / t_pre:.0f} "
              "samples/s")
        results = {}
        for workers in sorted({1, args.workers}):
            start = time.perf_counter()
            out = pack.build_shards(train, tok, work / f"shards{workers}",
                                    context_length=args.context_length, workers=workers)
            secs = time.perf_counter() - start
            n_tok = pack.read_index(out)["real_tokens"]
            results[workers] = (secs, n_tok)
            print(f"pack workers={workers}: {secs:.2f} s, {_mb(train) / secs:.2f} MB/s, "
                  f"{n_tok / secs / 1e3:.0f}k tokens/s ({n_tok} tokens)")
        tok.save(work / "tok")
        ref_secs, ref_tok = bench_reference(train, work / "tok")
        print(f"reference datasets.map + PreTrainedTokenizerFast: {ref_secs:.2f} s, "
              f"{_mb(train) / ref_secs:.2f} MB/s, {ref_tok / ref_secs / 1e3:.0f}k tokens/s")
        for workers, (secs, _) in results.items():
            print(f"ratio pack(workers={workers}) / reference speed: {ref_secs / secs:.2f}x")
        for name, bpt in compression(tok, raw).items():
            print(f"compression {name}: {bpt:.2f} bytes/token")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

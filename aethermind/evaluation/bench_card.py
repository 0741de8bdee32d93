"""The bench card: benchmark scores with their error bars, centred against random guessing.

`rows` turns lm-eval results into one row per benchmark (score, standard error, random
baseline, centred score); `centred` is the CORE-style rescaling (nanochat): (score - random) /
(1 - random), so 0 is guessing and 1 is perfect whatever the number of choices, and the mean of
the centred scores is one comparable number. `think_fidelity` measures the output format with
the project's own engine and parser. `write_card` writes bench_card.json and bench_card.md.
Reference rows are published numbers only, each with its source; none is measured here.
Usage: `write_card(card, Path("outputs/demo/eval"))`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aethermind.evaluation.suites import Benchmark
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import parse_completion
from aethermind.runtime.files import atomic_text
from aethermind.text import chat_format as cf


@dataclass(frozen=True)
class Reference:
    model: str
    scores: dict[str, float]  # benchmark label -> percent
    source: str


# Published numbers (percent) for two small models people compare against. Not comparable to
# a tiny-suite score (different questions); compare standard-suite rows only.
REFERENCES = (
    Reference("GPT-2 124M", {"HellaSwag": 31.14},
              "lm-evaluation-harness acc_norm 0-shot (acc 28.92), quoted in the docstring of "
              "karpathy/llm.c dev/data/hellaswag.py (its completion-style scoring: 29.55)"),
    Reference("SmolLM2-135M", {"HellaSwag": 42.0, "GSM8K": 1.4},
              "HuggingFaceTB/SmolLM2-135M model card, base-model table (lighteval; GSM8K "
              "5-shot)"),
)


def centred(score: float, baseline: float) -> float:
    """(score - baseline) / (1 - baseline): 0 = random guessing, 1 = every answer right."""
    if not 0.0 <= baseline < 1.0:
        raise ValueError(f"baseline={baseline}: must be in [0, 1)")
    return (score - baseline) / (1.0 - baseline)


def rows(benchmarks: Sequence[Benchmark], results: dict[str, dict[str, Any]],
         n_samples: dict[str, int]) -> list[dict[str, Any]]:
    """One row per benchmark from lm-eval's `results` ("metric,filter" keys)."""
    out = []
    for b in benchmarks:
        res = results[b.task]
        name, _, filt = b.metric.partition(",")
        score = float(res[b.metric])
        stderr = res.get(f"{name}_stderr,{filt}")
        out.append({"task": b.task, "benchmark": b.label, "metric": b.metric,
                    "score": round(score, 4),
                    "stderr": round(float(stderr), 4) if isinstance(stderr, float) else None,
                    "random": b.baseline, "centred": round(centred(score, b.baseline), 4),
                    "n": n_samples.get(b.task)})
    return out


def centred_mean(table: Sequence[dict[str, Any]]) -> float | None:
    return round(sum(r["centred"] for r in table) / len(table), 4) if table else None


def think_fidelity(engine: Any, tok: Any, questions: Sequence[str], max_new_tokens: int
                   ) -> dict[str, Any]:
    """Share of greedy answers, with thinking forced on, whose think block closes
    (`<|/think|>`) and whose answer turn (`<|assistant|>` then non-blank text) is present."""
    prompts = [cf.encode_prompt(cf.Conversation(), q, tok, think=True) for q in questions]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    gens = engine.generate_batch(prompts, params, cf.stop_ids(tok))
    end_think, assistant = tok.special_ids[cf.END_THINK], tok.special_ids[cf.ASSISTANT]
    closed = answered = 0
    for gen in gens:
        ids = list(gen.tokens)
        shut = end_think in ids
        answer = parse_completion(ids, tok, think=True)[1]
        closed += shut
        answered += shut and assistant in ids[ids.index(end_think):] and bool(answer.strip())
    n = len(gens)
    return {"n": n, "think_closed": round(closed / max(n, 1), 4),
            "fidelity": round(answered / max(n, 1), 4)}


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the code that ran (with "+dirty" for uncommitted changes), if in git."""
    cwd = where or Path(__file__).parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd,
                             capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.strip() + ("+dirty" if dirty.strip() else "")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def markdown(card: dict[str, Any]) -> str:
    m = card["model"]
    tokens = f"{m['tokens_trained']:,}" if m.get("tokens_trained") else "unknown"
    lines = [f"# Bench card: {m['path']}", "",
             f"- suite `{card['suite']}`, thinking {card['think']}, lm-eval "
             f"{card['lm_eval_version']}, {card['device']}, {card['seconds']:.0f} s",
             f"- model: {m['params']:,} parameters ({m['variant']}), {tokens} tokens trained",
             f"- commit: {card['commit'] or 'unknown'}", "",
             "| Benchmark | Metric | Score % | ± stderr | Random % | Centred % | n |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in card["scores"]:
        lines.append(f"| {r['benchmark']} | {r['metric']} | {_pct(r['score'])} | "
                     f"{_pct(r['stderr'])} | {_pct(r['random'])} | {_pct(r['centred'])} | "
                     f"{r['n'] if r['n'] is not None else '-'} |")
    lines += ["", f"**Centred mean (CORE-style): {_pct(card['centred_mean'])}%** "
                  "(0 = random guessing, 100 = all right)", ""]
    fid = card.get("think_fidelity")
    if fid:
        lines += [f"Think-format fidelity: {_pct(fid['fidelity'])}% of {fid['n']} answers close "
                  f"the think block and give an answer line ({_pct(fid['think_closed'])}% "
                  "close it).", ""]
    lines += ["## Reference models (published numbers, %)", "",
              "| Model | Scores | Source |", "|---|---|---|"]
    for ref in card["references"]:
        scores = ", ".join(f"{k} {v:g}" for k, v in ref["scores"].items())
        lines.append(f"| {ref['model']} | {scores} | {ref['source']} |")
    return "\n".join(lines) + "\n"


def write_card(card: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    js = atomic_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                     directory / "bench_card.json")
    md = atomic_text(markdown(card), directory / "bench_card.md")
    return js, md


def reference_dicts() -> list[dict[str, Any]]:
    return [{"model": r.model, "scores": r.scores, "source": r.source} for r in REFERENCES]

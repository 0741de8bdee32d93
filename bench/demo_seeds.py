"""`make demo`'s accuracy over several seeds: per family, per split, mean and spread (issue 18).

One run is one draw: the seed moves the data order and the initialisation, so a single lucky
figure says little. This runs `aethermind demo --seed S` for each seed (or reads runs already
made under --root), then prints one Markdown table per split: the mean accuracy per family, the
overall mean, and the spread (largest minus smallest overall accuracy across seeds), with the
machine's load average at the start and end of each run; for held-out phrasings and past the
range, how many traces copied the question right and how many were right line for line.
Usage: `python bench/demo_seeds.py --seeds 0 1 2 --root /tmp/demo_seeds [--minutes 10] [--reuse]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from aethermind.data.synth import TASKS
from aethermind.evaluation.evaluate import REASONING_SPLITS

SPLITS = (*REASONING_SPLITS, "fresh_guide_questions")


def run(seed: int, out: Path, minutes: float, extra: list[str]) -> dict:
    load0 = os.getloadavg()[0]
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "aethermind.cli", "demo", "--output", str(out), "--seed",
           str(seed), "--minutes", str(minutes), *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"seconds": round(time.perf_counter() - start), "load": [round(load0, 2),
                                                                   round(os.getloadavg()[0], 2)]}


def _mean(rows: list[dict], task: str, what: str) -> float:
    """One family's `what` (a share) over the seeds, in percent."""
    return sum(r["per_task"][task][what] for r in rows) / len(rows) * 100


def table(reports: list[dict], key: str) -> list[str]:
    rows = [r[key] for r in reports if r.get(key)]
    if not rows:
        return []
    tasks = [t for t in TASKS if t in rows[0]["per_task"]]
    overall = [r["accuracy"] * 100 for r in rows]
    lines = [f"| {key} | " + " | ".join(tasks) + " | **all** (mean) | spread |",
             "|---|" + "---:|" * (len(tasks) + 2)]
    means = [_mean(rows, t, "accuracy") for t in tasks]
    lines.append("| mean of seeds | " + " | ".join(f"{m:.0f}" for m in means) +
                 f" | **{sum(overall) / len(overall):.1f}%** | {max(overall) - min(overall):.1f} |")
    for seed, r in zip(SEEDS, rows, strict=False):
        lines.append(f"| seed {seed} | " + " | ".join(
            f"{r['per_task'][t]['accuracy'] * 100:.0f}" for t in tasks) +
                     f" | {r['accuracy'] * 100:.1f}% | |")
    return lines


def trace_table(reports: list[dict], key: str) -> list[str]:
    """Per family, mean of seeds: the share of traces whose first line is the reference's copy
    of what was asked, and of traces that are the reference line for line; with accuracy,
    they say whether a miss was a wrong copy or a wrong step (`reasoning_accuracy`)."""
    rows = [r[key] for r in reports if r.get(key)]
    tasks = [t for t in TASKS  # runs made before these shares were kept have none
             if rows and all("first_line" in r["per_task"].get(t, {}) for r in rows)]
    if not tasks:
        return []
    lines = [f"| {key}, traces | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for what, label in (("first_line", "first line (the copy) as the reference"),
                        ("trace", "whole trace as the reference"), ("accuracy", "answer right")):
        lines.append(f"| {label} | " + " | ".join(f"{_mean(rows, t, what):.0f}" for t in tasks)
                     + " |")
    return lines


SEEDS: list[int] = []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--root", type=Path, default=Path("outputs/demo_seeds"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--reuse", action="store_true", help="read runs already under --root")
    p.add_argument("extra", nargs="*", help="more `aethermind demo` options, after --")
    args = p.parse_args()
    SEEDS[:] = args.seeds
    reports, timing = [], []
    for seed in args.seeds:
        out = args.root / f"seed{seed}"
        if not args.reuse:
            timing.append(run(seed, out, args.minutes, args.extra))
        report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
        report["fresh_guide_questions"] = {**report["fresh_guide_questions"],
                                           "per_task": report["fresh_guide_questions"]
                                           .get("per_task", {})}
        reports.append(report)
    for key in SPLITS:
        lines = table(reports, key)
        if lines:
            print("\n".join(lines) + "\n")
    for key in ("phrasing", "beyond"):
        lines = trace_table(reports, key)
        if lines:
            print("\n".join(lines) + "\n")
    for seed, t in zip(args.seeds, timing, strict=False):
        print(f"seed {seed}: {t['seconds']} s wall, load {t['load'][0]} -> {t['load'][1]}")
    for seed, r in zip(args.seeds, reports, strict=True):
        print(f"seed {seed}: demo minutes {r['demo']['minutes']}, steps {r['demo']['steps']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

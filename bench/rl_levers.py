"""RL levers side by side from one trained model: accuracy per family against RL steps (issue 19).

Each lever is the demo's RL recipe (`demo.rl_config`) with some keys overridden, run from the
same starting model (a demo's `final_model/`) and scored at every milestone of the curve on the
demo's held-out questions (trained phrasings, new operands; greedy, the demo's cap) and, at the
last milestone, on the held-out phrasings too. A milestone resumes the lever's own run, so a
curve of 8, 16, 32 steps is one run of 32 steps. Prints one Markdown table (family cells in %)
and writes every figure to --out/levers.json.
Usage: `python bench/rl_levers.py --model outputs/demo/final_model --out /tmp/levers
  --steps 16 32 --lever recipe --lever guided:guide=true`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from aethermind import demo
from aethermind.artifacts.loading import load_model
from aethermind.data import synth
from aethermind.evaluation.evaluate import reference_cap
from aethermind.inference.engine import Engine
from aethermind.rl.config import ConfigError, RLConfig, from_dict
from aethermind.rl.loop import rl


def parse_lever(spec: str) -> tuple[str, dict[str, str]]:
    """`name:key=value,key=value` (or just `name`) -> (name, overrides)."""
    name, _, rest = spec.partition(":")
    pairs = [item.split("=", 1) for item in rest.split(",") if item.strip()]
    if not name or any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"{spec!r}: expected name or name:key=value,key=value")
    return name, {k.strip(): v.strip() for k, v in pairs}


def lever_config(base: RLConfig, steps: int, overrides: dict[str, str]) -> RLConfig:
    """The demo recipe with `overrides` (strings, coerced as `--set` does) and `steps`."""
    return from_dict({**base.to_dict(), **overrides, "max_steps": steps,
                      "checkpoint_every": steps, "dashboard": "off"})


def score(model: Any, tok: Any, questions: dict[str, list], cap: int) -> dict[str, Any]:
    engine = Engine(model, max_batch_size=demo.GEN_BATCH)
    return {key: demo.score_examples(engine, tok, qs, cap) for key, qs in questions.items()}


def row(name: str, steps: int | str, seconds: float | str, scores: dict[str, Any]) -> str:
    test, phrasing = scores["reasoning"], scores.get("phrasing")
    cells = []
    for task in synth.TASKS:
        t = test["per_task"][task]["accuracy"] * 100
        cells.append(f"{t:.0f}" if phrasing is None else
                     f"{t:.0f} / {phrasing['per_task'][task]['accuracy'] * 100:.0f}")
    held = f"{phrasing['accuracy']:.1%}" if phrasing else "-"
    return (f"| {name} | {steps} | {seconds} | {test['accuracy']:.1%} | {held} | "
            + " | ".join(cells) + " |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="a demo's final_model/ folder")
    p.add_argument("--out", type=Path, required=True, help="one run folder per lever under it")
    p.add_argument("--steps", type=int, nargs="+", default=[16, 32],
                   help="milestones of the curve, in RL steps (increasing)")
    p.add_argument("--lever", action="append", default=[],
                   help="name[:key=value,...] over the demo recipe; repeatable")
    args = p.parse_args()
    if not args.model.exists():
        p.error(f"--model {args.model}: not found (a demo's final_model/ folder)")
    if sorted(set(args.steps)) != args.steps or args.steps[0] < 1:
        p.error("--steps: increasing positive integers")
    try:  # every lever checked before any work
        levers = [parse_lever(s) for s in args.lever or ["recipe"]]
        for _, overrides in levers:
            lever_config(demo.rl_config(args.out, args.model, 1, 1), 1, overrides)
    except (ValueError, ConfigError) as err:
        p.error(f"--lever: {err}")
    model, tok = load_model(args.model)
    asked = demo.asked_questions(demo.N_TEST)
    questions = {"reasoning": asked["reasoning"], "phrasing": asked["phrasing"]}
    cap = reference_cap(tok, asked["reasoning"] + asked["fresh"], demo.MAX_CAP)
    base = demo.rl_config(args.out, args.model, args.steps[-1], cap)
    header = ("| lever | steps | RL s | trained phrasings | held-out phrasings | "
              + " | ".join(synth.TASKS) + " |")
    lines = [header, "|---|---:|---:|---:|---:|" + "---|" * len(synth.TASKS)]
    results: dict[str, Any] = {"model": str(args.model), "cap": cap,
                               "load_start": os.getloadavg()[0], "levers": {}}
    start = score(model, tok, questions, cap)
    del model
    lines.append(row("before RL", 0, "-", start))
    print(lines[-1], flush=True)
    results["before"] = start
    for name, overrides in levers:
        out = args.out / name
        curve, seconds = [], 0.0
        for i, steps in enumerate(args.steps):
            cfg = lever_config(base, steps, {**overrides, "output_dir": str(out)})
            t0 = time.perf_counter()
            result = rl(cfg, resume=i > 0, overwrite=i == 0)
            seconds += time.perf_counter() - t0
            last = steps == args.steps[-1]
            scored = score(*load_model(result["final_model"]),
                           questions if last else {"reasoning": questions["reasoning"]}, cap)
            curve.append({"steps": steps, "seconds": round(seconds, 1), **scored})
            lines.append(row(name, steps, f"{seconds:.0f}", scored))
            print(lines[-1], flush=True)
        results["levers"][name] = {"overrides": overrides, "curve": curve}
    results["load_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "levers.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

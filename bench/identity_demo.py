"""The identity demo of issue 20, measured: fine-tune the demo model on the 20 identity pairs,
full and LoRA, and report exact match on the pairs, held-out accuracy kept, and wall time.

Usage (repo root, after `aethermind demo --output DEMO`):
`python bench/identity_demo.py --demo DEMO --work /tmp/identity [--json out.json]`.
Each fine-tune is `aethermind train --config configs/identity.yaml` as README gives it (LoRA:
`--set lora.r=8 --set learning_rate=1e-2`), pointed at DEMO's model and data; the held-out
split is the demo's own (`synth.make_split("test", 440)`, greedy, the demo's token cap).
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from aethermind.artifacts.loading import load_model
from aethermind.data import synth
from aethermind.data.identity import DEFAULT_N_MIX, DEFAULT_REPEAT, write_identity
from aethermind.demo import N_TEST, max_new_tokens_for, score_examples
from aethermind.evaluation.identity import identity_accuracy
from aethermind.inference.engine import Engine

RUNS = {"full": [], "lora": ["--set", "lora.r=8", "--set", "learning_rate=1e-2"]}


def score(model_dir: Path, test: list, cap: int) -> dict:
    model, tok = load_model(model_dir)
    engine = Engine(model, max_batch_size=32)
    ident = identity_accuracy(engine, tok)
    held = score_examples(engine, tok, test, cap)
    return {"identity": ident["accuracy"], "identity_correct": ident["correct"],
            "held_out": held["accuracy"],
            "per_task": {t: v["accuracy"] for t, v in held["per_task"].items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, required=True, help="the demo's --output folder")
    p.add_argument("--work", type=Path, required=True, help="scratch folder for the runs")
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--n-mix", type=int, default=DEFAULT_N_MIX,
                   help="demo lines mixed in (data identity)")
    p.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                   help="copies of each pair (data identity)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training override for both runs, e.g. --set learning_rate=5e-4")
    p.add_argument("--only", choices=sorted(RUNS), help="run one of the two fine-tunes")
    args = p.parse_args()
    base = args.demo / "final_model"
    data = args.work / "data"
    write_identity(data, args.demo / "data" / "train.jsonl", repeat=args.repeat,
                   n_mix=args.n_mix)
    _, tok = load_model(base)
    test = synth.make_split("test", N_TEST)
    cap = max_new_tokens_for(tok, test)
    results = {"base": score(base, test, cap)}
    print(json.dumps({"base": results["base"]}), flush=True)
    for name, extra in RUNS.items():
        if args.only and name != args.only:
            continue
        extra = [*extra, *(a for kv in args.set for a in ("--set", kv))]
        out = args.work / name
        cmd = [sys.executable, "-m", "aethermind.cli", "train", "--config",
               "configs/identity.yaml", "--set", f"init_from={base}",
               "--set", f"tokenizer={base / 'tokenizer'}",
               "--set", f"train_data={data / 'train.jsonl'}",
               "--set", f"val_data={data / 'val.jsonl'}", "--set", f"output_dir={out}",
               "--set", "dashboard=plain", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        minutes = (time.perf_counter() - t0) / 60
        results[name] = {"train_minutes": round(minutes, 2),
                         **score(out / "final_model", test, cap)}
        print(json.dumps({name: results[name]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Demo recipe: held-out accuracy per task family against optimizer steps, and seconds per step.

Trains the demo's recipe (`aethermind.demo.train_config`) with a checkpoint every `--every`
steps, then scores each checkpoint greedily on the held-out split. Per step, so machine load
does not change the accuracy figures; s/step is printed with `uptime`'s load to be read with it.
Usage: `.venv/bin/python bench/demo_curve.py --steps 1200 --every 300 --output outputs/curve`
(`--set learning_rate=3e-3` overrides any key of the recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from aethermind import demo
from aethermind.artifacts.checkpoint import list_checkpoints, load_checkpoint
from aethermind.data import synth
from aethermind.inference.engine import Engine
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.config import parse_override
from aethermind.training.train import train


def time_steps(threads: int, repeats: int = 8) -> None:
    """s/step of the recipe's shape and optimizer against the bundled vocabulary, 256-token
    rows and AdamW, interleaved in one run (median of `repeats`)."""
    from aethermind.model.losses import summed_loss
    from aethermind.training.optim import build_optimizer

    torch.set_num_threads(threads)
    fitted = 1664  # the demo vocabulary, padded to 64
    cases = {"8x384, fitted vocab, muon (recipe)": (8, 384, fitted, "muon"),
             "8x384, fitted vocab, adamw": (8, 384, fitted, "adamw"),
             "8x384, bundled vocab, muon": (8, 384, 16384, "muon"),
             "8x256, fitted vocab, muon": (8, 256, fitted, "muon")}
    times: dict[str, list[float]] = {name: [] for name in cases}
    setups = {}
    for name, (b, t, v, opt_name) in cases.items():
        torch.manual_seed(0)
        model = Forge1Model(Forge1Config.from_variant("tiny", vocab_size=v))
        x = torch.randint(12, v, (b, t))
        y = x.clone()
        y[:, : t // 3] = -100  # prompts carry no loss
        docs = torch.cumsum((torch.rand(b, t) < 0.008).long(), 1)  # ~130-token chats
        opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95),
                              name=opt_name)
        setups[name] = (model, opt, x, y, docs)
    for _ in range(repeats):
        for name, (model, opt, x, y, docs) in setups.items():
            start = time.perf_counter()
            (summed_loss(model, x, y, docs) / (y != -100).sum()).backward()
            opt.step()
            opt.zero_grad()
            times[name].append(time.perf_counter() - start)
    base = sorted(times[next(iter(cases))])[repeats // 2]
    for name, ts in times.items():
        med = sorted(ts)[repeats // 2]
        print(f"{name}: {med:.3f} s/step ({med / base:.2f}x the recipe)")
    print(f"{threads} thread(s), load {os.getloadavg()[0]:.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", dest="out", type=Path, default=Path("outputs/curve"))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--every", type=int, default=300)
    p.add_argument("--n-train", type=int, help="default: what the demo builds for --steps")
    p.add_argument("--n-test", type=int, default=220)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--eval-only", action="store_true", help="score the checkpoints already there")
    p.add_argument("--timing", action="store_true", help="only time steps (see time_steps)")
    args = p.parse_args()
    if args.timing:
        time_steps(args.threads)
        return
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    if not (data / "train.jsonl").is_file():
        demo.build_data(args.out, args.n_train or demo.examples_for(args.steps), args.n_test)
    tok_dir = args.out / "tokenizer"
    overrides = dict(checkpoint_every=args.every, keep_checkpoints=1000, eval_every=0,
                     dashboard="plain", log_every=100, data_cache_dir=str(args.out / "cache"))
    overrides.update(parse_override(item) for item in args.set)
    cfg = demo.train_config(args.out / "run", data / "train.jsonl", data / "val.jsonl", tok_dir,
                            args.steps, **overrides)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    if not args.eval_only:
        train(cfg)
    train_s = time.perf_counter() - start
    tok = Forge1Tokenizer(tok_dir)
    test = synth.make_split("test", args.n_test)
    cap = demo.max_new_tokens_for(tok, test)
    rows = []
    for path in list_checkpoints(cfg.checkpoint_path):
        state = load_checkpoint(path)
        model = Forge1Model(Forge1Config.from_variant(cfg.variant,
                                                      vocab_size=tok.get_vocab_size_padded()))
        model.load_state_dict(state["model"])
        engine = Engine(model.eval(), max_batch_size=demo.GEN_BATCH)
        acc = demo.score_examples(engine, tok, test, cap)
        per = {t: v["accuracy"] for t, v in acc["per_task"].items()}
        rows.append({"step": state["step"], "accuracy": acc["accuracy"], "per_task": per})
        print(json.dumps(rows[-1]), flush=True)
    summary = {"recipe": cfg.to_dict(), "train_seconds": round(train_s, 1),
               "s_per_step": round(train_s / args.steps, 4), "threads": args.threads,
               "load_at_start": load, "load_at_end": os.getloadavg()[0], "curve": rows}
    (args.out / "curve.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"train {train_s:.0f}s = {train_s / args.steps:.3f} s/step with {args.threads} "
          f"thread(s); load {load:.1f} -> {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

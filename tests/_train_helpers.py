"""Shared by the training tests: small chat files and a tiny run's config."""

from __future__ import annotations

import json
import random
from pathlib import Path

from aethermind.text.chat_format import Conversation, Turn, render
from aethermind.training.config import TrainConfig, dump_yaml


def write_chats(path: Path, n: int, seed: int) -> Path:
    """Small arithmetic chats, half with a think block (independent of the synth module)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            a, b = rng.randint(1, 99), rng.randint(1, 99)
            think = f"Let me think step by step. {a} + {b} = {a + b}." if i % 2 == 0 else None
            conv = Conversation(turns=[Turn(f"What is {a} + {b}?", f"The answer is {a + b}.",
                                            think)])
            f.write(json.dumps({"text": render(conv)}) + "\n")
    return path


def make_cfg(assets, out: Path, **overrides) -> TrainConfig:
    base = dict(variant="tiny", train_data=assets.train, val_data=None, tokenizer=assets.tok,
                data_cache_dir=assets.cache, device="cpu", precision="fp32", batch_size=4,
                context_length=64, learning_rate=3e-3, warmup_ratio=0.1, max_steps=6,
                checkpoint_every=0, eval_every=0, eval_batches=2, log_every=1, dashboard="off",
                output_dir=str(out), num_workers=1, seed=0)
    return TrainConfig(**{**base, **overrides})


def write_yaml(cfg: TrainConfig, path: Path) -> Path:
    path.write_text(dump_yaml(cfg), encoding="utf-8")
    return path

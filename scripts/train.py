"""Train Forge-1 (the guide's entry point); all logic lives in `aethermind.training.train`.

Usage: `python scripts/train.py --config configs/local_config.yaml --variant nano [--resume]`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
    from aethermind.cli import run_module

    raise SystemExit(run_module("aethermind.training.train", label="scripts/train.py"))

"""Improve a trained model with GRPO (`aethermind rl`); all logic lives in `aethermind.rl`.

Usage: `python scripts/rl.py --config configs/rl_cpu.yaml --model outputs/demo/final_model`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
    from aethermind.cli import run_module

    raise SystemExit(run_module("aethermind.rl.cli", label="scripts/rl.py"))

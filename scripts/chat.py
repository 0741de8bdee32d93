"""Chat with a trained Forge-1 (guide entry point); all logic lives in `aethermind.inference.chat`.

Usage: `python scripts/chat.py --model outputs/final_model/forge1_nano_final.pt --variant nano`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
    from aethermind.cli import run_module

    raise SystemExit(run_module("aethermind.inference.chat", label="scripts/chat.py"))

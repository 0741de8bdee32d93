"""Export a trained Forge-1 (the guide's entry point); all logic lives in `aethermind.export.cli`.

Usage: `python scripts/export.py --model outputs/final_model/forge1_nano_final.pt --variant nano`.
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
    from aethermind.export.cli import main

    raise SystemExit(main())

"""The guide's download script, `python data/download_datasets.py [N]`: no logic here.

It puts the repo root on sys.path and runs aethermind.data.download.main.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aethermind.cli import run_module  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_module("aethermind.data.download", label="data/download_datasets.py"))

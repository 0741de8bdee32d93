"""Prepare a Google Colab runtime: mount Drive (checkpoints survive disconnects), install deps.

Outside Colab it changes nothing: it explains what it would do there and exits 0 (install the
package yourself with `pip install -e .`). notebooks/forge1_colab.ipynb imports it to mount
Drive in the kernel (`mount_drive()`, `DRIVE_CHECKPOINTS`), then runs it.
Usage (in a Colab cell, from the repo root): `!python scripts/colab_setup.py`.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVE = Path("/content/drive/MyDrive")
DRIVE_CHECKPOINTS = DRIVE / "AetherMind" / "checkpoints"
LOCAL_CHECKPOINTS = REPO / "outputs" / "checkpoints"  # colab_config.yaml's checkpoint_dir


def in_colab() -> bool:
    try:  # find_spec imports the parent package: without `google` it raises, not returns None
        return importlib.util.find_spec("google.colab") is not None
    except ImportError:
        return False


def mount_drive() -> bool:
    """Mount Google Drive at /content/drive; False when it cannot be mounted (e.g. a subprocess)."""
    if DRIVE.is_dir():
        return True
    try:
        from google.colab import drive

        drive.mount("/content/drive")
    except Exception as err:  # drive.mount may need the notebook kernel, not a `!python` child
        print(f"Drive not mounted ({err}); in a notebook cell run: "
              "from google.colab import drive; drive.mount('/content/drive'), then rerun this")
        return False
    return DRIVE.is_dir()


def link_checkpoints() -> Path:
    """Point outputs/checkpoints at Drive, so checkpoints land there with no config change."""
    DRIVE_CHECKPOINTS.mkdir(parents=True, exist_ok=True)
    LOCAL_CHECKPOINTS.parent.mkdir(parents=True, exist_ok=True)
    if LOCAL_CHECKPOINTS.is_symlink() or not LOCAL_CHECKPOINTS.exists():
        LOCAL_CHECKPOINTS.unlink(missing_ok=True)
        LOCAL_CHECKPOINTS.symlink_to(DRIVE_CHECKPOINTS, target_is_directory=True)
    else:
        print(f"{LOCAL_CHECKPOINTS} already exists as a folder: move it to {DRIVE_CHECKPOINTS} "
              "and rerun to keep checkpoints on Drive")
    return LOCAL_CHECKPOINTS


def main(argv: list[str] | None = None) -> int:
    if not in_colab():
        print("not running in Google Colab: nothing changed. In Colab this script would "
              f"pip install -e {REPO}[eval] (keeping Colab's CUDA torch), mount Google Drive at "
              f"/content/drive and link {LOCAL_CHECKPOINTS} -> {DRIVE_CHECKPOINTS} so "
              "checkpoints survive a disconnect. Here: pip install -e . and train with "
              "configs/local_config.yaml or configs/cpu_config.yaml.")
        return 0
    # Colab ships a CUDA torch already; installing the package must not replace it.
    # The `eval` extra (lm-evaluation-harness) is what the notebook's bench card runs on.
    cmd = [sys.executable, "-m", "pip", "install", "-q", "-e", f"{REPO}[eval]"]
    print("installing:", " ".join(cmd))
    subprocess.run(cmd, check=True)
    if in_colab() and mount_drive():
        print(f"checkpoints: {link_checkpoints()} -> {DRIVE_CHECKPOINTS}")
    elif in_colab():
        print("checkpoints stay on the runtime's disk (lost on disconnect) until Drive is mounted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Crash-safe training checkpoints: save, list, load the newest valid one, RNG state.

A checkpoint is one file `<dir>/step_0000500.pt` written through `runtime.files` (staged,
fsynced, renamed), so a crash (or kill -9) at any moment leaves either the old set or the
new one, never a half file under the real name (`train` removes a killed writer's temp
files with `files.remove_stale_temp_files(dir, CKPT_GLOB)`). Loading uses
`torch.load(weights_only=True)`: a checkpoint can hold tensors and plain containers but can
never execute code. It does not know what a training state means; `train.py` builds and reads
the dict, and the final model's folder is `layout.py`'s.
Usage: `save_checkpoint(state, ckpt_dir, step, keep=3)`; `found = latest_valid(ckpt_dir)`.
"""

from __future__ import annotations

import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aethermind.runtime.files import atomic_torch_save

CKPT_RE = re.compile(r"^step_(\d+)\.pt$")
CKPT_GLOB = "step_*.pt"
REQUIRED_KEYS = ("step", "model", "optimizer", "config", "tokenizer_fingerprint")


# --- checkpoints ----------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint files in `directory`, oldest first (by step, not by mtime)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_step(path: Path) -> int:
    m = CKPT_RE.match(Path(path).name)
    assert m, f"{path} is not named like a checkpoint"
    return int(m.group(1))


def save_checkpoint(state: dict[str, Any], directory: str | Path, step: int,
                    keep: int = 3) -> Path:
    """Write `state` as the checkpoint of `step` atomically; keep it and the `keep - 1` newest
    older ones. Only checkpoints of earlier steps than the one just written (and so verified
    valid) are ever deleted: a foreign or broken file named like a later step cannot make
    retention delete good checkpoints."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    assert not missing, f"checkpoint state lacks {missing}"
    path = atomic_torch_save(state, Path(directory) / checkpoint_name(step))
    older = [p for p in list_checkpoints(directory) if checkpoint_step(p) < step]
    for old in older[:max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return path


def torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """`torch.load(weights_only=True)`; any failure is a one-line ValueError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        raise ValueError(f"cannot read {path} ({err.strerror or err})") from None
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # zip or legacy pickle
        raise ValueError(f"{path} is not a PyTorch checkpoint (no zip or pickle header): pass "
                         "a .pt file written by `aethermind train`")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, disallowed global: all mean corrupt
        raise ValueError(f"cannot read checkpoint {path}: {describe_load_error(err)}") from None


def verify_crc(path: str | Path) -> None:
    """Raise ValueError if a zip-format .pt holds a record whose bytes no longer match the CRC32
    torch.save wrote for it (a bit flip, a bad copy): `torch.load` never checks them and would
    return the damaged weights. A legacy (pickle) .pt carries no checksum and passes."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as err:  # truncated or mangled archive: many error types
        raise ValueError(f"{path} is damaged ({type(err).__name__}: {err})") from None
    if bad is not None:
        raise ValueError(f"{path} is damaged: record {bad} fails its CRC32 check; copy it "
                         "again or use an earlier checkpoint")


def describe_load_error(err: BaseException) -> str:
    """One line for a failed `torch.load`: for a blocked pickle, what was blocked (torch's own
    text suggests `weights_only=False`, which would run the file's code: never do that)."""
    text = str(err)
    m = re.search(r"Unsupported global: GLOBAL (\S+)", text) or \
        re.search(r"(Unsupported operand \d+|Unsupported class \S+)", text)
    if "Weights only load failed" in text or m:
        what = m.group(1) if m else "an object that is not a tensor or plain container"
        return (f"the file holds {what}, which weights-only loading blocks (it could run "
                "code); it is not a checkpoint written by AetherMind")
    lines = text.strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load one checkpoint safely; raises ValueError if it is unreadable or incomplete."""
    try:
        state = torch_load(path, map_location)
    except ValueError as err:
        raise ValueError(f"{path}: unreadable checkpoint ({err})") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        raise ValueError(f"{path}: not a complete AetherMind checkpoint")
    return state


def latest_valid(directory: str | Path, map_location: str | torch.device = "cpu"
                 ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that loads, skipping corrupt ones with a warning; None if none."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return path, load_checkpoint(path, map_location)
        except ValueError as err:
            warnings.warn(f"skipping {err}; trying an older checkpoint", stacklevel=2)
    return None


# --- RNG state ------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states in weights_only-loadable types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])

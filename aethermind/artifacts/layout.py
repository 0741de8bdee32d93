"""The final-model folder: the one place that knows its name and what it holds.

    <output_dir>/final_model/
        forge1_<variant>_final.pt   a plain state_dict() (the guide's snippet loads it with
                                    `load_state_dict`)
        config.json                 Forge1Config.to_dict(): the shape, so loading needs no flags
        tokenizer/                  the tokenizer the model was trained with

`train` and `import-hf` write it (`write_final`); `loading` finds the weights in it
(`find_final`), `chat` saves conversations beside it (`run_folder`). It does not read weights.
Usage: `pt = write_final(model.state_dict(), model.config, tok, final_dir("outputs"), "nano")`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from aethermind.runtime.files import atomic_text, atomic_torch_save

FINAL_DIR = "final_model"
WEIGHTS_GLOB = "forge1_*_final.pt"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"


def final_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / FINAL_DIR


def weights_name(variant: str) -> str:
    return f"forge1_{variant}_final.pt"


def write_final(state_dict: dict[str, torch.Tensor], config: Any, tokenizer: Any,
                folder: str | Path, variant: str) -> Path:
    """Fill `folder` (`final_dir(output_dir)`, or a stage of it) with the final model; returns
    the .pt path. Each file is written atomically; to replace the folder as a whole, pass
    a `files.staged_path` of it."""
    folder = Path(folder)
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    path = atomic_torch_save(state, folder / weights_name(variant))
    atomic_text(json.dumps(config.to_dict(), indent=2) + "\n", folder / CONFIG_FILE)
    tokenizer.save(folder / TOKENIZER_DIR)
    return path


def find_final(path: Path) -> list[Path]:
    """The final weights in `path` itself, else in `path/final_model/` (the first folder that
    holds any); empty if neither does."""
    for folder in (path, final_dir(path)):
        found = sorted(folder.glob(WEIGHTS_GLOB))
        if found:
            return found
    return []


def run_folder(model_path: str | Path) -> Path:
    """The run's output folder: the one holding `final_model/`, or the model's own folder."""
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    return folder.parent if folder.name == FINAL_DIR else folder

"""TrainingError: the one exception a training run raises for a problem the user must fix.

Kept apart so the loop (`train.py`) and its helpers (`inputs.py`, `state.py`) share it without
importing each other; `aethermind train` prints it as one line (config problems are
`config.ConfigError` instead). Usage: `raise TrainingError("train_data x.jsonl: ...")`.
"""

from __future__ import annotations


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line meant for the user."""

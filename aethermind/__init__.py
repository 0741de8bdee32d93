"""AetherMind: train, test, chat with and serve the Forge-1 thinking model.

Importing the package does nothing: the core types load on first use (PEP 562), so
`aethermind --help`, the data commands and every packing worker start without importing torch.
Usage: `from aethermind import Forge1Config, Forge1Model, Forge1Tokenizer`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aethermind.model.config import Forge1Config
    from aethermind.model.transformer import Forge1Model
    from aethermind.text.tokenizer import Forge1Tokenizer

_LAZY = {"Forge1Config": "aethermind.model.config", "Forge1Model": "aethermind.model.transformer",
         "Forge1Tokenizer": "aethermind.text.tokenizer"}
__all__ = ["Forge1Config", "Forge1Model", "Forge1Tokenizer"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])

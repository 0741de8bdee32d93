"""Guide path `model.architecture`: re-exports the real model from `aethermind.model`."""

from aethermind.config import Forge1Config
from aethermind.model import Forge1Model

__all__ = ["Forge1Config", "Forge1Model"]

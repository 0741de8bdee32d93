"""Guide path `model.architecture`: re-exports `aethermind.model.transformer`."""

from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model

__all__ = ["Forge1Config", "Forge1Model"]

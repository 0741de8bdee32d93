"""AetherMind: train, test, chat with and serve the Forge-1 thinking model.

Importing the package does nothing beyond exposing the core types.
"""

from aethermind.config import Forge1Config
from aethermind.model import Forge1Model
from aethermind.tokenizer import Forge1Tokenizer

__all__ = ["Forge1Config", "Forge1Model", "Forge1Tokenizer"]
__version__ = "0.1.0"

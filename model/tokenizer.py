"""Guide path `model.tokenizer`: re-exports the real tokenizer from `aethermind.tokenizer`."""

from aethermind.tokenizer import Forge1Tokenizer

__all__ = ["Forge1Tokenizer"]

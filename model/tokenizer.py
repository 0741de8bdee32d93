"""Guide path `model.tokenizer`: re-exports the real tokenizer from `aethermind.text.tokenizer`."""

from aethermind.text.tokenizer import Forge1Tokenizer

__all__ = ["Forge1Tokenizer"]

"""Guide path `inference.thinking_pipeline`: re-exports `aethermind.thinking`, never a copy."""

from aethermind.thinking import ThinkingResult, parse_completion, run_thinking_pipeline

__all__ = ["ThinkingResult", "parse_completion", "run_thinking_pipeline"]

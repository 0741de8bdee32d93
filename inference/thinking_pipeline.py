"""Guide path `inference.thinking_pipeline`: re-exports `aethermind.inference.thinking`."""

from aethermind.inference.thinking import ThinkingResult, parse_completion, run_thinking_pipeline

__all__ = ["ThinkingResult", "parse_completion", "run_thinking_pipeline"]

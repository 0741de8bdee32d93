"""Guide path `inference`: re-exports `aethermind.inference.thinking` (no logic here)."""

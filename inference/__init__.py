"""Guide path `inference`: thin re-exports of `aethermind.thinking` (no logic lives here)."""

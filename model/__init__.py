"""The guide's `model` package: thin re-exports of `aethermind`, kept for its snippets."""

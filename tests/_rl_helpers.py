"""Rewards the RL tests name in their configs (`_rl_helpers:fours`): a user's own reward is
`package.module:function`, and pytest puts tests/ on sys.path."""

from __future__ import annotations

from typing import Any


def fours(text: str, record: dict[str, Any]) -> float:
    """Share of the first 8 answer characters that are '4': a random model scores ~0."""
    return min(text.count("4"), 8) / 8


def letters(text: str, record: dict[str, Any]) -> float:
    """Share of letters in the text: every random answer differs, so every group has signal."""
    return sum(c.isalpha() for c in text) / max(len(text), 1)

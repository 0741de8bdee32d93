"""Verifiable rewards: plain functions `(completion_text, record) -> float`, named in the config.

`completion_text` is the decoded rollout with its tags (`<|think|>...<|/think|>\n<|assistant|>
...<|/assistant|>`; the closing tag only when the model emitted it). `record` is the prompt's
dict: `question` plus what checks it (`task`, `thinking`, `answer` for the built-in families;
`answer` with a GSM8K `#### 42` line, or `solution` with `\boxed{...}` for JSONL records).
Every reward is in [0, 1] and never raises on model output: a malformed answer scores 0.
Add your own by naming `package.module:function` in the config's `rewards` key.
- exact: the built-in family's checker (`synth.score`), else the numeric final answer.
- numeric: the final number (`#### x`, `\boxed{x}`, else the answer's only number) equals the
  reference's.
- format: the think block is closed and the answer is one non-empty line, closed.
- trace: share of the reference trace's lines reproduced, in order, before the first wrong
  one (a process reward: every built-in trace line is checkable).
- facts: share of the single-digit facts written in the thinking ("7*6=42", "7+5+1=13",
  "13-1-5=7") that are right; 0 when there are none (partial credit before answers are right).
Usage: `total = score_all(parse_rewards("exact, trace=0.5"), text, record)`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from aethermind.data import synth
from aethermind.text.special_tokens import END_ASSISTANT, END_THINK, THINK
from aethermind.text.thinking_split import split_thinking

Reward = Callable[[str, dict[str, Any]], float]

_HASHES_RE = re.compile(r"####\s*([^\n]*)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
# A trace's single-digit fact: digits joined by + - *, the first up to 19 (a borrow's "13-1-5")
_FACT_RE = re.compile(r"(?<![\d.])(1?\d(?:[+\-*]\d)+)=(\d+)(?!\d|\.\d)")


def _split(text: str) -> tuple[str, str]:
    thinking, answer = split_thinking(text.replace(END_ASSISTANT, ""))
    return thinking, answer.strip()


def _boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}`, braces balanced; None if there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j]
    return None


def _to_number(text: str) -> Decimal | None:
    for mark in ("{,}", "\\!", "\\,"):  # LaTeX thousands separators (MATH: 1{,}234)
        text = text.replace(mark, "," if mark == "{,}" else "")
    found = _NUMBER_RE.findall(text)
    if len(found) != 1:
        return None
    try:
        return Decimal(found[0].replace(",", ""))
    except InvalidOperation:
        return None


def final_number(text: str) -> Decimal | None:
    """The final answer of a text as a number: after `####`, inside the last `\\boxed{}`, else
    the text's only number; None when there is none or it is ambiguous."""
    hashes = _HASHES_RE.findall(text)
    if hashes:
        return _to_number(hashes[-1])
    boxed = _boxed(text)
    return _to_number(boxed if boxed is not None else text)


def reference_number(record: dict[str, Any]) -> Decimal | None:
    for key in ("answer", "solution", "final_answer"):
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Decimal(str(value))
        if isinstance(value, str) and (found := final_number(value)) is not None:
            return found
    return None


# --- the rewards ------------------------------------------------------------------------------
def numeric(text: str, record: dict[str, Any]) -> float:
    want = reference_number(record)
    got = final_number(_split(text)[1])
    return float(want is not None and got is not None and got == want)


def exact(text: str, record: dict[str, Any]) -> float:
    question = record.get("question")
    if isinstance(question, str) and synth.solve(question) is not None:
        return float(synth.score(question, _split(text)[1]))
    return numeric(text, record)


def format_reward(text: str, record: dict[str, Any]) -> float:
    if not text.lstrip().startswith(THINK) or END_THINK not in text:
        return 0.0
    answer = _split(text)[1]
    return float(text.rstrip().endswith(END_ASSISTANT) and bool(answer) and "\n" not in answer)


def trace(text: str, record: dict[str, Any]) -> float:
    reference = [line.strip() for line in str(record.get("thinking") or "").splitlines()]
    reference = [line for line in reference if line]
    if not reference:
        return 0.0
    written = [line.strip() for line in _split(text)[0].splitlines() if line.strip()]
    right = 0
    for want, got in zip(reference, written, strict=False):
        if want != got:
            break
        right += 1
    return right / len(reference)


def _fact_ok(expr: str, result: str) -> bool:
    parts = re.split(r"([+\-*])", expr)
    value = int(parts[0])
    for op, d in zip(parts[1::2], parts[2::2], strict=True):
        value = value + int(d) if op == "+" else value - int(d) if op == "-" else value * int(d)
    return value == int(result)


def facts(text: str, record: dict[str, Any]) -> float:
    found = _FACT_RE.findall(_split(text)[0])
    if not found:
        return 0.0
    return sum(_fact_ok(e, r) for e, r in found) / len(found)


REWARDS: dict[str, Reward] = {"exact": exact, "numeric": numeric, "format": format_reward,
                              "trace": trace, "facts": facts}


# --- the config's spelling --------------------------------------------------------------------
def _resolve(name: str) -> Reward:
    if name in REWARDS:
        return REWARDS[name]
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"reward {name!r}: unknown; use one of {', '.join(REWARDS)} or "
                         "package.module:function")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"reward {name!r}: cannot import it ({err})") from None
    if not callable(fn):
        raise ValueError(f"reward {name!r}: not a function")
    return fn


def parse_rewards(spec: str) -> list[tuple[str, float, Reward]]:
    """`"exact, trace=0.5"` -> [(name, weight, function)]; weights default to 1."""
    out = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        try:
            weight = float(raw) if sep else 1.0
        except ValueError:
            raise ValueError(f"reward {item!r}: the weight must be a number") from None
        out.append((name.strip(), weight, _resolve(name.strip())))
    if not out:
        raise ValueError(f"rewards {spec!r}: name at least one, e.g. exact")
    return out


def score_all(rewards: list[tuple[str, float, Reward]], text: str, record: dict[str, Any]
              ) -> float:
    """The weighted sum of `rewards`; a reward that raises or returns junk counts 0."""
    total = 0.0
    for _, weight, fn in rewards:
        try:
            value = float(fn(text, record))
        except Exception:  # a user's reward must not end a long run on one odd answer
            value = 0.0
        total += weight * (value if value == value else 0.0)  # NaN -> 0
    return total

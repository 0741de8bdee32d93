"""Schema adapters: one raw record (as the hub has it) -> a clean Forge-1 Conversation.

Knows the five record shapes, OpenHermes-2.5, Open-Platypus, OpenThoughts-114k, GSM8K and
generic `messages: [{role, content}]`, and the cleaning rules every one shares: Unicode NFC,
strip, drop empty turns, merge consecutive messages of one speaker, keep only user -> assistant
pairs, and sanitize special-token strings so data can never produce a special token. An adapter
raises `Malformed` for wrong types and `Dropped(reason)` for well-formed records it rejects.
Knows nothing about files, tokenizers or deduplication (see preprocess.py).
Usage: `conv = to_conversation(record)`; `detect_schema(record)` names the shape.
"""

from __future__ import annotations

import re
import unicodedata

from aethermind.text.chat_format import DEFAULT_SYSTEM_PROMPT, Conversation, Turn, sanitize

SCHEMAS = ("openhermes", "platypus", "openthoughts", "gsm8k", "messages")
BEGIN_THOUGHT, END_THOUGHT = "<|begin_of_thought|>", "<|end_of_thought|>"
BEGIN_SOLUTION, END_SOLUTION = "<|begin_of_solution|>", "<|end_of_solution|>"
_MARKERS = (BEGIN_THOUGHT, END_THOUGHT, BEGIN_SOLUTION, END_SOLUTION)
_THOUGHT_RE = re.compile(re.escape(BEGIN_THOUGHT) + r"(?P<thought>.*)" + re.escape(END_THOUGHT)
                         + r"\s*" + re.escape(BEGIN_SOLUTION) + r"(?P<solution>.*)"
                         + re.escape(END_SOLUTION), re.DOTALL)
_GSM_ANNOTATION = re.compile(r"<<[^<>]*>>")
_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
          "assistant": "assistant"}


class Malformed(ValueError):
    """The record does not have the schema's fields/types."""


class Dropped(ValueError):
    """A well-formed record rejected by a cleaning rule; `reason` names the rule."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def clean(text: str) -> str:
    return sanitize(unicodedata.normalize("NFC", text).strip())


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise Malformed(f"{what} is {type(value).__name__}, not a string")
    return value


def _list_of_dicts(value: object, what: str) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise Malformed(f"{what} must be a list of objects")
    return value


def detect_schema(record: dict) -> str:
    """Name the record's schema from its keys, or raise Malformed."""
    if not isinstance(record, dict):
        raise Malformed("record is not a JSON object")
    if "conversations" in record:
        turns = _list_of_dicts(record["conversations"], "conversations")
        senders = {_str(m.get("from"), "from") for m in turns}  # a list is not hashable
        return "openthoughts" if "system" in record and senders <= {"user", "assistant"} \
            else "openhermes"
    if "messages" in record:
        return "messages"
    if "instruction" in record and "output" in record:
        return "platypus"
    if "question" in record and "answer" in record:
        return "gsm8k"
    raise Malformed(f"unknown schema (keys: {sorted(record)[:8]})")


def pair_turns(messages: list[tuple[str, str | None, str | None]],
               system: str | None) -> Conversation:
    """(role, text, thinking) messages -> Conversation of user/assistant pairs.

    Empty messages vanish, consecutive messages of one role merge, an assistant message with no
    user before it and a final unanswered user message are dropped.
    """
    merged: list[list] = []
    for role, text, thinking in messages:
        text = clean(text or "")
        thinking = clean(thinking) if thinking else None
        if not text:
            continue
        if merged and merged[-1][0] == role:
            merged[-1][1] += "\n\n" + text
            continue
        merged.append([role, text, thinking or None])
    turns, pending = [], None
    for role, text, thinking in merged:
        if role == "user":
            pending = text
        elif pending is not None:
            turns.append(Turn(pending, text, thinking))
            pending = None
    if not turns:
        raise Dropped("no_pair")
    system = clean(system or "")
    return Conversation(turns=turns, system=system or DEFAULT_SYSTEM_PROMPT)


def _role_messages(items: list[dict], role_key: str, text_key: str
                   ) -> tuple[str | None, list[tuple[str, str, None]]]:
    system, out = None, []
    for m in items:
        role = _ROLES.get(_str(m.get(role_key), role_key))
        text = _str(m.get(text_key, ""), text_key) if m.get(text_key) is not None else ""
        if role is None:
            raise Malformed(f"unknown {role_key} {m.get(role_key)!r}")
        if role == "system":
            system = text if system is None else system + "\n\n" + text
        else:
            out.append((role, text, None))
    return system, out


def from_openhermes(record: dict) -> Conversation:
    """`conversations: [{from: system|human|gpt, value, weight}]`; answers are no-think."""
    items = _list_of_dicts(record["conversations"], "conversations")
    system, messages = _role_messages(items, "from", "value")
    return pair_turns(messages, system)


def from_messages(record: dict) -> Conversation:
    """`messages: [{role: system|user|assistant, content}]` (smoltalk, tulu-3 style)."""
    items = _list_of_dicts(record["messages"], "messages")
    system, messages = _role_messages(items, "role", "content")
    return pair_turns(messages, system)


def from_platypus(record: dict) -> Conversation:
    """`instruction`, optional `input` (appended to the user turn), `output`."""
    user = _str(record["instruction"], "instruction")
    extra = record.get("input") or ""
    if _str(extra, "input").strip():
        user = user.rstrip() + "\n\n" + extra.strip()
    return pair_turns([("user", user, None),
                       ("assistant", _str(record["output"], "output"), None)], None)


def split_thought(value: str) -> tuple[str | None, str]:
    """OpenThoughts assistant value -> (thinking, answer); Dropped if markers are unbalanced."""
    if not any(marker in value for marker in _MARKERS):
        return None, value
    if any(value.count(marker) != 1 for marker in _MARKERS):
        raise Dropped("unbalanced_markers")
    m = _THOUGHT_RE.search(value)
    if m is None:
        raise Dropped("unbalanced_markers")
    return m.group("thought").strip() or None, m.group("solution")


def from_openthoughts(record: dict) -> Conversation:
    """`system` (their marker prompt: replaced by ours) + `conversations` user/assistant."""
    items = _list_of_dicts(record["conversations"], "conversations")
    messages: list[tuple[str, str | None, str | None]] = []
    for m in items:
        role = _ROLES.get(_str(m.get("from"), "from"))
        value = _str(m.get("value"), "value")
        if role == "assistant":
            thinking, answer = split_thought(value)
            messages.append((role, answer, thinking))
        elif role == "user":
            messages.append((role, value, None))
        else:
            raise Malformed(f"unknown from {m.get('from')!r}")
    return pair_turns(messages, None)


def from_gsm8k(record: dict) -> Conversation:
    """`question`, `answer` = working with `<<calc>>` annotations, then `#### N`."""
    question = _str(record["question"], "question")
    answer = _str(record["answer"], "answer")
    working, sep, final = answer.rpartition("####")
    if not sep or not final.strip():
        raise Malformed("answer has no final '#### N' line")
    thinking = _GSM_ANNOTATION.sub("", working).strip() or None
    return pair_turns([("user", question, None),
                       ("assistant", f"The answer is {final.strip()}.", thinking)], None)


_ADAPTERS = {"openhermes": from_openhermes, "platypus": from_platypus,
             "openthoughts": from_openthoughts, "gsm8k": from_gsm8k, "messages": from_messages}


def to_conversation(record: object) -> Conversation:
    """Any supported raw record -> Conversation (raises Malformed or Dropped)."""
    if not isinstance(record, dict):
        raise Malformed("record is not a JSON object")
    try:
        return _ADAPTERS[detect_schema(record)](record)
    except KeyError as err:
        raise Malformed(f"missing field {err}") from None

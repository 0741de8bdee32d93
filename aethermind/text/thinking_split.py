"""Which part of a Forge-1 reply is thinking and which is the answer: the one rule, two inputs.

`SplitState` is the rule. Tags move it through start -> thinking -> between -> answer:
`<|think|>` opens thinking (only at the start), `<|/think|>` closes it, `<|no_think|>` skips
it, `<|assistant|>` opens the answer from any state (a missing `<|/think|>` is tolerated), and
non-blank text outside any block counts as answer (a missing `<|assistant|>` is tolerated too);
any other tag carries no text and changes nothing.
- Our engine, server and evaluation feed it special-token *ids* (`inference.thinking.
  OutputRouter`), so user text that merely spells a tag can never move it.
- `split_thinking` feeds it the decoded *text* other tools return: transformers'
  `decode(skip_special_tokens=True)`, llama.cpp / llama-cpp-python and their OpenAI servers keep
  `<|think|>`/`<|/think|>` in the text (the export makes them ordinary added tokens, see
  `special_tokens.VISIBLE_TOKENS`) and drop the other tags, and this gives them back the split.
Knows the tag strings and nothing else (no tokenizer, no model).
Usage: `thinking, answer = split_thinking("<|think|>\\n2+2=4\\n<|/think|>\\nIt is 4.")`.
"""

from __future__ import annotations

import re
from typing import Literal

from aethermind.text.special_tokens import ASSISTANT, END_THINK, NO_THINK, SPECIAL_TOKENS, THINK

State = Literal["start", "thinking", "between", "answer", "done"]
_TAG_RE = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL_TOKENS) + ")")


class SplitState:
    """The split rule as a state machine; `think` is the prompt's forced choice (None: free)."""

    def __init__(self, think: bool | None = None) -> None:
        self.state: State = {True: "thinking", False: "between", None: "start"}[think]
        self.used_thinking = think is True

    def after_tag(self, tag: str) -> State:
        """The state a tag leads to (the caller switches to it)."""
        if tag == THINK and self.state == "start":
            self.used_thinking = True
            return "thinking"
        if (tag, self.state) in ((END_THINK, "thinking"), (NO_THINK, "start")):
            return "between"
        if tag == ASSISTANT and self.state != "answer":
            return "answer"
        return self.state  # a stray tag inside a block carries no text: ignore it

    def after_text(self, text: str) -> State:
        """The state `text` is read in: text outside a block is answer once it is not blank."""
        if self.state in ("start", "between") and text.strip():
            return "answer"
        return self.state


def split_thinking(text: str, think: bool | None = None) -> tuple[str, str]:
    """(thinking, answer) of a reply's decoded text, each stripped; thinking "" if none.

    A reply that closes a think block it never opened was prompted with the block already open
    (`enable_thinking=True`, or `think=True` here): what comes before `<|/think|>` is thinking.
    """
    if think is None and END_THINK in text and THINK not in text.split(END_THINK, 1)[0]:
        think = True
    split = SplitState(think)
    parts: dict[str, list[str]] = {"thinking": [], "answer": []}
    for i, piece in enumerate(_TAG_RE.split(text)):
        if i % 2:  # re.split puts the captured tags at odd positions
            split.state = split.after_tag(piece)
            continue
        split.state = split.after_text(piece)
        if split.state in parts:
            parts[split.state].append(piece)
    return "".join(parts["thinking"]).strip(), "".join(parts["answer"]).strip()

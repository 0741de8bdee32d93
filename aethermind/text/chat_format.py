"""The Forge-1 chat template: the only module that knows it (guide section 3).

    <|bos|>
    <|system|>...<|/system|>
    <|user|>...<|/user|>
    <|think|>
    ...
    <|/think|>
    <|assistant|>...<|/assistant|>
    <|eos|>

A turn without thinking uses `<|no_think|>` in place of the think block. `render`/`parse` map a
Conversation to this text and back; `encode` goes straight to ids plus a loss mask, encoding
message text as plain text so user content can never turn into a special token.
`STOP_TOKENS` says which tokens end an assistant turn, for every runtime that generates.
Usage: `ids, mask = encode(Conversation(turns=[Turn("Hi", "Hello!")]), tokenizer)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aethermind.text.special_tokens import (  # noqa: F401  (re-exported: the template's names)
    ASSISTANT,
    BOS,
    END_ASSISTANT,
    END_SYSTEM,
    END_THINK,
    END_USER,
    EOS,
    NO_THINK,
    PAD,
    SPECIAL_TOKENS,
    SYSTEM,
    THINK,
    USER,
)

if TYPE_CHECKING:
    from aethermind.text.tokenizer import Forge1Tokenizer

DEFAULT_SYSTEM_PROMPT = "You are Forge-1, a helpful thinking AI assistant."

# The tokens that end an assistant turn, for every runtime: our engine (chat, evaluate, serve),
# the Hugging Face generation_config (`eos_token_id` list) and the GGUF end-of-generation keys.
# - END_ASSISTANT closes an answer: the token the model is trained to emit (loss mask).
# - EOS closes a conversation or a plain document.
# - USER: in the template only `<|/assistant|>\n` comes before it, so a model that skipped
#   `<|/assistant|>` would go on to invent the user's next message; stopping here ends the
#   turn where the template says the next one begins.
# BOS is left out: it only opens a document, and in training text it always follows EOS,
# which has stopped generation already. The list is also what llama.cpp can express exactly:
# its end-of-generation set is the tokens under the GGUF keys eos/eot/eom (plus FIM keys and a
# fixed list of names such as `<|im_end|>`, none of ours); three keys, three tokens. Ordered by
# role: the end of turn first.
STOP_TOKENS = (END_ASSISTANT, EOS, USER)

_SPECIAL_RE = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS))
WORD_JOINER = "\u2060"  # invisible; breaks a special-token string without changing how it reads


@dataclass
class Turn:
    """One exchange. `thinking=None` renders `<|no_think|>`; a string renders a think block."""

    user: str
    assistant: str
    thinking: str | None = None


@dataclass
class Conversation:
    turns: list[Turn] = field(default_factory=list)
    system: str = DEFAULT_SYSTEM_PROMPT


def stop_ids(tokenizer: Forge1Tokenizer) -> list[int]:
    """The ids of STOP_TOKENS in `tokenizer`."""
    return [tokenizer.special_ids[s] for s in STOP_TOKENS]


def contains_special(text: str) -> bool:
    return _SPECIAL_RE.search(text) is not None


def sanitize(text: str) -> str:
    """Neutralise special-token strings inside message text (`<|user|>` -> `<\u2060|user|>`)."""
    return _SPECIAL_RE.sub(lambda m: m.group(0)[0] + WORD_JOINER + m.group(0)[1:], text)


def _check_text(text: str, where: str) -> None:
    if contains_special(text):
        raise ValueError(f"{where} contains a special-token string such as '<|user|>': "
                         "pass it through chat_format.sanitize() first")


def _assistant_pieces(turn: Turn) -> list[str]:
    head = [_S[THINK], "\n" + turn.thinking + "\n", _S[END_THINK], "\n"] \
        if turn.thinking is not None else [_S[NO_THINK], "\n"]
    return [*head, _S[ASSISTANT], turn.assistant, _S[END_ASSISTANT]]


class _Special(str):
    """A template token. Only pieces of this type become special ids: message text that merely
    equals a special-token string (a user typing "<|eos|>") is never one of them."""


_S = {s: _Special(s) for s in SPECIAL_TOKENS}


def _pieces(conv: Conversation) -> list[tuple[str, bool]]:
    """The template as (piece, is_loss) pairs; special tokens are `_Special` pieces."""
    out: list[tuple[str, bool]] = [(_S[BOS], False), ("\n", False), (_S[SYSTEM], False),
                                   (conv.system, False), (_S[END_SYSTEM], False), ("\n", False)]
    for turn in conv.turns:
        out += [(_S[USER], False), (turn.user, False), (_S[END_USER], False), ("\n", False)]
        out += [(p, True) for p in _assistant_pieces(turn)]
        out.append(("\n", False))
    out.append((_S[EOS], False))
    return out


def render(conv: Conversation) -> str:
    """The guide's text form. Raises ValueError if message text holds a special-token string."""
    _check_conversation(conv)
    return "".join(piece for piece, _ in _pieces(conv))


def render_prompt(conv: Conversation, user_message: str, *, think: bool | None = None) -> str:
    """Text up to where the model speaks: `...<|user|>msg<|/user|>\\n` (+ forced think choice)."""
    text = render(conv)[: -len(EOS)] + USER + user_message + END_USER + "\n"
    if think is True:
        text += THINK + "\n"
    elif think is False:
        text += NO_THINK + "\n"
    return text


def _check_conversation(conv: Conversation) -> None:
    _check_text(conv.system, "system prompt")
    for i, turn in enumerate(conv.turns):
        _check_text(turn.user, f"turn {i} user message")
        _check_text(turn.assistant, f"turn {i} assistant answer")
        if turn.thinking is not None:
            _check_text(turn.thinking, f"turn {i} thinking")


def _encode_pieces(pieces: list[tuple[str, bool]], tokenizer: Forge1Tokenizer
                   ) -> tuple[list[int], list[int]]:
    special = tokenizer.special_ids
    texts = [p for p, _ in pieces if not isinstance(p, _Special) and p]
    encoded = iter(tokenizer.encode_batch(texts))  # plain text: never a special id
    ids: list[int] = []
    mask: list[int] = []
    for piece, is_loss in pieces:
        if isinstance(piece, _Special):
            piece_ids = [special[piece]]
        elif piece:
            piece_ids = next(encoded)
        else:
            continue
        ids += piece_ids
        mask += [int(is_loss)] * len(piece_ids)
    return ids, mask


def encode(conv: Conversation, tokenizer: Forge1Tokenizer) -> tuple[list[int], list[int]]:
    """Token ids and loss mask (1 on think block + answer incl. closing tokens, 0 elsewhere).

    Message text is encoded as plain text, so any content is safe here, sanitised or not.
    """
    return _encode_pieces(_pieces(conv), tokenizer)


def encode_prompt(conv: Conversation, user_message: str, tokenizer: Forge1Tokenizer, *,
                  think: bool | None = None) -> list[int]:
    """Ids of `render_prompt(...)`, safe for any user text."""
    pieces = _pieces(conv)[:-1] + [(_S[USER], False), (user_message, False),
                                   (_S[END_USER], False), ("\n", False)]
    if think is not None:
        pieces += [(_S[THINK] if think else _S[NO_THINK], False), ("\n", False)]
    return _encode_pieces(pieces, tokenizer)[0]


def encode_answer(turn: Turn, tokenizer: Forge1Tokenizer) -> list[int]:
    """Ids of what the model writes for `turn` after `encode_prompt`: its think block (or
    no-think tag) and answer, the closing tag included; `encode`'s loss tokens of that turn."""
    _check_conversation(Conversation(turns=[turn]))
    return _encode_pieces([(p, True) for p in _assistant_pieces(turn)], tokenizer)[0]


def _field(name: str) -> str:
    """A named group of message text: it never holds a special-token string, so a field can
    not run across the template (this is what makes `parse` strict)."""
    return rf"(?P<{name}>(?:(?!{_SPECIAL_RE.pattern}).)*)"


_E = re.escape
_TURN_RE = re.compile(
    _E(USER) + _field("user") + _E(END_USER) + r"\n"
    + r"(?:" + _E(THINK) + r"\n" + _field("thinking") + r"\n" + _E(END_THINK) + r"\n|"
    + _E(NO_THINK) + r"\n)"
    + _E(ASSISTANT) + _field("assistant") + _E(END_ASSISTANT) + r"\n", re.DOTALL)
_HEAD_RE = re.compile(_E(BOS) + r"\n" + _E(SYSTEM) + _field("system") + _E(END_SYSTEM) + r"\n",
                      re.DOTALL)


def parse(text: str) -> Conversation:
    """Inverse of `render`. Raises ValueError naming where the text leaves the template."""
    head = _HEAD_RE.match(text)
    if head is None:
        raise ValueError("not a Forge-1 conversation: it must start with "
                         "'<|bos|>\\n<|system|>...<|/system|>\\n'")
    conv = Conversation(system=head.group("system"))
    pos = head.end()
    while not text.startswith(EOS, pos):
        m = _TURN_RE.match(text, pos)
        if m is None:
            raise ValueError(f"malformed Forge-1 turn at character {pos}: expected "
                             "'<|user|>...<|/user|>\\n', a think block or '<|no_think|>\\n', "
                             "then '<|assistant|>...<|/assistant|>\\n'")
        conv.turns.append(Turn(m.group("user"), m.group("assistant"), m.group("thinking")))
        pos = m.end()
    if text[pos + len(EOS):].strip():
        raise ValueError(f"text continues after <|eos|> at character {pos}")
    return conv

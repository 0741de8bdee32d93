"""The Forge-1 chat format as a Jinja chat template, for tools that only speak Jinja.

Hugging Face `apply_chat_template`, llama.cpp / llama-server (GGUF `tokenizer.chat_template`) and
OpenAI-style servers render `messages` with this template. It is built from `chat_format`'s
token constants and must produce exactly `chat_format.render` / `render_prompt` (tests compare
them). `CHAT_TEMPLATE` is what llama.cpp and the GGUF get; `HF_CHAT_TEMPLATE` renders the
same text with `{% generation %}` markers around what our loss mask trains on (TRL's
`assistant_only_loss`). Conventions:
- A leading `system` (or OpenAI's newer name for it, `developer`) message replaces the default
  system prompt; without one the default is used.
- Message content is a string or OpenAI content parts (`[{"type": "text", "text": ...}]`),
  whose texts are joined with nothing between them, as the server joins them; other part
  types are refused.
- An assistant message's `reasoning_content` (DeepSeek / llama.cpp field) becomes its think block;
  without it the turn renders `<|no_think|>`.
- `add_generation_prompt=True` ends after `<|/user|>\\n`; `enable_thinking` (Qwen3 convention)
  then appends `<|think|>\\n` (True, think first) or `<|no_think|>\\n` (False, answer directly);
  left undefined, the model chooses, as `render_prompt(think=None)`.
- A conversation ending with an assistant message (no generation prompt) ends with `<|eos|>`,
  like `render` of a training conversation.
- Message text is sanitised like `chat_format.sanitize`, so a message can never inject a
  special token when the rendered text is tokenized with special-token parsing on.
Usage: `text = render_messages([{"role": "user", "content": "Hi"}], add_generation_prompt=True)`.
"""

from __future__ import annotations

import json
from typing import Any

from aethermind.text import chat_format as cf

SYSTEM_ROLES = ("system", "developer")  # OpenAI renamed "system" to "developer" for o-series


def _lit(text: str) -> str:
    """A Jinja string literal (JSON escaping is valid Jinja and keeps newlines explicit)."""
    return json.dumps(text, ensure_ascii=False)


def _build(generation: bool = False) -> str:
    clean = "".join(f" | replace({_lit(s)}, {_lit(s[0] + cf.WORD_JOINER + s[1:])})"
                    for s in cf.SPECIAL_TOKENS)
    no_think, think = _lit(cf.NO_THINK + "\n"), _lit(cf.THINK + "\n")
    # {% generation %} marks what `return_assistant_tokens_mask` (TRL's assistant_only_loss)
    # trains on: exactly our loss mask, the think choice through <|/assistant|>.
    gen_open, gen_close = ("{%- generation -%}", "{%- endgeneration -%}") if generation \
        else ("", "")
    return (
        # Message content is a string or OpenAI content parts, joined like the server does.
        "{%- macro clean(content) -%}{%- set ns_text = namespace(text='') -%}"
        "{%- if content is string or content is none -%}{%- set ns_text.text = content or '' -%}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] != 'text' -%}{{- raise_exception('Forge-1 reads text only; got a "
        "content part of type ' + part['type']) -}}{%- endif -%}"
        "{%- set ns_text.text = ns_text.text + part['text'] -%}{%- endfor -%}{%- endif -%}"
        "{{- ns_text.text" + clean + " -}}{%- endmacro -%}"
        "{%- set ns = namespace(system=" + _lit(cf.DEFAULT_SYSTEM_PROMPT) + ", start=0) -%}"
        "{%- if messages and messages[0]['role'] in " + _lit(list(SYSTEM_ROLES)) + " -%}"
        "{%- set ns.system = messages[0]['content'] -%}{%- set ns.start = 1 -%}{%- endif -%}"
        "{{- " + _lit(cf.BOS + "\n" + cf.SYSTEM) + " + clean(ns.system) + "
        + _lit(cf.END_SYSTEM + "\n") + " -}}"
        "{%- for message in messages[ns.start:] -%}"
        "{%- if message['role'] == 'user' -%}"
        "{{- " + _lit(cf.USER) + " + clean(message['content']) + " + _lit(cf.END_USER + "\n")
        + " -}}"
        "{%- elif message['role'] == 'assistant' -%}" + gen_open +
        "{%- if message['reasoning_content'] is defined and message['reasoning_content'] "
        "is not none -%}"
        "{{- " + _lit(cf.THINK + "\n") + " + clean(message['reasoning_content']) + "
        + _lit("\n" + cf.END_THINK + "\n") + " -}}"
        "{%- else -%}{{- " + no_think + " -}}{%- endif -%}"
        "{{- " + _lit(cf.ASSISTANT) + " + clean(message['content']) + "
        + _lit(cf.END_ASSISTANT) + " -}}" + gen_close + "{{- " + _lit("\n") + " -}}"
        "{%- else -%}"
        "{{- raise_exception('Forge-1 chats have one leading system (or developer) message, "
        "then user and assistant messages; got role ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{%- if enable_thinking is defined and enable_thinking is not none -%}"
        "{%- if enable_thinking -%}{{- " + think + " -}}{%- else -%}{{- " + no_think + " -}}"
        "{%- endif -%}{%- endif -%}"
        "{%- elif messages and messages[-1]['role'] == 'assistant' -%}"
        "{{- " + _lit(cf.EOS) + " -}}"
        "{%- endif -%}"
    )


CHAT_TEMPLATE = _build()
# The Hugging Face folder's template: the same text, with {% generation %} markers. Only
# transformers knows that tag (llama-cpp-python's Jinja rejects it), so the GGUF keeps the
# plain one.
HF_CHAT_TEMPLATE = _build(generation=True)


def render_messages(messages: list[dict[str, Any]], *, add_generation_prompt: bool = False,
                    enable_thinking: bool | None = None) -> str:
    """Render with Jinja's sandbox the way `transformers` does (trim/lstrip blocks on)."""
    # jinja2 is not a dependency of the package (transformers brings it): imported on use.
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    extra = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return env.from_string(CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=add_generation_prompt, **extra)


def conversation_messages(conv: cf.Conversation) -> list[dict[str, Any]]:
    """OpenAI-style messages for a Conversation (thinking -> `reasoning_content`)."""
    out: list[dict[str, Any]] = [{"role": "system", "content": conv.system}]
    for turn in conv.turns:
        out.append({"role": "user", "content": turn.user})
        answer: dict[str, Any] = {"role": "assistant", "content": turn.assistant}
        if turn.thinking is not None:
            answer["reasoning_content"] = turn.thinking
        out.append(answer)
    return out

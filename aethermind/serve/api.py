"""The OpenAI chat-completions protocol of `aethermind serve`: requests, errors, replies.

Validates a request body into a `ChatRequest` (prompt ids from `chat_format`, the only module
that knows the template, plus sampling parameters), turns problems into `APIError`s that render
as OpenAI-style error bodies, and decodes a sequence's token ids into what the client sees:
thinking and answer text split by special-token ids (`thinking.OutputRouter`), streamed without
splitting a UTF-8 character, cut at the request's stop strings. It knows nothing about HTTP
servers or threads (`server.py`, `scheduler.py`).
Usage: `req = parse_request(body, tok, max_seq_len=512, model_id="forge1_tiny_final")`.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aethermind.inference.sampling import SamplingParams, SamplingValueError
from aethermind.inference.thinking import OutputRouter
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import SYSTEM_ROLES

ROLES = (*SYSTEM_ROLES, "user", "assistant")
MAX_STOP_STRINGS = 4  # as OpenAI
# OpenAI's reasoning_effort values -> the thinking switch: the model has one think block or
# none, no budget, so every effort that asks for reasoning turns it on.
REASONING_EFFORTS = {"none": False, "minimal": False, "low": True, "medium": True, "high": True}


class APIError(Exception):
    """A request the server refuses; renders as `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = (
            status, message, param, code, type)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# --- request schema ---------------------------------------------------------------------------
class _Lenient(BaseModel):
    # Clients send many fields we do not use (user, metadata, ...): ignore them, like vLLM.
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: Any) -> Any:
        """OpenAI reads `null` for an optional field as "not given" (clients send
        `temperature: null`), so such a key takes the field's default; a required field
        stays null and gets its validation error."""
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items()
                if v is not None or k not in fields or fields[k].is_required()}


class _TextPart(_Lenient):
    type: str
    text: str | None = None


class _Message(_Lenient):
    role: str
    content: str | list[_TextPart] | None = None
    reasoning_content: str | None = None  # DeepSeek / vLLM name for the thinking
    reasoning: str | None = None  # OpenRouter / newer vLLM name for the same


class _StreamOptions(_Lenient):
    include_usage: bool = False


class _ResponseFormat(_Lenient):
    type: str


class SamplingBody(_Lenient):
    """The fields chat and text completions share (their defaults are OpenAI's)."""

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)  # extension (vLLM, llama.cpp)
    repetition_penalty: float = Field(1.0, gt=0.0)  # extension (vLLM)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class _Body(SamplingBody):
    messages: list[_Message]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None  # OpenAI's newer name for max_tokens
    logprobs: bool | None = None
    tools: list[Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # {"enable_thinking": bool}, as vLLM
    ignore_eos: bool = False  # extension (vLLM): generate exactly max_tokens (benchmarks)
    reasoning_effort: str | None = None  # OpenAI's; REASONING_EFFORTS maps it
    response_format: _ResponseFormat | None = None


@dataclass
class ChatRequest:
    """A validated request: what the scheduler and the reply decoder need."""

    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]
    think: bool | None  # forced thinking choice; None lets the model pick
    stream: bool
    include_usage: bool
    model: str


def _param_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def from_validation(err: ValidationError) -> APIError:
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if p not in ("str", "list[_TextPart]"))
    param = _param_name(loc) or None
    where = f"{param}: " if param else ""
    return APIError(400, f"{where}{first['msg']}", param=param)


def validate_body(raw: Any, schema: type[BaseModel]) -> Any:
    """`raw` (decoded JSON) as `schema`, or a 400 naming the first bad field."""
    if not isinstance(raw, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise from_validation(err) from None


def check_model(requested: str | None, model_id: str) -> None:
    """404 unless `requested` (None: any) is the model this server serves."""
    if requested is not None and requested != model_id:
        raise APIError(404, f"model {requested!r} does not exist: this server serves "
                       f"{model_id!r} (GET /v1/models)", param="model", code="model_not_found")


def _text(msg: _Message, i: int) -> str:
    """A message's text: a string, or the text parts of a content list (images refused)."""
    if msg.content is None:
        if msg.role == "assistant":
            return ""
        raise APIError(400, f"messages[{i}].content is missing: give the message text",
                       param=f"messages[{i}].content")
    if isinstance(msg.content, str):
        return msg.content
    texts = []
    for j, part in enumerate(msg.content):
        if part.type != "text" or part.text is None:
            raise APIError(400, f"messages[{i}].content[{j}] has type {part.type!r}: this model "
                           "reads text only", param=f"messages[{i}].content[{j}].type")
        texts.append(part.text)
    return "".join(texts)


def build_conversation(messages: list[_Message]) -> tuple[cf.Conversation, str]:
    """(earlier turns with the system prompt, the last user message) from OpenAI messages.

    System messages join into the system prompt; consecutive messages of one role join with a
    blank line; an assistant's `reasoning_content`/`reasoning` becomes its think block.
    """
    if not messages:
        raise APIError(400, "messages is empty: send at least one user message",
                       param="messages")
    system: list[str] = []
    turns: list[list[Any]] = []  # [user, assistant | None, thinking | None]
    for i, msg in enumerate(messages):
        if msg.role not in ROLES:
            raise APIError(400, f"messages[{i}].role is {msg.role!r}: use one of "
                           f"{', '.join(ROLES)}", param=f"messages[{i}].role")
        text = _text(msg, i)
        if msg.role in SYSTEM_ROLES:
            system.append(text)
        elif msg.role == "user":
            if turns and turns[-1][1] is None:
                turns[-1][0] += "\n\n" + text
            else:
                turns.append([text, None, None])
        else:
            if not turns:
                raise APIError(400, f"messages[{i}] is an assistant message before any user "
                               "message: start the conversation with a user message",
                               param=f"messages[{i}].role")
            thinking = msg.reasoning_content if msg.reasoning_content is not None \
                else msg.reasoning
            turn = turns[-1]
            turn[1] = text if turn[1] is None else turn[1] + "\n\n" + text
            if thinking is not None:
                turn[2] = thinking if turn[2] is None else turn[2] + "\n\n" + thinking
    if not turns or turns[-1][1] is not None:
        raise APIError(400, "the last message must be a user message: the model answers it",
                       param="messages")
    conv = cf.Conversation(turns=[cf.Turn(u, a, t) for u, a, t in turns[:-1]],
                           system="\n\n".join(system) if system else cf.DEFAULT_SYSTEM_PROMPT)
    return conv, turns[-1][0]


def refuse(checks: list[tuple[bool, str, str]]) -> None:
    """400 for the first (bad, param, message) that is bad."""
    for bad, param, message in checks:
        if bad:
            raise APIError(400, message, param=param)


def unsupported_sampling(body: SamplingBody) -> list[tuple[bool, str, str]]:
    return [
        (body.n != 1, "n", f"n={body.n}: only n=1 is supported"),
        (body.presence_penalty != 0, "presence_penalty",
         "presence_penalty is not supported: use repetition_penalty"),
        (body.frequency_penalty != 0, "frequency_penalty",
         "frequency_penalty is not supported: use repetition_penalty"),
    ]


def _unsupported(body: _Body) -> None:
    fmt = body.response_format.type if body.response_format else "text"
    refuse([
        *unsupported_sampling(body),
        (bool(body.logprobs), "logprobs", "logprobs are not supported"),
        (bool(body.tools), "tools", "tools (function calling) are not supported"),
        (fmt != "text", "response_format.type",
         f"response_format {fmt!r} is not supported: this server cannot guarantee JSON; "
         "ask for it in the prompt and parse the answer yourself (only 'text' is accepted)"),
    ])


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    """The request's stop strings: at most MAX_STOP_STRINGS, none empty."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
        raise APIError(400, f"stop: give at most {MAX_STOP_STRINGS} non-empty strings",
                       param="stop")
    return tuple(stops)


def sampling_params(body: SamplingBody, max_new_tokens: int) -> SamplingParams:
    """The request's sampling; a 400 naming the field for what `SamplingParams` refuses and
    pydantic cannot say (finite values, a 64-bit seed)."""
    try:
        return SamplingParams(max_new_tokens=max_new_tokens, temperature=body.temperature,
                              top_k=body.top_k or None, top_p=body.top_p, seed=body.seed,
                              repetition_penalty=body.repetition_penalty)
    except SamplingValueError as err:
        raise APIError(400, str(err), param=err.field) from None


def _max_tokens(body: _Body, prompt_len: int, max_seq_len: int) -> int:
    """The token budget: the request's (1..max_seq_len), else all the room left."""
    value, param = body.max_completion_tokens, "max_completion_tokens"
    if value is None:
        value, param = body.max_tokens, "max_tokens"
    if value is not None and not 1 <= value <= max_seq_len:
        raise APIError(400, f"{param}={value}: must be between 1 and the model's context of "
                       f"{max_seq_len} tokens", param=param)
    room = max_seq_len - prompt_len
    if room < 1:
        raise context_exceeded(prompt_len, max_seq_len, 1, "messages")
    return min(value or room, room)


def context_exceeded(prompt_len: int, max_seq_len: int, needed: int, param: str) -> APIError:
    """The 400 for a prompt that leaves fewer than `needed` tokens of the context."""
    what = "leaves no room in" if needed else "is more than"
    return APIError(400, f"the prompt is {prompt_len} tokens, which {what} the model's "
                    f"{max_seq_len}-token context: shorten the {param} by at least "
                    f"{prompt_len + needed - max_seq_len} tokens", param=param,
                    code="context_length_exceeded")


def _effort_think(effort: str | None) -> bool | None:
    if effort is None:
        return None
    if effort not in REASONING_EFFORTS:
        raise APIError(400, f"reasoning_effort {effort!r}: use one of "
                       f"{', '.join(REASONING_EFFORTS)}", param="reasoning_effort")
    return REASONING_EFFORTS[effort]


def _think_choice(body: _Body) -> bool | None:
    kwargs = body.chat_template_kwargs or {}
    value = kwargs.get("enable_thinking")
    if value is not None and not isinstance(value, bool):
        raise APIError(400, "chat_template_kwargs.enable_thinking must be true or false",
                       param="chat_template_kwargs.enable_thinking")
    effort = _effort_think(body.reasoning_effort)
    if value is not None and effort is not None and value != effort:
        raise APIError(400, f"reasoning_effort {body.reasoning_effort!r} contradicts "
                       f"chat_template_kwargs.enable_thinking={str(value).lower()}: send one "
                       "of them", param="reasoning_effort")
    return effort if value is None else value


def parse_request(raw: Any, tokenizer: Any, *, max_seq_len: int, model_id: str
                  ) -> ChatRequest:
    """Validate a decoded JSON body; raises `APIError` (400/404) naming the field and the fix."""
    body = validate_body(raw, _Body)
    check_model(body.model, model_id)
    _unsupported(body)
    stops = stop_strings(body.stop)
    think = _think_choice(body)
    conv, user_message = build_conversation(body.messages)
    ids = cf.encode_prompt(conv, user_message, tokenizer, think=think)
    params = sampling_params(body, _max_tokens(body, len(ids), max_seq_len))
    stop_ids = () if body.ignore_eos else tuple(cf.stop_ids(tokenizer))
    return ChatRequest(ids, params, stop_ids, stops, think, body.stream,
                       include_usage(body), model_id)


def include_usage(body: SamplingBody) -> bool:
    return bool(body.stream_options and body.stream_options.include_usage)


# --- replies ----------------------------------------------------------------------------------
class StopMatcher:
    """Cuts streamed text at the first stop string, holding back what could start one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped or not text:
            return ""
        buf = self.held + text
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped, self.held = True, ""
            return buf[:min(hits)]
        keep = 0  # longest tail of buf that is a proper prefix of a stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), keep, -1):
                if s.startswith(buf[-k:]):
                    keep = k
                    break
        self.held = buf[len(buf) - keep:]
        return buf[:len(buf) - keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


class ReplyDecoder:
    """Token ids of one reply -> (part, text) pieces, part "thinking" or "answer".

    `push` returns the pieces each new token completes; `finish` the rest. Concatenated, the
    pieces of a part equal that part of the finished reply. `stopped` turns True once the answer
    reached a stop string: the caller then ends the sequence.
    """

    def __init__(self, tokenizer: Any, think: bool | None, stops: tuple[str, ...]) -> None:
        self.pieces: list[tuple[str, str]] = []
        self.matcher = StopMatcher(stops)
        self.router = OutputRouter(tokenizer, think, self._collect)
        self.text = {"thinking": "", "answer": ""}

    def _collect(self, part: str, text: str) -> None:
        if part == "answer":
            text = self.matcher.push(text)
        elif self.matcher.stopped:
            text = ""
        if text:
            self.pieces.append((part, text))
            self.text[part] += text

    def _take(self) -> list[tuple[str, str]]:
        out, self.pieces = self.pieces, []
        return out

    @property
    def stopped(self) -> bool:
        return self.matcher.stopped

    @property
    def used_thinking(self) -> bool:
        return self.router.used_thinking

    def push(self, token: int) -> list[tuple[str, str]]:
        if not self.stopped:
            self.router.push(token)
        return self._take()

    def finish(self) -> list[tuple[str, str]]:
        if not self.stopped:
            self.router.finish()
            rest = self.matcher.flush()
            if rest:
                self.pieces.append(("answer", rest))
                self.text["answer"] += rest
        return self._take()


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _envelope(cid: str, obj: str, model: str, created: int) -> dict[str, Any]:
    return {"id": cid, "object": obj, "created": created, "model": model,
            "system_fingerprint": None}


def completion_body(cid: str, req: ChatRequest, decoder: ReplyDecoder, finish_reason: str,
                    completion_tokens: int, created: int) -> dict[str, Any]:
    """The non-streamed `chat.completion` object; thinking in both reasoning fields."""
    thinking = decoder.text["thinking"] if decoder.used_thinking else None
    message = {"role": "assistant", "content": decoder.text["answer"],
               "reasoning_content": thinking, "reasoning": thinking}
    return {**_envelope(cid, "chat.completion", req.model, created),
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage(len(req.prompt_ids), completion_tokens)}


Delta = dict[str, Any]


def piece_delta(part: str, text: str) -> Delta:
    return {"content": text} if part == "answer" else \
        {"reasoning_content": text, "reasoning": text}


def chunk_body(cid: str, req: ChatRequest, created: int, delta: Delta | None,
               finish_reason: str | None = None, usage_: dict | None = None
               ) -> dict[str, Any]:
    """One `chat.completion.chunk`; `delta=None` is the usage-only chunk (no choices)."""
    body = _envelope(cid, "chat.completion.chunk", req.model, created)
    body["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    if usage_ is not None or req.include_usage:
        body["usage"] = usage_
    return body


def now() -> int:
    return int(time.time())


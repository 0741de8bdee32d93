"""The thinking pipeline (guide section 5): prompt -> the model thinks or not -> parsed result.

`answer(engine, tok, message, params)` is the core every command shares (chat, evaluate, demo):
it renders the conversation with `chat_format`, lets the model pick `<|think|>` or
`<|no_think|>` (or forces one), generates with the caller's `engine.Engine` and the caller's
`SamplingParams`, and splits the output into thinking and answer by the special-token ids,
never by searching text, so user text cannot fake a tag. The guide's `run_thinking_pipeline`
(model, loose sampling arguments) is a thin wrapper that builds both and calls `answer`.
Parsing is forgiving: a missing `<|/think|>` (the model went straight to `<|assistant|>`), a
missing `<|assistant|>`, an empty answer, or output cut off by `max_new_tokens` all give a result.
Context policy: the oldest history turns are dropped until the prompt leaves room for
`min(max_new_tokens, max_seq_len // 4)` new tokens; the system prompt always stays. If even the
system prompt plus the new message do not leave that room, `PromptTooLongError` is raised.
Callers that answer more than one message build one `Engine` and keep it, so the CPU weight
prepacking and the KV cache are set up once, not per message.
Usage: `r = answer(Engine(model), tok, "What is 15 * 23?", SamplingParams(temperature=0))`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aethermind.inference.engine import Engine, FinishReason, PromptTooLongError, TextStream
from aethermind.inference.sampling import SamplingParams
from aethermind.runtime.dist import select_device
from aethermind.text import chat_format as cf
from aethermind.text.thinking_split import SplitState, State

StreamFn = Callable[[str, str], None]  # stream(part, text), part is "thinking" or "answer"


@dataclass
class ThinkingResult:
    thinking: str  # "" when the model did not think
    answer: str
    used_thinking: bool
    prompt_tokens: int
    completion_tokens: int  # sampled tokens, the stop token included
    time_to_first_token_s: float
    seconds: float
    finish_reason: FinishReason = "stop"  # "stop" or "length" (ran out of tokens or context)
    dropped_turns: int = 0  # oldest history turns left out to fit the context

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class _Segment:
    """One part of the output (thinking or answer): streamed text with outer whitespace trimmed.

    Leading whitespace is dropped and trailing whitespace held back until more text follows,
    so the streamed pieces concatenate to exactly the final, stripped text.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.stream = TextStream(decode)
        self.parts: list[str] = []
        self.pending = ""

    def _emit(self, piece: str) -> str:
        if not self.parts:
            piece = piece.lstrip()
        text = self.pending + piece
        visible = text.rstrip()
        self.pending = text[len(visible):]
        if visible:
            self.parts.append(visible)
        return visible

    def push(self, token: int) -> str:
        return self._emit(self.stream.push(token))

    def close(self) -> str:
        return self._emit(self.stream.flush())

    @property
    def text(self) -> str:
        return "".join(self.parts)


class OutputRouter:
    """Feeds generated ids, one at a time, into the thinking or the answer segment.

    Which part a token belongs to is `thinking_split.SplitState`'s rule (the one `split_thinking`
    applies to text), driven here by special-token ids: user text never moves it.
    """

    def __init__(self, tokenizer: Any, think: bool | None = None,
                 stream: StreamFn | None = None) -> None:
        decode = tokenizer.decode
        self.special = {i: s for s, i in tokenizer.special_ids.items()}
        self.segments = {"thinking": _Segment(decode), "answer": _Segment(decode)}
        self.stream = stream
        self.split = SplitState(think)
        self.loose: list[int] = []  # text ids seen outside a block, kept until non-blank

    @property
    def state(self) -> str:
        return self.split.state

    @property
    def used_thinking(self) -> bool:
        return self.split.used_thinking

    def _send(self, part: str, text: str) -> None:
        if text and self.stream is not None:
            self.stream(part, text)

    def _enter(self, state: State) -> None:
        if self.state == "thinking" and state != "thinking":
            self._send("thinking", self.segments["thinking"].close())
        self.split.state = state

    def push(self, token: int) -> None:
        special = self.special.get(token)
        if special is not None:
            self._enter(self.split.after_tag(special))
        elif self.state in ("thinking", "answer"):
            self._send(self.state, self.segments[self.state].push(token))
        else:  # text before the model opened a block
            self.loose.append(token)
            stream = TextStream(self.segments["answer"].stream.decode)
            state = self.split.after_text("".join(stream.push(t) for t in self.loose))
            if state == "answer":
                self._enter(state)
                for t in self.loose:
                    self._send("answer", self.segments["answer"].push(t))
                self.loose = []

    def finish(self) -> tuple[str, str, bool]:
        """(thinking, answer, used_thinking) once generation has ended, for whatever reason."""
        self._enter("done")
        self._send("answer", self.segments["answer"].close())
        return self.segments["thinking"].text, self.segments["answer"].text, self.used_thinking


def parse_completion(ids: Sequence[int], tokenizer: Any, think: bool | None = None
                     ) -> tuple[str, str, bool]:
    """Split generated ids into (thinking, answer, used_thinking); see `OutputRouter`."""
    router = OutputRouter(tokenizer, think)
    for token in ids:
        router.push(token)
    return router.finish()


def _as_turns(history: Sequence[Any] | None) -> list[cf.Turn]:
    turns = []
    for item in history or ():
        if isinstance(item, cf.Turn):
            turns.append(item)
        else:
            turns.append(cf.Turn(item["user"], item["assistant"], item.get("thinking")))
    return turns


def build_prompt(tokenizer: Any, user_message: str, *, history: Sequence[Any] | None = None,
                 system_prompt: str | None = None, think: bool | None = None,
                 max_seq_len: int, max_new_tokens: int) -> tuple[list[int], int]:
    """Prompt ids and the number of oldest turns dropped to fit (see the module docstring)."""
    turns = _as_turns(history)
    system = cf.DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    reserve = max(1, min(max_new_tokens, max_seq_len // 4))
    for dropped in range(len(turns) + 1):
        conv = cf.Conversation(turns=turns[dropped:], system=system)
        ids = cf.encode_prompt(conv, user_message, tokenizer, think=think)
        if len(ids) + reserve <= max_seq_len:
            return ids, dropped
    raise PromptTooLongError(
        f"message too long: the system prompt and message take {len(ids)} tokens, leaving no "
        f"room for {reserve} new tokens in the {max_seq_len}-token context; shorten the "
        "message or the system prompt")


def _prepare(model: torch.nn.Module, device: str | torch.device | None) -> torch.nn.Module:
    dev = select_device(device)
    param = next(model.parameters())
    if param.device.type != dev.type or (dev.index is not None and param.device != dev):
        model = model.to(dev)
    return model.eval()


def answer(engine: Engine, tokenizer: Any, message: str, params: SamplingParams, *,
           history: Sequence[Any] | None = None, system: str | None = None,
           think: bool | None = None, stream: StreamFn | None = None) -> ThinkingResult:
    """Answer `message` with `engine` (idle, reused across calls), sampled as `params` says.

    Args:
        history: earlier turns (`chat_format.Turn` or dicts with user/assistant/thinking);
            the oldest are dropped to fit the context (`ThinkingResult.dropped_turns`).
        system: the system prompt; None is `chat_format.DEFAULT_SYSTEM_PROMPT`.
        think: True forces `<|think|>`, False `<|no_think|>`, None lets the model choose.
        stream: `stream(part, text)` called with text pieces as they are decoded, part being
            "thinking" or "answer"; pieces never split a character.
    """
    start = time.perf_counter()
    ids, dropped = build_prompt(tokenizer, message, history=history, system_prompt=system,
                                think=think, max_seq_len=engine.max_seq_len,
                                max_new_tokens=params.max_new_tokens)
    router = OutputRouter(tokenizer, think, stream)
    engine_start = time.perf_counter()
    gen = engine.generate(ids, params, cf.stop_ids(tokenizer), on_token=router.push)
    thinking, text, used = router.finish()
    return ThinkingResult(
        thinking=thinking, answer=text, used_thinking=used, prompt_tokens=len(ids),
        completion_tokens=len(gen.tokens) + (gen.stop_token is not None),
        time_to_first_token_s=engine_start - start + gen.time_to_first_token_s,
        seconds=time.perf_counter() - start, finish_reason=gen.finish_reason,
        dropped_turns=dropped)


def run_thinking_pipeline(model: torch.nn.Module, tokenizer: Any, user_message: str,
                          max_new_tokens: int = SamplingParams.max_new_tokens,
                          temperature: float = SamplingParams.temperature,
                          device: str | torch.device | None = "cpu", *,
                          history: Sequence[Any] | None = None, system_prompt: str | None = None,
                          top_k: int | None = SamplingParams.top_k,
                          top_p: float | None = SamplingParams.top_p,
                          seed: int | None = SamplingParams.seed,
                          force_thinking: bool | None = None, stream: StreamFn | None = None,
                          repetition_penalty: float = SamplingParams.repetition_penalty,
                          engine: Engine | None = None) -> ThinkingResult:
    """The guide's entry point (section 5): `answer` with the model and loose sampling options.

    Sampling defaults are `SamplingParams`'s; `history`, `system_prompt`, `force_thinking` and
    `stream` are `answer`'s `history`, `system`, `think` and `stream`.

    Args:
        device: where to run; the model is moved there if needed. A CUDA device on a machine
            without one falls back to the CPU with a warning, so the guide's snippet runs.
            Ignored when `engine` is given (the engine's model already sits somewhere).
        engine: an idle `Engine` over `model` to reuse across calls; None builds one here.
    """
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, seed=seed, repetition_penalty=repetition_penalty)
    start = time.perf_counter()
    if engine is None:
        engine = Engine(_prepare(model, device), max_batch_size=1)
    setup = time.perf_counter() - start
    result = answer(engine, tokenizer, user_message, params, history=history,
                    system=system_prompt, think=force_thinking, stream=stream)
    # A one-off call pays for building the engine (CPU prepacking): its timings say so.
    result.time_to_first_token_s += setup
    result.seconds += setup
    return result

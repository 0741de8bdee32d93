"""The legacy OpenAI text-completions protocol of `aethermind serve` (`POST /v1/completions`).

Raw text in, raw text out, as lm-evaluation-harness's `local-completions` model needs: no chat
template is applied. A prompt is a string, a list of strings, a list of token ids or a list of
id lists (one choice per prompt, in order). In a prompt string the special-token strings are the
special tokens (the prompt is model input, as in transformers and llama.cpp; a chat-formatted
prompt works), and generated special tokens stay in the text, except a stop token
(`chat_format.STOP_TOKENS`), which ends the choice with `finish_reason` "stop".
`logprobs` (0..MAX_LOGPROBS) come from one forward pass of the model over prompt + completion
(`score`): exactly its log-softmax in float32, each token's log-probability and its
`logprobs` most likely alternatives (plus the chosen token, as OpenAI documents). With `echo`
the prompt's tokens come first (the first has `null`, as OpenAI), which is how lm-eval scores a
continuation (`echo=true, logprobs=1, max_tokens=0 or 1`); a stop token that was sampled is
listed too, so a caller that drops the last entry drops that token.
Refused with a 400 naming the field: n or best_of other than 1, suffix, logit_bias,
presence/frequency penalties, and `stream` with several prompts, echo or logprobs.
It knows nothing about HTTP servers or threads (`server.py`).
Usage: `req = parse_completion_request(body, tok, max_seq_len=512, model_id="forge1")`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field

from aethermind.inference.engine import TextStream
from aethermind.inference.sampling import SamplingParams
from aethermind.serve.api import (
    APIError,
    SamplingBody,
    StopMatcher,
    check_model,
    context_exceeded,
    include_usage,
    refuse,
    sampling_params,
    stop_strings,
    unsupported_sampling,
    validate_body,
)
from aethermind.text import chat_format as cf

MAX_LOGPROBS = 5  # as OpenAI
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for text completions


class _CompletionBody(SamplingBody):
    prompt: Any = None  # checked by _prompts: a union here would garble pydantic's messages
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    best_of: int = 1
    suffix: str | None = None
    logit_bias: dict[str, Any] | None = None


@dataclass
class CompletionJob:
    """One prompt's sequence; `stop_ids` is what the engine stops at: nothing, because the
    decoder stops at the stop tokens itself, so the sampled stop token is known (logprobs)."""

    prompt_ids: list[int]
    prompt_text: str
    params: SamplingParams
    stop_ids: tuple[int, ...] = ()


@dataclass
class CompletionRequest:
    jobs: list[CompletionJob]
    stop_ids: tuple[int, ...]  # the chat format's stop tokens: end a choice
    stop_strings: tuple[str, ...]
    echo: bool
    logprobs: int | None
    stream: bool
    include_usage: bool
    model: str


def _prompts(prompt: Any, tokenizer: Any) -> list[list[int]]:
    """The prompt field as token-id lists (strings encoded with special tokens allowed)."""
    bad = APIError(400, "prompt must be a string, a list of strings, a list of token ids or a "
                   "list of token-id lists", param="prompt")
    if isinstance(prompt, str):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise bad
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        prompt = [prompt]
    vocab = tokenizer.get_vocab_size()
    out = []
    for i, p in enumerate(prompt):
        if isinstance(p, str):
            ids = tokenizer.encode(p, allow_special=True)
        elif isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool)
                                         for t in p):
            if any(not 0 <= t < vocab for t in p):
                raise APIError(400, f"prompt[{i}] holds a token id outside 0..{vocab - 1}",
                               param="prompt")
            ids = list(p)
        else:
            raise bad
        if not ids:
            raise APIError(400, f"prompt[{i}] is empty: give at least one token",
                           param="prompt")
        out.append(ids)
    return out


def parse_completion_request(raw: Any, tokenizer: Any, *, max_seq_len: int, model_id: str
                             ) -> CompletionRequest:
    """Validate a decoded JSON body; raises `APIError` (400/404) naming the field and the fix."""
    body = validate_body(raw, _CompletionBody)
    check_model(body.model, model_id)
    streamed = "is not supported with stream: send stream=false"
    refuse([*unsupported_sampling(body),
            (body.best_of != 1, "best_of", f"best_of={body.best_of}: only 1 is supported"),
            (body.suffix is not None, "suffix", "suffix (insertion) is not supported"),
            (bool(body.logit_bias), "logit_bias", "logit_bias is not supported"),
            (body.stream and body.echo, "echo", f"echo {streamed}"),
            (body.stream and body.logprobs is not None, "logprobs", f"logprobs {streamed}")])
    prompts = _prompts(body.prompt, tokenizer)
    if body.stream and len(prompts) > 1:
        raise APIError(400, f"several prompts {streamed} (or one prompt per request)",
                       param="prompt")
    jobs = []
    for ids in prompts:
        needed = min(body.max_tokens, 1)  # a prompt that fills the context can still be scored
        if len(ids) + needed > max_seq_len:
            raise context_exceeded(len(ids), max_seq_len, needed, "prompt")
        budget = min(body.max_tokens, max_seq_len - len(ids))
        jobs.append(CompletionJob(ids, tokenizer.decode(ids), sampling_params(body, budget)))
    return CompletionRequest(jobs, tuple(cf.stop_ids(tokenizer)), stop_strings(body.stop),
                             body.echo, body.logprobs, body.stream, include_usage(body),
                             model_id)


# --- decoding -----------------------------------------------------------------------------------
class TextDecoder:
    """Token ids of one choice -> text pieces, cut at a stop token or a stop string.

    The same interface as `api.ReplyDecoder` (push/finish/stopped), so the server drives both
    alike. `tokens` keeps every sampled id, the stop token included.
    """

    def __init__(self, tokenizer: Any, stop_ids: tuple[int, ...], stops: tuple[str, ...]
                 ) -> None:
        self.stream = TextStream(tokenizer.decode)
        self.matcher = StopMatcher(stops)
        self.stop_ids = frozenset(stop_ids)
        self.tokens: list[int] = []
        self.text = ""
        self.stop_token = False

    @property
    def stopped(self) -> bool:
        return self.stop_token or self.matcher.stopped

    def _out(self, text: str) -> list[str]:
        self.text += text
        return [text] if text else []

    def push(self, token: int) -> list[str]:
        if self.stopped:
            return []
        self.tokens.append(token)
        if token in self.stop_ids:
            self.stop_token = True
            return self._out(self.matcher.push(self.stream.flush()) + self.matcher.flush())
        return self._out(self.matcher.push(self.stream.push(token)))

    def finish(self) -> list[str]:
        if self.stopped:
            return []
        return self._out(self.matcher.push(self.stream.flush()) + self.matcher.flush())


# --- log-probabilities --------------------------------------------------------------------------
@torch.inference_mode()
def score(model: torch.nn.Module, ids: list[int], top: int
          ) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """For ids[1:]: log p(id | the ids before it), and the `top` most likely ids there with
    theirs; one forward pass, log-softmax in float32 over the whole (padded) vocabulary."""
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)  # (1, T)
    logp = torch.log_softmax(model(x)[0, :-1].float(), dim=-1)  # (T-1, V)
    chosen = logp.gather(1, x[0, 1:, None])[:, 0]  # (T-1,)
    best = logp.topk(top, dim=-1)
    alternatives = [list(zip(i, v, strict=True))
                    for i, v in zip(best.indices.tolist(), best.values.tolist(), strict=True)]
    return chosen.tolist(), alternatives


@dataclass
class Choice:
    """What one job produced, for `choice_body`."""

    text: str
    tokens: list[int]  # sampled ids, a stop token included
    finish_reason: str
    scores: tuple[list[float], list[list[tuple[int, float]]]] | None = None


def _logprobs_body(tokenizer: Any, job: CompletionJob, choice: Choice, echo: bool
                   ) -> dict[str, Any]:
    assert choice.scores is not None
    chosen, alternatives = choice.scores
    ids = job.prompt_ids + choice.tokens
    first = 0 if echo else len(job.prompt_ids)
    strings = [tokenizer.decode([t]) for t in ids]
    lps: list[float | None] = [None, *chosen]
    tops: list[dict[str, float] | None] = [None]
    for i, alts in enumerate(alternatives, start=1):
        top = {}
        for t, lp in alts:  # most likely first: a shared string keeps the larger value
            top.setdefault(tokenizer.decode([t]), lp)
        top.setdefault(strings[i], chosen[i - 1])
        tops.append(top)
    offsets, at = [], 0
    for s in strings:
        offsets.append(at)
        at += len(s)
    return {"tokens": strings[first:], "token_logprobs": lps[first:],
            "top_logprobs": tops[first:], "text_offset": offsets[first:]}


def choice_body(tokenizer: Any, req: CompletionRequest, index: int, choice: Choice
                ) -> dict[str, Any]:
    job = req.jobs[index]
    text = (job.prompt_text if req.echo else "") + choice.text
    logprobs = None if choice.scores is None else _logprobs_body(tokenizer, job, choice,
                                                                 req.echo)
    return {"text": text, "index": index, "logprobs": logprobs,
            "finish_reason": choice.finish_reason}


def new_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def envelope(cid: str, req: CompletionRequest, created: int) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": req.model,
            "system_fingerprint": None}

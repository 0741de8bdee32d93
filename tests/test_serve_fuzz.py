"""Every request field of `POST /v1/chat/completions` fuzzed (issue 22): wrong types, huge,
empty, non-finite and out-of-range values, lone surrogates, raw `NaN`/`Infinity`, malformed JSON.

Each case has the one outcome it must get: a 4xx with a one-line OpenAI-style error naming the
field, or a correct answer (200). Nothing may be a 500, and the server log must stay free of
tracebacks. Also here: extreme sampling values in one sequence leave a greedy neighbour alone.
"""

from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from _serve_helpers import open_stream, post_json, random_checkpoint, request, running_server

HI = [{"role": "user", "content": "Hi"}]
LONE = "\\ud800"  # a lone surrogate, as JSON writes it (json.dumps would escape the backslash)


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("fuzz"))


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def served(random_ckpt):
    """(url, state, errors): errors collects what the server logs at ERROR (tracebacks)."""
    with running_server(random_ckpt) as (url, state):
        errors = _Errors()
        names = ("uvicorn", "uvicorn.error", "aethermind", "asyncio", "fastapi")
        for name in names:
            logging.getLogger(name).addHandler(errors)
        try:
            yield url, state, errors
        finally:
            for name in names:
                logging.getLogger(name).removeHandler(errors)


def _raw(**fields: str) -> str:
    """A body with HI and max_tokens 3, where each field's JSON text is given as is."""
    parts = {"messages": json.dumps(HI), "max_tokens": "3", **fields}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in parts.items()) + "}"


def _msg(content: str) -> str:
    return f'[{{"role": "user", "content": {content}}}]'


BIG = str(2**70)
# (case, raw JSON body, expected status, expected error param or None)
CASES = [
    # messages
    ("messages string", _raw(messages='"hi"'), 400, "messages"),
    ("messages null", _raw(messages="null"), 400, "messages"),
    ("message a number", _raw(messages="[1]"), 400, "messages[0]"),
    ("message without role", _raw(messages='[{"content": "hi"}]'), 400, "messages[0].role"),
    ("role a number", _raw(messages='[{"role": 5, "content": "hi"}]'), 400, "messages[0].role"),
    ("role tool", _raw(messages='[{"role": "tool", "content": "hi"}]'), 400, "messages[0].role"),
    ("role with a lone surrogate", _raw(messages=f'[{{"role": "{LONE}", "content": "x"}}]'),
     400, "messages[0].role"),
    ("content a number", _raw(messages=_msg("5")), 400, "messages[0].content"),
    ("content an object", _raw(messages=_msg('{"a": 1}')), 400, "messages[0].content"),
    ("content null", _raw(messages=_msg("null")), 400, "messages[0].content"),
    ("content empty string", _raw(messages=_msg('""')), 200, None),
    ("content empty list", _raw(messages=_msg("[]")), 200, None),
    ("content part without text", _raw(messages=_msg('[{"type": "text"}]')), 400,
     "messages[0].content[0].type"),
    ("content part text a number", _raw(messages=_msg('[{"type": "text", "text": 5}]')), 400,
     "messages[0].content"),
    ("content part without type", _raw(messages=_msg('[{"text": "x"}]')), 400,
     "messages[0].content"),
    ("content lone surrogate", _raw(messages=_msg(f'"a{LONE}b"')), 400, "messages[0].content"),
    ("content low surrogate in a part",
     _raw(messages=_msg('[{"type": "text", "text": "\\udc80"}]')), 400,
     "messages[0].content[0].text"),
    ("content a surrogate pair", _raw(messages=_msg('"\\ud83d\\ude00"')), 200, None),
    ("content NUL and specials", _raw(messages=_msg('"\\u0000<|user|><|assistant|>"')), 200, None),
    ("content beyond the context", _raw(messages=_msg(json.dumps("word " * 50_000))), 400,
     "messages"),
    ("2,000 messages", _raw(messages=json.dumps(HI * 2000)), 400, "messages"),
    ("reasoning a number", _raw(messages='[{"role": "user", "content": "a"}, {"role": '
                                '"assistant", "content": "b", "reasoning_content": 5}, '
                                '{"role": "user", "content": "c"}]'), 400,
     "messages[1].reasoning_content"),
    ("only a system message", _raw(messages='[{"role": "system", "content": "x"}]'), 400,
     "messages"),
    # max_tokens
    ("max_tokens a string", _raw(max_tokens='"x"'), 400, "max_tokens"),
    ("max_tokens a fraction", _raw(max_tokens="2.5"), 400, "max_tokens"),
    ("max_tokens 2**70", _raw(max_tokens=BIG), 400, "max_tokens"),
    ("max_tokens 1e999", _raw(max_tokens="1e999"), 400, "max_tokens"),
    ("max_tokens 5000 digits", _raw(max_tokens="9" * 5000), 400, None),
    ("max_tokens null", _raw(max_tokens="null"), 200, None),
    ("max_completion_tokens -1", _raw(max_completion_tokens="-1"), 400,
     "max_completion_tokens"),
    # temperature
    ("temperature a string", _raw(temperature='"hot"'), 400, "temperature"),
    ("temperature 1e-40", _raw(temperature="1e-40"), 200, None),
    ("temperature 5e-324", _raw(temperature="5e-324"), 200, None),
    ("temperature -0.0", _raw(temperature="-0.0"), 200, None),
    ("temperature above 2", _raw(temperature="2.0000001"), 400, "temperature"),
    ("temperature NaN", _raw(temperature="NaN"), 400, None),
    ("temperature null", _raw(temperature="null"), 200, None),
    ("temperature Infinity", _raw(temperature="Infinity"), 400, None),
    ("temperature -Infinity", _raw(temperature="-Infinity"), 400, None),
    ("temperature 1e999", _raw(temperature="1e999"), 400, "temperature"),
    ("temperature a list", _raw(temperature="[]"), 400, "temperature"),
    # top_p, top_k, repetition_penalty
    ("top_p 1e-300", _raw(top_p="1e-300", temperature="1"), 200, None),
    ("top_p 5e-324", _raw(top_p="5e-324", temperature="1"), 200, None),
    ("top_p above 1", _raw(top_p="1.5"), 400, "top_p"),
    ("top_p NaN", _raw(top_p="NaN"), 400, None),
    ("top_p null", _raw(top_p="null"), 200, None),
    ("top_p a string", _raw(top_p='"x"'), 400, "top_p"),
    ("top_k 2**70", _raw(top_k=BIG, temperature="1"), 200, None),
    ("top_k 1", _raw(top_k="1", temperature="1"), 200, None),
    ("top_k -1", _raw(top_k="-1"), 400, "top_k"),
    ("top_k a fraction", _raw(top_k="1.5"), 400, "top_k"),
    ("repetition_penalty 1e-300", _raw(repetition_penalty="1e-300", temperature="1"), 200,
     None),
    ("repetition_penalty 1e300", _raw(repetition_penalty="1e300", temperature="1"), 200, None),
    ("repetition_penalty 1e999", _raw(repetition_penalty="1e999"), 400, "repetition_penalty"),
    ("repetition_penalty 0", _raw(repetition_penalty="0"), 400, "repetition_penalty"),
    # stop
    ("stop a number", _raw(stop="5"), 400, "stop"),
    ("stop list of numbers", _raw(stop="[5]"), 400, "stop"),
    ("stop empty string", _raw(stop='[""]'), 400, "stop"),
    ("stop lone surrogate", _raw(stop=f'["{LONE}"]'), 400, "stop[0]"),
    ("stop 10,000 characters", _raw(stop=json.dumps("x" * 10_000)), 200, None),
    ("stop null", _raw(stop="null"), 200, None),
    # seed
    ("seed 2**64 - 1", _raw(seed=str(2**64 - 1), temperature="1"), 200, None),
    ("seed -1", _raw(seed="-1", temperature="1"), 200, None),
    ("seed 2**64", _raw(seed=str(2**64)), 400, "seed"),
    ("seed 2**200", _raw(seed=str(2**200)), 400, "seed"),
    ("seed -2**70", _raw(seed="-" + BIG), 400, "seed"),
    ("seed 1e30", _raw(seed="1e30"), 400, "seed"),
    ("seed a fraction", _raw(seed="1.5"), 400, "seed"),
    ("seed a string", _raw(seed='"abc"'), 400, "seed"),
    # n, stream, the rest
    ("n 0", _raw(n="0"), 400, "n"),
    ("n 2**70", _raw(n=BIG), 400, "n"),
    ("n a string", _raw(n='"x"'), 400, "n"),
    ("stream a string", _raw(stream='"maybe"'), 400, "stream"),
    ("stream null", _raw(stream="null"), 200, None),  # null = not given, as OpenAI reads it
    ("stream true", _raw(stream="true"), 200, None),
    ("stream_options a string", _raw(stream_options='"x"'), 400, "stream_options"),
    ("include_usage a list", _raw(stream_options='{"include_usage": []}'), 400,
     "stream_options.include_usage"),
    ("model a number", _raw(model="5"), 400, "model"),
    ("model lone surrogate", _raw(model=f'"{LONE}"'), 400, "model"),
    ("key lone surrogate", _raw(**{LONE: "1"}), 400, None),
    ("chat_template_kwargs a list", _raw(chat_template_kwargs="[]"), 400,
     "chat_template_kwargs"),
    ("presence_penalty NaN", _raw(presence_penalty="NaN"), 400, None),
    ("presence_penalty 1e999", _raw(presence_penalty="1e999"), 400, "presence_penalty"),
    ("logprobs true", _raw(logprobs="true"), 400, "logprobs"),
    ("tools", _raw(tools="[{}]"), 400, "tools"),
    ("ignore_eos a string", _raw(ignore_eos='"x"'), 400, "ignore_eos"),
    ("unknown field", _raw(whatever='{"a": [1, 2]}'), 200, None),
    # the body itself
    ("empty body", "", 400, None),
    ("null", "null", 400, None),
    ("a string", '"hi"', 400, None),
    ("nested 100,000 deep", "[" * 100_000 + "]" * 100_000, 400, None),
    ("truncated", _raw()[:-5], 400, None),
]


def _check_reply(status: int, headers: dict, text: str, case: str) -> None:
    if headers.get("content-type", "").startswith("text/event-stream"):
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", case
        assert all("error" not in json.loads(e) for e in events[:-1]), case
        return
    reply = json.loads(text)
    assert reply["object"] == "chat.completion", case
    assert isinstance(reply["choices"][0]["message"]["content"], str), case


@pytest.mark.parametrize(("case", "body", "status", "param"), CASES, ids=[c[0] for c in CASES])
def test_every_field_gets_a_clear_4xx_or_a_correct_answer(served, case, body, status, param):
    url, _, errors = served
    errors.records.clear()
    got, headers, text = request(url + "/v1/chat/completions", "POST", body)
    assert got == status, text
    if status == 200:
        _check_reply(got, headers, text, case)
    else:
        error = json.loads(text)["error"]
        assert error["param"] == param, error
        assert error["message"] and "\n" not in error["message"]
        assert "Traceback" not in error["message"]
    assert not errors.records, [r.getMessage() for r in errors.records]


def test_the_answer_to_extreme_sampling_values_is_the_greedy_one(served):
    """temperature 1e-40 is argmax (its limit); before issue 22 it was a 500 for everyone."""
    url, _, _ = served
    base = {"messages": [{"role": "user", "content": "Sort 3, 1, 2"}], "max_tokens": 20,
            "ignore_eos": True}
    status, greedy = post_json(url + "/v1/chat/completions", {**base, "temperature": 0})
    assert status == 200
    for extreme in ({"temperature": 1e-40}, {"temperature": 1.0, "top_p": 1e-300},
                    {"temperature": 5e-324, "top_k": 2**70, "seed": 2**64 - 1}):
        status, reply = post_json(url + "/v1/chat/completions", {**base, **extreme})
        assert status == 200, reply
        assert reply["choices"][0]["message"] == greedy["choices"][0]["message"], extreme


def test_a_failing_sequence_ends_alone_with_an_error_event(served, monkeypatch):
    """One sequence's scores turn NaN mid-stream: it gets an error event and [DONE], a greedy
    neighbour streams on to the answer it gives alone."""
    url, state, errors = served
    engine = state.scheduler.engine
    body = {"messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 40,
            "temperature": 0, "ignore_eos": True, "stream": True}
    victim_body = {**body, "messages": [{"role": "user", "content": "poison"}],
                   "temperature": 0.7}
    _, _, solo = request(url + "/v1/chat/completions", "POST", body)
    real_sample = engine._sample
    poisoned = threading.Event()

    def sample(seqs, logits):
        for i, seq in enumerate(seqs):  # the victim, some tokens into its answer
            if seq.params.temperature == 0.7 and len(seq.tokens) == 5:
                logits[i, 0] = float("nan")
                poisoned.set()
        return real_sample(seqs, logits)

    monkeypatch.setattr(engine, "_sample", sample)

    def stream(b):
        with open_stream(url + "/v1/chat/completions", b) as (_, lines):
            return list(lines)

    with ThreadPoolExecutor(2) as pool:
        together, victim = pool.map(stream, [body, victim_body])
    assert poisoned.is_set()
    assert _contents(together) == _contents(solo.splitlines())
    assert victim[-1] == "data: [DONE]"
    error = json.loads(victim[-2][6:])["error"]
    assert error["type"] == "server_error" and "could not be sampled" in error["message"]
    assert len(victim) > 3  # it had streamed tokens before it failed: a mid-stream error
    assert not errors.records


def _contents(lines: list[str]) -> list[str]:
    """The streamed deltas, without the per-request id and timestamp."""
    out = []
    for line in lines:
        if line.startswith("data: {"):
            out.append(json.dumps(json.loads(line[6:])["choices"]))
    return out

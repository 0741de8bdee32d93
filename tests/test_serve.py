"""`aethermind serve` through the official `openai` client against a real uvicorn server.

Replies are checked against the in-process thinking pipeline (same template, greedy), so the
server's prompt building, batching and text decoding are all on trial.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from _infer_helpers import make_tokenizer
from _serve_helpers import (
    open_stream,
    post_json,
    random_checkpoint,
    request,
    running_server,
)

from aethermind.artifacts.loading import load_model
from aethermind.inference.thinking import run_thinking_pipeline
from aethermind.serve.api import ReplyDecoder, StopMatcher, parse_request
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import render_messages


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("random"))


@pytest.fixture(scope="module")
def server(random_ckpt):
    with running_server(random_ckpt) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def trained_server(overfit_final):
    with running_server(overfit_final) as (url, state):
        yield url, state


def _client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def _ask(client, content: str, **kw):
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model=kw.pop("model", None) or
                                          client.models.list().data[0].id,
                                          messages=[{"role": "user", "content": content}], **kw)


def _stream(client, content: str, **kw):
    """(thinking, answer, chunks) of a streamed request."""
    chunks = list(_ask(client, content, stream=True, **kw))
    thinking = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or ""
                       for c in chunks if c.choices)
    answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return thinking, answer, chunks


def test_plain_completion_equals_the_in_process_pipeline(server, random_ckpt):
    url, _ = server
    reply = _ask(_client(url), "What is the capital of France?", max_tokens=24)
    model, tok = load_model(random_ckpt)
    ref = run_thinking_pipeline(model, tok, "What is the capital of France?", 24, 0.0)
    msg = reply.choices[0].message
    assert reply.object == "chat.completion" and reply.model == random_ckpt.stem
    assert msg.role == "assistant" and msg.content == ref.answer
    assert (msg.model_extra["reasoning_content"] or "") == ref.thinking
    assert reply.choices[0].finish_reason == ref.finish_reason
    assert reply.usage.prompt_tokens == ref.prompt_tokens
    assert reply.usage.completion_tokens == ref.completion_tokens
    assert reply.usage.total_tokens == ref.prompt_tokens + ref.completion_tokens


def test_stream_concatenates_to_the_plain_reply_and_ends_with_done(server):
    url, _ = server
    client = _client(url)
    plain = _ask(client, "Sort 3, 1, 2", max_tokens=30)
    thinking, answer, chunks = _stream(client, "Sort 3, 1, 2", max_tokens=30,
                                       stream_options={"include_usage": True})
    assert answer == plain.choices[0].message.content
    assert thinking == (plain.choices[0].message.model_extra["reasoning_content"] or "")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 5}
    with open_stream(url + "/v1/chat/completions", body) as (resp, lines):
        assert resp.getheader("content-type").startswith("text/event-stream")
        events = list(lines)
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)


def test_reasoning_in_both_fields_in_message_and_deltas(trained_server):
    url, _ = trained_server
    client = _client(url)
    msg = _ask(client, "What is 2+2?", max_tokens=40).choices[0].message
    assert msg.content == "The answer is 4."
    assert msg.model_extra["reasoning_content"] == msg.model_extra["reasoning"] == \
        "2 plus 2 makes 4."
    _, _, chunks = _stream(client, "What is 2+2?", max_tokens=40)
    deltas = [c.choices[0].delta.model_extra for c in chunks if c.choices]
    thinking = [d["reasoning_content"] for d in deltas if d.get("reasoning_content")]
    assert "".join(thinking) == "2 plus 2 makes 4."
    assert [d["reasoning"] for d in deltas if d.get("reasoning")] == thinking


def test_enable_thinking_switches_the_think_block(trained_server):
    url, _ = trained_server
    client = _client(url)
    off = _ask(client, "What is 2+2?", max_tokens=40,
               extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    assert off.choices[0].message.model_extra["reasoning_content"] is None
    tok = make_tokenizer()
    conv = cf.Conversation()
    assert off.usage.prompt_tokens == len(cf.encode_prompt(conv, "What is 2+2?", tok, think=False))
    on = _ask(client, "Say hello in Japanese", max_tokens=40,
              extra_body={"chat_template_kwargs": {"enable_thinking": True}})
    assert on.usage.prompt_tokens == len(
        cf.encode_prompt(conv, "Say hello in Japanese", tok, think=True))
    assert on.choices[0].message.model_extra["reasoning_content"] is not None


def test_history_reasoning_goes_into_the_think_block(server):
    url, state = server
    tok = make_tokenizer()
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "2 and 2 is 4"},
                {"role": "user", "content": "And 3+3?"}]
    want = cf.encode_prompt(cf.Conversation([cf.Turn("What is 2+2?", "4", "2 and 2 is 4")],
                                            system="Be brief."), "And 3+3?", tok)
    for key in ("reasoning_content", "reasoning"):
        messages[2] = {"role": "assistant", "content": "4", key: "2 and 2 is 4"}
        status, reply = post_json(url + "/v1/chat/completions",
                                  {"messages": messages, "max_tokens": 1, "temperature": 0})
        assert status == 200 and reply["usage"]["prompt_tokens"] == len(want)


def test_stop_strings_cut_the_answer_plain_and_streamed(trained_server):
    url, _ = trained_server
    client = _client(url)
    reply = _ask(client, "What is 2+2?", max_tokens=40, stop=["is 4", "zzz"])
    assert reply.choices[0].message.content == "The answer "
    assert reply.choices[0].finish_reason == "stop"
    thinking, answer, chunks = _stream(client, "What is 2+2?", max_tokens=40, stop="is 4")
    assert (thinking, answer) == ("2 plus 2 makes 4.", "The answer ")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_length_limit_reports_length(trained_server):
    url, _ = trained_server
    reply = _ask(_client(url), "What is 2+2?", max_tokens=3)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_models_and_health(server, random_ckpt):
    url, _ = server
    assert [m.id for m in _client(url).models.list().data] == [random_ckpt.stem]
    health = json.loads(request(url + "/health")[2])
    assert health["status"] == "ok" and health["requests_in_flight"] == 0


BAD_REQUESTS = [
    ("not json", "{\"messages\": [", 400, None),
    ("not an object", "[1, 2]", 400, None),
    ("no messages", "{\"max_tokens\": 5}", 400, "messages"),
    ("empty messages", {"messages": []}, 400, "messages"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400,
     "messages[0].role"),
    ("ends with assistant", {"messages": [{"role": "user", "content": "a"},
                                          {"role": "assistant", "content": "b"}]}, 400,
     "messages"),
    ("image part", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages[0].content[0].type"),
    ("max_tokens 0", {"max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens negative", {"max_tokens": -3}, 400, "max_tokens"),
    ("max_tokens over the cap", {"max_tokens": 10_000}, 400, "max_tokens"),
    ("temperature", {"temperature": -1}, 400, "temperature"),
    ("top_p", {"top_p": 0}, 400, "top_p"),
    ("n", {"n": 2}, 400, "n"),
    ("stop list too long", {"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("enable_thinking type", {"chat_template_kwargs": {"enable_thinking": "yes"}}, 400,
     "chat_template_kwargs.enable_thinking"),
    ("prompt over the context", {"messages": [{"role": "user", "content": "word " * 400}]},
     400, "messages"),
    ("unknown model", {"model": "gpt-4o"}, 404, "model"),
]


@pytest.mark.parametrize(("case", "body", "status", "param"), BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_an_openai_error_and_the_server_keeps_serving(
        server, case, body, status, param):
    url, _ = server
    if isinstance(body, dict):
        body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], **body})
    got, reply = post_json(url + "/v1/chat/completions", body)
    assert got == status, reply
    error = reply["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"] and "Traceback" not in error["message"]
    ok, _ = post_json(url + "/v1/chat/completions",
                      {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert ok == 200


def test_context_overflow_has_the_openai_code(server):
    url, _ = server
    with pytest.raises(openai.BadRequestError) as err:
        _ask(_client(url), "word " * 400, max_tokens=5)
    assert err.value.status_code == 400 and err.value.code == "context_length_exceeded"


def test_unknown_route_and_method_get_openai_errors(server):
    url, _ = server
    for path, status in (("/v1/nothing", 404), ("/v1/chat/completions", 405)):
        got, _, text = request(url + path)
        assert got == status and json.loads(text)["error"]["message"]


def test_api_key_is_required_when_set(random_ckpt):
    with running_server(random_ckpt, api_key="s3cret") as (url, _):
        with pytest.raises(openai.AuthenticationError) as err:
            _ask(_client(url, "wrong"), "Hi", model=random_ckpt.stem, max_tokens=2)
        assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
        status, headers, text = request(url + "/v1/models")
        assert status == 401 and json.loads(text)["error"]["code"] == "invalid_api_key"
        assert headers["www-authenticate"] == "Bearer"
        reply = _ask(_client(url, "s3cret"), "Hi", max_tokens=2)
        assert reply.usage.completion_tokens >= 1
        assert request(url + "/health")[0] == 200  # health probes need no key


def _wait_idle(url: str, timeout: float = 20.0) -> float:
    start = time.monotonic()
    while json.loads(request(url + "/health")[2])["requests_in_flight"]:
        assert time.monotonic() - start < timeout, "the request never left the batch"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def long_ckpt(tmp_path_factory):
    """A long context, so one request can run for many seconds."""
    return random_checkpoint(tmp_path_factory.mktemp("long"), max_seq_len=4096)


def test_client_disconnect_frees_the_slot(long_ckpt):
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000,
            "temperature": 0, "ignore_eos": True}
    with running_server(long_ckpt, max_batch_size=1) as (url, state):
        engine = state.scheduler.engine
        steps = {"n": 0}
        real_step = engine.step

        def counting_step():
            steps["n"] += 1
            time.sleep(0.001)  # 4,000 steps take 4 s on any CPU: longer than the client waits
            return real_step()

        engine.step = counting_step
        with open_stream(url + "/v1/chat/completions", {**body, "stream": True}) as (_, lines):
            assert '"role": "assistant"' in next(lines)
            while steps["n"] < 5:  # hang up mid-generation
                time.sleep(0.01)
        _wait_idle(url)
        first = steps["n"]
        with pytest.raises(TimeoutError):  # a plain request whose client gives up
            post_json(url + "/v1/chat/completions", body, timeout=1.0)
        _wait_idle(url)
        assert first < 4000 and steps["n"] - first < 4000  # neither request ran to the end
        # The single slot is free: a new request is served at once.
        status, reply = post_json(url + "/v1/chat/completions", {**body, "max_tokens": 3})
        assert status == 200 and reply["usage"]["completion_tokens"] == 3


PROMPTS = ["What is 2+2?", "Sort 3, 1, 2", "Say hello in Japanese", "Hello!",
           "What is the capital of France?", "7 * 8 = ?", "The quick brown fox",
           "How can I help you today?"]


def test_16_concurrent_clients_each_get_their_solo_answer(server):
    url, _ = server
    model = _client(url).models.list().data[0].id
    # Different lengths and budgets, half ignoring stop tokens: requests join and leave the
    # batch at different steps, and more than max_batch_size=8 of them wait in the queue.
    jobs = [(PROMPTS[i % 8] + "?" * (i // 8), 8 + 3 * i, i % 2 == 0) for i in range(16)]

    def solo(job):
        prompt, max_tokens, ignore_eos = job
        r = _ask(_client(url), prompt, max_tokens=max_tokens, model=model,
                 extra_body={"ignore_eos": ignore_eos})
        m = r.choices[0].message
        return m.content, m.model_extra["reasoning_content"], r.choices[0].finish_reason, \
            r.usage.completion_tokens

    alone = [solo(job) for job in jobs]
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(solo, jobs))
    assert together == alone
    assert len({a for a, *_ in alone}) > 4  # the prompts really lead to different answers


def test_stop_matcher_holds_back_a_possible_stop_and_cuts_at_the_first():
    m = StopMatcher(("END", "xy"))
    assert [m.push(t) for t in ("ab", "cE", "N", "Dzz")] == ["ab", "c", "", ""]
    assert m.stopped
    m = StopMatcher(("END",))
    assert [m.push(t) for t in ("aE", "Nb")] == ["a", "ENb"] and m.flush() == ""
    m = StopMatcher(("END",))
    assert m.push("xEN") == "x" and m.flush() == "EN"  # held text is released at the end


def test_reply_decoder_never_splits_a_character_and_routes_thinking():
    tok = make_tokenizer()
    special = tok.special_ids
    ids = [special[cf.THINK], *tok.encode("\nmmm 😀\n"), special[cf.END_THINK],
           *tok.encode("\n"), special[cf.ASSISTANT], *tok.encode("こんにちは 😀 世界 STOP no")]
    decoder = ReplyDecoder(tok, None, ("STOP",))
    pieces = [p for t in ids for p in decoder.push(t)] + decoder.finish()
    assert all("\ufffd" not in text for _, text in pieces)
    assert "".join(t for p, t in pieces if p == "thinking") == "mmm 😀"
    assert "".join(t for p, t in pieces if p == "answer") == "こんにちは 😀 世界 "
    assert decoder.stopped and decoder.used_thinking


def test_readme_openai_example_runs(server, capsys):
    url, _ = server
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Serve:", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "http://127.0.0.1:8000/v1" in code and "max_tokens=256" in code
    code = code.replace("http://127.0.0.1:8000", url).replace("max_tokens=256", "max_tokens=16")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out


def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(server):
    url, _ = server

    def sample(seed):
        r = _ask(_client(url), "Hello!", temperature=1.0, top_p=0.9, seed=seed, max_tokens=24,
                 extra_body={"ignore_eos": True})
        return r.choices[0].message.content

    alone = sample(7)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(sample, [7, 7, 8, 7]))
    assert together[0] == together[1] == together[3] == alone
    assert together[2] != alone  # another seed, another sample


def test_an_engine_failure_is_a_500_for_those_requests_only(server, monkeypatch):
    url, state = server
    engine = state.scheduler.engine
    real_step = engine.step

    def failing_step():
        monkeypatch.setattr(engine, "step", real_step)  # fail once, then work again
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "step", failing_step)
    status, reply = post_json(url + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "Hi"}]})
    assert status == 500 and reply["error"]["type"] == "server_error"
    assert "boom" in reply["error"]["message"]
    status, reply = post_json(url + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert status == 200


@pytest.mark.parametrize("enable_thinking", [None, True, False])
def test_prompt_equals_the_exported_jinja_template(enable_thinking):
    """The server builds prompts with chat_format; HF / llama.cpp use chat_template's Jinja."""
    tok = make_tokenizer()
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "2 and 2 is 4"},
                {"role": "user", "content": "And 3+3?"},
                {"role": "assistant", "content": "6"},
                {"role": "user", "content": "Say hello in Japanese"}]
    text = render_messages(messages, add_generation_prompt=True, enable_thinking=enable_thinking)
    req = parse_request({"messages": messages,
                         "chat_template_kwargs": {"enable_thinking": enable_thinking}},
                        tok, max_seq_len=512, model_id="m")
    assert req.prompt_ids == tok.encode(text, allow_special=True)

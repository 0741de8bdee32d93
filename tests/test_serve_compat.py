"""What OpenAI clients and lm-eval send beyond chat basics, against a real uvicorn server:
null sampling fields, GET /v1/models/{id}, reasoning_effort / response_format, the developer
role and content parts, and the legacy POST /v1/completions (echo + logprobs checked against a
direct forward pass, and lm-eval's `local-completions` against its in-memory HF model)."""

from __future__ import annotations

import math

import openai
import pytest
import torch
from _infer_helpers import make_tokenizer
from _serve_helpers import post_json, random_checkpoint, running_server

from aethermind.artifacts.loading import load_model
from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.text import chat_format as cf


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("compat"))


@pytest.fixture(scope="module")
def server(ckpt):
    with running_server(ckpt) as (url, _):
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


def _chat(client, ckpt, content="Hello!", **kw):
    messages = content if isinstance(content, list) else [{"role": "user", "content": content}]
    return client.chat.completions.create(model=ckpt.stem, messages=messages, **kw)


# --- chat: null fields, model retrieval, thinking switch, response_format, roles --------------
def test_null_sampling_fields_mean_the_server_default(client, ckpt, server):
    base = {"seed": 7, "max_tokens": 16, "extra_body": {"ignore_eos": True}}
    default = _chat(client, ckpt, **base).choices[0].message.content
    nulls = _chat(client, ckpt, temperature=None, top_p=None, n=None, presence_penalty=None,
                  frequency_penalty=None, stop=None, **base).choices[0].message.content
    assert nulls == default
    greedy = _chat(client, ckpt, temperature=0, **base).choices[0].message.content
    assert default != greedy  # the default samples (T=1): null did not become 0
    status, reply = post_json(server + "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "Hello!"}], "temperature": None,
        "top_p": None, "max_tokens": None, "stream": None, "logprobs": None, "seed": 7,
        "ignore_eos": True, "stream_options": None, "top_k": None})
    assert status == 200 and reply["usage"]["completion_tokens"] >= 1
    status, reply = post_json(server + "/v1/chat/completions", {"messages": None})
    assert status == 400 and reply["error"]["param"] == "messages"


def test_models_retrieve_and_unknown_id_is_an_openai_404(client, ckpt):
    card = client.models.retrieve(ckpt.stem)
    assert card.id == ckpt.stem and card.object == "model"
    assert card.model_extra["max_model_len"] == 128
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.code == "model_not_found" and err.value.body["param"] == "model"


@pytest.mark.parametrize(("effort", "think"), [("none", False), ("minimal", False),
                                               ("low", True), ("high", True)])
def test_reasoning_effort_switches_the_think_block(client, ckpt, effort, think):
    reply = _chat(client, ckpt, "What is 2+2?", max_tokens=1, reasoning_effort=effort)
    tok = make_tokenizer()
    want = cf.encode_prompt(cf.Conversation(), "What is 2+2?", tok, think=think)
    assert reply.usage.prompt_tokens == len(want)


BAD_CHAT = [
    ("unknown effort", {"reasoning_effort": "max"}, "reasoning_effort"),
    ("effort against enable_thinking", {"reasoning_effort": "high", "chat_template_kwargs":
                                        {"enable_thinking": False}}, "reasoning_effort"),
    ("json_object", {"response_format": {"type": "json_object"}}, "response_format.type"),
    ("json_schema", {"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object"}}}}, "response_format.type"),
    ("text part without text", {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
     "messages[0].content[0].type"),
]


@pytest.mark.parametrize(("case", "body", "param"), BAD_CHAT, ids=[c[0] for c in BAD_CHAT])
def test_unsupported_chat_options_are_clear_400s(server, case, body, param):
    status, reply = post_json(server + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "Hi"}], **body})
    assert status == 400 and reply["error"]["param"] == param, reply
    assert reply["error"]["message"]


def test_response_format_text_is_accepted_and_json_refused_by_the_client(client, ckpt):
    reply = _chat(client, ckpt, max_tokens=2, response_format={"type": "text"})
    assert reply.usage.completion_tokens >= 1
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, ckpt, max_tokens=2, response_format={"type": "json_object"})
    assert "cannot guarantee JSON" in err.value.body["message"]


def test_developer_role_and_text_parts_build_the_system_prompt_and_message(client, ckpt):
    tok = make_tokenizer()
    want = cf.encode_prompt(cf.Conversation(system="Be brief. Answer in English."),
                            "What is 2+2?", tok)
    parts = [{"role": "developer", "content": [{"type": "text", "text": "Be brief. "},
                                               {"type": "text", "text": "Answer in English."}]},
             {"role": "user", "content": [{"type": "text", "text": "What is "},
                                          {"type": "text", "text": "2+2?"}]}]
    plain = [{"role": "system", "content": "Be brief. Answer in English."},
             {"role": "user", "content": "What is 2+2?"}]
    a = _chat(client, ckpt, parts, max_tokens=12, temperature=0)
    b = _chat(client, ckpt, plain, max_tokens=12, temperature=0)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens == len(want)
    assert a.choices[0].message.content == b.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as err:
        _chat(client, ckpt, [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}])
    assert err.value.body["param"] == "messages[0].content[0].type"


# --- POST /v1/completions -----------------------------------------------------------------------
def _reference_logprobs(ckpt, ids: list[int]) -> torch.Tensor:
    """(T-1, V) log-softmax of a model loaded here, apart from the server's."""
    model, _ = load_model(ckpt)
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids]))[0, :-1].float(), dim=-1)


def test_echo_logprobs_equal_a_direct_forward_pass(client, ckpt):
    tok = make_tokenizer()
    prompt = "The quick brown fox jumps over the lazy dog."
    ids = tok.encode(prompt)
    reply = client.completions.create(model=ckpt.stem, prompt=prompt, echo=True, logprobs=3,
                                      max_tokens=0, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "text_completion" and choice.text == prompt
    lp = choice.logprobs
    ref = _reference_logprobs(ckpt, ids)
    assert lp.tokens == [tok.decode([t]) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    want = ref.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()
    assert lp.token_logprobs[1:] == pytest.approx(want, abs=1e-5)
    for i, top in enumerate(lp.top_logprobs[1:]):
        values, best = ref[i].topk(3)
        expected: dict[str, float] = {}  # ids that decode alike share a key: the larger wins
        for t, v in zip(best.tolist(), values.tolist(), strict=True):
            expected[tok.decode([t])] = max(v, expected.get(tok.decode([t]), -math.inf))
        expected.setdefault(lp.tokens[i + 1], want[i])  # the chosen token, as OpenAI lists
        assert top == pytest.approx(expected, abs=1e-5)
    assert lp.text_offset[:3] == [0, len(lp.tokens[0]), len(lp.tokens[0] + lp.tokens[1])]
    assert reply.usage.prompt_tokens == len(ids) and reply.usage.completion_tokens == 0


def test_echo_with_one_new_token_lists_it_last_as_lm_eval_expects(server, ckpt):
    """lm-eval 0.4.13 sends max_tokens=1 and drops the last entry: it must be the new token,
    even when that token is a stop token (not in the text)."""
    tok = make_tokenizer()
    ids = tok.encode("Sort these numbers: 5, 2, 8")
    status, reply = post_json(server + "/v1/completions", {
        "prompt": [ids], "echo": True, "logprobs": 1, "max_tokens": 1, "temperature": 0})
    assert status == 200, reply
    lp = reply["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(ids) + 1
    after = _reference_logprobs(ckpt, [*ids, 0])[-1]  # the distribution after the prompt
    greedy = int(after.argmax())
    assert lp["token_logprobs"][-1] == pytest.approx(after[greedy].item(), abs=1e-5)
    assert lp["tokens"][-1] == tok.decode([greedy])


def _engine_greedy(ckpt, ids: list[int], n: int) -> list[int]:
    model, tok = load_model(ckpt)
    gen = Engine(model, max_batch_size=1).generate(
        ids, SamplingParams(max_new_tokens=n, temperature=0), cf.stop_ids(tok))
    return list(gen.tokens)


def test_completion_text_equals_the_engine_and_prompts_keep_their_order(client, ckpt):
    tok = make_tokenizer()
    prompts = ["Hello! How can I", "What is the capital of France?", "7 * 8 ="]
    ids = [tok.encode(p, allow_special=True) for p in prompts]
    mixed = [prompts[0], ids[1], prompts[2]]  # strings and id lists in one list
    reply = client.completions.create(model=ckpt.stem, prompt=prompts, max_tokens=12,
                                      temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    for choice, p in zip(reply.choices, ids, strict=True):
        want = _engine_greedy(ckpt, p, 12)
        assert choice.text == tok.decode(want)
        assert choice.finish_reason == ("length" if len(want) == 12 else "stop")
    one = client.completions.create(model=ckpt.stem, prompt=ids[1], max_tokens=12,
                                    temperature=0)
    assert one.choices[0].text == reply.choices[1].text
    again = client.completions.create(model=ckpt.stem, prompt=mixed, max_tokens=12,
                                      temperature=0)
    assert [c.text for c in again.choices] == [c.text for c in reply.choices]


def test_a_stop_token_ends_the_choice_and_is_not_text(client, ckpt):
    """A chat prompt as raw text: the model (random) is forced to see the template's tokens;
    whatever it samples, a stop token never shows up in the text."""
    tok = make_tokenizer()
    prompt = cf.render_prompt(cf.Conversation(), "Hi", think=False)
    reply = client.completions.create(model=ckpt.stem, prompt=prompt, max_tokens=40,
                                      temperature=0, logprobs=0)
    choice = reply.choices[0]
    want = _engine_greedy(ckpt, tok.encode(prompt, allow_special=True), 40)
    stopped = len(want) < 40
    assert choice.finish_reason == ("stop" if stopped else "length")
    assert choice.text == tok.decode(want)
    assert len(choice.logprobs.tokens) == len(want) + stopped  # the stop token is listed
    assert all(s not in choice.text for s in cf.STOP_TOKENS)


def test_streamed_completion_concatenates_to_the_plain_one(client, ckpt):
    kw = {"model": ckpt.stem, "prompt": "The quick brown", "max_tokens": 20, "temperature": 0,
          "stop": ["zz"]}
    plain = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True},
                                            **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == plain.choices[0].text
    assert chunks[-2].choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


BAD_COMPLETIONS = [
    ("no prompt", {}, "prompt"),
    ("empty prompt", {"prompt": ""}, "prompt"),
    ("token id out of range", {"prompt": [5, 10**6]}, "prompt"),
    ("n", {"prompt": "a", "n": 2}, "n"),
    ("best_of", {"prompt": "a", "best_of": 3}, "best_of"),
    ("suffix", {"prompt": "a", "suffix": "b"}, "suffix"),
    ("logprobs over 5", {"prompt": "a", "logprobs": 6}, "logprobs"),
    ("stream with echo", {"prompt": "a", "stream": True, "echo": True}, "echo"),
    ("stream with logprobs", {"prompt": "a", "stream": True, "logprobs": 1}, "logprobs"),
    ("stream with two prompts", {"prompt": ["a", "b"], "stream": True}, "prompt"),
    ("prompt over the context", {"prompt": "word " * 400, "max_tokens": 0}, "prompt"),
    ("unknown model", {"prompt": "a", "model": "davinci-002"}, "model"),
]


@pytest.mark.parametrize(("case", "body", "param"), BAD_COMPLETIONS,
                         ids=[c[0] for c in BAD_COMPLETIONS])
def test_bad_completion_requests_are_openai_errors(server, case, body, param):
    status, reply = post_json(server + "/v1/completions", body)
    assert status in (400, 404) and reply["error"]["param"] == param, reply
    assert "Traceback" not in reply["error"]["message"]


@pytest.mark.interop
def test_lm_eval_local_completions_scores_like_the_harness_hf_model(server, ckpt, tmp_path):
    """A multiple-choice request through lm-eval's `local-completions` model and our server
    gives the log-likelihoods lm-eval's HFLM gives on the harness's HF export. (lm-eval's API
    models need its `api` extra: tenacity, in the interop extra.)"""
    pytest.importorskip("lm_eval")
    pytest.importorskip("tenacity")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from aethermind.evaluation.harness import to_hf

    model, tok = load_model(ckpt)
    hf, hf_tok = to_hf(model, tok, tmp_path / "hf")
    question = "Question: What is the capital of France?\nAnswer:"
    requests = [Instance("loglikelihood", {}, (question, " " + c), i)
                for i, c in enumerate(["Paris", "London", "Berlin 42"])]
    ours = HFLM(pretrained=hf, tokenizer=hf_tok, batch_size=1, max_length=128)
    api = LocalCompletionsAPI(base_url=server + "/v1/completions", model=ckpt.stem,
                              tokenizer_backend="huggingface", tokenizer=str(tmp_path / "hf"),
                              max_length=128, num_concurrent=1, max_retries=1)
    want = ours.loglikelihood(requests)
    got = api.loglikelihood(requests)
    assert len(got) == 3
    for (g, g_greedy), (w, w_greedy) in zip(got, want, strict=True):
        assert math.isfinite(g) and g == pytest.approx(w, abs=1e-4)
        assert g_greedy == w_greedy

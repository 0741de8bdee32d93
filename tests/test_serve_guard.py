"""What `serve/guard.py` and the parsing threads stop (issue 22): web pages driving a key-less
server (foreign Origin, DNS rebinding Host, `text/plain` simple requests), CORS only for the
origins named with --allow-origin, the body-size limit, and heavy parsing off the event loop."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
from _serve_helpers import random_checkpoint, request, running_server

from aethermind.serve import server as server_module
from aethermind.serve.server import DEFAULT_MAX_BODY_BYTES, build_parser

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("guard"))


@pytest.fixture(scope="module")
def served(ckpt):
    with running_server(ckpt, max_body_bytes=4096) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def open_to(ckpt):
    """A server that lets https://app.example.org call it from the browser."""
    with running_server(ckpt, allow_origins=["https://app.example.org"]) as (url, _):
        yield url


def _error(text: str) -> dict:
    return json.loads(text)["error"]


def test_a_foreign_origin_is_refused_and_the_own_origin_served(served):
    url, _ = served
    own = "http://" + urlsplit(url).netloc
    for origin in ("https://evil.example", "null", own.replace("127.0.0.1", "localhost")):
        status, headers, text = request(url + CHAT, "POST", BODY, headers={"Origin": origin})
        assert status == 403 and _error(text)["code"] == "origin_not_allowed", origin
        assert "--allow-origin" in _error(text)["message"]
        assert "access-control-allow-origin" not in headers
        assert request(url + "/v1/models", headers={"Origin": origin})[0] == 403
    status, headers, _ = request(url + CHAT, "POST", BODY, headers={"Origin": own})
    assert status == 200 and "access-control-allow-origin" not in headers  # same origin
    assert request(url + CHAT, "POST", BODY)[0] == 200  # no Origin: not a browser


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "attacker.com."])
def test_a_key_less_server_refuses_other_host_names(served, host):
    """DNS rebinding: the attacker's name resolves to 127.0.0.1, the browser sends its Host."""
    url, _ = served
    status, _, text = request(url + CHAT, "POST", BODY, headers={"Host": host})
    assert status == 421 and "DNS rebinding" in _error(text)["message"]
    assert request(url + "/", headers={"Host": host})[0] == 421


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "10.1.2.3:80",
                                  "app.localhost"])
def test_loopback_names_and_addresses_are_this_server(served, host):
    url, _ = served
    assert request(url + CHAT, "POST", BODY, headers={"Host": host})[0] == 200


def test_with_an_api_key_any_host_name_is_served(ckpt):
    with running_server(ckpt, api_key="k") as (url, _):
        headers = {"Host": "api.example.org", "Authorization": "Bearer k"}
        assert request(url + CHAT, "POST", BODY, headers=headers)[0] == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", ""])
def test_posts_that_are_not_json_get_415(served, content_type):
    """text/plain, forms and no type at all are what a page may POST without a preflight."""
    url, _ = served
    status, _, text = request(url + CHAT, "POST", json.dumps(BODY),
                              headers={"Content-Type": content_type})
    assert status == 415 and "application/json" in _error(text)["message"]


def test_json_with_a_charset_is_json(served):
    url, _ = served
    headers = {"Content-Type": "application/json; charset=utf-8"}
    assert request(url + CHAT, "POST", BODY, headers=headers)[0] == 200


def test_allow_origin_answers_the_preflight_and_marks_the_replies(open_to):
    url = open_to
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    status, headers, _ = request(url + CHAT, "OPTIONS", headers=preflight)
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example.org"
    assert "POST" in headers["access-control-allow-methods"]
    assert headers["access-control-allow-headers"] == "authorization, content-type"
    status, headers, _ = request(url + CHAT, "POST", BODY,
                                 headers={"Origin": "https://app.example.org"})
    assert status == 200 and headers["access-control-allow-origin"] == "https://app.example.org"
    other = {**preflight, "Origin": "https://other.example.org"}
    status, headers, _ = request(url + CHAT, "OPTIONS", headers=other)
    assert status == 403 and "access-control-allow-origin" not in headers


def test_allow_origin_star_lets_every_site_in(ckpt):
    with running_server(ckpt, allow_origins=["*"]) as (url, _):
        status, headers, _ = request(url + "/v1/models", headers={"Origin": "https://x.org"})
        assert status == 200 and headers["access-control-allow-origin"] == "*"


def test_a_body_over_the_limit_is_413_before_it_is_read(served):
    url, _ = served
    huge = json.dumps({**BODY, "messages": [{"role": "user", "content": "x" * 10_000_000}]})
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("POST", CHAT)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(huge)))
    conn.endheaders()  # the answer comes without the body being sent at all
    resp = conn.getresponse()
    error = _error(resp.read().decode())
    conn.close()
    assert resp.status == 413 and error["code"] == "request_too_large"
    assert "4,096" in error["message"] and "\n" not in error["message"]


def test_a_chunked_body_over_the_limit_is_413(served):
    url, _ = served
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    chunks = (b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 for _ in range(10))
    conn.request("POST", CHAT, body=chunks, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    error = _error(resp.read().decode())
    conn.close()
    assert resp.status == 413 and error["code"] == "request_too_large"
    assert request(url + CHAT, "POST", BODY)[0] == 200


class _BlockingTokenizer:
    """The server's tokenizer, held inside encoding until released: a very long request."""

    def __init__(self, tok) -> None:
        self.tok, self.entered, self.release = tok, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.tok, name)

    def encode_batch(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(timeout=30)
        return self.tok.encode_batch(*args, **kwargs)


def test_tokenising_runs_off_the_event_loop(served, monkeypatch):
    url, state = served
    slow = _BlockingTokenizer(state.tokenizer)
    monkeypatch.setattr(state, "tokenizer", slow)
    result = {}
    thread = threading.Thread(target=lambda: result.update(
        reply=request(url + CHAT, "POST", BODY)))
    thread.start()
    try:
        assert slow.entered.wait(timeout=30)
        start = time.monotonic()
        status, _, text = request(url + "/health", timeout=5)  # timed out before the fix
        assert status == 200 and json.loads(text)["status"] == "ok"
        assert time.monotonic() - start < 5
    finally:
        slow.release.set()
        thread.join(timeout=30)
    assert result["reply"][0] == 200


def test_the_options_reach_the_server_and_the_default_is_defined_once(ckpt, monkeypatch):
    assert build_parser().parse_args(["--model", "m"]).max_body_bytes == DEFAULT_MAX_BODY_BYTES
    seen = {}

    class Captured(Exception):
        pass

    def capture(*args, **kwargs):
        seen.update(kwargs)
        raise Captured

    monkeypatch.setattr(server_module, "ServerState", capture)
    with pytest.raises(Captured):
        server_module.main(["--model", str(ckpt), "--device", "cpu", "--port", "0",
                            "--allow-origin", "https://a.org", "--allow-origin", "*",
                            "--max-body-bytes", "5000"])
    assert seen["allow_origins"] == ["https://a.org", "*"] and seen["max_body_bytes"] == 5000
    assert seen["host"] == "127.0.0.1"

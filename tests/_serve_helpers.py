"""Shared by the server tests: a real uvicorn server on 127.0.0.1 (a free port) in a thread.

Not a test module (leading underscore). The model is saved in the training layout and loaded
back with `load_model`, as `aethermind serve` does (the trained one: conftest's
`overfit_final`).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import torch
import uvicorn
from _infer_helpers import make_tokenizer, save_final, tiny_config

from aethermind.artifacts.loading import load_model
from aethermind.model.transformer import Forge1Model
from aethermind.serve.server import ServerState, bind, create_app


def random_checkpoint(out: Path, max_seq_len: int = 128, seed: int = 0) -> Path:
    """Random weights with std 0.2: the default init's tiny weights make greedy decoding repeat
    one newline forever, which would hide mixed-up replies; these give varied text."""
    tok = make_tokenizer()
    torch.manual_seed(seed)
    model = Forge1Model(tiny_config(tok, max_seq_len)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    return save_final(model, tok, out)


@contextlib.contextmanager
def running_server(ckpt: Path, *, api_key: str | None = None, max_batch_size: int = 8,
                   **options) -> Iterator[tuple[str, ServerState]]:
    """(base URL, state) of a uvicorn server serving `ckpt`, stopped on exit; `options` go to
    `ServerState` (allow_origins, max_body_bytes)."""
    model, tok = load_model(ckpt)
    state = ServerState(model, tok, model_id=ckpt.stem, api_key=api_key,
                        max_batch_size=max_batch_size, **options)
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# --- raw HTTP with the standard library: for what an SDK hides (status, SSE lines, hang-ups) --
def request(url: str, method: str = "GET", body: object = None, *, timeout: float = 60,
            headers: dict | None = None) -> tuple[int, dict, str]:
    """(status, headers, text); a dict/list body is sent as JSON, a str as is."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    data = body if isinstance(body, str) or body is None else json.dumps(body)
    conn.request(method, parts.path, body=data,
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    return resp.status, dict(resp.getheaders()), text


def post_json(url: str, body: object, **kw) -> tuple[int, dict]:
    status, _, text = request(url, "POST", body, **kw)
    return status, json.loads(text)


@contextlib.contextmanager
def open_stream(url: str, body: dict, timeout: float = 60
                ) -> Iterator[tuple[http.client.HTTPResponse, Iterator[str]]]:
    """(response, iterator of non-blank SSE lines); leaving the block hangs up."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    conn.request("POST", parts.path, body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    sock = conn.sock

    def lines() -> Iterator[str]:
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line:
                yield line

    try:
        yield resp, lines()
    finally:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        conn.close()

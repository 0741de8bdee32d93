"""`aethermind serve`: an OpenAI-compatible HTTP server and a web chat for a trained Forge-1.

Endpoints: `POST /v1/chat/completions` (plain JSON or server-sent events ending in `[DONE]`),
`POST /v1/completions` (legacy text completions with echo and logprobs, for lm-eval),
`GET /v1/models`, `GET /v1/models/{id}`, `GET /health`, and the web chat at `/` (one static
page, no build step, works offline). Concurrent requests share one continuous-batching decode
loop (`serve/scheduler.py`); the protocols and text decoding are in `serve/api.py` and
`serve/completions.py`; log-probabilities come from a forward pass of the model in a worker
thread (the engine's thread only decodes). Binds to 127.0.0.1 unless told otherwise;
`--api-key` (or AETHERMIND_API_KEY) makes /v1/* require `Authorization: Bearer KEY`. Every request
first passes `serve/guard.py` (Host and Origin checks against web pages, JSON content type, the
`--max-body-bytes` limit; `--allow-origin` opens CORS to named sites). JSON decoding, template
rendering and tokenising run on a small thread pool, so a large request never stalls the event
loop that streams everyone's tokens.
Usage: `aethermind serve --model outputs/final_model --port 8000`, then any OpenAI client with
`base_url="http://127.0.0.1:8000/v1"`.
"""

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any

from aethermind.artifacts.loading import LoadError, add_model_args, find_checkpoint, load_model
from aethermind.inference.engine import Engine, add_decode_args, notice_to_stderr
from aethermind.model.packed_linear import (
    DEFAULT_DECODE_DTYPE,
    DecodeDtype,
    check_compiled_decode,
    check_decode_dtype,
)
from aethermind.runtime.threads import use_decode_threads
from aethermind.serve.scheduler import EngineFailure, Scheduler

API_KEY_ENV = "AETHERMIND_API_KEY"
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_BATCH = "127.0.0.1", 8000, 8
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: far more text than any Forge-1 context holds
# Request parsing threads: tokenizers releases the GIL, so two keep a core busy while the event
# loop goes on; more would only queue heavy requests behind each other sooner.
PARSE_THREADS = 2
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
log = logging.getLogger(__name__)


def web_page() -> str:
    """The web chat: one HTML file shipped as package data."""
    return resources.files("aethermind").joinpath("assets/web/chat.html").read_text("utf-8")


class ServerState:
    """What the handlers share: model id, tokenizer, context length, the scheduler, the key,
    the parsing threads, and what `guard.BrowserGuard` needs (bound host, origins, size)."""

    def __init__(self, model: Any, tokenizer: Any, *, model_id: str, api_key: str | None,
                 max_batch_size: int = DEFAULT_BATCH, host: str = DEFAULT_HOST,
                 allow_origins: Sequence[str] = (),
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 dtype: DecodeDtype = DEFAULT_DECODE_DTYPE, compile: bool = False,
                 announce: Callable[[str], None] | None = None) -> None:
        self.tokenizer, self.model_id, self.api_key = tokenizer, model_id, api_key
        self.model = model  # for scoring (logprobs, fp32); the scheduler's engine decodes
        self.host, self.allow_origins, self.max_body_bytes = host, allow_origins, max_body_bytes
        self.max_seq_len = int(model.config.max_seq_len)
        self.scheduler = Scheduler(Engine(model, max_batch_size=max_batch_size, dtype=dtype,
                                          compile=compile, announce=announce))
        self.parsers = ThreadPoolExecutor(PARSE_THREADS, thread_name_prefix="aethermind-parse")

    def parse(self, body: bytes, parser: Callable[..., Any]) -> Any:
        """`parser` (api.parse_request or completions.parse_completion_request) of the JSON
        body; runs on a parsing thread."""
        from aethermind.serve.guard import decode_json

        return parser(decode_json(body), self.tokenizer, max_seq_len=self.max_seq_len,
                      model_id=self.model_id)


def create_app(state: ServerState):  # -> fastapi.FastAPI (imported lazily: an optional extra)
    """The FastAPI app; the scheduler thread runs for the app's lifespan."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException

    from aethermind.serve.api import APIError  # pydantic, part of the same extra
    from aethermind.serve.guard import BrowserGuard

    class EventStream(StreamingResponse):
        """Closes the event generator however the response ends, so a client that hangs up
        between two events still cancels its sequence at once (not when garbage collected)."""

        async def stream_response(self, send) -> None:
            try:
                await super().stream_response(send)
            finally:
                await self.body_iterator.aclose()

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state.scheduler.start()
        try:
            yield
        finally:
            state.scheduler.stop()
            state.parsers.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="aethermind serve", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    # The key is the protection where there is one: only a key-less server checks Host (a
    # keyed one may sit behind a proxy under any name).
    app.add_middleware(BrowserGuard, allow_origins=state.allow_origins,
                       check_host=state.api_key is None, bound_host=state.host,
                       max_body_bytes=state.max_body_bytes)

    def error(err: APIError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, err: APIError) -> JSONResponse:
        return error(err)

    @app.exception_handler(EngineFailure)
    async def _engine_error(_request: Request, err: EngineFailure) -> JSONResponse:
        return error(APIError(500, str(err), type="server_error"))

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, err: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return error(APIError(err.status_code, str(err.detail), code=code))

    async def parse(request: Request, parser: Callable[..., Any]) -> Any:
        """The request parsed off the event loop (JSON, template, tokenising)."""
        body = await request.body()
        return await asyncio.get_running_loop().run_in_executor(state.parsers, state.parse,
                                                                body, parser)

    def check_key(request: Request) -> None:
        if state.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
                token.strip().encode(), state.api_key.encode()):
            raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer KEY' "
                           "with the key the server was started with", code="invalid_api_key")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(web_page())

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": state.model_id,
                "requests_in_flight": state.scheduler.in_flight}

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        check_key(request)
        return {"object": "list", "data": [model_card(state)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request) -> dict:
        from aethermind.serve.api import check_model

        check_key(request)
        check_model(model_id, state.model_id)
        return model_card(state)

    @app.post("/v1/completions")
    async def completions(request: Request):
        from aethermind.serve.completions import parse_completion_request

        check_key(request)
        req = await parse(request, parse_completion_request)
        if req.stream:
            return EventStream(_completion_sse(state, req), media_type="text/event-stream",
                               headers=SSE_HEADERS)
        return JSONResponse(await _text_completion(state, req, request))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        from aethermind.serve.api import parse_request

        check_key(request)
        req = await parse(request, parse_request)
        if req.stream:
            return EventStream(_sse(state, req), media_type="text/event-stream",
                               headers=SSE_HEADERS)
        return JSONResponse(await _complete(state, req, request))

    return app


def model_card(state: ServerState) -> dict:
    """The one model's entry in GET /v1/models and GET /v1/models/{id}."""
    return {"id": state.model_id, "object": "model", "created": 0, "owned_by": "aethermind",
            "max_model_len": state.max_seq_len}


async def _generate(state: ServerState, req: Any, decoder: Any, counts: dict
                    ) -> AsyncIterator[tuple[str, str]]:
    """Run one request through the scheduler; yields (part, text) pieces as they decode.

    Sets counts["tokens"] and counts["finish"]. Leaving early (stop string, disconnect,
    cancellation) cancels the sequence, which frees its batch slot at the next step.
    """
    stream = state.scheduler.submit(req.prompt_ids, req.params, req.stop_ids)
    counts.update(tokens=0, finish="length")
    try:
        async for event in stream:
            if event.token is not None:
                counts["tokens"] += 1
                for piece in decoder.push(event.token):
                    yield piece
            if decoder.stopped:
                counts["finish"] = "stop"
                break
            if event.finished:
                counts["finish"] = "length" if event.finish_reason == "length" else "stop"
                if event.token is None and event.finish_reason == "stop":
                    counts["tokens"] += 1  # the stop token was sampled too (as vLLM counts)
        for piece in decoder.finish():
            yield piece
    finally:
        state.scheduler.cancel(stream)


async def _until_disconnect(request: Any) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Any, job: Any) -> Any:
    """`await job` (a coroutine), cancelled if the client hangs up (which frees its slots)."""
    work = asyncio.ensure_future(job)
    watch = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()  # the client left: _generate's finally cancels the sequence
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled():
        raise asyncio.CancelledError  # nobody is left to answer
    return work.result()  # re-raises a generation failure


async def _complete(state: ServerState, req: Any, request: Any) -> dict:
    """A non-streamed completion; a client that hangs up cancels it (and frees the slot)."""
    from aethermind.serve.api import ReplyDecoder, completion_body, new_completion_id, now

    decoder = ReplyDecoder(state.tokenizer, req.think, req.stop_strings)
    counts: dict = {}

    async def run() -> None:
        async for _ in _generate(state, req, decoder, counts):
            pass

    await _unless_disconnected(request, run())
    return completion_body(new_completion_id(), req, decoder, counts["finish"],
                           counts["tokens"], now())


async def _job_pieces(state: ServerState, job: Any, decoder: Any, counts: dict
                      ) -> AsyncIterator[str]:
    """Text pieces of one text-completion job (none for max_tokens=0: nothing to run)."""
    counts.update(tokens=0, finish="length")
    if job.params.max_new_tokens > 0:
        async for piece in _generate(state, job, decoder, counts):
            yield piece


async def _choice(state: ServerState, req: Any, job: Any, decoder: Any, counts: dict) -> Any:
    """The finished job as a `completions.Choice`, scored when logprobs were asked for."""
    from aethermind.serve.completions import Choice, score

    choice = Choice(decoder.text, decoder.tokens, counts["finish"])
    if req.logprobs is not None:  # a forward pass: off the event loop, beside the engine
        choice.scores = await asyncio.to_thread(score, state.model,
                                                job.prompt_ids + decoder.tokens, req.logprobs)
    return choice


async def _text_completion(state: ServerState, req: Any, request: Any) -> dict:
    """A non-streamed text completion: every prompt's job runs in the batch at once."""
    from aethermind.serve.api import now, usage
    from aethermind.serve.completions import TextDecoder, choice_body, envelope, new_id

    async def one(job: Any) -> Any:
        decoder, counts = TextDecoder(state.tokenizer, req.stop_ids, req.stop_strings), {}
        async for _ in _job_pieces(state, job, decoder, counts):
            pass
        return await _choice(state, req, job, decoder, counts)

    choices = await _unless_disconnected(request, asyncio.gather(*map(one, req.jobs)))
    completion_tokens = sum(len(c.tokens) for c in choices)
    return {**envelope(new_id(), req, now()),
            "choices": [choice_body(state.tokenizer, req, i, c) for i, c in enumerate(choices)],
            "usage": usage(sum(len(j.prompt_ids) for j in req.jobs), completion_tokens)}


async def _completion_sse(state: ServerState, req: Any) -> AsyncIterator[str]:
    """Server-sent events of one streamed text completion: a chunk per piece, the finish
    chunk, [usage], [DONE] (streams take one prompt, without echo or logprobs)."""
    from aethermind.serve.api import now, usage
    from aethermind.serve.completions import TextDecoder, envelope, new_id

    head = envelope(new_id(), req, now())
    job = req.jobs[0]
    decoder, counts = TextDecoder(state.tokenizer, req.stop_ids, req.stop_strings), {}

    def event(text: str, finish: str | None = None) -> str:
        body = {**head, "choices": [{"text": text, "index": 0, "logprobs": None,
                                     "finish_reason": finish}]}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        async for piece in _job_pieces(state, job, decoder, counts):
            yield event(piece)
    except Exception as err:  # the stream ends with an error event, never cut short
        yield f"data: {json.dumps({'error': _stream_error(err)})}\n\n"
        yield "data: [DONE]\n\n"
        return
    yield event("", counts["finish"])
    if req.include_usage:
        use = usage(len(job.prompt_ids), len(decoder.tokens))
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': use})}\n\n"
    yield "data: [DONE]\n\n"


def _stream_error(err: Exception) -> dict:
    """The error event that ends a stream which failed after its 200 was sent; unexpected
    failures are logged here (expected ones where they occur)."""
    if not isinstance(err, EngineFailure):
        log.exception("streamed generation failed")
    message = str(err) if isinstance(err, EngineFailure) else \
        f"generation failed: {type(err).__name__}"
    return {"message": message, "type": "server_error", "param": None, "code": None}


async def _sse(state: ServerState, req: Any) -> AsyncIterator[str]:
    """Server-sent events: role chunk, one chunk per piece, finish chunk, [usage], [DONE]."""
    from aethermind.serve.api import (
        ReplyDecoder,
        chunk_body,
        new_completion_id,
        now,
        piece_delta,
        usage,
    )
    cid, created = new_completion_id(), now()
    decoder = ReplyDecoder(state.tokenizer, req.think, req.stop_strings)
    counts: dict = {}

    def event(body: dict) -> str:
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield event(chunk_body(cid, req, created, {"role": "assistant", "content": ""}))
    try:
        async for part, text in _generate(state, req, decoder, counts):
            yield event(chunk_body(cid, req, created, piece_delta(part, text)))
    except Exception as err:  # the stream ends with an error event, never cut short
        yield event({"error": _stream_error(err)})
        yield "data: [DONE]\n\n"
        return
    yield event(chunk_body(cid, req, created, {}, counts["finish"]))
    if req.include_usage:
        yield event(chunk_body(cid, req, created, None,
                               usage_=usage(len(req.prompt_ids), counts["tokens"])))
    yield "data: [DONE]\n\n"


# --- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aethermind serve", description=__doc__.splitlines()[0])
    add_model_args(p)
    add_decode_args(p)
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"require this bearer key on /v1/* (default: ${API_KEY_ENV}, else none)")
    p.add_argument("--max-batch-size", type=int, default=DEFAULT_BATCH,
                   help="requests decoded together; more wait in a queue "
                   f"(default {DEFAULT_BATCH})")
    p.add_argument("--model-name", help="id clients use as `model` (default: checkpoint name)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. https://app.example.org, or *) call "
                   "the API from the browser (CORS); repeatable. Default: only the server's "
                   "own page")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES:,}; "
                   "bigger ones get 413)")
    return p


def _check_origin(origin: str) -> str | None:
    """Why `origin` can never match a browser's Origin header, or None if it can."""
    if origin == "*":
        return None
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest.rstrip("/"):
        return "give scheme://host[:port] as the browser sends it (or *), e.g. " \
            "https://app.example.org"
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, so a taken port is a one-line error and --port 0 can be reported."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}): pick another "
                         "--port or stop what uses it") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be between 0 and 65535")
    if args.max_batch_size < 1:
        parser.error(f"--max-batch-size {args.max_batch_size}: must be at least 1")
    if args.max_body_bytes < 1:
        parser.error(f"--max-body-bytes {args.max_body_bytes}: must be at least 1")
    for origin in args.allow_origin:
        if (why := _check_origin(origin)) is not None:
            parser.error(f"--allow-origin {origin}: {why}")
    try:
        import uvicorn
    except ImportError:
        parser.exit(2, "error: the server needs FastAPI and uvicorn: pip install -e '.[serve]'\n")
    try:
        model, tok = load_model(args.model, args.variant, args.tokenizer, args.device)
        device = next(model.parameters()).device
        (check_compiled_decode if args.compile else check_decode_dtype)(args.dtype, device)
        sock = bind(args.host, args.port)
    except (LoadError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    if device.type == "cpu":
        use_decode_threads()  # after loading (the load average is others' work), before a compile
    model_id = args.model_name or find_checkpoint(args.model).stem
    try:
        state = ServerState(model, tok, model_id=model_id, api_key=args.api_key,
                            max_batch_size=args.max_batch_size, host=args.host,
                            allow_origins=args.allow_origin, max_body_bytes=args.max_body_bytes,
                            dtype=args.dtype, compile=args.compile, announce=notice_to_stderr)
    except ValueError as err:
        sock.close()
        parser.exit(2, f"error: {err}\n")
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model_id} on http://{shown}:{port} (web chat at /, OpenAI API at /v1)",
          flush=True)
    if not _is_loopback(args.host) and args.api_key is None:
        print(f"warning: listening on {args.host} without --api-key: anyone who can reach this "
              "machine can use the model", file=sys.stderr, flush=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Ctrl-C waits this long for answers in progress, then closes their connections.
    config = uvicorn.Config(create_app(state), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5)
    # uvicorn shuts down gracefully on Ctrl-C / SIGTERM, then re-raises the signal.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock])
    print("server stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

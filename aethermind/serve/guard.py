"""What an HTTP request must pass before the API reads it: host, origin, content type, size, JSON.

`BrowserGuard` is plain ASGI middleware around the app. It stops what a web page in the user's
browser could otherwise do to a server on this machine:
- DNS rebinding: a key-less server answers only to its bound name, localhost, its host name
  or an IP literal in `Host` (anything else is 421); with `--api-key` the key protects it.
- cross-origin requests: a request whose `Origin` is not the server's own is 403, unless that
  origin (or `*`) was allowed with `--allow-origin`; only then are CORS preflights (OPTIONS)
  answered and `Access-Control-Allow-*` headers sent.
- CORS "simple" POSTs: every POST must say `Content-Type: application/json` (else 415), so a
  page cannot skip the preflight with `text/plain` or a form.
- size: a body over `max_body_bytes` is 413, from Content-Length before anything is read, or
  as soon as a chunked body passes the limit.
`decode_json` is the JSON rule of every endpoint: strict JSON (no NaN/Infinity), no lone
surrogates anywhere (they cannot be encoded as UTF-8), malformed or too deep input a 400.
It knows nothing of chat, models or the scheduler (`api.py`, `server.py`).
Usage: `BrowserGuard(app, allow_origins=(), check_host=True, bound_host=h, max_body_bytes=n)`.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aethermind.serve.api import APIError

JSON_TYPES = ("application/json",)  # plus any "+json" suffix type (RFC 6839)
PREFLIGHT_MAX_AGE = "600"  # seconds a browser may cache a preflight answer

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


# --- JSON bodies ------------------------------------------------------------------------------
def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (send a number)")


def decode_json(body: bytes) -> Any:
    """The request body as JSON; raises a 400 `APIError` naming what is wrong."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise APIError(400, "the request body is not valid JSON (nested too deeply)") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit number
        raise APIError(400, f"the request body is not valid JSON ({err})") from None
    _refuse_surrogates(value)
    return value


def _refuse_surrogates(value: Any) -> None:
    """A lone surrogate ("\\ud800") decodes from JSON but is no text: tokenizers and UTF-8
    replies cannot take it. Walks iteratively: json.loads already bounds the depth."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                _check_text(path, key, "a key")
                stack.append((f"{path}.{key}" if path else key, sub))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", sub) for i, sub in enumerate(item))
        elif isinstance(item, str):
            _check_text(path, item, "the text")


def _check_text(path: str, text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        where = f"{path}: " if path else ""
        raise APIError(400, f"{where}{what} holds a lone surrogate (U+{code:04X}), which is not "
                       "valid Unicode", param=path or None) from None


# --- host and origin --------------------------------------------------------------------------
def _host_name(host_header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_host_names(bound_host: str) -> frozenset[str]:
    """Names a key-less server answers to besides IP literals: no attacker can point these at
    it by DNS (rebinding needs a name the attacker controls)."""
    return frozenset({"localhost", bound_host.lower().strip("[]"), socket.gethostname().lower()})


def _json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or media.endswith("+json")


class BrowserGuard:
    """ASGI middleware enforcing the module's rules on every HTTP request."""

    def __init__(self, app: Callable, *, allow_origins: Iterable[str] = (),
                 check_host: bool, bound_host: str, max_body_bytes: int) -> None:
        self.app, self.check_host, self.max_body_bytes = app, check_host, max_body_bytes
        self.allow_origins = frozenset(o.rstrip("/") for o in allow_origins)
        self.host_names = allowed_host_names(bound_host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            origin = self._check(scope, headers)
        except APIError as err:
            await _respond(send, err.status, err.body())
            return
        cors = self._cors_headers(origin)
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            allow = headers.get("access-control-request-headers", "authorization, content-type")
            await _respond(send, 204, None, [*cors, ("access-control-allow-methods",
                                                     "GET, POST, OPTIONS"),
                                             ("access-control-allow-headers", allow),
                                             ("access-control-max-age", PREFLIGHT_MAX_AGE)])
            return
        await self.app(scope, self._limited(receive), _adding(send, cors))

    def _check(self, scope: Scope, headers: dict[str, str]) -> str | None:
        """The request's foreign origin if it is allowed (None when same-origin or none);
        raises the `APIError` that refuses the request."""
        host = headers.get("host", "")
        name = _host_name(host)
        if self.check_host and host and not (_is_ip(name) or name in self.host_names
                                             or name.endswith(".localhost")):
            raise APIError(421, f"host {host!r} is not this server's name: a server without "
                           "--api-key answers only to its address, localhost or its host name "
                           "(DNS rebinding protection)", code="misdirected_request")
        origin = headers.get("origin")
        foreign = origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}"
        if foreign and not ({"*", origin.rstrip("/")} & self.allow_origins):
            raise APIError(403, f"cross-origin request from {origin!r} refused: start the "
                           f"server with --allow-origin {origin} to allow that site",
                           code="origin_not_allowed")
        if scope["method"] == "POST" and not _json_content_type(headers.get("content-type", "")):
            raise APIError(415, "send the body as JSON with 'Content-Type: application/json'",
                           code="unsupported_media_type")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            raise self._too_large(int(length))
        return origin if foreign else None

    def _too_large(self, size: int | None) -> APIError:
        what = f"is {size:,} bytes" if size is not None else "is too large"
        return APIError(413, f"the request body {what}: this server takes at most "
                        f"{self.max_body_bytes:,} (--max-body-bytes)", code="request_too_large")

    def _cors_headers(self, origin: str | None) -> list[tuple[str, str]]:
        if origin is None:
            return []
        allowed = "*" if "*" in self.allow_origins else origin
        return [("access-control-allow-origin", allowed), ("vary", "Origin")]

    def _limited(self, receive: Receive) -> Receive:
        """`receive` that raises a 413 `APIError` (the app's handler renders it) once the body
        passes the limit: chunked bodies carry no Content-Length to check up front."""
        seen = 0

        async def wrapped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise self._too_large(None)
            return message

        return wrapped


def _adding(send: Send, extra: list[tuple[str, str]]) -> Send:
    if not extra:
        return send
    encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in extra]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return wrapped


async def _respond(send: Send, status: int, body: dict | None,
                   headers: list[tuple[str, str]] = ()) -> None:
    data = b"" if body is None else json.dumps(body).encode("utf-8")
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if body is not None:
        raw += [(b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})

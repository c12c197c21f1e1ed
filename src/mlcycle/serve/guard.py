"""An ASGI middleware in front of the service: what every request goes through before FastAPI.

- a request id: ``X-Request-ID`` taken from the request (if it is a short printable token) or
  generated, put in the ASGI scope (``scope["state"]["request_id"]``) and returned with every
  response, errors included;
- a request body is read here, with a limit on its size (413) and on the time the client takes
  to send it (408): a client that declares a longer ``Content-Length`` than it sends is answered,
  not waited for forever;
- a body that is not JSON by its ``Content-Type`` is a 415, not a 422;
- the whole request is timed and counted for Prometheus (:mod:`mlcycle.serve.telemetry`) by its
  route template, so ``/v2/models/x/infer`` and ``/v2/models/y/infer`` are one series.

It is a plain ASGI middleware (not a Starlette ``BaseHTTPMiddleware``), so it adds microseconds,
not a task per request.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = "x-request-id"
# A client's request id is kept when it is a short token of printable ASCII, else replaced.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
JSON_TYPES = ("application/json",)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class Guard:
    """Request id, body size and time limits, content type, and per-request telemetry."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float,
        observe: Callable[[str, str, int, float], None] | None = None,
        route_of: Callable[[Scope], str] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.observe = observe
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = _header(scope, REQUEST_ID.encode())
        request_id = given if given and REQUEST_ID_PATTERN.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                problem = self._check_headers(scope)
                if problem is not None:
                    await _discard(receive)
                    await self._error(send_with_id, *problem)
                    return
                body = await self._read_body(receive)
                if isinstance(body, tuple):
                    if body[0] == 413:
                        await _discard(receive)
                    await self._error(send_with_id, *body)
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send_with_id)
        finally:
            if self.observe is not None:
                # the route the router matched (it records it in the scope); otherwise ask
                route = getattr(scope.get("route"), "path", None)
                if route is None:
                    route = self.route_of(scope) if self.route_of else scope.get("path", "")
                self.observe(route, scope["method"], status, time.perf_counter() - start)

    def _check_headers(self, scope: Scope) -> tuple[int, str] | None:
        ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        if ctype not in JSON_TYPES:
            shown = ctype or "none"
            return 415, f"Content-Type must be application/json, got {shown}"
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, f"Content-Length {length!r} is not a number"
            if int(length) > self.max_body_bytes:
                return 413, (
                    f"the body is {int(length)} bytes; the limit is {self.max_body_bytes} "
                    "(mlcycle serve --max-body-bytes)"
                )
        return None

    async def _read_body(self, receive: Receive) -> bytes | tuple[int, str]:
        """The whole body, or (status, reason) when it is too large or too slow to arrive."""
        chunks: list[bytes] = []
        size = 0
        try:
            # one timer for the whole body (wait_for per message would start a task each time)
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return 400, "the client disconnected before sending the whole body"
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        return 413, f"the body is over the limit of {self.max_body_bytes} bytes"
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            return 408, (
                f"the body did not arrive within {self.body_timeout:g} s (received {size} "
                "bytes; is Content-Length right?)"
            )

    @staticmethod
    async def _error(send: Send, status: int, reason: str) -> None:
        body = json.dumps({"detail": reason}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


DISCARD_SECONDS = 1.0  # how long a refused body is read and dropped before the answer


async def _discard(receive: Receive) -> None:
    """Read and drop what the client is still sending, for up to :data:`DISCARD_SECONDS`,
    before a refusal (as web servers' lingering close does): closing a connection with
    unread data makes the kernel reset it, and the client then loses the answer (413, 415)
    that explains why."""
    try:
        async with asyncio.timeout(DISCARD_SECONDS):
            while True:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
    except TimeoutError:
        return


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already read body once, then waits on the real one (for a
    disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

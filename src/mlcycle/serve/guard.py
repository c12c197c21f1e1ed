"""An ASGI middleware in front of the service: what every request goes through before FastAPI.

- a request id: ``X-Request-ID`` taken from the request (if it is a short printable token) or
  generated, put in the ASGI scope (``scope["state"]["request_id"]``) and returned with every
  response, errors included;
- a request body is read here, with a limit on its size (413) and on the time the client takes
  to send it (408): a client that declares a longer ``Content-Length`` than it sends is answered,
  not waited for forever;
- a body that is not JSON by its ``Content-Type`` is a 415, not a 422;
- a rate limit per client (:class:`RateLimiter`, off unless set): past it a request is
  answered 429 with ``Retry-After``; liveness, readiness and metrics are exempt;
- admission: a worker holds at most ``max_in_flight`` requests with a body (scoring, labels,
  reloads) at once, from their arrival to their answer; past it a request is answered 503 with
  ``Retry-After`` at once, instead of queueing without bound;
- the whole request is timed and counted for Prometheus (:mod:`mlcycle.serve.telemetry`) by its
  route template, so ``/v2/models/x/infer`` and ``/v2/models/y/infer`` are one series.

It is a plain ASGI middleware (not a Starlette ``BaseHTTPMiddleware``), so it adds microseconds,
not a task per request.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections import OrderedDict
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


# Probes and scrapes are never rate limited: a busy client must not make the service look dead.
EXEMPT_PATHS = frozenset({"/health", "/metrics", "/v2/health/live", "/v2/health/ready"})


def client_address(scope: Scope) -> str:
    """The client's IP address: the rate limit's key unless the service says otherwise."""
    client = scope.get("client")
    return str(client[0]) if client else ""


def client_key(credential_name: Callable[[str | None], str | None]) -> Callable[[Scope], str]:
    """The rate limit's key by credential: the name of the credential a request's valid token
    names (clients behind one proxy, each with its own token, each get the rate), else the
    client's address. Only a token that checks out counts: keyed by whatever token was sent,
    each made-up token would get a fresh bucket."""

    def key_of(scope: Scope) -> str:
        name = credential_name(_header(scope, b"authorization"))
        return f"credential {name}" if name else client_address(scope)

    return key_of


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second, up to ``burst`` at once.

    A key's bucket holds up to ``burst`` tokens and gains ``rate`` a second; a request takes
    one, or is refused with the seconds until one is there. Memory is bounded: buckets are kept
    in the order they were last used, so those idle long enough to be full again (a full
    bucket is the same as none) are dropped from the front as others are used, and past
    ``max_keys`` (many clients at once, e.g. spoofed or rotating addresses) the least recently
    used is dropped even if not full (that key starts again with a full bucket). ``clock``
    (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (0 < rate < math.inf) or burst < 1 or max_keys < 1:
            raise ValueError(
                f"a rate limit needs a rate above 0, a burst and max_keys of at least 1, got "
                f"{rate}, {burst}, {max_keys}"
            )
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self.refill = burst / rate  # seconds an empty bucket takes to be full again
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 when there was one (the request may go), else the
        seconds until there will be one."""
        now = self.clock()
        buckets = self.buckets
        found = buckets.pop(key, None)
        tokens = (
            self.burst
            if found is None
            else min(self.burst, found[0] + (now - found[1]) * self.rate)
        )
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        buckets[key] = (tokens, now)
        # drop buckets full again (idle for a whole refill), oldest first, and any past the cap
        while len(buckets) > self.max_keys or (
            len(buckets) > 1 and next(iter(buckets.values()))[1] + self.refill <= now
        ):
            buckets.popitem(last=False)
        return wait


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class Guard:
    """Request id, rate limit, body size and time limits, content type, admission, and
    per-request telemetry.

    ``rate`` (requests per second, 0: off) and ``burst`` (0: the rate rounded up) limit each
    client of this worker, the client being what ``key_of`` makes of a request's scope (by
    default its IP address, :func:`client_address`; a service with credentials keys by the
    credential a valid token names, :func:`client_key`): past it, 429 with ``Retry-After``
    (whole seconds until the client may send again, at least 1), except on
    :data:`EXEMPT_PATHS`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        body_timeout: float,
        max_in_flight: int,
        retry_after: str,
        observe: Callable[[str, str, int, float], None] | None = None,
        route_of: Callable[[Scope], str] | None = None,
        refused: Callable[[str], None] | None = None,
        rate: float = 0.0,
        burst: int = 0,
        key_of: Callable[[Scope], str] = client_address,
    ) -> None:
        self.app = app
        self.limiter = RateLimiter(rate, burst or max(1, math.ceil(rate))) if rate else None
        self.key_of = key_of
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.max_in_flight = max_in_flight
        self.retry_after = retry_after
        self.in_flight = 0  # requests with a body taken in and not yet answered
        self.observe = observe
        self.route_of = route_of
        self.refused = refused

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
            limiter = self.limiter
            if limiter is not None and scope["path"] not in EXEMPT_PATHS:
                wait = limiter.take(self.key_of(scope))
                if wait:
                    await _discard(receive)
                    await self._error(send_with_id, *self._too_many(limiter, wait))
                    return
            if scope["method"] in ("POST", "PUT", "PATCH"):
                problem = self._check_headers(scope)
                if problem is None and self.in_flight >= self.max_in_flight:
                    problem = self._busy()
                if problem is not None:
                    await _discard(receive)
                    await self._error(send_with_id, *problem, self.retry_after)
                    return
                self.in_flight += 1
                try:
                    await self._admitted(scope, receive, send_with_id)
                finally:
                    self.in_flight -= 1
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            if self.observe is not None:
                # the route the router matched (it records it in the scope); otherwise ask
                route = getattr(scope.get("route"), "path", None)
                if route is None:
                    route = self.route_of(scope) if self.route_of else scope.get("path", "")
                self.observe(route, scope["method"], status, time.perf_counter() - start)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A request with a body, counted in :attr:`in_flight`: its body read, then the app."""
        # Scoring waits on nothing, so a request would run from its arrival to its answer in
        # one step of the event loop and the worker would never hold more than one: one turn
        # of the loop first lets every request already read take its place, so in_flight
        # counts the requests queued in this worker.
        await asyncio.sleep(0)
        body = await self._read_body(receive)
        if isinstance(body, tuple):
            if body[0] == 413:
                await _discard(receive)
            await self._error(send, *body)
            return
        await self.app(scope, _replay(body, receive), send)

    def _busy(self) -> tuple[int, str]:
        """The 503 of a request past :attr:`max_in_flight`, counted for the metrics."""
        if self.refused is not None:
            self.refused("busy")
        return 503, (
            f"this worker holds {self.max_in_flight} requests already, its limit (mlcycle serve "
            "--max-in-flight); retry later"
        )

    def _too_many(self, limiter: RateLimiter, wait: float) -> tuple[int, str, str]:
        """The 429 of a request past the rate limit, with its Retry-After: the whole seconds
        until the client has a token again, at least 1; counted for the metrics."""
        if self.refused is not None:
            self.refused("rate")
        reason = (
            f"too many requests from this client: its limit is {limiter.rate:g} a second "
            f"and {limiter.burst} at once (mlcycle serve --rate-limit, --rate-burst); "
            "retry later"
        )
        return 429, reason, str(max(1, math.ceil(wait)))

    def _check_headers(self, scope: Scope) -> tuple[int, str] | None:
        length = _header(scope, b"content-length")
        if length is not None and not length.isdigit():
            return 400, f"Content-Length {length[:20]!r} is not a number"
        # A body must be JSON; a request without one (`curl -X POST` of a reload) needs no type.
        if (length is not None and int(length) > 0) or _header(scope, b"transfer-encoding"):
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype not in JSON_TYPES:
                return 415, f"Content-Type must be application/json, got {ctype[:40] or 'none'}"
        if length is not None and int(length) > self.max_body_bytes:
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
    async def _error(send: Send, status: int, reason: str, retry_after: str = "") -> None:
        """A JSON error and the connection closed; a 429 or 503 says when to retry (seconds)."""
        body = json.dumps({"detail": reason}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        if status in (429, 503):
            headers.append((b"retry-after", retry_after.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
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

"""The guard middleware's admission bound and rate limit, driven in process (fast tier):
requests that reach a worker together are counted together, so the bound holds even though
scoring never waits; a client past its rate gets 429 while probes are answered. And the
connections a worker accepts: Nagle's algorithm off, their number and their heads bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mlcycle import cli
from mlcycle.serve import auth
from mlcycle.serve.auth import Credentials
from mlcycle.serve.core import ServeSettings
from mlcycle.serve.guard import Guard, RateLimiter, client_address, client_key
from mlcycle.serve.runner import UVICORN_OPTIONS, BoundedHttpTools, HeaderLimits

BODY = b'{"records": [{"x": 1}]}'


async def scoring_app(scope: dict, receive, send) -> None:  # noqa: ANN001
    """An app that, like the service's scoring, answers without ever waiting."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def one_request(
    guard: Guard, path: str = "/predict", client: str = "10.0.0.1"
) -> tuple[int, dict[bytes, bytes], bytes]:
    """A POST with its whole body already received: status, headers and body."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
        "client": (client, 40000),
    }
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        return {"type": "http.disconnect"}

    out: list[dict] = []

    async def send(message: dict) -> None:
        out.append(message)

    await guard(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in out if m["type"] == "http.response.body")
    return out[0]["status"], dict(out[0]["headers"]), body


def test_requests_arriving_together_past_the_bound_get_503_with_retry_after() -> None:
    refusals: list[str] = []
    guard = Guard(
        scoring_app,
        max_body_bytes=1_000,
        body_timeout=5,
        max_in_flight=3,
        retry_after="1",
        refused=refusals.append,
    )

    async def burst() -> list[tuple[int, dict[bytes, bytes], bytes]]:
        return await asyncio.gather(*(one_request(guard) for _ in range(10)))

    answers = asyncio.run(burst())
    assert [status for status, _, _ in answers] == [200] * 3 + [503] * 7
    for _, headers, body in answers[3:]:
        assert headers[b"retry-after"] == b"1"
        assert "--max-in-flight" in json.loads(body)["detail"]
    assert refusals == ["busy"] * 7 and guard.in_flight == 0
    # the burst is over: the next one is admitted
    assert asyncio.run(one_request(guard))[0] == 200


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_token_bucket_gives_the_burst_then_the_rate_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(0.5)  # the next token in half a second
    assert limiter.take("b") == 0  # another client has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0 and limiter.take("a") == pytest.approx(0.5)
    clock.now += 10  # idle: full again, never more than the burst
    assert [limiter.take("a") for _ in range(4)][-1] == pytest.approx(0.5)


def test_the_buckets_stay_bounded_under_many_clients() -> None:
    """Buckets full again are dropped as others are used; past the cap, the least recently
    used goes even if not full."""
    clock = Clock()
    limiter = RateLimiter(1.0, 2, max_keys=100, clock=clock)
    for i in range(1_000):  # a thousand addresses at once: never more than the cap
        limiter.take(f"10.0.{i // 256}.{i % 256}")
        assert len(limiter.buckets) <= 100
    clock.now += limiter.refill  # every bucket full again: the next request drops them
    limiter.take("10.1.0.1")
    assert list(limiter.buckets) == ["10.1.0.1"]


def test_a_client_past_its_rate_gets_429_with_retry_after_and_probes_are_answered() -> None:
    refusals: list[str] = []
    guard = Guard(
        scoring_app, max_body_bytes=1_000, body_timeout=5, max_in_flight=10, retry_after="1",
        refused=refusals.append, rate=0.25, burst=2,
    )  # fmt: skip

    async def run() -> list[tuple[int, dict[bytes, bytes], bytes]]:
        return [
            *[await one_request(guard) for _ in range(3)],
            await one_request(guard, "/health"),
            await one_request(guard, "/v2/health/ready"),
            await one_request(guard, "/metrics"),
            await one_request(guard, client="10.0.0.2"),
        ]

    answers = asyncio.run(run())
    assert [status for status, _, _ in answers] == [200, 200, 429, 200, 200, 200, 200]
    _, headers, body = answers[2]
    assert headers[b"retry-after"] == b"4"  # a token every 4 s
    assert "--rate-limit" in json.loads(body)["detail"]
    assert refusals == ["rate"]


def test_the_rate_limit_is_keyed_by_what_the_service_says() -> None:
    """``key_of``: by default the client's address; a service may key by credential."""
    guard = Guard(
        scoring_app, max_body_bytes=1_000, body_timeout=5, max_in_flight=10, retry_after="1",
        rate=0.25, burst=1, key_of=lambda scope: "one key",
    )  # fmt: skip

    async def run() -> list[int]:
        return [(await one_request(guard, client=f"10.0.0.{i}"))[0] for i in range(2)]

    assert asyncio.run(run()) == [200, 429]


def test_a_bound_below_one_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="--max-in-flight must be at least 1"):
        ServeSettings(max_in_flight=0)
    with pytest.raises(ValueError, match="--max-connections must be at least 1"):
        ServeSettings(max_connections=0)
    with pytest.raises(ValueError, match="--rate-limit and --rate-burst"):
        ServeSettings(rate_limit=-1)


@pytest.mark.parametrize(
    "option", ["--log-max-bytes", "--log-max-record-bytes", "--log-retention-days"]
)
def test_a_negative_log_bound_is_refused_before_serving(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert cli.main(["serve", "--bundle", str(tmp_path), option, "-1"]) != 0
    assert f"{option} must be 0 (no bound) or above" in capsys.readouterr().err


@contextlib.asynccontextmanager
async def listening(
    http: str | type, limits: HeaderLimits | None = None, max_connections: int | None = None
) -> AsyncIterator[tuple[tuple[str, int], ServerState]]:
    """A uvicorn protocol (``http`` as uvicorn takes it) serving :func:`scoring_app` on a
    listening socket uvicorn bound itself, as it does for ``--workers`` above 1: its address
    and the server state holding its connections."""
    config = uvicorn.Config(scoring_app, host="127.0.0.1", port=0, http=http, loop="asyncio")
    config.load()
    listener = config.bind_socket()
    state = ServerState()
    saved = BoundedHttpTools.limits, BoundedHttpTools.max_connections
    BoundedHttpTools.limits = limits or saved[0]
    BoundedHttpTools.max_connections = max_connections or saved[1]
    server = await asyncio.get_running_loop().create_server(
        lambda: config.http_protocol_class(config=config, server_state=state, app_state={}),
        sock=listener,
    )
    try:
        yield listener.getsockname(), state
    finally:
        server.close()
        BoundedHttpTools.limits, BoundedHttpTools.max_connections = saved


async def accepted_nodelay(http: str | type) -> int:
    """TCP_NODELAY of the connection a uvicorn protocol accepts (:func:`listening`)."""
    async with listening(http) as (address, state):
        _, writer = await asyncio.open_connection(*address)
        while not state.connections:
            await asyncio.sleep(0.01)
        (conn,) = state.connections
        sock = conn.transport.get_extra_info("socket")
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        return nodelay


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    """With Nagle on, a kept-alive connection's every answer but the first waited 40 ms for the
    client's delayed ACK before its body was sent (schemathesis' 785 requests: 42 s, 11 s
    without). uvicorn's own protocol leaves it on there: the reason for ours."""
    assert asyncio.run(accepted_nodelay(UVICORN_OPTIONS["http"])) != 0
    assert asyncio.run(accepted_nodelay(HttpToolsProtocol)) == 0


async def answer(address: tuple[str, int], *parts: bytes, pause: float = 0.0) -> bytes:
    """What the server answers to ``parts`` sent one after another (``pause`` s apart), read
    until it closes the connection (or 30 s pass)."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:  # refused mid-way: the answer is already there
        pass
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def test_a_request_head_past_its_bounds_is_refused_and_closed() -> None:
    """Bytes, count and time of a request's line and headers, each past its bound: 414/431/408
    with a JSON reason naming the option, the connection closed; within them, answered."""
    limits = HeaderLimits(max_bytes=1_000, max_count=5, timeout=0.5)

    async def attacks() -> dict[str, bytes]:
        async with listening(BoundedHttpTools, limits) as (address, _):
            return {
                "within": await answer(
                    address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                ),
                "long url": await answer(address, b"GET /" + b"u" * 2_000 + b" HTTP/1.1\r\n\r\n"),
                "long header": await answer(
                    address, b"GET / HTTP/1.1\r\nX-A: " + b"a" * 2_000 + b"\r\n\r\n"
                ),
                "many headers": await answer(
                    address, b"GET / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 10 + b"\r\n"
                ),
                # 10 MB of one header, sent in 64 KiB pieces: refused at the first
                "huge header": await answer(
                    address, b"GET / HTTP/1.1\r\nX-A: ", *[b"a" * 65_536] * 160
                ),
                "slow headers": await answer(
                    address, b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"X-A: 1\r\n", pause=0.3
                ),
                "nothing sent": await answer(address),
            }

    got = asyncio.run(attacks())
    assert got["within"].startswith(b"HTTP/1.1 200"), got["within"]
    expected = {
        "long url": (414, "--max-header-bytes"),
        "long header": (431, "--max-header-bytes"),
        "many headers": (431, "--max-headers"),
        "huge header": (431, "--max-header-bytes"),
        "slow headers": (408, "--header-timeout"),
        "nothing sent": (408, "--header-timeout"),
    }
    for name, (status, option) in expected.items():
        head, _, body = got[name].partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), (name, got[name][:200])
        assert b"connection: close" in head.lower(), name
        assert option in json.loads(body)["detail"], (name, body)


def test_connections_past_the_bound_are_refused_at_once_and_served_again_once_closed() -> None:
    """Idle connections (sending nothing) up to the bound are held; the next one is answered
    503 with Retry-After before it sends anything, and counted; once they close, requests are
    answered again."""
    refusals: list[str] = []

    async def run() -> tuple[bytes, bytes]:
        async with listening(BoundedHttpTools, max_connections=3) as (address, state):
            idle = [await asyncio.open_connection(*address) for _ in range(3)]
            while len(state.connections) < 3:
                await asyncio.sleep(0.01)
            refused = await answer(address)  # sends nothing, reads until closed
            for _, writer in idle:
                writer.close()
            while state.connections:  # the refused one lingers a second
                await asyncio.sleep(0.05)
            return refused, await answer(
                address, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )

    BoundedHttpTools.on_refused = refusals.append
    try:
        refused, health = asyncio.run(run())
    finally:
        BoundedHttpTools.on_refused = None
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), refused[:200]
    assert b"retry-after: 1" in head.lower() and b"connection: close" in head.lower()
    assert "--max-connections" in json.loads(body)["detail"]
    assert refusals == ["connections"]
    assert health.startswith(b"HTTP/1.1 200"), health[:200]


def test_the_rate_limit_counts_a_valid_token_against_its_credential() -> None:
    """A valid token names the bucket; no token, or a made-up one, counts against the address
    (else each made-up token would get a fresh bucket)."""
    credentials = Credentials(auth.parse("labeller feedback labeller-token-0123456789", "test"))
    key_of = client_key(credentials.credential_name)

    def scope(authorization: str | None) -> dict:
        headers = [(b"authorization", authorization.encode())] if authorization else []
        return {"type": "http", "client": ("10.0.0.7", 5000), "headers": headers}

    assert key_of(scope("Bearer labeller-token-0123456789")) == "credential labeller"
    assert key_of(scope("Bearer made-up-token-0123456789")) == "10.0.0.7"
    assert key_of(scope(None)) == client_address(scope(None)) == "10.0.0.7"

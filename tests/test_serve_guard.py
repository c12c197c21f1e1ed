"""The guard middleware's admission bound, driven in process (fast tier): requests that reach
a worker together are counted together, so the bound holds even though scoring never waits.
And the connections a worker accepts: Nagle's algorithm off."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mlcycle.serve.core import ServeSettings
from mlcycle.serve.guard import Guard
from mlcycle.serve.runner import UVICORN_OPTIONS, BoundedHttpTools, HeaderLimits

BODY = b'{"records": [{"x": 1}]}'


async def scoring_app(scope: dict, receive, send) -> None:  # noqa: ANN001
    """An app that, like the service's scoring, answers without ever waiting."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def one_request(guard: Guard) -> tuple[int, dict[bytes, bytes], bytes]:
    """A POST with its whole body already received: status, headers and body."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/predict",
        "headers": [(b"content-type", b"application/json")],
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


def test_a_bound_below_one_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="--max-in-flight must be at least 1"):
        ServeSettings(max_in_flight=0)


@contextlib.asynccontextmanager
async def listening(
    http: str | type, limits: HeaderLimits | None = None
) -> AsyncIterator[tuple[tuple[str, int], ServerState]]:
    """A uvicorn protocol (``http`` as uvicorn takes it) serving :func:`scoring_app` on a
    listening socket uvicorn bound itself, as it does for ``--workers`` above 1: its address
    and the server state holding its connections."""
    config = uvicorn.Config(scoring_app, host="127.0.0.1", port=0, http=http, loop="asyncio")
    config.load()
    listener = config.bind_socket()
    state = ServerState()
    saved = BoundedHttpTools.limits
    BoundedHttpTools.limits = limits or saved
    server = await asyncio.get_running_loop().create_server(
        lambda: config.http_protocol_class(config=config, server_state=state, app_state={}),
        sock=listener,
    )
    try:
        yield listener.getsockname(), state
    finally:
        server.close()
        BoundedHttpTools.limits = saved


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

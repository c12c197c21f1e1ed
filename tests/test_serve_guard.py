"""The guard middleware's admission bound, driven in process (fast tier): requests that reach
a worker together are counted together, so the bound holds even though scoring never waits.
And the connections a worker accepts: Nagle's algorithm off."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mlcycle.serve.core import ServeSettings
from mlcycle.serve.guard import Guard
from mlcycle.serve.runner import UVICORN_OPTIONS

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


async def accepted_nodelay(http: str | type) -> int:
    """TCP_NODELAY of the connection a uvicorn protocol (``http`` as uvicorn takes it) accepts
    on a listening socket uvicorn bound itself, as it does for ``--workers`` above 1."""
    config = uvicorn.Config(scoring_app, host="127.0.0.1", port=0, http=http, loop="asyncio")
    config.load()
    listener = config.bind_socket()
    state = ServerState()
    server = await asyncio.get_running_loop().create_server(
        lambda: config.http_protocol_class(config=config, server_state=state, app_state={}),
        sock=listener,
    )
    try:
        _, writer = await asyncio.open_connection(*listener.getsockname())
        while not state.connections:
            await asyncio.sleep(0.01)
        (conn,) = state.connections
        sock = conn.transport.get_extra_info("socket")
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        writer.close()
        return nodelay
    finally:
        server.close()


def test_accepted_connections_do_not_wait_for_delayed_acks() -> None:
    """With Nagle on, a kept-alive connection's every answer but the first waited 40 ms for the
    client's delayed ACK before its body was sent (schemathesis' 785 requests: 42 s, 11 s
    without). uvicorn's own protocol leaves it on there: the reason for ours."""
    assert asyncio.run(accepted_nodelay(UVICORN_OPTIONS["http"])) != 0
    assert asyncio.run(accepted_nodelay(HttpToolsProtocol)) == 0

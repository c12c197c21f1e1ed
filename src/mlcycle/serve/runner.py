"""Running the service: uvicorn with one or more worker processes, each building the app.

``mlcycle serve`` verifies the bundle once (so a tampered bundle never starts a worker), writes
the settings to :data:`CONFIG_ENV`, and hands uvicorn the factory :func:`build_app`; every
worker process then loads and verifies the bundle itself, opens its own connection to the
prediction log, and serves. On SIGTERM uvicorn stops accepting connections, lets the requests
in flight finish, and runs the app's shutdown, which flushes the prediction log; the process
exits 0.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from mlcycle import signing
from mlcycle.bundle import load_bundle
from mlcycle.predlog import PredictionLog
from mlcycle.serve import auth
from mlcycle.serve.app import ServeSettings, create_app
from mlcycle.serve.core import RETRY_AFTER, Core
from mlcycle.serve.telemetry import MULTIPROC_ENV

CONFIG_ENV = "MLCYCLE_SERVE_CONFIG"
DEFAULT_LOG_URL = "sqlite:///logs/predictions.db"  # under the project (git-ignored)


@dataclass(frozen=True)
class HeaderLimits:
    """Bounds on a request's line and headers (:class:`BoundedHttpTools`)."""

    max_bytes: int = 16 * 1024
    max_count: int = 100
    timeout: float = 10.0


LINGER_SECONDS = 1.0  # a refused connection is read and dropped this long before it closes


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request already answered."""


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with connections and a request's head bounded, and Nagle's
    algorithm off.

    - **Bounded connections.** A worker holds at most :attr:`max_connections` open connections
      (idle, kept alive, slow or busy); one past it is answered 503 with ``Retry-After`` as it
      is accepted, before it sends anything, and closed, so clients that open connections and
      keep them cannot exhaust the worker's file descriptors. uvicorn's own
      ``limit_concurrency`` is no such bound: it answers 503 only once a request's headers
      have arrived, so a connection that sends nothing, or its headers slowly, is held until
      the header timeout (and counted only then); this one is counted at accept time.
      :attr:`on_refused` (the service's ``mlcycle_refused_total``) counts each refusal.
    - **Bounded head.** The request line and headers get at most :attr:`limits` ``max_bytes``
      (past it, 414 for the URL, else 431) and ``max_count`` headers (431), counted as they
      arrive, so a 64 MB header is refused at its first 16 KiB instead of being parsed; and
      ``timeout`` seconds from the connection (or, kept alive, from a request's first byte)
      to the end of the headers, past which the client gets a 408 and the connection is
      closed: a client sending its headers slowly, or nothing, holds a connection that long
      at most. uvicorn bounds neither with httptools.
    - **Nagle off.** asyncio turns Nagle's algorithm off only on sockets whose protocol number
      says TCP, and with ``--workers`` above 1 uvicorn binds the listening socket itself with
      protocol 0: each accepted connection kept Nagle on, so on a kept-alive connection a
      response's body (a second write, after the headers) waited for the client's delayed
      ACK, 40 ms on Linux, on every request but the first (docs/serving.md, "Under load").

    :attr:`limits` is set from the service's settings in each worker (:func:`build_app`)."""

    limits = HeaderLimits()
    max_connections = 1000
    on_refused: Callable[[str], None] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)  # adds it to self.connections (this worker's)
        self._head_bytes = 0
        self._head_count = 0
        self._raw = 0
        self._answered = False
        self._head_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            refused = type(self).on_refused  # from the class: a plain function stays unbound
            if refused is not None:
                refused("connections")
            self._refuse(
                503,
                f"this worker holds {self.max_connections} connections already, its limit "
                "(mlcycle serve --max-connections); retry later",
                retry_after=RETRY_AFTER,
            )
            return
        self._start_head_timer()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self._refuse(
            408,
            f"the request's line and headers did not arrive within {self.limits.timeout:g} s "
            "(mlcycle serve --header-timeout)",
        )

    def _refuse(self, status: int, reason: str, retry_after: str = "") -> None:
        """Answer ``status`` with a JSON reason (and ``Retry-After`` when given) and close the
        connection: its sending side at once, the rest after :data:`LINGER_SECONDS` of
        reading and dropping what the client still sends (closed at once, unread bytes would
        reset the connection and the client could lose the answer)."""
        if self._answered or self.transport.is_closing():
            return
        self._answered = True
        self._stop_head_timer()
        body = json.dumps({"detail": reason}).encode()
        self.transport.write(
            STATUS_LINE[status]
            + b"content-type: application/json\r\ncontent-length: "
            + str(len(body)).encode()
            + (f"\r\nretry-after: {retry_after}".encode() if retry_after else b"")
            + b"\r\nconnection: close\r\n\r\n"
            + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _too_long(self) -> str:
        return (
            f"the request's line and headers are over {self.limits.max_bytes} bytes "
            "(mlcycle serve --max-header-bytes)"
        )

    def _count(self, size: int, headers: int = 0) -> None:
        """Count ``size`` more bytes (and ``headers``) of the head; refuse past the bounds."""
        self._head_bytes += size
        self._head_count += headers
        problem = None
        if self._head_count > self.limits.max_count:
            problem = (
                431,
                f"more than {self.limits.max_count} headers (mlcycle serve --max-headers)",
            )
        elif self._head_bytes > self.limits.max_bytes:
            problem = 414 if headers == 0 and not self.headers else 431, self._too_long()
        if problem is not None:
            self._refuse(*problem)
            raise _Refused(problem[1])

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        super().data_received(data)
        # Headers still incomplete after this chunk: the parser holds the part of one it has
        # not passed to on_header yet, so the bytes received count, and one huge header is
        # refused at its first chunk past the bound instead of being read whole.
        if self._head_timer is not None and not self._answered:
            self._raw += len(data)
            if self._raw > self.limits.max_bytes:
                self._refuse(431, self._too_long())

    def send_400_response(self, msg: str) -> None:
        if not self._answered:  # else the refusal that stopped the parser was the answer
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_count = 0
        self._raw = 0
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4, headers=1)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)


# asyncio's own event loop, not uvloop: libuv accepts one connection per loop iteration, and
# an iteration scores every request read in the previous one, so under load (50 connections
# of 100-record requests) new connections waited in the listen backlog for seconds; asyncio
# accepts every waiting connection in each iteration (docs/serving.md, "Under load"). The
# protocol by import path: uvicorn's command line takes it too (bench/bench_serve.py).
UVICORN_OPTIONS = {"http": "mlcycle.serve.runner:BoundedHttpTools", "loop": "asyncio"}


def default_workers() -> int:
    """One worker per core this process may use: its CPU affinity, capped by a cgroup v2 CPU
    quota (a container's ``--cpus``), which ``os.cpu_count()`` ignores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def build_app() -> FastAPI:
    """The app of one worker, from the settings ``mlcycle serve`` left in the environment."""
    cfg: dict[str, Any] = json.loads(os.environ[CONFIG_ENV])
    settings = ServeSettings(**cfg["settings"])
    bundle = load_bundle(cfg["bundle"], signing.trusted_keys(settings.trusted_keys))
    log = None
    if cfg.get("log_url"):
        log = PredictionLog(
            cfg["log_url"],
            when_full=cfg.get("log_when_full", "reject"),
            **cfg.get("log_bounds", {}),
        )
    BoundedHttpTools.limits = HeaderLimits(
        settings.max_header_bytes, settings.max_headers, settings.header_timeout
    )
    BoundedHttpTools.max_connections = settings.max_connections
    credentials = auth.from_environment()  # checked by `mlcycle serve` before it started us
    app = create_app(bundle, settings, log=log, version=cfg.get("version"), credentials=credentials)
    BoundedHttpTools.on_refused = app.state.mlcycle.telemetry.refused
    return app


def serve(
    bundle_dir: Path,
    *,
    version: str | None,
    host: str,
    port: int,
    workers: int,
    log_url: str | None,
    log_when_full: str = "reject",
    log_bounds: dict[str, Any] | None = None,
    settings: ServeSettings,
    log_level: str = "info",
) -> None:
    """Serve until stopped (SIGTERM or Ctrl-C): a graceful stop flushes the prediction log.
    ``log_bounds``: :class:`~mlcycle.predlog.PredictionLog`'s ``max_record_bytes``,
    ``max_bytes`` and ``retention_days``."""
    # verify (and check the signature, with trusted keys) before any worker starts: fail once;
    # so are the challenger's bundle and the canary's key field (a worker's Core checks both)
    Core(load_bundle(bundle_dir, signing.trusted_keys(settings.trusted_keys)), settings).close()
    state_dir = Path(tempfile.mkdtemp(prefix="mlcycle-serve-"))
    try:
        if workers > 1:
            os.environ[MULTIPROC_ENV] = str(state_dir)  # metrics summed over the workers
        generation = state_dir / "reload-generation"
        generation.touch()
        settings = ServeSettings(
            **{
                **asdict(settings),
                "generation_file": str(generation),
                "generation_at_start": os.path.getmtime(generation),
            }
        )
        os.environ[CONFIG_ENV] = json.dumps(
            {
                "bundle": str(Path(bundle_dir).resolve()),
                "version": version,
                "log_url": log_url,
                "log_when_full": log_when_full,
                "log_bounds": log_bounds or {},
                "settings": asdict(settings),
            }
        )
        # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
        # handler it found: a no-op one makes a graceful stop exit 0, as operators expect.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        uvicorn.run(
            "mlcycle.serve.runner:build_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=30,
            access_log=False,
            **UVICORN_OPTIONS,
        )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)

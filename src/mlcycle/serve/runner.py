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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlcycle.bundle import load_bundle
from mlcycle.constants import ADMIN_TOKEN_ENV
from mlcycle.predlog import PredictionLog
from mlcycle.serve.app import ServeSettings, create_app
from mlcycle.serve.telemetry import MULTIPROC_ENV

CONFIG_ENV = "MLCYCLE_SERVE_CONFIG"
DEFAULT_LOG_URL = "sqlite:///logs/predictions.db"  # under the project (git-ignored)


class NoDelayHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol on a connection with Nagle's algorithm off.

    asyncio turns Nagle off only on sockets whose protocol number says TCP, and with
    ``--workers`` above 1 uvicorn binds the listening socket itself with protocol 0: each
    accepted connection kept Nagle on, so on a kept-alive connection a response's body (a
    second write, after the headers) waited for the client's delayed ACK, 40 ms on Linux, on
    every request but the first (docs/serving.md, "Under load")."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


# asyncio's own event loop, not uvloop: libuv accepts one connection per loop iteration, and
# an iteration scores every request read in the previous one, so under load (50 connections
# of 100-record requests) new connections waited in the listen backlog for seconds; asyncio
# accepts every waiting connection in each iteration (docs/serving.md, "Under load"). The
# protocol by import path: uvicorn's command line takes it too (bench/bench_serve.py).
UVICORN_OPTIONS = {"http": "mlcycle.serve.runner:NoDelayHttpTools", "loop": "asyncio"}


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
    bundle = load_bundle(cfg["bundle"])
    log = None
    if cfg.get("log_url"):
        log = PredictionLog(cfg["log_url"], when_full=cfg.get("log_when_full", "reject"))
    settings = ServeSettings(**cfg["settings"])
    return create_app(bundle, settings, log=log, version=cfg.get("version"))


def serve(
    bundle_dir: Path,
    *,
    version: str | None,
    host: str,
    port: int,
    workers: int,
    log_url: str | None,
    log_when_full: str = "reject",
    settings: ServeSettings,
    log_level: str = "info",
) -> None:
    """Serve until stopped (SIGTERM or Ctrl-C): a graceful stop flushes the prediction log."""
    load_bundle(bundle_dir)  # verify before any worker starts: fail once, clearly
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
                "admin_token": settings.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
            }
        )
        os.environ[CONFIG_ENV] = json.dumps(
            {
                "bundle": str(Path(bundle_dir).resolve()),
                "version": version,
                "log_url": log_url,
                "log_when_full": log_when_full,
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

"""The service against hostile clients: for each attack, what it answered and its `/health`
latency meanwhile, beside the same latency with no attack, measured in the same run.

Starts `mlcycle serve` on 127.0.0.1 (a free port, one worker, the prediction log on in a
temporary SQLite file) with its limits passed explicitly: each of :data:`LIMITS` that `mlcycle
serve --help` lists, at this script's value or else the service's default (so
`--max-connections` and `--rate-limit` are passed once the service has them). A probe process,
a plain `http.client` on a kept-alive connection of its own, asks `GET /health` every 20 ms
throughout. Then phases, each bounded in time and sockets, the probe's answers sliced by phase:

- **no attack**: the baseline (again at the end: did the service recover?);
- **slow headers**: `--slow-connections` connections sending a request line, then one header
  byte a second (slowloris): what each got (408?) and after how long;
- **huge headers**: `--clients` clients in turn sending a 64 MB header, 100,000 headers, an 8 MB
  cookie: the status and the time to it;
- **many connections**: `--connections` idle TCP connections (at most the fd limit less a
  reserve), and a new connection asking `/health` every 0.5 s meanwhile: refused? 503?;
- **large bodies**: `--clients` clients in turn posting a valid `/predict` body padded to
  `--max-body-bytes`, one declaring more, one chunked past it: statuses, and the prediction
  log's growth on disk (the phase stops early past 1 GiB of it);
- **wrk**: `wrk` on `/predict` (100 records, `--wrk-connections`), if it is installed.

The slow phases last `--header-timeout` + 2 s at least, so the timeout can act. The attacks
are raw asyncio sockets (an HTTP library would refuse to send them), only to 127.0.0.1; the
whole run stops at `--deadline`, and the server and the probe are stopped on exit, Ctrl-C
included.

    python bench/bench_hostile.py --bundle models/bundle            # phases of 5 s, ~1 min
    python bench/bench_hostile.py --seconds 3 --connections 1000 --json hostile.json
    python bench/bench_hostile.py --header-timeout 2 --max-connections 500   # limits to try
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np
from bench_serve import BIN, ROOT, free_port, records, start, stop, wrk

from mlcycle.serve.app import ServeSettings

HOST = "127.0.0.1"  # the only address this script talks to
PROBE_INTERVAL = 0.02  # seconds between two /health requests of the probe
PROBE_TIMEOUT = 5.0  # a /health answer later than this is an error
CONNECT_TIMEOUT = 3.0
CHUNK = 64 * 1024  # bytes per write
FD_RESERVE = 256  # file descriptors left free below the limit
SETTLE = 1.0  # seconds between phases
LOG_BOUND = 1 << 30  # the large bodies stop once the prediction log has grown by this much
LIMITS = (
    "max_header_bytes",
    "max_headers",
    "header_timeout",
    "max_body_bytes",
    "body_timeout",
    "max_records",
    "max_in_flight",
    "max_connections",
    "rate_limit",
)
GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

Answer = tuple[list[str], dict[str, Any]]  # what a phase got: lines for the table, the figures


@dataclass(frozen=True)
class Outcome:
    """One connection of an attack: what it was, what it got and after how many seconds."""

    kind: str
    answer: int | str  # an HTTP status, or what happened instead ("closed", "reset", ...)
    seconds: float


# -- the service ------------------------------------------------------------------------------


def limit_options(args: argparse.Namespace, help_text: str) -> tuple[list[str], list[str]]:
    """The limit options to pass, as arguments, and the flags of :data:`LIMITS` not passed.

    Each option `mlcycle serve --help` lists gets this script's value, else the service's
    default (:class:`ServeSettings`) when that is a number (else the service picks it); one it
    does not list is not passed (given here anyway: an error)."""
    defaults = asdict(ServeSettings())
    passed: list[str] = []
    left: list[str] = []
    for name in LIMITS:
        flag = "--" + name.replace("_", "-")
        value = getattr(args, name)
        if not re.search(rf"{flag}(?![\w-])", help_text):
            if value is not None:
                raise SystemExit(f"mlcycle serve has no {flag} (see mlcycle serve --help)")
            left.append(f"{flag} (not in this service)")
            continue
        if value is None:
            value = defaults.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                left.append(f"{flag} (the service's default)")
                continue
        passed += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return passed, left


def option(passed: list[str], name: str) -> float:
    """The value passed for the limit ``name``, else the service's default."""
    flag = "--" + name.replace("_", "-")
    if flag in passed:
        return float(passed[passed.index(flag) + 1])
    return float(asdict(ServeSettings())[name])


def log_bytes(folder: Path) -> int:
    """Bytes on disk of the prediction log (the SQLite file, its WAL and journal)."""
    return sum(p.stat().st_size for p in folder.glob("log.db*") if p.is_file())


# -- the probe --------------------------------------------------------------------------------


def _probe(port: int, out: mp.Queue, done: Event) -> None:
    """``GET /health`` every :data:`PROBE_INTERVAL` s on one kept-alive connection (a new one
    after an error), each put on ``out`` as (start, seconds, status or error), until ``done``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    conn: http.client.HTTPConnection | None = None
    due = time.monotonic()
    while not done.is_set():
        started = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(HOST, port, timeout=PROBE_TIMEOUT)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            result: int | str = resp.status
            if resp.will_close:
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as exc:
            result = type(exc).__name__
            if conn is not None:
                conn.close()
                conn = None
        ended = time.monotonic()
        out.put((started, ended - started, result))
        due = max(due + PROBE_INTERVAL, ended)
        time.sleep(max(0.0, due - time.monotonic()))


class Probe:
    """The probe in a process of its own, so the attacks' work does not delay its clock."""

    def __init__(self, port: int) -> None:
        ctx = mp.get_context("fork")
        self.queue: mp.Queue = ctx.Queue()
        self.done = ctx.Event()
        self.proc = ctx.Process(target=_probe, args=(port, self.queue, self.done), daemon=True)
        self.samples: list[tuple[float, float, int | str]] = []
        self.proc.start()

    def window(self, start: float, end: float) -> dict[str, Any]:
        """/health latency (ms) of the requests started from ``start`` to ``end``: median,
        p99, max of the 200s, and the other answers counted."""
        wait_until = time.monotonic() + PROBE_TIMEOUT + 1
        while not self.samples or self.samples[-1][0] < end:  # the one in flight at `end`
            try:
                self.samples.append(
                    self.queue.get(timeout=max(0.01, wait_until - time.monotonic()))
                )
            except queue.Empty:
                break
        inside = [s for s in self.samples if start <= s[0] < end]
        ok = np.array([s[1] for s in inside if s[2] == 200] or [np.nan]) * 1000
        return {
            "requests": len(inside),
            "p50": float(np.median(ok)),
            "p99": float(np.percentile(ok, 99)),
            "max": float(np.max(ok)),
            "errors": dict(Counter(str(s[2]) for s in inside if s[2] != 200)),
        }

    def close(self) -> None:
        self.done.set()
        self.proc.join(PROBE_TIMEOUT + 1)
        if self.proc.is_alive():
            self.proc.terminate()


# -- raw HTTP ---------------------------------------------------------------------------------


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
    """A connection to the service, or what went wrong."""
    try:
        return await asyncio.wait_for(asyncio.open_connection(HOST, port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        return f"connect: {type(exc).__name__}"


async def status_of(reader: asyncio.StreamReader) -> int | str:
    """The status of the answer read next, or how the connection ended without one."""
    try:
        line = await reader.readline()
    except ConnectionError:
        return "reset"
    if not line:
        return "closed"
    match = re.match(rb"HTTP/1\.[01] (\d{3})", line)
    return int(match[1]) if match else "not HTTP"


def close(writer: asyncio.StreamWriter) -> None:
    """Drop the connection at once: nothing left to say, and no socket left lingering."""
    writer.transport.abort()


async def answer_of(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    deadline: float,
    unanswered: str,
    sending: Coroutine[Any, Any, None] | None = None,
) -> int | str:
    """The service's answer on a connection (its status, or how it ended) by ``deadline``
    (loop time; past it, ``unanswered``), ``sending`` meanwhile; the connection is then
    dropped."""
    sender = asyncio.create_task(sending) if sending is not None else None
    try:
        async with asyncio.timeout_at(deadline):
            return await status_of(reader)
    except TimeoutError:
        return unanswered
    finally:
        if sender is not None:
            sender.cancel()
        close(writer)


async def exchange(port: int, kind: str, chunks: Iterable[bytes], deadline: float) -> Outcome:
    """Send ``chunks`` on a new connection until the service answers (it may answer before
    the request is whole), and wait for the answer until ``deadline`` (loop time)."""
    started = time.monotonic()
    conn = await connect(port)
    if isinstance(conn, str):
        return Outcome(kind, conn, time.monotonic() - started)
    reader, writer = conn

    async def send() -> None:
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass  # the service closed it: the answer, if any, is in the reader

    answer = await answer_of(reader, writer, deadline, "cut at the end", send())
    return Outcome(kind, answer, time.monotonic() - started)


async def in_turn(
    port: int,
    kinds: dict[str, Callable[[], Iterable[bytes]]],
    clients: int,
    seconds: float,
    enough: Callable[[], bool] = lambda: False,
) -> list[Outcome]:
    """``clients`` clients each sending the requests of ``kinds`` in turn, one at a time,
    for ``seconds`` or until ``enough()``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    outcomes: list[Outcome] = []
    names = list(kinds)

    async def client(i: int) -> None:
        while loop.time() < deadline and not enough():
            name = names[i % len(names)]
            i += 1
            outcome = await exchange(port, name, kinds[name](), deadline)
            outcomes.append(outcome)
            if isinstance(outcome.answer, str) and outcome.answer.startswith("connect"):
                await asyncio.sleep(0.05)  # refused at once: no busy loop

    await asyncio.gather(*(client(i) for i in range(clients)))
    return outcomes


# -- the attacks ------------------------------------------------------------------------------


async def slow_headers(port: int, seconds: float, connections: int) -> list[Outcome]:
    """Connections sending a request line, then a header one byte a second, never ending it:
    what each got and when (from connecting), or "still open" at the end."""
    deadline = asyncio.get_running_loop().time() + seconds
    kind = f"{connections} connections"

    async def one() -> Outcome:
        started = time.monotonic()
        conn = await connect(port)
        if isinstance(conn, str):
            return Outcome(kind, conn, time.monotonic() - started)
        reader, writer = conn

        async def trickle() -> None:
            writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            try:
                while not writer.is_closing():
                    await asyncio.sleep(1)
                    writer.write(b"a")
                    await writer.drain()
            except ConnectionError:
                pass

        answer = await answer_of(reader, writer, deadline, "still open", trickle())
        return Outcome(kind, answer, time.monotonic() - started)

    return list(await asyncio.gather(*(one() for _ in range(connections))))


def _repeat(head: bytes, unit: bytes, total: int, tail: bytes) -> Iterator[bytes]:
    """``head``, then ``unit`` repeated to ``total`` bytes in writes of :data:`CHUNK`, then
    ``tail``."""
    yield head
    chunk = unit * max(1, CHUNK // len(unit))
    for _ in range(max(1, total // len(chunk))):
        yield chunk
    yield tail


def huge_headers() -> dict[str, Callable[[], Iterable[bytes]]]:
    """The requests of the huge-headers attack, by name."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(100_000))
    many = [head] + [headers[i : i + CHUNK] for i in range(0, len(headers), CHUNK)] + [b"\r\n"]
    return {
        "64 MB header": lambda: _repeat(head + b"X-Big: ", b"a", 64 * 2**20, b"\r\n\r\n"),
        "100,000 headers": lambda: many,
        "8 MB cookie": lambda: _repeat(head + b"Cookie: ", b"a=b; ", 8 * 2**20, b"\r\n\r\n"),
    }


async def many_connections(port: int, seconds: float, connections: int) -> list[Outcome]:
    """``connections`` idle connections held for ``seconds`` (what ended them, if anything),
    and a new connection asking ``/health`` every 0.5 s meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    opening = asyncio.Semaphore(200)
    kind = f"{connections} idle"
    outcomes: list[Outcome] = []

    async def idle() -> None:
        started = time.monotonic()
        async with opening:
            conn = await connect(port)
        if isinstance(conn, str):
            outcomes.append(Outcome(kind, conn, time.monotonic() - started))
            return
        reader, writer = conn
        answer = await answer_of(reader, writer, deadline, "still open")
        outcomes.append(Outcome(kind, answer, time.monotonic() - started))

    async def newcomers() -> None:
        while loop.time() < deadline - 0.5:
            await asyncio.sleep(0.5)
            until = min(deadline, loop.time() + PROBE_TIMEOUT)
            outcomes.append(await exchange(port, "a new one every 0.5 s", [GET_HEALTH], until))

    await asyncio.gather(newcomers(), *(idle() for _ in range(connections)))
    return outcomes


def large_bodies(max_body_bytes: int, max_records: int) -> dict[str, Callable[[], Iterable[bytes]]]:
    """The requests of the large-bodies attack, by name: a valid ``/predict`` body padded with
    spaces to the limit, the same a chunk over it by its Content-Length, and chunked."""
    recs = records(min(100, max_records))
    body = json.dumps({"records": recs}).encode()
    body += b" " * max(0, max_body_bytes - len(body))
    over = body + b" " * CHUNK
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\n"
    )

    def plain(data: bytes) -> Iterator[bytes]:
        yield head + b"Content-Length: %d\r\n\r\n" % len(data)
        view = memoryview(data)
        for i in range(0, len(data), CHUNK):
            yield bytes(view[i : i + CHUNK])

    def chunked() -> Iterator[bytes]:
        yield head + b"Transfer-Encoding: chunked\r\n\r\n"
        for i in range(0, len(over), CHUNK):
            part = over[i : i + CHUNK]
            yield b"%x\r\n%s\r\n" % (len(part), part)
        yield b"0\r\n\r\n"

    return {
        f"{len(body) / 2**20:.1f} MiB JSON": lambda: plain(body),
        "over, by Content-Length": lambda: plain(over),
        "over, chunked": chunked,
    }


# -- the report -------------------------------------------------------------------------------


def seconds_text(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.1f} s"


def summary(outcomes: list[Outcome]) -> Answer:
    """One line per kind: each answer, how many got it, after how long (median, max)."""
    lines = []
    figures: dict[str, Any] = {}
    for kind in dict.fromkeys(o.kind for o in outcomes):
        mine = [o for o in outcomes if o.kind == kind]
        parts = []
        for answer, n in Counter(o.answer for o in mine).most_common():
            times = [o.seconds for o in mine if o.answer == answer]
            median = float(np.median(times))
            figures.setdefault(kind, {})[str(answer)] = {
                "count": n,
                "median_s": median,
                "max_s": max(times),
            }
            when = seconds_text(median) + (f", max {seconds_text(max(times))}" if n > 1 else "")
            parts.append(f"{answer} x{n} ({when})")
        lines.append(f"{kind}: " + "; ".join(parts))
    return lines, figures


def latency_text(lat: dict[str, Any]) -> str:
    errors = sum(lat["errors"].values())
    return f"{lat['p50']:.1f} / {lat['p99']:.1f} / {lat['max']:.0f} ({errors}/{lat['requests']})"


def print_table(rows: list[dict[str, Any]], base: dict[str, Any]) -> None:
    """attack | answer | /health during it | with no attack | ratios (p50, p99)."""
    width = 62
    print(
        f"\n{'attack':<18}{'what the service answered':<{width}}"
        f"{'/health ms: p50 / p99 / max (not 200)':<40}{'no attack':<32}{'ratio p50, p99'}"
    )
    for row in rows:
        lines = [piece for line in row["answer"] for piece in textwrap.wrap(line, width - 2)]
        lat = row.get("health")
        during = latency_text(lat) if lat else ""
        ratio = f"{lat['p50'] / base['p50']:.2f}, {lat['p99'] / base['p99']:.2f}" if lat else ""
        for i, line in enumerate(lines or [""]):
            if i == 0:
                print(
                    f"{row['attack']:<18}{line:<{width}}{during:<40}{latency_text(base):<32}{ratio}"
                )
            else:
                print(f"{'':<18}{line}")


# -- the run ----------------------------------------------------------------------------------


def run_phases(args: argparse.Namespace, port: int, passed: list[str], tmp: Path) -> None:
    """Every phase in turn, with the probe running, then the table (and the JSON)."""
    header_timeout = option(passed, "header_timeout")
    max_body_bytes = int(option(passed, "max_body_bytes"))
    max_records = int(option(passed, "max_records"))
    slow_seconds = max(args.seconds, header_timeout + 2)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    idle_bound = max(1, min(args.connections, soft - FD_RESERVE))
    slow_bound = max(1, min(args.slow_connections, soft - FD_RESERVE))
    wrk_body = json.dumps({"records": records(100)}).encode()
    huge = huge_headers()

    def attacked(
        make: Callable[[float], Awaitable[list[Outcome]]],
    ) -> Callable[[float], Answer]:
        """A phase running the attack ``make(seconds)`` gives, bounded, summarised."""

        def run(seconds: float) -> Answer:
            async def bounded() -> list[Outcome]:
                async with asyncio.timeout(seconds + CONNECT_TIMEOUT + PROBE_TIMEOUT + 5):
                    return await make(seconds)

            return summary(asyncio.run(bounded()))

        return run

    def idle(seconds: float) -> Answer:
        time.sleep(seconds)
        return ["-"], {}

    def bodies(seconds: float) -> Answer:
        before = log_bytes(tmp)
        kinds = large_bodies(max_body_bytes, max_records)

        def grown() -> int:
            return log_bytes(tmp) - before

        lines, figures = attacked(
            lambda s: in_turn(port, kinds, args.clients, s, lambda: grown() > LOG_BOUND)
        )(seconds)
        if args.no_log:
            return lines, figures
        time.sleep(SETTLE)  # the log's writer thread catches up
        mib = grown() / 2**20
        figures["log_growth_mib"] = mib
        bound = f", stopped at {LOG_BOUND >> 20} MiB" if mib > LOG_BOUND >> 20 else ""
        return [
            *lines,
            f"prediction log on disk: +{mib:.1f} MiB ({mib / seconds:.1f} MiB/s){bound}",
        ], figures

    def load(seconds: float) -> Answer:
        url = f"http://{HOST}:{port}/predict"
        r = wrk(url, wrk_body, max(1, round(seconds)), args.wrk_connections)
        line = (
            f"wrk -c{args.wrk_connections}, 100 records: {r['requests']} requests "
            f"({r['rps']:.0f}/s, p99 {r['p99']:.0f} ms); non-2xx {r['non2xx']}, not answered "
            f"{r['timeout']}, socket errors {r['sockerr']}"
        )
        return [line], r

    phases: list[tuple[str, float, Callable[[float], Answer]]] = [
        ("no attack", args.seconds, idle),
        ("slow headers", slow_seconds, attacked(lambda s: slow_headers(port, s, slow_bound))),
        ("huge headers", args.seconds, attacked(lambda s: in_turn(port, huge, args.clients, s))),
        (
            "many connections",
            slow_seconds,
            attacked(lambda s: many_connections(port, s, idle_bound)),
        ),
        ("large bodies", args.seconds, bodies),
    ]
    if shutil.which("wrk"):
        phases.append(("wrk /predict", args.seconds, load))
    else:
        print("wrk is not installed (apt-get install wrk): no wrk phase", file=sys.stderr)
    phases.append(("no attack, after", args.seconds, idle))

    probe = Probe(port)
    rows: list[dict[str, Any]] = []
    try:
        time.sleep(SETTLE)  # the probe's first connection
        for name, seconds, run in phases:
            left = args.deadline_at - time.monotonic()
            if seconds + SETTLE > left:
                print(
                    f"[{args.elapsed():4.0f} s] {name}: skipped, {left:.0f} s left before "
                    "--deadline",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append({"attack": name, "answer": ["skipped (--deadline)"]})
                continue
            print(
                f"[{args.elapsed():4.0f} s] {name}, {seconds:g} s ...", file=sys.stderr, flush=True
            )
            started = time.monotonic()
            lines, figures = run(seconds)
            health = probe.window(started, time.monotonic())
            rows.append({"attack": name, "answer": lines, "figures": figures, "health": health})
            time.sleep(SETTLE)
    finally:
        probe.close()

    base = rows[0]["health"]
    print(
        f"\n/health asked every {PROBE_INTERVAL * 1000:.0f} ms on one kept-alive connection; "
        f"slow headers {slow_bound} connections, many connections {idle_bound} (fd limit "
        f"{soft}), huge headers and large bodies {args.clients} clients"
    )
    print_table(rows, base)
    if args.json:
        Path(args.json).write_text(json.dumps({"serve": args.command, "rows": rows}, indent=1))
        print(f"\nwritten: {args.json}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "models/bundle"))
    parser.add_argument("--seconds", type=float, default=5.0, help="per phase (default 5)")
    parser.add_argument(
        "--deadline",
        type=float,
        default=240.0,
        help="seconds for the whole run (default 240): phases that would end past it are skipped",
    )
    parser.add_argument("--workers", type=int, default=1, help="the service's (default 1)")
    parser.add_argument("--no-log", action="store_true", help="the prediction log off")
    parser.add_argument(
        "--slow-connections", type=int, default=500, help="slow headers' (default 500)"
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=3000,
        help=f"idle connections (default 3000; at most the fd limit less {FD_RESERVE})",
    )
    parser.add_argument(
        "--clients", type=int, default=4, help="of huge headers and large bodies (default 4)"
    )
    parser.add_argument("--wrk-connections", type=int, default=50)
    parser.add_argument("--json", help="also write the figures to this file")
    limits = parser.add_argument_group("the service's limits (default: its own defaults)")
    for name in LIMITS:
        kind = str if name == "rate_limit" else float if "timeout" in name else int
        limits.add_argument("--" + name.replace("_", "-"), type=kind)
    args = parser.parse_args()
    began = time.monotonic()
    args.deadline_at = began + args.deadline
    args.elapsed = lambda: time.monotonic() - began

    help_text = subprocess.run(
        [str(BIN / "mlcycle"), "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    passed, left = limit_options(args, help_text)
    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    port = free_port()
    cmd = [str(BIN / "mlcycle"), "serve", "--bundle", args.bundle, "--host", HOST]
    cmd += ["--port", str(port), "--workers", str(args.workers), "--log-level", "warning"]
    cmd += passed
    cmd += ["--no-log"] if args.no_log else ["--log-url", f"sqlite:///{tmp / 'log.db'}"]
    args.command = " ".join(["mlcycle", *cmd[1:]])
    print(f"serving: {args.command}", file=sys.stderr)
    if left:
        print(f"not passed: {', '.join(left)}", file=sys.stderr)

    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # stopped like Ctrl-C: the server stops too
    proc = None
    try:
        proc = start(cmd, dict(os.environ), f"http://{HOST}:{port}/health")
        run_phases(args, port, passed, tmp)
    except KeyboardInterrupt:
        print("interrupted: the server is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

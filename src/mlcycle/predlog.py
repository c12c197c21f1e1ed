"""The prediction log: every prediction the service makes, stored for monitoring, audit and labels.

A :class:`PredictionLog` sits behind a SQLAlchemy URL: ``sqlite:///logs/predictions.db`` (a
relative path is relative to the current directory; missing folders are created) or
``postgresql+psycopg://user:password@host/db`` in production. It writes one table,
``predictions``, created if missing:

=============  ==========================  ==================================================
column         type                        what
=============  ==========================  ==================================================
id             integer, primary key        autoincrement; the order rows were inserted in
request_id     text, not null, indexed     the request the record came in
row            integer, not null           the record's position in its request (0-based)
ts             timestamp with time zone,   when the prediction was made (UTC)
               not null, indexed
model_name     text, not null              the model's name
model_version  text, nullable              the deployed version, if the service has one
model_id       text, not null, indexed     the model file's SHA-256 prefix (its identity)
inputs         text, not null              JSON of the raw record as received
outputs        text, not null              JSON of the answer: ``{"label": ..., "probabilities":
                                           {...}}`` or ``{"value": ...}``
label          text, nullable              the true label, when it arrives (:func:`attach_labels`)
label_ts       timestamp with time zone,   when the label was attached (UTC)
               nullable
=============  ==========================  ==================================================

Writes are off the request path: :meth:`PredictionLog.submit` puts a request's rows on a bounded
in-memory queue and returns at once; a background thread writes them in batches, one
transaction per batch (``batch_size`` rows, or whatever is waiting every ``flush_interval``
seconds). A full queue refuses the whole call (``submit`` returns False, the service answers
503) instead of dropping a logged prediction. A failing database is retried with backoff and
reported through :mod:`logging`; rows are only ever given up when :meth:`PredictionLog.close`
runs out of time, and then their number is logged and returned. Messages never carry the URL's
credentials.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout, so several worker
processes can append to the same file. Create one :class:`PredictionLog` per process (after a
fork: the writer thread does not survive one).

:func:`read_log` reads rows back as a pandas frame for monitoring (``inputs`` and ``outputs``
as dicts), and :func:`attach_labels` fills in true labels that arrive later.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import math
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from mlcycle.sources import redact_url

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///predictions.db"
TABLE = "predictions"
COLUMNS = (
    "id",
    "request_id",
    "row",
    "ts",
    "model_name",
    "model_version",
    "model_id",
    "inputs",
    "outputs",
    "label",
    "label_ts",
)
#: Keys every submitted row must have; ``row``, ``ts`` and ``model_version`` are optional.
REQUIRED_KEYS = frozenset({"request_id", "model_name", "model_id", "inputs", "outputs"})
INSERT_COLUMNS = COLUMNS[1:9]  # what the writer inserts: all but id and the label columns
RETRY_FIRST_SECONDS = 0.05  # the first retry of a failed write waits this long, doubling
RETRY_MAX_SECONDS = 2.0  # up to this

SQLITE_INSERT = (
    'INSERT INTO predictions (request_id, "row", ts, model_name, model_version, model_id, '
    "inputs, outputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
POSTGRES_COPY = (
    'COPY predictions (request_id, "row", ts, model_name, model_version, model_id, inputs, '
    "outputs) FROM STDIN"
)

metadata = sa.MetaData()
predictions = sa.Table(
    TABLE,
    metadata,
    # BIGSERIAL on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the fast rowid alias.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("request_id", sa.Text, nullable=False, index=True),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("model_id", sa.Text, nullable=False, index=True),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
    sa.Column("label", sa.Text),
    sa.Column("label_ts", sa.DateTime(timezone=True)),
)


class PredictionLogError(Exception):
    """The prediction log cannot be opened or read; the message names the (redacted) URL."""


# --- URLs, engines, messages -----------------------------------------------------------------


def _parse_url(url: str | os.PathLike[str]) -> sa.URL:
    """``url`` as a SQLAlchemy URL; a bare path is an SQLite file; SQLite paths made absolute."""
    raw = os.fspath(url)
    if "://" not in raw:
        raw = f"sqlite:///{raw}"
    try:
        parsed = sa.make_url(raw)
    except (sa_exc.ArgumentError, ValueError):
        raise PredictionLogError(
            "the prediction log URL is not a valid SQLAlchemy URL "
            "(dialect+driver://user:password@host:port/database)"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise PredictionLogError(
                "the prediction log needs an SQLite file (sqlite:///path/to/predictions.db), "
                "not an in-memory database: other processes must be able to read it"
            )
        parsed = parsed.set(database=str(Path(parsed.database).expanduser().absolute()))
    return parsed


def _shown(url: sa.URL) -> str:
    """The URL without user, password and query: safe for messages."""
    return redact_url(url.render_as_string(hide_password=True))


def _reason(exc: BaseException, url: sa.URL) -> str:
    """The driver's message (not SQLAlchemy's, which repeats the SQL and the rows), on one line,
    without the password."""
    orig = getattr(exc, "orig", None)
    text = " ".join(str(orig if orig is not None else exc).split()) or type(exc).__name__
    if url.password:
        password = str(url.password)
        for secret in sorted({password, quote(password), quote_plus(password)}, key=len)[::-1]:
            text = text.replace(secret, "***")
    return text[:500]


def _engine(url: sa.URL, *, writer: bool, timeout: float) -> sa.Engine:
    """An engine for ``url``: SQLite with busy timeout (and, for the writer, WAL-friendly
    ``synchronous=NORMAL`` and the file's folder created); other databases with a connect
    timeout. Readers use no pool: they connect once."""
    if url.get_backend_name() == "sqlite":
        path = Path(str(url.database))
        if writer:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            raise PredictionLogError(f"no prediction log at {path}: the file does not exist")
        engine = sa.create_engine(
            url,
            connect_args={"timeout": timeout, "check_same_thread": False},
            poolclass=None if writer else NullPool,
        )
        busy_ms = max(1, round(timeout * 1000))

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            if writer:  # per connection: it is not stored in the file, unlike the WAL mode
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() in ("postgresql", "mysql", "mariadb"):
        connect_args["connect_timeout"] = max(1, math.ceil(timeout))
    try:
        if writer:  # pre-ping: a restarted server must not cost a failed batch
            return sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        return sa.create_engine(url, connect_args=connect_args, poolclass=NullPool)
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise PredictionLogError(
            f"prediction log {_shown(url)}: no driver for {url.drivername!r} is installed: "
            f"{_reason(exc, url)}"
        ) from None


def _create_table(engine: sa.Engine) -> None:
    """Create ``predictions`` and its indexes if missing (several processes may race to) and,
    on SQLite, switch the file to WAL mode (stored in the file); refuse a table of another
    layout."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        if str(mode).lower() != "wal":
            raise sa_exc.OperationalError("PRAGMA journal_mode=WAL", {}, f"journal mode {mode}")
    with engine.begin() as conn:
        conn.execute(CreateTable(predictions, if_not_exists=True))
        have = {c["name"] for c in sa.inspect(conn).get_columns(TABLE)}
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            raise PredictionLogError(
                f"table {TABLE!r} exists with another layout: it lacks {', '.join(missing)}"
            )
        for index in sorted(predictions.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_default(obj: Any) -> Any:
    """JSON for what :mod:`json` does not know: numpy scalars and arrays, dates, else text."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, date):
        return obj.isoformat()
    return str(obj)


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(obj: Any) -> str:
    """Compact JSON text, by orjson (the writer thread shares the GIL with the requests, so its
    time is the service's). NaN and infinities become null, as JSON has no such numbers."""
    return orjson.dumps(obj, default=_json_default, option=_ORJSON_OPTIONS).decode()


def _sqlite_ts(ts: datetime) -> str:
    """``ts`` (UTC) as SQLAlchemy stores a DateTime in SQLite, so it reads back and compares."""
    return ts.replace(tzinfo=None).isoformat(" ", "microseconds")


def _same(ts: datetime) -> datetime:
    return ts


def _required(value: Any, key: str) -> str:
    if value is None:
        raise ValueError(f"{key} is null")
    return value if isinstance(value, str) else str(value)


def _values(row: Mapping[str, Any], position: int, ts: Any) -> tuple:
    """One submitted row as the values of :data:`INSERT_COLUMNS` (``ts`` already converted)."""
    version = row.get("model_version")
    return (
        _required(row["request_id"], "request_id"),
        int(row.get("row", position)),
        ts,
        _required(row["model_name"], "model_name"),
        None if version is None else str(version),
        _required(row["model_id"], "model_id"),
        _dumps(row["inputs"]),
        _dumps(row["outputs"]),
    )


def _row_level(exc: BaseException, dbapi: Any = None) -> bool:
    """Whether ``exc`` is about the rows (a value the database refuses), not the database being
    unavailable: then the batch is written row by row and only the bad rows are dropped.
    ``dbapi`` is the driver's module, for its own errors (PostgreSQL's COPY bypasses
    SQLAlchemy)."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if dbapi is not None and isinstance(exc, dbapi.DataError | dbapi.IntegrityError):
        return True
    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError):
        exc = exc.orig or exc
    return isinstance(exc, TypeError | ValueError | OverflowError)


# --- the writer ----------------------------------------------------------------------------


def _close_at_exit(ref: weakref.ref[PredictionLog]) -> None:
    log = ref()
    if log is not None:
        log.close()


class PredictionLog:
    """A bounded queue of prediction rows and the thread that writes them to ``url``.

    ``submit(rows)`` queues one request's rows or none of them; rows are written in batches of
    up to ``batch_size`` (more when one call brings more), at least every ``flush_interval``
    seconds. At most ``max_queue`` rows wait (a single call larger than that is taken when
    nothing waits). When full, ``submit`` returns False at once (``when_full="reject"``) or
    after waiting up to ``block_timeout`` seconds for room (``"block"``; it blocks the calling
    thread, so call it from a worker thread in async code). ``db_timeout`` bounds one wait for a
    lock (SQLite busy timeout) or a connection (connect timeout). The table is created, and the
    database reached, before the constructor returns: a wrong URL fails at start-up with
    :class:`PredictionLogError`.
    """

    def __init__(
        self,
        url: str | os.PathLike[str] = DEFAULT_URL,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        when_full: Literal["reject", "block"] = "reject",
        block_timeout: float = 1.0,
        db_timeout: float = 5.0,
    ) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        if flush_interval <= 0 or block_timeout < 0 or db_timeout <= 0:
            raise ValueError("flush_interval and db_timeout must be > 0, block_timeout >= 0")
        if when_full not in ("reject", "block"):
            raise ValueError(f"when_full must be 'reject' or 'block', not {when_full!r}")
        self._url = _parse_url(url)
        #: The URL without credentials, for messages.
        self.url = _shown(self._url)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.max_queue = max_queue
        self.when_full = when_full
        self.block_timeout = block_timeout
        self._engine = _engine(self._url, writer=True, timeout=db_timeout)
        self._open(attempts=3)
        self._insert = predictions.insert()
        # how _commit inserts: "sqlite" (the driver's executemany), "copy" (PostgreSQL's COPY
        # through psycopg 3) or "core" (SQLAlchemy's executemany, any other database)
        self._mode = "core"
        if self._url.get_backend_name() == "sqlite":
            self._mode = "sqlite"
        elif (
            self._url.get_backend_name() == "postgresql"
            and self._url.get_driver_name() == "psycopg"
        ):
            self._mode = "copy"
        self._dbapi = self._engine.dialect.dbapi
        self._ts_value = _sqlite_ts if self._mode == "sqlite" else _same

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits on it
        self._room = threading.Condition(self._lock)  # blocked submitters and flush() wait
        # (monotonic time queued, ts of the call, rows) per accepted call, oldest first
        self._queue: deque[tuple[float, datetime, list[Mapping[str, Any]]]] = deque()
        self._queued = 0  # rows in _queue
        self._inflight = 0  # rows taken by the writer, not yet written or given up
        self._accepted = 0
        self._written = 0
        self._failed = 0
        self._rejected = 0
        self._write_errors = 0
        self._batches = 0
        self._closing = False
        self._deadline = math.inf
        self._abandoned = False  # rows were given up: the writer stops
        self._flush_now = False  # flush() asked for the queue to be written now
        self._lost = 0  # rows given up when closing
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mlcycle-predlog", daemon=True)
        self._thread.start()
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def __repr__(self) -> str:
        return f"PredictionLog({self.url!r}, depth={self.depth}, written={self.written})"

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, attempts: int) -> None:
        """Reach the database and create the table, retrying a few times (another process may
        be creating it at the same moment)."""
        for attempt in range(attempts):
            try:
                _create_table(self._engine)
                return
            except PredictionLogError as exc:
                self._engine.dispose()
                raise PredictionLogError(f"prediction log {self.url}: {exc}") from None
            except sa_exc.SQLAlchemyError as exc:
                if attempt + 1 == attempts:
                    self._engine.dispose()
                    raise PredictionLogError(
                        f"prediction log {self.url}: cannot open the database "
                        f"({attempts} attempts): {_reason(exc, self._url)}"
                    ) from None
                time.sleep(0.2 * 2**attempt)

    # --- counters (read without the lock: each is one int) --------------------------------------

    @property
    def depth(self) -> int:
        """Rows accepted and not yet written (queued or being written): the queue gauge."""
        return self._queued + self._inflight

    @property
    def written(self) -> int:
        """Rows written (committed) so far."""
        return self._written

    @property
    def failed(self) -> int:
        """Rows accepted that will never be written: refused by the database one by one, or
        given up when :meth:`close` ran out of time. Each is logged."""
        return self._failed

    @property
    def rejected(self) -> int:
        """Rows refused by :meth:`submit` (queue full or closed): the service answered 503."""
        return self._rejected

    @property
    def write_errors(self) -> int:
        """Failed write attempts (each retried): how often the database was unavailable."""
        return self._write_errors

    @property
    def batches(self) -> int:
        """Transactions committed."""
        return self._batches

    @property
    def accepting(self) -> bool:
        """Open and with room in the queue: what a readiness probe asks."""
        return not self._closing and self.depth < self.max_queue

    # --- the request side -----------------------------------------------------------------------

    def _fits(self, n: int) -> bool:
        depth = self._queued + self._inflight
        return depth + n <= self.max_queue or depth == 0

    def submit(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Queue ``rows`` (one request's records) for writing; never waits on the database
        (with ``when_full="block"`` it may wait for room in the queue).

        Each row is a mapping with ``request_id``, ``model_name``, ``model_id``, ``inputs`` and
        ``outputs`` (JSON-able: numpy values are converted), and optionally ``row`` (default:
        its position in ``rows``), ``ts`` (a datetime, naive meaning UTC; default: now) and
        ``model_version``. The rows are serialised later by the writer thread: do not change
        them after submitting.

        Returns True when every row was queued, False when none was (queue full, or closed).
        A row without a required key is a programming error: ValueError, nothing queued.
        """
        rows = list(rows)
        n = len(rows)
        for i, row in enumerate(rows):
            try:
                complete = row.keys() >= REQUIRED_KEYS
            except AttributeError:
                raise TypeError(f"rows[{i}] is a {type(row).__name__}, not a mapping") from None
            if not complete:
                missing = ", ".join(sorted(REQUIRED_KEYS - row.keys()))
                raise ValueError(f"rows[{i}] lacks {missing}")
        now = datetime.now(UTC)
        with self._lock:
            if self._closing:
                self._rejected += n
                return False
            if not n:
                return True
            if not self._fits(n) and (self.when_full == "reject" or not self._wait_for_room(n)):
                self._rejected += n
                return False
            was = self._queued
            self._queue.append((time.monotonic(), now, rows))
            self._queued += n
            self._accepted += n
            if was == 0 or was < self.batch_size <= self._queued:
                self._wake.notify()
        return True

    def _wait_for_room(self, n: int) -> bool:
        """Wait (lock held) up to ``block_timeout`` s for room for ``n`` rows."""
        end = time.monotonic() + self.block_timeout
        while not self._fits(n):
            left = end - time.monotonic()
            if left <= 0 or self._closing:
                return False
            self._room.wait(left)
        return not self._closing

    def flush(self, timeout: float | None = None) -> bool:
        """Write now what was submitted before this call and wait for it; True when it is all
        written (or given up, see :attr:`failed`) within ``timeout`` seconds."""
        end = math.inf if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
            while self._written + self._failed < target:
                if self._abandoned:
                    return True
                self._flush_now = True
                self._wake.notify()
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._room.wait(None if left == math.inf else left)
            return True

    def close(self, timeout: float = 10.0) -> int:
        """Stop accepting rows, write everything queued, and stop the writer thread.

        Returns the number of accepted rows still unwritten after ``timeout`` seconds (0
        normally): the database stayed unavailable, and they are lost (logged as an error,
        counted in :attr:`failed`). Safe to call again: later calls return the same number.
        """
        with self._close_lock:
            if self._closed:
                return self._lost
            with self._lock:
                self._closing = True
                self._deadline = time.monotonic() + timeout
                self._wake.notify_all()
                self._room.notify_all()
            self._thread.join(timeout)
            if self._thread.is_alive():  # stuck in a database call: give the rest up now
                with self._lock:
                    self._give_up(f"close() timed out after {timeout:g} s")
                self._thread.join(0.5)
            if not self._thread.is_alive():
                self._engine.dispose()
            self._closed = True
            atexit.unregister(self._at_exit)
            return self._lost

    # --- the writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                chunks = self._take()
                if chunks is None:
                    return
                batch = self._convert(chunks)
                if batch:
                    self._write(batch)
            except Exception:  # a bug here must not stop the log: say so and go on
                logger.exception("prediction log %s: the writer failed", self.url)
                with self._lock:
                    lost, self._inflight = self._inflight, 0
                    self._failed += lost
                    self._room.notify_all()
                if lost:
                    logger.error("prediction log %s: %d prediction(s) lost", self.url, lost)

    def _take(self) -> list[tuple[float, datetime, list[Mapping[str, Any]]]] | None:
        """Wait until a batch is due, then take it off the queue; None when closed and empty."""
        with self._lock:
            while True:
                if self._abandoned:
                    return None
                if self._queued >= self.batch_size or (self._queued and self._closing):
                    break
                if self._closing:
                    return None
                if self._queued and self._flush_now:
                    break
                if self._queued:
                    left = self._queue[0][0] + self.flush_interval - time.monotonic()
                    if left <= 0:
                        break
                    self._wake.wait(left)
                else:
                    self._flush_now = False
                    self._wake.wait()
            chunks, n = [], 0
            while self._queue and n < self.batch_size:
                chunk = self._queue.popleft()
                chunks.append(chunk)
                n += len(chunk[2])
            self._queued -= n
            self._inflight += n
            if not self._queued:
                self._flush_now = False
            return chunks

    def _convert(self, chunks: list[tuple[float, datetime, list[Mapping[str, Any]]]]) -> list:
        """Insert values of the taken rows; a row that cannot be converted is dropped and
        logged (it would fail the same way every time)."""
        batch: list[tuple] = []
        bad = 0
        as_db = self._ts_value
        for _, call_ts, rows in chunks:
            last, value = None, as_db(call_ts)  # rows of a request usually share one ts
            for i, row in enumerate(rows):
                try:
                    given = row.get("ts")
                    if given is not None and given is not last:
                        last, value = given, as_db(_utc(given))
                    elif given is None and last is not None:
                        last, value = None, as_db(call_ts)
                    batch.append(_values(row, i, value))
                except Exception as exc:
                    bad += 1
                    logger.error(
                        "prediction log %s: dropped row %s of request %r: %s",
                        self.url,
                        row.get("row", i),
                        row.get("request_id"),
                        exc,
                    )
        if bad:
            self._dropped(bad)
        return batch

    def _write(self, batch: list[tuple]) -> None:
        """Write ``batch`` in one transaction, retrying with backoff while the database is
        unavailable; rows the database refuses are found by writing them one by one."""
        attempt = 0
        while batch:
            try:
                self._commit(batch)
                if attempt:
                    logger.info(
                        "prediction log %s: writing again after %d failure(s)", self.url, attempt
                    )
                return
            except Exception as exc:
                if _row_level(exc, self._dbapi):
                    batch = self._write_one_by_one(batch)
                    continue
                attempt += 1
                reason = _reason(exc, self._url)
                with self._lock:
                    self._write_errors += 1
                logger.warning(
                    "prediction log %s: writing %d row(s) failed (attempt %d), retrying: %s",
                    self.url,
                    len(batch),
                    attempt,
                    reason,
                )
                if not self._backoff(attempt):
                    with self._lock:
                        self._give_up(f"the database stayed unavailable: {reason}")
                    return

    def _commit(self, batch: list[tuple]) -> None:
        """Insert ``batch`` in one transaction: SQLite straight through the driver's
        ``executemany`` (SQLAlchemy's per-row parameter handling would cost as much as SQLite
        itself), PostgreSQL with ``COPY`` (about twice as fast as a multi-row INSERT), anything
        else through SQLAlchemy."""
        with self._engine.begin() as conn:
            if self._mode == "sqlite":
                conn.exec_driver_sql(SQLITE_INSERT, batch)
            elif self._mode == "copy":
                cursor = conn.connection.driver_connection.cursor()
                with cursor, cursor.copy(POSTGRES_COPY) as copy:
                    for values in batch:
                        copy.write_row(values)
            else:
                conn.execute(
                    self._insert, [dict(zip(INSERT_COLUMNS, v, strict=True)) for v in batch]
                )
        with self._lock:
            self._batches += 1
            if self._abandoned:  # close() counted these as lost; they made it after all
                self._failed -= len(batch)
                self._lost = max(0, self._lost - len(batch))
                logger.warning(
                    "prediction log %s: %d row(s) counted as lost were written after all",
                    self.url,
                    len(batch),
                )
            else:
                self._inflight -= len(batch)
            self._written += len(batch)
            self._room.notify_all()

    def _write_one_by_one(self, batch: list[tuple]) -> list[tuple]:
        """Write each row alone, dropping (and logging) those the database refuses; returns the
        rows left when the database itself fails, to retry as a batch."""
        for i, params in enumerate(batch):
            if self._abandoned:
                return []
            try:
                self._commit([params])
            except Exception as exc:
                if not _row_level(exc, self._dbapi):
                    return batch[i:]
                logger.error(
                    "prediction log %s: the database refused row %s of request %r: %s",
                    self.url,
                    params[1],
                    params[0],
                    _reason(exc, self._url),
                )
                self._dropped(1)
        return []

    def _dropped(self, n: int) -> None:
        with self._lock:
            if not self._abandoned:
                self._inflight -= n
                self._failed += n
            self._room.notify_all()

    def _backoff(self, attempt: int) -> bool:
        """Wait before retry ``attempt``; False when it is time to give up instead (closing and
        past the deadline)."""
        delay = min(RETRY_FIRST_SECONDS * 2 ** (attempt - 1), RETRY_MAX_SECONDS)
        end = time.monotonic() + delay
        with self._lock:
            while True:
                if self._abandoned:
                    return False
                now = time.monotonic()
                if self._closing and now >= self._deadline:
                    return False
                if now >= end:
                    return True
                self._wake.wait(min(end, self._deadline) - now)

    def _give_up(self, reason: str) -> None:
        """(Lock held.) Count every row not yet written as lost, log it, and stop the writer."""
        lost = self._queued + self._inflight
        self._queue.clear()
        self._queued = self._inflight = 0
        self._abandoned = True
        if lost:
            self._failed += lost
            self._lost += lost
            logger.error(
                "prediction log %s: %d prediction(s) lost, not written: %s", self.url, lost, reason
            )
        self._wake.notify_all()
        self._room.notify_all()


# --- reading and labelling -------------------------------------------------------------------


def _reader(url: str | os.PathLike[str]) -> tuple[sa.URL, sa.Engine]:
    parsed = _parse_url(url)
    return parsed, _engine(parsed, writer=False, timeout=10.0)


def _empty_log() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    frame = frame.astype({"id": "int64", "row": "int64"})
    for c in ("ts", "label_ts"):
        frame[c] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def read_log(
    url: str | os.PathLike[str] = DEFAULT_URL,
    *,
    last: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
    model_id: str | None = None,
) -> pd.DataFrame:
    """The logged predictions as a frame, in ``id`` (insertion) order, one column per table
    column (:data:`COLUMNS`).

    ``inputs`` and ``outputs`` hold the parsed JSON as dicts (not expanded into columns: the
    frame's shape does not depend on the model; ``pd.DataFrame(frame["inputs"].tolist())`` gives
    the records). ``ts`` and ``label_ts`` are UTC timestamps. Filters: ``since <= ts < until``
    (a naive datetime is UTC), ``model_version``, ``model_id``; ``last`` keeps the last ``last``
    rows that pass them. A database without the table (nothing logged yet) gives an empty
    frame; a missing SQLite file is a :class:`PredictionLogError`.
    """
    if last is not None and last < 0:
        raise ValueError(f"last must be >= 0, not {last}")
    t = predictions
    query = sa.select(*(t.c[c] for c in COLUMNS))
    if since is not None:
        query = query.where(t.c.ts >= _utc(since))
    if until is not None:
        query = query.where(t.c.ts < _utc(until))
    if model_version is not None:
        query = query.where(t.c.model_version == model_version)
    if model_id is not None:
        query = query.where(t.c.model_id == model_id)
    if last is not None:
        query = query.order_by(t.c.id.desc()).limit(last)
    else:
        query = query.order_by(t.c.id)
    parsed, engine = _reader(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return _empty_log()
            rows = conn.execute(query).all()
    except sa_exc.SQLAlchemyError as exc:
        raise PredictionLogError(
            f"reading the prediction log {_shown(parsed)} failed: {_reason(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()
    if not rows:
        return _empty_log()
    if last is not None:
        rows.reverse()
    values = dict(zip(COLUMNS, zip(*rows, strict=True), strict=True))
    frame = pd.DataFrame({c: list(values[c]) for c in COLUMNS})
    frame["inputs"] = [json.loads(s) for s in values["inputs"]]
    frame["outputs"] = [json.loads(s) for s in values["outputs"]]
    for c in ("ts", "label_ts"):  # SQLite gives naive UTC, PostgreSQL aware datetimes
        frame[c] = pd.to_datetime(frame[c], utc=True).astype("datetime64[us, UTC]")
    return frame.astype({"id": "int64", "row": "int64"})


def _label_text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return value if isinstance(value, str) else str(value)


def attach_labels(
    url: str | os.PathLike[str],
    labels: Mapping[str, Any] | Iterable[tuple[str, int, Any]],
) -> int:
    """Record true labels that arrived after the predictions; returns how many rows matched.

    ``labels`` is either a mapping ``request_id -> label`` (the label of every row of that
    request; a list or tuple gives one label per row, by position) or ``(request_id, row,
    label)`` triples. Labels are stored as text with ``label_ts`` = now (``None`` clears both).
    Unknown request ids match nothing. All updates are one transaction.
    """
    by_request: list[dict[str, Any]] = []
    by_row: list[dict[str, Any]] = []
    if isinstance(labels, Mapping):
        for request_id, value in labels.items():
            if isinstance(value, list | tuple):
                by_row.extend(
                    {"b_rid": str(request_id), "b_row": i, "b_label": _label_text(v)}
                    for i, v in enumerate(value)
                )
            else:
                by_request.append({"b_rid": str(request_id), "b_label": _label_text(value)})
    else:
        for item in labels:
            try:
                request_id, row, value = item
            except (TypeError, ValueError):
                raise TypeError(
                    "labels must be a mapping request_id -> label or (request_id, row, label) "
                    f"triples, not {type(labels).__name__} of {type(item).__name__}"
                ) from None
            by_row.append(
                {"b_rid": str(request_id), "b_row": int(row), "b_label": _label_text(value)}
            )
    if not by_request and not by_row:
        return 0
    now = datetime.now(UTC)
    for params in (*by_request, *by_row):  # a cleared label has no time either
        params["b_ts"] = None if params["b_label"] is None else now
    t = predictions
    values = {"label": sa.bindparam("b_label"), "label_ts": sa.bindparam("b_ts", type_=t.c.ts.type)}
    for_request = t.update().where(t.c.request_id == sa.bindparam("b_rid")).values(**values)
    for_row = for_request.where(t.c.row == sa.bindparam("b_row"))
    parsed, engine = _reader(url)
    matched = 0
    try:
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return 0
            for statement, params in ((for_request, by_request), (for_row, by_row)):
                if not params:
                    continue
                if engine.dialect.supports_sane_multi_rowcount:
                    matched += conn.execute(statement, params).rowcount
                else:  # pragma: no cover - every driver we ship counts executemany
                    matched += sum(conn.execute(statement, p).rowcount for p in params)
    except sa_exc.SQLAlchemyError as exc:
        raise PredictionLogError(
            f"attaching labels in the prediction log {_shown(parsed)} failed: "
            f"{_reason(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()
    return matched

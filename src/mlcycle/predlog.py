"""The prediction log: every prediction the service makes, stored for monitoring, audit and labels.

A :class:`PredictionLog` sits behind a SQLAlchemy URL: ``sqlite:///logs/predictions.db`` (a
relative path is relative to the current directory; missing folders are created) or
``postgresql+psycopg://user:password@host/db`` in production. It writes two tables, created if
missing. ``predictions`` holds one row per request (one :meth:`PredictionLog.submit` call), its
records and their outputs as JSON arrays:

=============  ==========================  ==================================================
column         type                        what
=============  ==========================  ==================================================
id             integer, primary key        autoincrement; the order requests were inserted in
request_id     text, not null, indexed     the request's id
ts             timestamp with time zone,   when the prediction was made (UTC)
               not null, indexed
records        integer, not null           how many records the request had (``n``)
model_name     text, not null              the model's name
model_version  text, nullable              the deployed version, if the service has one
model_id       text, not null, indexed     the model file's SHA-256 prefix (its identity)
inputs         text, not null              JSON of the records as received: an array of
                                           records, or an object whose ``"records"`` key holds
                                           that array (a ``/predict`` body, verbatim)
outputs        text, not null              JSON array of the answers, one per record:
                                           ``{"label": ..., "probabilities": {...}}`` or
                                           ``{"value": ...}``
=============  ==========================  ==================================================

``prediction_labels`` holds the true labels that arrive later (:func:`attach_labels`), one row
per labelled record, primary key ``(request_id, row)``:

=============  ==========================  ==================================================
request_id     text, not null              the request the record came in
row            integer, not null           the record's position in its request (0-based)
label          text, not null              the true label
ts             timestamp with time zone,   when the label was attached (UTC)
               not null
=============  ==========================  ==================================================

A row per request, not per record, because the writer thread shares the service's CPU (and
GIL): one insert and, when the service hands over the JSON it already has (the request body as
received, the bytes of the predictions it answered), no serialisation at all, whatever the
number of records. Counters, the queue bound and batch sizes still count records.

Writes are off the request path: :meth:`PredictionLog.submit` puts one request on a bounded
in-memory queue and returns at once; a background thread writes requests in batches, one
transaction per batch (whole requests up to ``batch_size`` records, or whatever is waiting
every ``flush_interval`` seconds). A full queue refuses the whole call (``submit`` returns
False, the service answers 503) instead of dropping a logged prediction. A failing database is
retried with backoff and reported through :mod:`logging`; records are only ever given up when
:meth:`PredictionLog.close` runs out of time, and then their number is logged and returned.
Messages never carry the URL's credentials.

SQLite runs in WAL mode with ``synchronous=NORMAL`` and a busy timeout, so several worker
processes can append to the same file. Create one :class:`PredictionLog` per process (after a
fork: the writer thread does not survive one).

:func:`read_log` reads the log back as a pandas frame with one row per record (``inputs`` and
``outputs`` as dicts, labels joined in), and :func:`attach_labels` records true labels.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import itertools
import json
import logging
import math
import operator
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from mlcycle.sources import redact_url

logger = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///predictions.db"
TABLE = "predictions"
LABELS_TABLE = "prediction_labels"
#: The columns of :func:`read_log`'s frame: one row per record.
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
#: What the writer inserts into ``predictions``, in this order: every column but ``id``.
INSERT_COLUMNS = (
    "request_id",
    "ts",
    "records",
    "model_name",
    "model_version",
    "model_id",
    "inputs",
    "outputs",
)
RETRY_FIRST_SECONDS = 0.05  # the first retry of a failed write waits this long, doubling
RETRY_MAX_SECONDS = 2.0  # up to this
LAST_CHUNK = 1024  # read_log(last=N) looks for its first request this many requests at a time,
LAST_CHUNK_MAX = 65_536  # growing to this
IN_CHUNK = 500  # request ids per IN (...) when attaching labels

SQLITE_INSERT = (
    f"INSERT INTO predictions ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
)
POSTGRES_COPY = f"COPY predictions ({', '.join(INSERT_COLUMNS)}) FROM STDIN"
POSTGRES_BINARY_COPY = f"{POSTGRES_COPY} (FORMAT BINARY)"
#: The PostgreSQL type of each of :data:`INSERT_COLUMNS` in our table, as ``format_type`` names
#: it and as psycopg's ``Copy.set_types`` takes it (for a binary COPY).
POSTGRES_TYPES = {
    "request_id": ("text", "text"),
    "ts": ("timestamp with time zone", "timestamptz"),
    "records": ("integer", "int4"),
    "model_name": ("text", "text"),
    "model_version": ("text", "text"),
    "model_id": ("text", "text"),
    "inputs": ("text", "text"),
    "outputs": ("text", "text"),
}

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
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("model_id", sa.Text, nullable=False, index=True),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
)
prediction_labels = sa.Table(
    LABELS_TABLE,
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
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


def _check_layout(conn: sa.Connection, table: sa.Table) -> None:
    """Refuse an existing ``table`` that lacks some of our columns (the log would fail on every
    write or read), naming them; the per-record ``predictions`` of earlier versions is named
    as such."""
    have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    missing = [c.name for c in table.columns if c.name not in have]
    if not missing:
        return
    message = f"table {table.name!r} exists with another layout: it lacks {', '.join(missing)}"
    if table is predictions and {"row", "label"} <= have:
        message += (
            " (it is the one-row-per-record layout of earlier versions, with columns row and "
            "label; rename it, e.g. ALTER TABLE predictions RENAME TO predictions_old, or log "
            "to another database)"
        )
    raise PredictionLogError(message)


def _create_tables(engine: sa.Engine) -> None:
    """Create ``predictions`` (with its indexes) and ``prediction_labels`` if missing (several
    processes may race to) and, on SQLite, switch the file to WAL mode (stored in the file);
    refuse tables of another layout."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        if str(mode).lower() != "wal":
            raise sa_exc.OperationalError("PRAGMA journal_mode=WAL", {}, f"journal mode {mode}")
    with engine.begin() as conn:
        for table in (predictions, prediction_labels):
            conn.execute(CreateTable(table, if_not_exists=True))
            _check_layout(conn, table)
        for index in sorted(predictions.indexes, key=lambda ix: str(ix.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))


def _binary_copy_types(engine: sa.Engine) -> list[str] | None:
    """The types for a binary COPY into ``predictions`` when its columns have exactly ours
    (binary COPY is 3 to 6 times cheaper for the client than text COPY, which escapes every
    character, but the server does not convert binary values: a table made by hand with, say,
    ``records bigint`` would refuse every row); None then, for a text COPY."""
    with engine.connect() as conn:
        found = dict(
            conn.exec_driver_sql(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'predictions'::regclass AND attnum > 0 AND NOT attisdropped"
            ).all()
        )
    if any(found.get(c) != POSTGRES_TYPES[c][0] for c in INSERT_COLUMNS):
        return None
    return [POSTGRES_TYPES[c][1] for c in INSERT_COLUMNS]


def _utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_default(obj: Any) -> Any:
    """JSON for what orjson does not know: other mappings and sequences, numpy values orjson
    leaves out (e.g. object arrays), dates, else the text."""
    if isinstance(obj, Mapping):
        return dict(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes):
        return list(obj)
    return str(obj)


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(obj: Any) -> str:
    """Compact JSON text, by orjson (the writer thread shares the GIL with the requests, so its
    time is the service's). NaN and infinities become null, as JSON has no such numbers."""
    return orjson.dumps(obj, default=_json_default, option=_ORJSON_OPTIONS).decode()


def _json_text(value: Any, what: str, records: bool) -> str:
    """``value`` (JSON text or bytes, kept verbatim, or a sequence to serialise) as the text to
    store; ``records``: the items must be mappings. Raises ValueError/TypeError for a value
    that can never be stored (the entry is dropped)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{what} are not UTF-8 text: {exc}") from None
    if type(value) is not list and type(value) is not tuple:
        value = list(value)
    if records:
        for i, record in enumerate(value):
            if type(record) is not dict and not isinstance(record, Mapping):
                raise TypeError(f"{what}[{i}] is a {type(record).__name__}, not a mapping")
    return _dumps(value)


def _sqlite_ts(ts: datetime) -> str:
    """``ts`` (UTC) as SQLAlchemy stores a DateTime in SQLite, so it reads back and compares."""
    return ts.replace(tzinfo=None).isoformat(" ", "microseconds")


class _SqliteTimes:
    """Times to store in SQLite, as SQLAlchemy stores a DateTime (so they read back and
    compare), from a UTC datetime or from microseconds since the epoch (the time of a
    :meth:`PredictionLog.submit` call). The date and time to the second is cached: the requests
    of a batch mostly share it, and datetime arithmetic and formatting would cost the writer
    several microseconds per request. One per writer thread."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, when: datetime | int) -> str:
        if isinstance(when, datetime):
            return _sqlite_ts(when)
        second, micro = divmod(when, 1_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{micro:06d}"


def _as_datetime(when: datetime | int) -> datetime:
    """A UTC datetime from a UTC datetime or microseconds since the epoch."""
    if isinstance(when, datetime):
        return when
    return datetime.fromtimestamp(when / 1e6, UTC)  # exact: floats resolve 0.25 us here


def _length(value: Any, what: str) -> int:
    """The number of items of ``value``, a sequence (not a mapping, not a one-shot iterator)."""
    if type(value) is list or type(value) is tuple:
        return len(value)
    if isinstance(value, Mapping) or not hasattr(value, "__len__"):
        raise TypeError(
            f"{what} must be a sequence (one item per record) or JSON text/bytes, "
            f"not a {type(value).__name__}"
        )
    return len(value)


def _row_level(exc: BaseException, dbapi: Any = None) -> bool:
    """Whether ``exc`` is about the rows (a value the database refuses), not the database being
    unavailable: then the batch is written request by request and only the bad ones are
    dropped. ``dbapi`` is the driver's module, for its own errors (PostgreSQL's COPY bypasses
    SQLAlchemy)."""
    if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
        return True
    if dbapi is not None and isinstance(exc, dbapi.DataError | dbapi.IntegrityError):
        return True
    if isinstance(exc, sa_exc.StatementError) and not isinstance(exc, sa_exc.DBAPIError):
        exc = exc.orig or exc
    return isinstance(exc, TypeError | ValueError | OverflowError)


# --- the writer ----------------------------------------------------------------------------

#: One accepted call on the queue: (monotonic time queued, records, request_id, model_name,
#: model_version, model_id, inputs, outputs, ts: a UTC datetime or, the time of the call,
#: microseconds since the epoch).
_Entry = tuple[float, int, Any, Any, Any, Any, Any, Any, datetime | int]


def _close_at_exit(ref: weakref.ref[PredictionLog]) -> None:
    log = ref()
    if log is not None:
        log.close()


class PredictionLog:
    """A bounded queue of requests' predictions and the thread that writes them to ``url``.

    ``submit(...)`` queues one request (its records and outputs) or refuses it; requests are
    written whole, in batches of up to ``batch_size`` records (more when one request brings
    more), at least every ``flush_interval`` seconds. At most ``max_queue`` records wait (a
    single request larger than that is taken when nothing waits). When full, ``submit`` returns
    False at once (``when_full="reject"``) or after waiting up to ``block_timeout`` seconds for
    room (``"block"``; it blocks the calling thread, so call it from a worker thread in async
    code). ``db_timeout`` bounds one wait for a lock (SQLite busy timeout) or a connection
    (connect timeout). The tables are created, and the database reached, before the
    constructor returns: a wrong URL fails at start-up with :class:`PredictionLogError`.
    Every counter counts records, not requests.
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
        # the column types for a binary COPY (None: text COPY), see _binary_copy_types
        self._copy_types: list[str] | None = None
        self._open(attempts=3)
        self._dbapi = self._engine.dialect.dbapi
        self._ts_value = _SqliteTimes() if self._mode == "sqlite" else _as_datetime

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # the writer waits on it
        self._room = threading.Condition(self._lock)  # blocked submitters and flush() wait
        self._queue: deque[_Entry] = deque()  # accepted calls, oldest first
        self._queued = 0  # records in _queue
        self._inflight = 0  # records taken by the writer, not yet written or given up
        self._accepted = 0
        self._written = 0
        self._failed = 0
        self._rejected = 0
        self._write_errors = 0
        self._batches = 0
        self._closing = False
        self._deadline = math.inf
        self._abandoned = False  # records were given up: the writer stops
        self._flush_now = False  # flush() asked for the queue to be written now
        self._lost = 0  # records given up when closing
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
        """Reach the database and create the tables, retrying a few times (another process may
        be creating them at the same moment)."""
        for attempt in range(attempts):
            try:
                _create_tables(self._engine)
                if self._mode == "copy":
                    self._copy_types = _binary_copy_types(self._engine)
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
        """Records accepted and not yet written (queued or being written): the queue gauge."""
        return self._queued + self._inflight

    @property
    def written(self) -> int:
        """Records written (committed) so far."""
        return self._written

    @property
    def failed(self) -> int:
        """Records accepted that will never be written: their request could not be stored
        (invalid UTF-8, refused by the database) or was given up when :meth:`close` ran out of
        time. Each is logged."""
        return self._failed

    @property
    def rejected(self) -> int:
        """Records refused by :meth:`submit` (queue full or closed): the service answered 503."""
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

    def submit(
        self,
        request_id: str,
        inputs: Sequence[Mapping[str, Any]] | str | bytes,
        outputs: Sequence[Any] | str | bytes,
        *,
        model_name: str,
        model_id: str,
        model_version: str | None = None,
        n: int | None = None,
        ts: datetime | None = None,
    ) -> bool:
        """Queue one request's records and outputs for writing; never waits on the database
        (with ``when_full="block"`` it may wait for room in the queue).

        ``inputs`` is either the records, a sequence of mappings (JSON-able: numpy values and
        dates are converted, NaN becomes null), or JSON text or UTF-8 bytes stored verbatim:
        an array of records or an object whose ``"records"`` key holds one (a ``/predict``
        body as received). ``outputs`` is one answer per record, a sequence or the JSON text
        or bytes of an array. ``n`` is the number of records: required with JSON inputs (they
        are not parsed here), else their length by default. ``ts`` (naive meaning UTC)
        defaults to now. Nothing is serialised or decoded here, so a call costs the same
        whatever ``n``: the writer thread does it, so do not change the sequences after
        submitting. JSON text is not checked either: :func:`read_log` refuses an entry whose
        arrays do not have ``n`` items.

        Returns True when the request was queued, False when it was not (queue full, or
        closed); an empty request (``n == 0``) is not queued and counts as accepted. A missing
        id or name, a length that disagrees with ``n``, or inputs that are neither a sequence
        nor JSON are programming errors: ValueError or TypeError, nothing queued.
        """
        if request_id is None or model_name is None or model_id is None:
            missing = [
                k
                for k, v in (
                    ("request_id", request_id),
                    ("model_name", model_name),
                    ("model_id", model_id),
                )
                if v is None
            ]
            raise ValueError(f"{', '.join(missing)} is None: every request needs them")
        if isinstance(inputs, str | bytes):
            if n is None:
                raise ValueError("n, the number of records, is needed when inputs is JSON text")
        else:
            size = _length(inputs, "inputs")
            if n is None:
                n = size
            elif n != size:
                raise ValueError(f"n is {n} but inputs holds {size} record(s)")
        if not isinstance(outputs, str | bytes) and _length(outputs, "outputs") != n:
            raise ValueError(f"{len(outputs)} output(s) for {n} record(s)")
        if type(n) is not int:
            n = operator.index(n)  # numpy integers too; TypeError for anything else
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        when = time.time_ns() // 1000 if ts is None else _utc(ts)
        with self._lock:
            if self._closing:
                self._rejected += n
                return False
            if not n:
                return True
            depth = self._queued + self._inflight  # self._fits(n), inlined: the hot path
            if (
                depth + n > self.max_queue
                and depth
                and (self.when_full == "reject" or not self._wait_for_room(n))
            ):
                self._rejected += n
                return False
            was = self._queued
            self._queue.append(
                (
                    time.monotonic(),
                    n,
                    request_id,
                    model_name,
                    model_version,
                    model_id,
                    inputs,
                    outputs,
                    when,
                )
            )
            self._queued += n
            self._accepted += n
            if was == 0 or was < self.batch_size <= self._queued:
                self._wake.notify()
        return True

    def _wait_for_room(self, n: int) -> bool:
        """Wait (lock held) up to ``block_timeout`` s for room for ``n`` records."""
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

    def attach_labels(
        self, labels: Iterable[tuple[str, int | None, Any]], flush_timeout: float = 10.0
    ) -> int:
        """:func:`attach_labels` of ``(request_id, row, label)`` triples on this log's
        database, after writing what is queued (a label may arrive before its prediction's
        batch was written); returns how many records matched. When fewer matched than labels
        were given, another worker process's log (which this one cannot flush) may still hold
        the predictions: the labels are attached again, once, after two flush intervals
        (labels are upserted, so twice is once). Blocks: call it from a worker thread in async
        code."""
        triples = list(labels)
        url = self._url.render_as_string(hide_password=False)
        self.flush(flush_timeout)
        matched = attach_labels(url, triples)
        if matched < len(triples):
            time.sleep(2 * self.flush_interval)
            matched = attach_labels(url, triples)
        return matched

    def close(self, timeout: float = 10.0) -> int:
        """Stop accepting requests, write everything queued, and stop the writer thread.

        Returns the number of accepted records still unwritten after ``timeout`` seconds (0
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
                entries = self._take()
                if entries is None:
                    return
                batch = self._convert(entries)
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

    def _take(self) -> list[_Entry] | None:
        """Wait until a batch is due, then take whole requests off the queue, up to
        ``batch_size`` records (at least one request); None when closed and empty."""
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
            entries, n = [], 0
            while self._queue and n < self.batch_size:
                entry = self._queue.popleft()
                entries.append(entry)
                n += entry[1]
            self._queued -= n
            self._inflight += n
            if not self._queued:
                self._flush_now = False
            return entries

    def _convert(self, entries: list[_Entry]) -> list[tuple]:
        """Insert values (:data:`INSERT_COLUMNS`) of the taken requests, their records and
        outputs serialised now if they are not JSON already; a request that cannot be
        converted (e.g. bytes that are not UTF-8) is dropped and logged: it would fail the same
        way every time."""
        batch: list[tuple] = []
        bad = 0
        as_db = self._ts_value
        for _, n, request_id, name, version, model_id, inputs, outputs, when in entries:
            try:
                batch.append(
                    (
                        request_id if type(request_id) is str else str(request_id),
                        as_db(when),
                        n,
                        name if type(name) is str else str(name),
                        version if version is None or type(version) is str else str(version),
                        model_id if type(model_id) is str else str(model_id),
                        inputs if type(inputs) is str else _json_text(inputs, "inputs", True),
                        outputs if type(outputs) is str else _json_text(outputs, "outputs", False),
                    )
                )
            except Exception as exc:
                bad += n
                logger.error(
                    "prediction log %s: dropped request %r (%d record(s)): %s",
                    self.url,
                    request_id,
                    n,
                    exc,
                )
        if bad:
            self._dropped(bad)
        return batch

    def _write(self, batch: list[tuple]) -> None:
        """Write ``batch`` in one transaction, retrying with backoff while the database is
        unavailable; requests the database refuses are found by writing them one by one."""
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
                    "prediction log %s: writing %d request(s) failed (attempt %d), retrying: %s",
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
                types = self._copy_types
                with cursor, cursor.copy(POSTGRES_BINARY_COPY if types else POSTGRES_COPY) as copy:
                    if types:
                        copy.set_types(types)
                    for values in batch:
                        copy.write_row(values)
            else:
                conn.execute(
                    self._insert, [dict(zip(INSERT_COLUMNS, v, strict=True)) for v in batch]
                )
        records = sum(values[2] for values in batch)
        with self._lock:
            self._batches += 1
            if self._abandoned:  # close() counted these as lost; they made it after all
                self._failed -= records
                self._lost = max(0, self._lost - records)
                logger.warning(
                    "prediction log %s: %d record(s) counted as lost were written after all",
                    self.url,
                    records,
                )
            else:
                self._inflight -= records
            self._written += records
            self._room.notify_all()

    def _write_one_by_one(self, batch: list[tuple]) -> list[tuple]:
        """Write each request alone, dropping (and logging) those the database refuses;
        returns the requests left when the database itself fails, to retry as a batch."""
        for i, values in enumerate(batch):
            if self._abandoned:
                return []
            try:
                self._commit([values])
            except Exception as exc:
                if not _row_level(exc, self._dbapi):
                    return batch[i:]
                logger.error(
                    "prediction log %s: the database refused request %r (%d record(s)): %s",
                    self.url,
                    values[0],
                    values[2],
                    _reason(exc, self._url),
                )
                self._dropped(values[2])
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
        """(Lock held.) Count every record not yet written as lost, log it, and stop the
        writer."""
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


def _ts_column(column: sa.Column, dialect: str) -> sa.ColumnElement[Any]:
    """``column`` as read, for :func:`_timestamps`: SQLite's text as stored, PostgreSQL's
    microseconds since the epoch (exact: ``extract`` gives a numeric), else the driver's
    datetimes. Converting a million datetime objects (SQLAlchemy's for SQLite, psycopg's) costs
    seconds; text or integers, a fraction of that."""
    if dialect == "sqlite":
        return sa.type_coerce(column, sa.Text)
    if dialect == "postgresql":
        return sa.cast(sa.func.round(sa.extract("epoch", column) * 1_000_000), sa.BigInteger)
    return column


def _timestamps(values: Sequence[Any]) -> pd.DatetimeIndex:
    """``values`` (ISO text of UTC times, microseconds since the epoch, or datetimes) as UTC
    timestamps in microseconds."""
    if values and isinstance(values[0], int):
        index = pd.to_datetime(np.asarray(values, dtype=np.int64), unit="us", utc=True)
    elif values and isinstance(values[0], str):
        index = pd.to_datetime(values, utc=True, format="ISO8601")
    else:
        index = pd.to_datetime(list(values), utc=True)
    return pd.DatetimeIndex(index).as_unit("us")


def _last_cut(conn: sa.Connection, where: list[Any], last: int) -> tuple[int, int] | None:
    """Where the last ``last`` records passing ``where`` begin: the id of the oldest request
    holding some of them and how many of its records come before; None when all of them are
    fewer. Reads ids and record counts backwards in growing chunks, not the whole table."""
    t = predictions
    need, before, chunk = last, None, LAST_CHUNK
    while True:
        size = max(1, min(chunk, need))  # a request holds at least one record
        query = sa.select(t.c.id, t.c.records).where(*where)
        if before is not None:
            query = query.where(t.c.id < before)
        rows = conn.execute(query.order_by(t.c.id.desc()).limit(size)).all()
        for id_, records in rows:
            if records >= need:
                return id_, records - need
            need -= records
        if len(rows) < size:
            return None
        before = rows[-1][0]
        chunk = min(chunk * 4, LAST_CHUNK_MAX)


def _lenient_loads(text: Any) -> Any:
    """orjson, else the standard library (which takes NaN, Infinity and 1e400)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _parse_entries(
    ids: Sequence[int],
    rids: Sequence[str],
    counts: Sequence[int],
    inputs: Sequence[Any],
    outputs: Sequence[Any],
) -> tuple[list[Any], list[Any]]:
    """Each entry's records and outputs, parsed once (orjson); an entry whose JSON is not
    arrays of its ``records`` items is a :class:`PredictionLogError`. The checks run over
    whole columns (``map``), not entry by entry in Python: a million requests of one record
    are a million entries."""
    loads = orjson.loads
    try:
        records_of = list(map(loads, inputs))
        outputs_of = list(map(loads, outputs))
    except orjson.JSONDecodeError:
        # JSON orjson refuses but the service's parser (the standard library's) accepted, e.g.
        # 1e400 in a field the model does not use: read with the standard library
        records_of, outputs_of = [], []
        for id_, rid, text_in, text_out in zip(ids, rids, inputs, outputs, strict=True):
            try:
                records_of.append(_lenient_loads(text_in))
                outputs_of.append(_lenient_loads(text_out))
            except ValueError as exc:
                raise PredictionLogError(
                    f"entry id {id_} (request {rid!r}) is not valid JSON: {exc}"
                ) from None
    kinds = set(map(type, records_of))
    if dict in kinds:  # {"records": [...], ...}: a request body as received
        records_of = [r.get("records") if type(r) is dict else r for r in records_of]
        kinds = set(map(type, records_of))
    counts = list(counts)
    for what, parsed, ok in (
        ("inputs", records_of, kinds == {list}),
        ("outputs", outputs_of, set(map(type, outputs_of)) == {list}),
    ):
        if ok and list(map(len, parsed)) == counts:
            continue
        for id_, rid, n, value in zip(ids, rids, counts, parsed, strict=True):
            if type(value) is not list or len(value) != n:
                raise PredictionLogError(
                    f"entry id {id_} (request {rid!r}): its {what} are not an array "
                    + ('(or an object with one in "records") ' if what == "inputs" else "")
                    + f"of its {n} record(s)"
                )
    return records_of, outputs_of


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: building millions of dicts (JSON records) would
    otherwise start it over and over, each pass walking every object built so far (it costs
    more than the parsing). Nothing here makes reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _frame(rows: list[Any], labels: list[Any], skip: int) -> pd.DataFrame:
    """The per-record frame of ``rows`` (requests, in id order; the first one's first ``skip``
    records left out) with ``labels`` (request_id, row, ts, label) joined in."""
    ids, rids, ts, counts, names, versions, model_ids, inputs, outputs = map(
        list, zip(*rows, strict=True)
    )
    records_of, outputs_of = _parse_entries(ids, rids, counts, inputs, outputs)
    if skip:
        records_of[0], outputs_of[0] = records_of[0][skip:], outputs_of[0][skip:]
        counts[0] -= skip
    n = np.asarray(counts, dtype=np.int64)
    total = int(n.sum())
    starts = np.cumsum(n) - n
    row = np.arange(total, dtype=np.int64) - np.repeat(starts, n)
    row[: n[0]] += skip

    def each(values: list[Any]) -> np.ndarray:  # a request's value on each of its records
        return np.repeat(np.asarray(values, dtype=object), n)

    label = np.full(total, None, dtype=object)
    label_ts = np.full(total, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    if labels:
        l_rids, l_rows, l_ts, l_labels = zip(*labels, strict=True)
        l_us = _timestamps(l_ts).asi8
        found: dict[str, list[tuple[int, int]]] = {}
        for j, (rid, r) in enumerate(zip(l_rids, l_rows, strict=True)):
            found.setdefault(rid, []).append((r, j))
        for i, rid in enumerate(rids):
            if rid not in found:
                continue
            low = skip if i == 0 else 0  # the first row of the request in the frame
            high, base = low + counts[i], int(starts[i])
            for r, j in found[rid]:
                if low <= r < high:
                    label[base + r - low] = l_labels[j]
                    label_ts[base + r - low] = l_us[j]
    stamps = pd.DatetimeIndex(label_ts.view("datetime64[us]")).tz_localize(UTC)
    return pd.DataFrame(
        {
            "id": np.repeat(np.asarray(ids, dtype=np.int64), n),
            "request_id": each(rids),
            "row": row,
            "ts": _timestamps(ts).repeat(n).array,
            "model_name": each(names),
            "model_version": each(versions),
            "model_id": each(model_ids),
            "inputs": list(itertools.chain.from_iterable(records_of)),
            "outputs": list(itertools.chain.from_iterable(outputs_of)),
            "label": label,
            "label_ts": stamps.array,
        }
    )


def read_log(
    url: str | os.PathLike[str] = DEFAULT_URL,
    *,
    last: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
    model_id: str | None = None,
) -> pd.DataFrame:
    """The logged predictions as a frame with one row per record, in ``(id, row)`` order (the
    order requests were inserted in, then each request's records), one column per name in
    :data:`COLUMNS`.

    ``id`` is the request's table id (its records share it), ``row`` the record's position in
    its request. ``inputs`` and ``outputs`` hold each record's parsed JSON as dicts (not
    expanded into columns: the frame's shape does not depend on the model;
    ``pd.DataFrame(frame["inputs"].tolist())`` gives the records). ``label`` and ``label_ts``
    come from ``prediction_labels`` (missing: NaN/NaT). ``ts`` and ``label_ts`` are UTC
    timestamps. Filters apply to requests: ``since <= ts < until`` (a naive datetime is UTC),
    ``model_version``, ``model_id``; ``last`` keeps the last ``last`` records that pass them
    (the oldest request kept may lose its first records), found without reading the rest of
    the table. A database without the table (nothing logged yet) gives an empty frame; a
    missing SQLite file, or an entry whose JSON does not hold its number of records, is a
    :class:`PredictionLogError`.
    """
    if last is not None and last < 0:
        raise ValueError(f"last must be >= 0, not {last}")
    t, lt = predictions, prediction_labels
    where: list[Any] = []
    if since is not None:
        where.append(t.c.ts >= _utc(since))
    if until is not None:
        where.append(t.c.ts < _utc(until))
    if model_version is not None:
        where.append(t.c.model_version == model_version)
    if model_id is not None:
        where.append(t.c.model_id == model_id)
    parsed, engine = _reader(url)
    dialect = engine.dialect.name
    try:
        with _no_gc():  # fetching builds millions of objects too
            with engine.connect() as conn:
                inspector = sa.inspect(conn)
                if not inspector.has_table(TABLE) or last == 0:
                    return _empty_log()
                _check_layout(conn, t)
                skip = 0
                if last is not None:
                    cut = _last_cut(conn, where, last)
                    if cut is not None:
                        where.append(t.c.id >= cut[0])
                        skip = cut[1]
                query = sa.select(
                    t.c.id,
                    t.c.request_id,
                    _ts_column(t.c.ts, dialect),
                    t.c.records,
                    t.c.model_name,
                    t.c.model_version,
                    t.c.model_id,
                    t.c.inputs,
                    t.c.outputs,
                )
                rows = conn.execute(query.where(*where).order_by(t.c.id)).all()
                labels: list[Any] = []
                if rows and inspector.has_table(LABELS_TABLE):
                    query = sa.select(
                        lt.c.request_id, lt.c.row, _ts_column(lt.c.ts, dialect), lt.c.label
                    )
                    if where:
                        query = query.where(
                            lt.c.request_id.in_(sa.select(t.c.request_id).where(*where))
                        )
                    labels = conn.execute(query).all()
            if not rows:
                return _empty_log()
            return _frame(rows, labels, skip)
    except PredictionLogError as exc:
        raise PredictionLogError(f"prediction log {_shown(parsed)}: {exc}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise PredictionLogError(
            f"reading the prediction log {_shown(parsed)} failed: {_reason(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()


def _label_text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return value if isinstance(value, str) else str(value)


def _records_per_request(conn: sa.Connection, request_ids: Iterable[str]) -> dict[str, int]:
    """How many records each of ``request_ids`` that was logged has (the most, when it was
    logged more than once)."""
    t = predictions
    wanted = sorted(request_ids)
    sizes: dict[str, int] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        query = (
            sa.select(t.c.request_id, sa.func.max(t.c.records))
            .where(t.c.request_id.in_(wanted[i : i + IN_CHUNK]))
            .group_by(t.c.request_id)
        )
        sizes.update((rid, int(n)) for rid, n in conn.execute(query))
    return sizes


def _store_labels(conn: sa.Connection, chosen: Mapping[tuple[str, int], str | None]) -> None:
    """Upsert the labels in ``chosen`` ((request_id, row) -> label), deleting those that are
    None: INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL, delete then insert
    elsewhere."""
    lt = prediction_labels
    now = datetime.now(UTC)
    keep = [
        {"request_id": rid, "row": row, "label": label, "ts": now}
        for (rid, row), label in chosen.items()
        if label is not None
    ]
    drop = [{"b_rid": rid, "b_row": row} for (rid, row), label in chosen.items() if label is None]
    dialect = conn.dialect.name
    insert: Any
    if dialect in ("sqlite", "postgresql"):
        insert = (sqlite_dialect if dialect == "sqlite" else pg_dialect).insert(lt)
        insert = insert.on_conflict_do_update(
            index_elements=[lt.c.request_id, lt.c.row],
            set_={"label": insert.excluded.label, "ts": insert.excluded.ts},
        )
    else:
        drop += [{"b_rid": k["request_id"], "b_row": k["row"]} for k in keep]
        insert = lt.insert()
    if drop:
        delete = lt.delete().where(
            lt.c.request_id == sa.bindparam("b_rid"), lt.c.row == sa.bindparam("b_row")
        )
        conn.execute(delete, drop)
    if keep:
        conn.execute(insert, keep)


def attach_labels(
    url: str | os.PathLike[str],
    labels: Mapping[str, Any] | Iterable[tuple[str, int, Any]],
) -> int:
    """Record true labels that arrived after the predictions; returns how many records
    matched.

    ``labels`` is either a mapping ``request_id -> label`` (the label of every record of that
    request; a list or tuple gives one label per record, by position) or ``(request_id, row,
    label)`` triples (``row`` None: every record of the request). Only logged records get a
    label: a known request id and ``0 <= row <`` its number of records; the rest match
    nothing. Labels are stored as text in ``prediction_labels`` with ``ts`` = now, replacing an
    earlier label; ``None`` removes it. A request id logged more than once (a client reusing
    ids) shares its labels by position: row ``i`` labels record ``i`` of each. All changes are
    one transaction.
    """
    whole: dict[str, str | None] = {}
    by_row: dict[tuple[str, int], str | None] = {}
    if isinstance(labels, Mapping):
        for request_id, value in labels.items():
            if isinstance(value, list | tuple):
                for i, v in enumerate(value):
                    by_row[(str(request_id), i)] = _label_text(v)
            else:
                whole[str(request_id)] = _label_text(value)
    else:
        for item in labels:
            try:
                request_id, row, value = item
            except (TypeError, ValueError):
                raise TypeError(
                    "labels must be a mapping request_id -> label or (request_id, row, label) "
                    f"triples, not {type(labels).__name__} of {type(item).__name__}"
                ) from None
            if row is None:  # every record of the request
                whole[str(request_id)] = _label_text(value)
            else:
                by_row[(str(request_id), int(row))] = _label_text(value)
    if not whole and not by_row:
        return 0
    parsed, engine = _reader(url)
    chosen: dict[tuple[str, int], str | None] = {}
    try:
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table(TABLE):
                return 0
            _check_layout(conn, predictions)
            conn.execute(CreateTable(prediction_labels, if_not_exists=True))
            _check_layout(conn, prediction_labels)
            sizes = _records_per_request(conn, {*whole, *(rid for rid, _ in by_row)})
            for rid, label in whole.items():
                chosen.update(((rid, row), label) for row in range(sizes.get(rid, 0)))
            for (rid, row), label in by_row.items():
                if 0 <= row < sizes.get(rid, 0):
                    chosen[(rid, row)] = label
            if chosen:
                _store_labels(conn, chosen)
    except PredictionLogError as exc:
        raise PredictionLogError(f"prediction log {_shown(parsed)}: {exc}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise PredictionLogError(
            f"attaching labels in the prediction log {_shown(parsed)} failed: "
            f"{_reason(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()
    return len(chosen)


def labels_from_file(path: str | os.PathLike[str]) -> list[tuple[str, int | None, str]]:
    """``(request_id, row, label)`` triples from a CSV, Parquet or JSON Lines file with the
    columns ``request_id``, ``label`` and optionally ``row`` (empty: every record of the
    request), for :func:`attach_labels`. Ids and labels are read as text (``007`` keeps its
    zeros). A missing column, an empty id or label, or a row that is not a whole number >= 0
    is a ValueError naming the file, the column and the first lines."""
    from mlcycle.io import read_table

    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except (ValueError, OSError, pd.errors.ParserError) as exc:
            raise ValueError(f"{path}: cannot read as CSV: {exc}") from None
    else:
        frame = read_table(path)
    missing = [c for c in ("request_id", "label") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; a labels file has request_id, label and "
            f"optionally row (it has {list(frame.columns)[:10]})"
        )

    def text(column: str) -> list[str]:
        values = [
            "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
            for v in frame[column].tolist()
        ]
        empty = [i for i, v in enumerate(values) if not v]
        if empty:
            raise ValueError(
                f"{path}: column {column!r} is empty in {len(empty)} record(s), first at "
                f"record(s) {empty[:5]} (0-based)"
            )
        return values

    ids, labels = text("request_id"), text("label")
    rows: list[int | None] = [None] * len(frame)
    if "row" in frame.columns:
        bad = []
        for i, v in enumerate(frame["row"].tolist()):
            if v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == "":
                continue
            try:
                number = float(str(v).strip())
            except ValueError:
                number = -1.0
            if not number.is_integer() or number < 0:
                bad.append(i)
            else:
                rows[i] = int(number)
        if bad:
            raise ValueError(
                f"{path}: column 'row' must hold whole numbers >= 0 (or be empty); it does not "
                f"in {len(bad)} record(s), first at record(s) {bad[:5]} (0-based)"
            )
    return list(zip(ids, rows, labels, strict=True))

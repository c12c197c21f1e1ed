"""The prediction log's store: the tables, the engines that reach them, and what differs
between SQLite and PostgreSQL (URLs, pragmas, timestamps, the fastest way to insert).

Internal to :mod:`mlcycle.predlog`: the writer, the reader and the labels share it. Every
message it makes names the URL without its credentials.
"""

from __future__ import annotations

import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateIndex, CreateTable

from mlcycle.sources import redact_url

DEFAULT_URL = "sqlite:///predictions.db"
TABLE = "predictions"
LABELS_TABLE = "prediction_labels"
LABEL_CHANGES_TABLE = "prediction_label_changes"
SHADOWS_TABLE = "prediction_shadows"

#: Who answered a logged request: production, or the canary (:mod:`mlcycle.registry`'s stages).
PROD, CANARY = "prod", "canary"
ROLES = (PROD, CANARY)
#: The role of a writer row that goes to ``prediction_shadows``: a shadow's outputs.
SHADOW = "shadow"

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
    "role",
)
#: What the writer inserts into ``prediction_shadows``, in this order: every column but ``id``.
SHADOW_COLUMNS = ("request_id", "ts", "model_name", "model_version", "model_id", "outputs")

# bandit B608 (SQL built from strings): our own column names; the values are bound parameters
SQLITE_INSERT = (
    f"INSERT INTO predictions ({', '.join(INSERT_COLUMNS)}) "  # nosec B608
    f"VALUES ({', '.join('?' * len(INSERT_COLUMNS))})"
)
# bandit B608 (SQL built from strings): our own table and column names; values bound
SQLITE_SHADOW_INSERT = (
    f"INSERT INTO {SHADOWS_TABLE} ({', '.join(SHADOW_COLUMNS)}) "  # nosec B608
    f"VALUES ({', '.join('?' * len(SHADOW_COLUMNS))})"
)
POSTGRES_COPY = f"COPY predictions ({', '.join(INSERT_COLUMNS)}) FROM STDIN"
POSTGRES_SHADOW_COPY = f"COPY {SHADOWS_TABLE} ({', '.join(SHADOW_COLUMNS)}) FROM STDIN"
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
    "role": ("text", "text"),
}

metadata = sa.MetaData()


def _serial_id() -> sa.Column:
    """A table's ``id``: BIGSERIAL on PostgreSQL; on SQLite INTEGER PRIMARY KEY, the only form
    that is the fast rowid alias."""
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


predictions = sa.Table(
    TABLE,
    metadata,
    _serial_id(),
    sa.Column("request_id", sa.Text, nullable=False, index=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("records", sa.Integer, nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("model_id", sa.Text, nullable=False, index=True),
    sa.Column("inputs", sa.Text, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
    # who answered: "prod" or "canary" (a log created before it existed gets the column, its
    # rows "prod": only production answered then)
    sa.Column("role", sa.Text, nullable=False, server_default=PROD),
)
prediction_labels = sa.Table(
    LABELS_TABLE,
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("row", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    # who gave the current label (a credential's name, "anonymous", "cli:<user>"); null for
    # labels given before it was recorded (a log created by an earlier version gets the column)
    sa.Column("labelled_by", sa.Text),
)
#: The audit of label changes: a row per label given, replaced or removed, never updated.
prediction_label_changes = sa.Table(
    LABEL_CHANGES_TABLE,
    metadata,
    _serial_id(),
    sa.Column("request_id", sa.Text, nullable=False, index=True),
    sa.Column("row", sa.Integer, nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("labelled_by", sa.Text, nullable=False),
    sa.Column("previous", sa.Text),  # null: the record had no label
    sa.Column("label", sa.Text),  # null: the label was removed
)
#: The shadow's outputs: a row per request the shadow scored (outputs as ``predictions``'s).
prediction_shadows = sa.Table(
    SHADOWS_TABLE,
    metadata,
    _serial_id(),
    sa.Column("request_id", sa.Text, nullable=False, index=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text),
    sa.Column("model_id", sa.Text, nullable=False),
    sa.Column("outputs", sa.Text, nullable=False),
)
#: Columns a table made by an earlier version may lack, added by :func:`create_tables` (with
#: their SQL): reading such a log before it is written to again takes their default.
ADDED_COLUMNS = {
    TABLE: {"role": f"TEXT NOT NULL DEFAULT '{PROD}'"},
    LABELS_TABLE: {"labelled_by": "TEXT"},
}


class PredictionLogError(Exception):
    """The prediction log cannot be opened or read; the message names the (redacted) URL."""


# --- URLs, engines, messages -----------------------------------------------------------------


def parse_url(url: str | os.PathLike[str]) -> sa.URL:
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


def shown(url: sa.URL) -> str:
    """The URL without user, password and query: safe for messages."""
    return redact_url(url.render_as_string(hide_password=True))


def reason(exc: BaseException, url: sa.URL) -> str:
    """The driver's message (not SQLAlchemy's, which repeats the SQL and the rows), on one line,
    without the password."""
    orig = getattr(exc, "orig", None)
    text = " ".join(str(orig if orig is not None else exc).split()) or type(exc).__name__
    if url.password:
        password = str(url.password)
        for secret in sorted({password, quote(password), quote_plus(password)}, key=len)[::-1]:
            text = text.replace(secret, "***")
    return text[:500]


def make_engine(url: sa.URL, *, writer: bool, timeout: float) -> sa.Engine:
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
            f"prediction log {shown(url)}: no driver for {url.drivername!r} is installed: "
            f"{reason(exc, url)}"
        ) from None


def reader_engine(url: str | os.PathLike[str]) -> tuple[sa.URL, sa.Engine]:
    """The parsed ``url`` and an engine to read it (or attach labels) once: no pool."""
    parsed = parse_url(url)
    return parsed, make_engine(parsed, writer=False, timeout=10.0)


def check_layout(conn: sa.Connection, table: sa.Table) -> set[str]:
    """The columns of an existing ``table``; refuse one that lacks some of ours (the log would
    fail on every write or read), naming them, but for those an earlier version did not have
    (:data:`ADDED_COLUMNS`); the per-record ``predictions`` of earlier versions is named as
    such."""
    have = {c["name"] for c in sa.inspect(conn).get_columns(table.name)}
    added = ADDED_COLUMNS.get(table.name, {})
    missing = [c.name for c in table.columns if c.name not in have and c.name not in added]
    if not missing:
        return have
    message = f"table {table.name!r} exists with another layout: it lacks {', '.join(missing)}"
    if table is predictions and {"row", "label"} <= have:
        message += (
            " (it is the one-row-per-record layout of earlier versions, with columns row and "
            "label; rename it, e.g. ALTER TABLE predictions RENAME TO predictions_old, or log "
            "to another database)"
        )
    raise PredictionLogError(message)


def create_tables(engine: sa.Engine) -> None:
    """Create ``predictions`` and ``prediction_shadows`` (with their indexes; an earlier
    version's ``predictions`` gets the columns it lacks, :func:`add_columns`) and the label
    tables (:func:`create_label_tables`) if missing (several processes may race to) and, on SQLite,
    switch the file to WAL mode (stored in the file); refuse tables of another layout."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode=WAL").scalar()
        if str(mode).lower() != "wal":
            raise sa_exc.OperationalError("PRAGMA journal_mode=WAL", {}, f"journal mode {mode}")
    with engine.begin() as conn:
        conn.execute(CreateTable(predictions, if_not_exists=True))
        check_layout(conn, predictions)
        add_columns(conn, TABLE)
        conn.execute(CreateTable(prediction_shadows, if_not_exists=True))
        check_layout(conn, prediction_shadows)
        for table in (predictions, prediction_shadows):
            for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                conn.execute(CreateIndex(index, if_not_exists=True))
        create_label_tables(conn)


def add_columns(conn: sa.Connection, table: str) -> None:
    """Give ``table``, made by an earlier version, the columns it lacks
    (:data:`ADDED_COLUMNS`), in ``conn``'s transaction; several processes may race to."""
    for column, sql in ADDED_COLUMNS[table].items():
        if column in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            continue
        if conn.dialect.name == "postgresql":  # several workers may start at once
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql}")
            continue
        try:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {sql}")
        except sa_exc.OperationalError:  # added meanwhile by another process (SQLite)
            if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
                raise


def create_label_tables(conn: sa.Connection) -> None:
    """Create ``prediction_labels`` and ``prediction_label_changes`` if missing, in ``conn``'s
    transaction, and give a ``prediction_labels`` made by an earlier version the column
    ``labelled_by`` (null for its labels) instead of refusing it; refuse other layouts."""
    for table in (prediction_labels, prediction_label_changes):
        conn.execute(CreateTable(table, if_not_exists=True))
    add_columns(conn, LABELS_TABLE)
    for table in (prediction_labels, prediction_label_changes):
        check_layout(conn, table)
    for index in sorted(prediction_label_changes.indexes, key=lambda ix: str(ix.name)):
        conn.execute(CreateIndex(index, if_not_exists=True))


def binary_copy_types(engine: sa.Engine) -> list[str] | None:
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


def insert_mode(url: sa.URL) -> str:
    """How :func:`insert_rows` inserts into ``url``: ``"sqlite"`` (the driver's
    executemany), ``"copy"`` (PostgreSQL's COPY through psycopg 3) or ``"core"`` (SQLAlchemy's
    executemany, any other database)."""
    if url.get_backend_name() == "sqlite":
        return "sqlite"
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        return "copy"
    return "core"


def insert_shadows(conn: sa.Connection, mode: str, rows: list[tuple]) -> None:
    """Insert ``rows`` (values of :data:`SHADOW_COLUMNS`) into ``prediction_shadows`` on
    ``conn``, in its transaction, as :func:`insert_rows` does (text COPY on PostgreSQL)."""
    if mode == "sqlite":
        conn.exec_driver_sql(SQLITE_SHADOW_INSERT, rows)
    elif mode == "copy":
        cursor = conn.connection.driver_connection.cursor()
        with cursor, cursor.copy(POSTGRES_SHADOW_COPY) as copy:
            for values in rows:
                copy.write_row(values)
    else:
        conn.execute(
            prediction_shadows.insert(), [dict(zip(SHADOW_COLUMNS, v, strict=True)) for v in rows]
        )


def insert_rows(
    conn: sa.Connection, mode: str, rows: list[tuple], copy_types: list[str] | None
) -> None:
    """Insert ``rows`` (values of :data:`INSERT_COLUMNS`) into ``predictions`` on ``conn``, in
    its transaction, the :func:`insert_mode` way: SQLite straight through the driver's
    ``executemany`` (SQLAlchemy's per-row parameter handling would cost as much as SQLite
    itself), PostgreSQL with ``COPY`` (about twice as fast as a multi-row INSERT; binary with
    ``copy_types``, see :func:`binary_copy_types`), anything else through SQLAlchemy."""
    if mode == "sqlite":
        conn.exec_driver_sql(SQLITE_INSERT, rows)
    elif mode == "copy":
        cursor = conn.connection.driver_connection.cursor()
        with cursor, cursor.copy(POSTGRES_BINARY_COPY if copy_types else POSTGRES_COPY) as copy:
            if copy_types:
                copy.set_types(copy_types)
            for values in rows:
                copy.write_row(values)
    else:
        conn.execute(
            predictions.insert(), [dict(zip(INSERT_COLUMNS, v, strict=True)) for v in rows]
        )


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_ts(ts: datetime) -> str:
    """``ts`` (UTC) as SQLAlchemy stores a DateTime in SQLite, so it reads back and compares."""
    return ts.replace(tzinfo=None).isoformat(" ", "microseconds")


class SqliteTimes:
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


def as_datetime(when: datetime | int) -> datetime:
    """A UTC datetime from a UTC datetime or microseconds since the epoch."""
    if isinstance(when, datetime):
        return when
    return datetime.fromtimestamp(when / 1e6, UTC)  # exact: floats resolve 0.25 us here

"""The prediction log's bounds: what one request may store, and how much the log may hold.

- **One request's inputs** over ``max_record_bytes`` are stored as a marker, :func:`marker`
  (``{"omitted": {"bytes": N, "limit": M}}``), with the outputs; the request was scored and
  answered all the same. :func:`read_log <mlcycle.predlog.read_log>` leaves such requests out
  of its frame (nothing downstream can use outputs without their inputs) and says how many
  records it left out.
- **Retention**, :func:`prune`: the oldest requests go, with their labels and shadow
  outputs, once older than the retention or while the log is over its size bound (down to
  :data:`LOW_WATER` of it, so a log at its bound is not pruned at every write). The size is
  what the database reports the log takes: SQLite, the file's pages in use (page count minus
  free pages; a new file is made with ``auto_vacuum=INCREMENTAL`` and the pages a prune frees
  are given back, so the file shrinks); PostgreSQL, the rows' stored size (``pg_column_size``
  of each value, TOAST included, compressed as stored, plus :data:`PG_ROW_OVERHEAD` a row),
  because ``pg_total_relation_size`` keeps counting deleted rows until a VACUUM and then keeps
  the space for reuse: it never goes down after a prune. Autovacuum makes that space
  reusable, so the tables' files stay near the bound (plus indexes).

Labelled requests go as the others do: the bound is the disk's protection and must hold
whatever share of the log is labelled; ``mlcycle retrain`` exports labelled records into the
training data, where they are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from mlcycle.predlog.store import prediction_labels, prediction_shadows, predictions

OMITTED = "omitted"  # the marker's key
LOW_WATER = 0.9  # a log over its size bound is pruned down to this share of it
CHUNK = 500  # requests deleted per statement (and ids per IN (...))
ROUNDS = 8  # size checks per prune: each round deletes its estimate of the excess
# PostgreSQL: bytes a row takes besides its values (tuple header, line pointer, the entries of
# the id, ts, request_id and model_id indexes), added to the values' stored size.
PG_ROW_OVERHEAD = 160


def check(**values: float | None) -> None:
    """Each bound above 0 and finite, or None (no bound); ValueError naming the one that is
    not."""
    for name, value in values.items():
        if value is not None and not (0 < value < math.inf):
            raise ValueError(f"{name} must be above 0 (or None: no bound), not {value}")


def over(text: str | bytes, limit: int) -> int:
    """The UTF-8 size of ``text`` when it is over ``limit`` bytes, else 0. Cheap on the request
    path: ``isascii`` is a flag of the string, and text too short to pass the limit even at four
    bytes a character is not encoded."""
    if isinstance(text, bytes) or text.isascii():
        size = len(text)
    elif len(text) * 4 <= limit:
        return 0
    else:
        size = len(text.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def marker(size: int, limit: int) -> str:
    """What the log stores instead of inputs of ``size`` bytes, over ``limit``."""
    return orjson.dumps({OMITTED: {"bytes": size, "limit": limit}}).decode()


def is_marker(parsed: Any) -> bool:
    """Whether parsed stored inputs are :func:`marker`'s (a request body always holds
    ``records``)."""
    return type(parsed) is dict and OMITTED in parsed and "records" not in parsed


def supports_size(engine: sa.Engine) -> bool:
    """Whether :func:`used_bytes` can measure this database."""
    return engine.dialect.name in ("sqlite", "postgresql")


def prepare(engine: sa.Engine) -> None:
    """On a new SQLite file (no tables yet), turn on incremental auto-vacuum, so the pages a
    prune frees can be given back and the file shrinks (a file made before keeps its free
    pages and reuses them). Needs no table yet, so it costs nothing."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        tables = conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
        mode = conn.exec_driver_sql("PRAGMA auto_vacuum").scalar()
        if not tables and mode != 2:
            conn.exec_driver_sql("PRAGMA auto_vacuum=INCREMENTAL")
            conn.exec_driver_sql("VACUUM")  # applies it to the (empty) file


def used_bytes(conn: sa.Connection) -> int:
    """The bytes the log takes, as the database reports them (see the module's docstring)."""
    if conn.dialect.name == "sqlite":
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar() or 0
        free = conn.exec_driver_sql("PRAGMA freelist_count").scalar() or 0
        size = conn.exec_driver_sql("PRAGMA page_size").scalar() or 0
        return (pages - free) * size
    total = 0
    for table in (predictions, prediction_labels, prediction_shadows):
        sizes = [sa.func.coalesce(sa.func.pg_column_size(c), 0) for c in table.columns]
        row = sa.func.sum(sum(sizes[1:], sizes[0]) + PG_ROW_OVERHEAD)
        total += conn.execute(sa.select(sa.func.coalesce(row, 0))).scalar() or 0
    return int(total)


def _delete(conn: sa.Connection, rows: Sequence[Any]) -> None:
    """Delete the requests ``rows`` ((id, request_id)) and the labels and shadow outputs of
    those request ids no longer logged (a request id may be logged more than once)."""
    t = predictions
    conn.execute(sa.delete(t).where(t.c.id.in_([r[0] for r in rows])))
    rids = sorted({r[1] for r in rows})
    for other in (prediction_labels, prediction_shadows):
        still = sa.select(t.c.request_id).where(t.c.request_id == other.c.request_id).exists()
        conn.execute(sa.delete(other).where(other.c.request_id.in_(rids), ~still))


def _delete_oldest(engine: sa.Engine, where: Any, limit: int | None) -> tuple[int, int]:
    """Delete the oldest requests (by id) passing ``where``, up to ``limit`` of them (None:
    all), :data:`CHUNK` per transaction; (requests, records) deleted."""
    t = predictions
    requests = records = 0
    while limit is None or requests < limit:
        size = CHUNK if limit is None else min(CHUNK, limit - requests)
        with engine.begin() as conn:
            query = sa.select(t.c.id, t.c.request_id, t.c.records).order_by(t.c.id).limit(size)
            rows = conn.execute(query.where(where) if where is not None else query).all()
            if rows:
                _delete(conn, rows)
        requests += len(rows)
        records += sum(r[2] for r in rows)
        if len(rows) < size:
            break
    return requests, records


def prune(
    engine: sa.Engine,
    *,
    max_bytes: int | None = None,
    retention_days: float | None = None,
    now: datetime | None = None,
) -> tuple[int, int, int | None]:
    """Delete the requests older than ``retention_days``, then the oldest while the log is over
    ``max_bytes`` (down to :data:`LOW_WATER` of it), with their labels and shadow outputs.
    Returns the requests and records deleted and the bytes the log takes after (None without
    a size bound)."""
    requests = records = 0
    if retention_days:
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        requests, records = _delete_oldest(engine, predictions.c.ts < cutoff, None)
    used = None
    if max_bytes:
        for _ in range(ROUNDS):
            with engine.connect() as conn:
                used = used_bytes(conn)
                if used <= max_bytes:
                    break
                count = conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar()
            if not count:
                break  # what is left is not ours to delete (other tables, free pages)
            excess = used - LOW_WATER * max_bytes
            gone = _delete_oldest(engine, None, max(1, math.ceil(count * excess / used)))
            requests, records = requests + gone[0], records + gone[1]
        if engine.dialect.name == "sqlite" and requests:
            with engine.connect() as conn:
                # every freed page given back (a no-op without auto_vacuum); the statement frees
                # a page per step, and only a script runs it to its end (execute: one page)
                conn.connection.driver_connection.executescript("PRAGMA incremental_vacuum;")
        with engine.connect() as conn:
            used = used_bytes(conn)
    return requests, records, used

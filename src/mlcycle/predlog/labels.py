"""True labels for logged predictions: :func:`attach_labels` (by request id and record
position, into ``prediction_labels``, each change audited in ``prediction_label_changes``;
one implementation for the service's ``/feedback`` and ``mlcycle feedback``) and
:func:`labels_from_file` (the triples of a CSV, Parquet or JSON Lines file, for ``mlcycle
feedback``)."""

from __future__ import annotations

import getpass
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from mlcycle.io import read_table
from mlcycle.predlog import store
from mlcycle.predlog.store import (
    LABELS_TABLE,
    TABLE,
    PredictionLogError,
    prediction_label_changes,
    prediction_labels,
    predictions,
)

IN_CHUNK = 500  # request ids per IN (...) when attaching labels
Key = tuple[str, int]  # a logged record: (request_id, row)


def _label_text(value: Any) -> str | None:
    if value is None:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # a class spelt as prepare.label_text spells it: 1.0 is "1"
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


@dataclass(frozen=True)
class Attached:
    """What :func:`attach_labels` did, in logged records."""

    #: records that hold the label sent now: given, replaced, removed, or already that label
    matched: int
    #: of those, records whose label changed now (each has its row in the audit table)
    changed: int = 0
    #: records that kept another label given earlier (``overwrite`` not asked for)
    conflicts: int = 0


def local_author() -> str:
    """Who writes labels from this machine without the service: ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name for this uid (a container's)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


def _current_labels(conn: sa.Connection, keys: Iterable[Key]) -> dict[Key, str]:
    """The labels ``keys`` ((request_id, row)) hold now."""
    lt = prediction_labels
    keys = set(keys)
    wanted = sorted({rid for rid, _ in keys})
    found: dict[Key, str] = {}
    for i in range(0, len(wanted), IN_CHUNK):
        query = sa.select(lt.c.request_id, lt.c.row, lt.c.label).where(
            lt.c.request_id.in_(wanted[i : i + IN_CHUNK])
        )
        found.update(((rid, row), label) for rid, row, label in conn.execute(query))
    return {k: v for k, v in found.items() if k in keys}


def _store_labels(
    conn: sa.Connection, chosen: Mapping[Key, str | None], by: str, now: datetime
) -> None:
    """Upsert the labels in ``chosen`` ((request_id, row) -> label) as given ``by``, deleting
    those that are None: INSERT ... ON CONFLICT DO UPDATE on SQLite and PostgreSQL, delete then
    insert elsewhere."""
    lt = prediction_labels
    keep = [
        {"request_id": rid, "row": row, "label": label, "ts": now, "labelled_by": by}
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
            set_={
                "label": insert.excluded.label,
                "ts": insert.excluded.ts,
                "labelled_by": insert.excluded.labelled_by,
            },
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


def _decide(
    chosen: Mapping[Key, str | None], current: Mapping[Key, str], overwrite: bool
) -> tuple[dict[Key, str | None], int]:
    """The labels of ``chosen`` to write (those that change a record's label, and may), and
    how many records keep another earlier label because ``overwrite`` is False."""
    changes: dict[Key, str | None] = {}
    conflicts = 0
    for key, label in chosen.items():
        before = current.get(key)
        if before == label:
            continue  # already so: sent again (a retry), nothing changes
        if before is not None and not overwrite:
            conflicts += 1
        else:
            changes[key] = label
    return changes, conflicts


def _requested(
    labels: Mapping[str, Any] | Iterable[tuple[str, int, Any]],
) -> tuple[dict[str, str | None], dict[Key, str | None]]:
    """The labels asked for (see :func:`attach_labels`): by request (every record of it), and
    by record."""
    whole: dict[str, str | None] = {}
    by_row: dict[Key, str | None] = {}
    if isinstance(labels, Mapping):
        for request_id, value in labels.items():
            if isinstance(value, list | tuple):
                for i, v in enumerate(value):
                    by_row[(str(request_id), i)] = _label_text(v)
            else:
                whole[str(request_id)] = _label_text(value)
        return whole, by_row
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
    return whole, by_row


def _audit(
    conn: sa.Connection,
    changes: Mapping[Key, str | None],
    current: Mapping[Key, str | None],
    author: str,
    now: datetime,
) -> None:
    """One row of ``prediction_label_changes`` per change: who, when, the previous label and
    the new one."""
    conn.execute(
        prediction_label_changes.insert(),
        [
            {
                "request_id": rid,
                "row": row,
                "ts": now,
                "labelled_by": author,
                "previous": current.get((rid, row)),
                "label": label,
            }
            for (rid, row), label in changes.items()
        ],
    )


def attach_labels(
    url: str | os.PathLike[str],
    labels: Mapping[str, Any] | Iterable[tuple[str, int, Any]],
    *,
    by: str | None = None,
    overwrite: bool = False,
) -> Attached:
    """Record true labels that arrived after the predictions, as given ``by`` (a credential's
    name; default :func:`local_author`), and say how many records matched, changed or kept
    another label.

    ``labels`` is either a mapping ``request_id -> label`` (the label of every record of that
    request; a list or tuple gives one label per record, by position) or ``(request_id, row,
    label)`` triples (``row`` None: every record of the request). Only logged records get a
    label: a known request id and ``0 <= row <`` its number of records; the rest match
    nothing. Labels are stored as text in ``prediction_labels`` with ``ts`` = now and
    ``labelled_by``; ``None`` removes one. A record that holds another label already keeps it
    (counted in :attr:`Attached.conflicts`) unless ``overwrite``; the same label again changes
    nothing. Every change (a first label, a replaced or removed one) adds a row to
    ``prediction_label_changes``: who, when, the previous label and the new one. A request id
    logged more than once (a client reusing ids) shares its labels by position: row ``i``
    labels record ``i`` of each. All changes are one transaction, which label writers in other
    processes wait for.
    """
    whole, by_row = _requested(labels)
    if not whole and not by_row:
        return Attached(0)
    author = by or local_author()
    parsed, engine = store.reader_engine(url)
    chosen: dict[Key, str | None] = {}
    try:
        with engine.begin() as conn:
            # Reading a record's label and replacing it are one step whichever process writes
            # labels too: SQLite's write lock, taken by the transaction's first statement ...
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            if not sa.inspect(conn).has_table(TABLE):
                return Attached(0)
            store.check_layout(conn, predictions)
            store.create_label_tables(conn)
            if conn.dialect.name == "postgresql":  # ... PostgreSQL's lock between label
                # writers (readers go on)
                conn.exec_driver_sql(f"LOCK TABLE {LABELS_TABLE} IN SHARE ROW EXCLUSIVE MODE")
            sizes = _records_per_request(conn, {*whole, *(rid for rid, _ in by_row)})
            for rid, label in whole.items():
                chosen.update(((rid, row), label) for row in range(sizes.get(rid, 0)))
            for (rid, row), label in by_row.items():
                if 0 <= row < sizes.get(rid, 0):
                    chosen[(rid, row)] = label
            current = _current_labels(conn, chosen) if chosen else {}
            changes, conflicts = _decide(chosen, current, overwrite)
            if changes:
                now = datetime.now(UTC)
                _store_labels(conn, changes, author, now)
                _audit(conn, changes, current, author, now)
    except PredictionLogError as exc:
        raise PredictionLogError(f"prediction log {store.shown(parsed)}: {exc}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise PredictionLogError(
            f"attaching labels in the prediction log {store.shown(parsed)} failed: "
            f"{store.reason(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()
    return Attached(len(chosen) - conflicts, len(changes), conflicts)


def labels_from_file(path: str | os.PathLike[str]) -> list[tuple[str, int | None, str]]:
    """``(request_id, row, label)`` triples from a CSV, Parquet or JSON Lines file with the
    columns ``request_id``, ``label`` and optionally ``row`` (empty: every record of the
    request), for :func:`attach_labels`. Ids and labels are read as text (``007`` keeps its
    zeros). A missing column, an empty id or label, or a row that is not a whole number >= 0
    is a ValueError naming the file, the column and the first lines."""
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

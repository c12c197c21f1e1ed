"""Reading the prediction log back: :func:`read_log`, one row per record, labels joined in.

Built for millions of records: a request's JSON is parsed once, checks and the labels' join
run over whole columns, the garbage collector is paused while the objects are made, and
``last=N`` finds its first request without reading the rest of the table.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from mlcycle.predlog import bounds, store
from mlcycle.predlog.store import (
    DEFAULT_URL,
    LABELS_TABLE,
    PROD,
    SHADOWS_TABLE,
    TABLE,
    PredictionLogError,
    prediction_labels,
    prediction_shadows,
    predictions,
)

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
    "labelled_by",
    "role",
    "shadow_output",
    "shadow_model_id",
    "shadow_model_version",
)
LAST_CHUNK = 1024  # read_log(last=N) looks for its first request this many requests at a time,
LAST_CHUNK_MAX = 65_536  # growing to this


def _empty_log() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    frame = frame.astype({"id": "int64", "row": "int64"})
    for c in ("ts", "label_ts"):
        frame[c] = pd.Series(dtype="datetime64[us, UTC]")
    frame.attrs["omitted"] = 0
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
    arrays of its ``records`` items is a :class:`PredictionLogError`, and one whose inputs were
    omitted (:func:`~mlcycle.predlog.bounds.marker`) has None for its records. The checks run
    over whole columns (``map``), not entry by entry in Python: a million requests of one
    record are a million entries."""
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
    omitted: set[int] = set()
    if dict in kinds:  # {"records": [...], ...}: a request body as received
        omitted = {i for i, r in enumerate(records_of) if bounds.is_marker(r)}
        records_of = [r.get("records") if type(r) is dict else r for r in records_of]
        kinds = set(map(type, records_of))
    counts = list(counts)
    for what, parsed, ok in (
        ("inputs", records_of, kinds == {list}),
        ("outputs", outputs_of, set(map(type, outputs_of)) == {list}),
    ):
        if ok and list(map(len, parsed)) == counts:
            continue
        for i, (id_, rid, n, value) in enumerate(zip(ids, rids, counts, parsed, strict=True)):
            if what == "inputs" and i in omitted:
                continue
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


def _frame(
    rows: Sequence[Any], labels: Sequence[Any], skip: int, shadows: Sequence[Any] = ()
) -> pd.DataFrame:
    """The per-record frame of ``rows`` (requests, in id order; the first one's first ``skip``
    records left out) with ``labels`` (request_id, row, ts, label, labelled_by) and
    ``shadows`` (request_id, model_id, model_version, outputs; in id order) joined in.
    Requests logged without their inputs are left out; ``attrs["omitted"]`` counts their
    records."""
    ids, rids, ts, counts, names, versions, model_ids, inputs, outputs, roles = map(
        list, zip(*rows, strict=True)
    )
    records_of, outputs_of = _parse_entries(ids, rids, counts, inputs, outputs)
    keep = [i for i, r in enumerate(records_of) if r is not None]
    omitted = sum(counts) - sum(counts[i] for i in keep) - (skip if 0 not in keep else 0)
    if len(keep) < len(ids):
        if 0 not in keep:
            skip = 0
        columns = (ids, rids, ts, counts, names, versions, model_ids, records_of, outputs_of, roles)
        ids, rids, ts, counts, names, versions, model_ids, records_of, outputs_of, roles = (
            [column[i] for i in keep] for column in columns
        )
        if not ids:
            frame = _empty_log()
            frame.attrs["omitted"] = omitted
            return frame
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
    labelled_by = np.full(total, None, dtype=object)
    label_ts = np.full(total, np.iinfo(np.int64).min, dtype=np.int64)  # NaT
    if labels:
        l_rids, l_rows, l_ts, l_labels, l_by = zip(*labels, strict=True)
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
                    labelled_by[base + r - low] = l_by[j]
    shadow = _shadow_columns(shadows, rids, counts, starts, skip, total)
    stamps = pd.DatetimeIndex(label_ts.view("datetime64[us]")).tz_localize(UTC)
    frame = pd.DataFrame(
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
            "labelled_by": labelled_by,
            "role": each([PROD if r is None else r for r in roles]),
            **shadow,
        }
    )
    frame.attrs["omitted"] = omitted
    return frame


def _shadow_columns(
    shadows: Sequence[Any],
    rids: list[str],
    counts: list[int],
    starts: np.ndarray,
    skip: int,
    total: int,
) -> dict[str, np.ndarray]:
    """Each record's shadow output (a dict, as ``outputs``), the shadow's model id and version,
    None where no shadow scored it. ``shadows`` (request_id, model_id, model_version,
    outputs) are joined on the request id (the last one, for an id logged more than once),
    record by record; outputs whose number of records differs from the request's are not."""
    out = {
        c: np.full(total, None, dtype=object)
        for c in ("shadow_output", "shadow_model_id", "shadow_model_version")
    }
    found = {rid: (model_id, version, text) for rid, model_id, version, text in shadows}
    for i, rid in enumerate(rids):
        if rid not in found:
            continue
        model_id, version, text = found[rid]
        low = skip if i == 0 else 0  # records of the request left out before the frame's
        parsed = _lenient_loads(text)
        if type(parsed) is not list or len(parsed) != counts[i] + low:
            continue
        base, end = int(starts[i]), int(starts[i]) + counts[i]
        out["shadow_output"][base:end] = parsed[low:] if low else parsed
        out["shadow_model_id"][base:end] = model_id
        out["shadow_model_version"][base:end] = version
    return out


def _where(
    since: datetime | None,
    until: datetime | None,
    model_version: str | None,
    model_id: str | None,
) -> list[Any]:
    """The conditions on ``predictions`` of :func:`read_log`'s filters."""
    t = predictions
    where: list[Any] = []
    if since is not None:
        where.append(t.c.ts >= store.utc(since))
    if until is not None:
        where.append(t.c.ts < store.utc(until))
    if model_version is not None:
        where.append(t.c.model_version == model_version)
    if model_id is not None:
        where.append(t.c.model_id == model_id)
    return where


def _fetch(
    conn: sa.Connection, where: list[Any], last: int | None
) -> tuple[Sequence[Any], Sequence[Any], int, Sequence[Any]]:
    """The requests passing ``where`` in id order (only those holding the last ``last``
    records), the labels of their records (request_id, row, ts, label, labelled_by), how
    many records of the first request to leave out, and the shadow outputs of the requests
    (request_id, model_id, model_version, outputs); no requests when nothing is logged yet."""
    t, lt = predictions, prediction_labels
    dialect = conn.dialect.name
    inspector = sa.inspect(conn)
    if not inspector.has_table(TABLE) or last == 0:
        return [], [], 0, []
    have = store.check_layout(conn, t)
    skip = 0
    if last is not None:
        cut = _last_cut(conn, where, last)
        if cut is not None:
            where = [*where, t.c.id >= cut[0]]
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
        # a log from before roles were recorded (not written to since) lacks the column
        t.c.role if "role" in have else sa.literal(PROD),
    )
    rows = conn.execute(query.where(*where).order_by(t.c.id)).all()
    labels: Sequence[Any] = []
    if rows and inspector.has_table(LABELS_TABLE):
        # a log from before labelled_by was recorded (not written to since) lacks the column
        have = {c["name"] for c in inspector.get_columns(LABELS_TABLE)}
        by = lt.c.labelled_by if "labelled_by" in have else sa.null()
        query = sa.select(lt.c.request_id, lt.c.row, _ts_column(lt.c.ts, dialect), lt.c.label, by)
        if where:
            query = query.where(lt.c.request_id.in_(sa.select(t.c.request_id).where(*where)))
        labels = conn.execute(query).all()
    shadows: Sequence[Any] = []
    if rows and inspector.has_table(SHADOWS_TABLE):
        st = prediction_shadows
        query = sa.select(st.c.request_id, st.c.model_id, st.c.model_version, st.c.outputs)
        if where:
            query = query.where(st.c.request_id.in_(sa.select(t.c.request_id).where(*where)))
        shadows = conn.execute(query.order_by(st.c.id)).all()
    return rows, labels, skip, shadows


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
    come from ``prediction_labels`` (missing: NaN/NaT), ``labelled_by`` names who gave the
    label (None: no label, or one given before it was recorded). ``role`` says which model
    answered the record (``"prod"`` or ``"canary"``; ``"prod"`` for requests logged before
    roles were); ``shadow_output`` is the shadow model's output for the record (a dict, as
    ``outputs``), ``shadow_model_id`` and ``shadow_model_version`` name that model (None where
    no shadow scored the record). ``ts`` and ``label_ts`` are UTC
    timestamps. Filters apply to requests: ``since <= ts < until`` (a naive datetime is UTC),
    ``model_version``, ``model_id``; ``last`` keeps the last ``last`` records that pass them
    (the oldest request kept may lose its first records), found without reading the rest of
    the table. Requests logged without their inputs (over the log's limit for one request,
    :mod:`~mlcycle.predlog.bounds`) are left out, as nothing can use outputs without inputs:
    ``frame.attrs["omitted"]`` counts their records (within ``last``, they count). A database
    without the table (nothing logged yet) gives an empty frame; a missing SQLite file, or an
    entry whose JSON does not hold its number of records, is a :class:`PredictionLogError`.
    """
    if last is not None and last < 0:
        raise ValueError(f"last must be >= 0, not {last}")
    where = _where(since, until, model_version, model_id)
    parsed, engine = store.reader_engine(url)
    try:
        with _no_gc():  # fetching builds millions of objects too
            with engine.connect() as conn:
                rows, labels, skip, shadows = _fetch(conn, where, last)
            return _frame(rows, labels, skip, shadows) if rows else _empty_log()
    except PredictionLogError as exc:
        raise PredictionLogError(f"prediction log {store.shown(parsed)}: {exc}") from None
    except sa_exc.SQLAlchemyError as exc:
        raise PredictionLogError(
            f"reading the prediction log {store.shown(parsed)} failed: {store.reason(exc, parsed)}"
        ) from None
    finally:
        engine.dispose()

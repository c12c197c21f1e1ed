"""The prediction log's bounds (:mod:`mlcycle.predlog.bounds`) on real databases: inputs over
the per-request limit stored as a marker and left out by every reader, and retention by age
and by size, with the labels of what goes. SQLite files in a temporary folder, PostgreSQL in a
schema of its own (``url`` and ``db``: tests/test_predlog.py)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from mlcycle import retrain
from mlcycle.predlog import PredictionLog, attach_labels, bounds, read_log
from tests.test_predlog import MODEL, answers, db, records, stored, url  # noqa: F401 (fixtures)

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


def used(url: str) -> int:  # noqa: F811 (the fixture's name)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return bounds.used_bytes(conn)
    finally:
        engine.dispose()


def test_inputs_over_the_limit_are_stored_as_a_marker_and_left_out_by_readers(
    url: str,  # noqa: F811
) -> None:
    big = records(40)  # about 1.8 kB as JSON
    body = orjson.dumps({"records": big}).decode()
    with PredictionLog(url, max_record_bytes=1_000) as log:
        assert log.submit("small", records(2), answers(2), **MODEL)
        assert log.submit("big", big, answers(40), **MODEL)  # serialised by the writer
        assert log.submit("body", body, answers(40), **MODEL, n=40)  # JSON: cut at submit
        assert log.submit("last", records(1), answers(1), **MODEL)
    assert (log.written, log.omitted, log.failed) == (83, 80, 0)
    size = len(body.encode()) - len('{"records":}')  # UTF-8 bytes
    assert [orjson.loads(text) for (text,) in stored(url, "inputs")][1:3] == [
        {"omitted": {"bytes": size, "limit": 1_000}},
        {"omitted": {"bytes": size + len('{"records":}'), "limit": 1_000}},
    ]
    assert [len(orjson.loads(text)) for (text,) in stored(url, "outputs")] == [2, 40, 40, 1]

    # Labels may reach them; the readers leave them out, saying how many records they left.
    assert attach_labels(url, [("small", 0, ">50K"), ("big", 3, ">50K")]).matched == 2
    frame = read_log(url)
    assert frame["request_id"].tolist() == ["small", "small", "last"]
    assert frame["inputs"].tolist() == [*records(2), *records(1)]
    assert frame.attrs["omitted"] == 80
    assert read_log(url, last=41).attrs["omitted"] == 40  # within the window only
    assert read_log(url, last=1)["request_id"].tolist() == ["last"]
    assert retrain.new_labelled(frame, set())["request_id"].tolist() == ["small"]


def fill(url: str, n: int, start: datetime = NOW) -> None:  # noqa: F811
    """``n`` requests of 20 records, a minute apart from ``start``, a label and a shadow's
    outputs on each."""
    with PredictionLog(url) as log:
        for i in range(n):
            ts = start + timedelta(minutes=i)
            assert log.submit(f"r{i}", records(20, i), answers(20), **MODEL, ts=ts)
            assert log.submit_shadow(f"r{i}", answers(20), **MODEL, n=20, ts=ts)
    assert attach_labels(url, [(f"r{i}", 0, ">50K") for i in range(n)]).matched == n


def shadows(url: str) -> list[str]:  # noqa: F811 (the fixture's name)
    """The request ids of the shadow outputs the log holds, in id order."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT request_id FROM prediction_shadows ORDER BY id")
        found = [r[0] for r in rows]
    engine.dispose()
    return found


def test_pruning_by_size_deletes_the_oldest_with_their_labels(url: str) -> None:  # noqa: F811
    fill(url, 200)
    full = used(url)
    engine = sa.create_engine(url)
    try:
        requests, _, after = bounds.prune(engine, max_bytes=full // 2)
        assert after == used(url) <= full // 2  # down to the bound...
        assert after >= 0.7 * full // 2  # ...not far below it
        assert bounds.prune(engine, max_bytes=full // 2)[:2] == (0, 0)  # under it: nothing
    finally:
        engine.dispose()
    frame = read_log(url)
    kept = [f"r{i}" for i in range(requests, 200)]  # the newest, in order
    assert frame["request_id"].drop_duplicates().tolist() == kept
    labelled = frame.loc[frame["label"].notna(), "request_id"].tolist()
    assert labelled == kept
    assert len(stored(url, "request_id")) == 200 - requests
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        labels = conn.exec_driver_sql("SELECT count(*) FROM prediction_labels").scalar()
    engine.dispose()
    assert labels == 200 - requests  # the deleted requests' labels are gone too
    assert shadows(url) == kept  # and their shadow outputs
    assert frame["shadow_output"].notna().all()


def test_pruning_by_age_deletes_what_is_older_than_the_retention(url: str) -> None:  # noqa: F811
    fill(url, 3, start=NOW - timedelta(days=3))
    fill(url, 2, start=NOW)  # request ids r0, r1 again: their labels stay
    engine = sa.create_engine(url)
    try:
        assert bounds.prune(engine, retention_days=2, now=NOW)[:2] == (3, 60)
    finally:
        engine.dispose()
    frame = read_log(url)
    assert frame["ts"].min() >= NOW and frame["id"].nunique() == 2
    assert frame.loc[frame["label"].notna(), "request_id"].tolist() == ["r0", "r1"]
    assert shadows(url) == ["r0", "r1", "r0", "r1"]  # r2's went with it; r0 and r1 are logged


def test_the_writer_keeps_a_sqlite_log_and_its_file_under_the_bound(db: Path) -> None:  # noqa: F811
    """The writer prunes by itself as it writes (not per request: when what it wrote could
    have filled half the room left), and the pages it frees are given back: the file shrinks
    to the bound."""
    bound = 400_000
    with PredictionLog(db, max_bytes=bound, max_record_bytes=50_000) as log:
        for i in range(300):  # about 4 MB
            assert log.submit(f"r{i}", records(100, i), answers(100), **MODEL)
            if i % 30 == 29:
                assert log.flush(10)
        assert log.flush(10)
    assert log.pruned > 0 and log.omitted == 0
    assert used(f"sqlite:///{db}") <= bound
    with sqlite3.connect(db) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert con.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    assert db.stat().st_size <= bound * 1.05
    assert read_log(db)["request_id"].iloc[-1] == "r299"  # the newest kept


@pytest.mark.parametrize(
    "bad", [{"max_bytes": 0}, {"max_record_bytes": -1}, {"retention_days": float("nan")}]
)
def test_a_bound_must_be_above_zero(db: Path, bad: dict) -> None:  # noqa: F811
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be above 0"):
        PredictionLog(db, **bad)

"""Tests of the prediction log against real databases.

SQLite is a real file in a temporary folder, locked from a second connection when a test needs
the database to be unavailable; concurrency is four real processes appending to one file.
PostgreSQL is the real server `.ci/run` starts (URL in ``MLCYCLE_TEST_POSTGRES_URL``; without it
those tests skip, and fail under CI), each test in a schema of its own. Nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle.predlog import (
    COLUMNS,
    PredictionLog,
    PredictionLogError,
    attach_labels,
    read_log,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def rows(request_id: str, n: int, **fields) -> list[dict]:
    """``n`` rows of one request, as the service submits them (``row`` left to its default)."""
    return [
        {
            "request_id": request_id,
            "model_name": "adult",
            "model_version": "v1",
            "model_id": "0123456789ab",
            "inputs": {"age": 30 + i, "city": "Zürich ☃", "note": None},
            "outputs": {"label": ">50K", "probabilities": {"<=50K": 0.25, ">50K": 0.75}},
            **fields,
        }
        for i in range(n)
    ]


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold SQLite's write lock on ``path`` from another connection: the store is 'down'."""
    con = sqlite3.connect(path, isolation_level=None, timeout=10)
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "predictions.db"


@pytest.fixture
def caplog_predlog(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="mlcycle.predlog")
    return caplog


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the real PostgreSQL server `.ci/run` starts (skip locally without one)."""
    url = os.environ.get("MLCYCLE_TEST_POSTGRES_URL")
    if not url:
        message = (
            "MLCYCLE_TEST_POSTGRES_URL is not set: no PostgreSQL server for the database tests "
            "(`.ci/run --postgres-only` starts one and prints the URL)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"under CI the PostgreSQL tests must run: {message}")
        pytest.skip(message)
    return url


def in_schema(url: str, schema: str, **changes) -> str:
    """``url`` with ``schema`` first on the search path (and other parts changed)."""
    from sqlalchemy.engine import make_url

    scoped = make_url(url).set(**changes).update_query_dict({"options": f"-csearch_path={schema}"})
    return scoped.render_as_string(hide_password=False)


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A URL whose ``predictions`` table lives in a fresh schema, dropped afterwards."""
    from sqlalchemy import create_engine

    schema = f"predlog_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield in_schema(postgres_url, schema)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, db: Path) -> str:
    """The log's URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{db}"
    return request.getfixturevalue("pg_url")


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_of_rows_and_json(url: str) -> None:
    paris = timezone(timedelta(hours=1))
    sent = [
        *rows("a", 3),
        {
            "request_id": "b",
            "row": 7,
            "ts": datetime(2026, 3, 1, 13, 0, 0, 5, tzinfo=paris),  # 12:00:00.000005 UTC
            "model_name": "adult",
            "model_version": None,
            "model_id": "0123456789ab",
            "inputs": {"n": np.int64(3), "x": np.float32(0.5), "big": 2**60, "list": [1, "a"]},
            "outputs": {"value": 0.1 + 0.2, "nan": math.nan},
        },
    ]
    with PredictionLog(url) as log:
        assert log.submit(sent[:3]) and log.submit(sent[3:])
        assert log.flush(timeout=10)
        assert (log.written, log.failed, log.depth) == (4, 0, 0)
    assert log.close() == 0

    frame = read_log(url)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["id"].is_monotonic_increasing and frame["id"].is_unique
    assert frame["request_id"].tolist() == ["a", "a", "a", "b"]
    assert frame["row"].tolist() == [0, 1, 2, 7]  # default: position in the submitted list
    assert frame["inputs"].iloc[:3].tolist() == [r["inputs"] for r in sent[:3]]
    assert frame["outputs"].iloc[0] == sent[0]["outputs"]
    assert frame["inputs"].iloc[3] == {"n": 3, "x": 0.5, "big": 2**60, "list": [1, "a"]}
    assert frame["outputs"].iloc[3]["value"] == 0.1 + 0.2  # floats exactly
    assert frame["outputs"].iloc[3]["nan"] is None  # JSON has no NaN: stored as null
    assert frame["model_version"].iloc[:3].tolist() == ["v1"] * 3
    assert pd.isna(frame["model_version"].iloc[3])
    assert str(frame["ts"].dt.tz) == "UTC"
    assert frame["ts"].iloc[3] == pd.Timestamp("2026-03-01 12:00:00.000005", tz="UTC")
    before = pd.Timestamp.now(tz="UTC")
    assert ((before - frame["ts"].iloc[:3]) < pd.Timedelta(minutes=1)).all()  # default: now
    assert frame["label"].isna().all() and frame["label_ts"].isna().all()


def test_sqlite_file_relative_path_folders_and_wal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with PredictionLog("sqlite:///deep/er/p.db") as log:
        assert log.url == f"sqlite:///{tmp_path}/deep/er/p.db"  # where it is, absolute
        log.submit(rows("a", 1))
    monkeypatch.chdir("/")  # read elsewhere, by the absolute path
    path = tmp_path / "deep/er/p.db"
    assert len(read_log(path)) == 1  # a bare path is an SQLite file too
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_predictions_request_id", "ix_predictions_ts", "ix_predictions_model_id"} <= indexes
    con.close()


def test_default_url_is_predictions_db_in_the_current_directory(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    PredictionLog().close()
    assert (tmp_path / "predictions.db").is_file()


def test_a_table_of_another_layout_is_refused(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE predictions (id INTEGER PRIMARY KEY, x TEXT)")
    with pytest.raises(PredictionLogError, match="another layout: it lacks request_id, row"):
        PredictionLog(db)


# --- batching, queue, close ------------------------------------------------------------------


def test_rows_are_written_in_batches(db: Path) -> None:
    log = PredictionLog(db, batch_size=100, flush_interval=60)
    for i in range(25):
        assert log.submit(rows(f"r{i}", 10))
    wait_for(lambda: log.written == 200)
    time.sleep(0.2)  # nothing else is due: the last 50 wait for batch_size or flush_interval
    assert (log.written, log.depth, log.batches) == (200, 50, 2)
    assert len(read_log(db)) == 200  # committed: another connection sees them
    assert log.close() == 0
    assert (log.written, log.depth, log.batches) == (250, 0, 3)


def test_flush_interval_writes_a_small_batch(db: Path) -> None:
    with PredictionLog(db, batch_size=10_000, flush_interval=0.1) as log:
        start = time.monotonic()
        log.submit(rows("r", 3))
        wait_for(lambda: log.written == 3, timeout=5)
        assert 0.08 < time.monotonic() - start < 3
        assert log.batches == 1


def test_full_queue_refuses_the_whole_call_and_enqueues_nothing(db: Path) -> None:
    log = PredictionLog(db, batch_size=1000, flush_interval=60, max_queue=100)
    assert log.submit(rows("first", 60))
    assert log.accepting
    assert not log.submit(rows("refused", 41))
    assert (log.depth, log.rejected) == (60, 41)
    assert log.submit(rows("fits", 40))  # exactly full
    assert not log.accepting
    assert not log.submit(rows("refused-too", 1))
    assert log.close() == 0
    frame = read_log(db)
    assert frame["request_id"].value_counts().to_dict() == {"first": 60, "fits": 40}
    assert not log.submit(rows("after-close", 1))  # closed: refused, not queued


def test_one_call_larger_than_the_queue_is_taken_when_nothing_waits(db: Path) -> None:
    with PredictionLog(db, flush_interval=60, max_queue=10) as log:
        assert log.submit(rows("big", 25))
        assert not log.submit(rows("small", 1))
    assert len(read_log(db)) == 25


def test_bad_calls_raise_and_enqueue_nothing(db: Path) -> None:
    with PredictionLog(db, flush_interval=60) as log:
        incomplete = rows("r", 3)
        del incomplete[2]["model_id"]
        with pytest.raises(ValueError, match=r"rows\[2\] lacks model_id"):
            log.submit(incomplete)
        with pytest.raises(TypeError, match=r"rows\[0\] is a list"):
            log.submit([["not", "a", "mapping"]])
        assert log.depth == 0 and log.submit([])
    with pytest.raises(ValueError, match="when_full"):
        PredictionLog(db, when_full="drop")  # type: ignore[arg-type]


def test_close_flushes_everything_and_twice_is_safe(db: Path) -> None:
    log = PredictionLog(db, batch_size=10_000, flush_interval=60)
    for i in range(300):
        assert log.submit(rows(f"r{i}", 7))
    assert log.written == 0 and log.depth == 2100
    assert log.close() == 0
    assert (log.written, log.depth, log.failed) == (2100, 0, 0)
    assert log.close() == 0
    assert len(read_log(db)) == 2100


def test_blocking_submit_waits_for_room(db: Path, caplog_predlog) -> None:
    log = PredictionLog(
        db, batch_size=50, flush_interval=60, max_queue=100, when_full="block", db_timeout=0.1
    )
    with locked(db):
        assert log.submit(rows("first", 60))  # due at once (>= batch_size); the write waits
        wait_for(lambda: log.write_errors >= 1)
        start = time.monotonic()
        log.block_timeout = 0.3
        assert not log.submit(rows("times-out", 60))
        assert time.monotonic() - start >= 0.29
        log.block_timeout = 30
        results: list[bool] = []
        waiter = threading.Thread(target=lambda: results.append(log.submit(rows("waits", 60))))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and log.depth == 60
    waiter.join(10)  # the lock is gone: the first 60 are written, the second call goes in
    assert results == [True]
    assert log.close() == 0
    assert read_log(db)["request_id"].value_counts().to_dict() == {"first": 60, "waits": 60}
    assert "retrying" in caplog_predlog.text and "database is locked" in caplog_predlog.text
    assert "lost" not in caplog_predlog.text


def test_store_down_past_close_timeout_reports_the_loss(db: Path, caplog_predlog) -> None:
    log = PredictionLog(db, batch_size=10, flush_interval=0.05, db_timeout=0.1)
    log.submit(rows("ok", 5))
    assert log.flush(10)
    with locked(db):
        assert log.submit(rows("lost", 25))
        wait_for(lambda: log.write_errors >= 1)
        start = time.monotonic()
        assert log.close(timeout=1.0) == 25
        assert time.monotonic() - start < 3
    assert (log.written, log.failed, log.depth) == (5, 25, 0)
    assert log.close() == 25  # the same answer again
    assert "25 prediction(s) lost" in caplog_predlog.text
    assert read_log(db)["request_id"].tolist() == ["ok"] * 5


def test_rows_the_database_refuses_are_dropped_alone(url: str, caplog_predlog) -> None:
    sent = rows("r", 6)
    sent[1]["model_name"] = None  # cannot be converted
    sent[4]["row"] = 2**70  # the database refuses it (integer out of range)
    with PredictionLog(url, flush_interval=60) as log:
        assert log.submit(sent)
    assert (log.written, log.failed) == (4, 2)
    assert read_log(url)["row"].tolist() == [0, 2, 3, 5]
    assert "dropped row 1 of request 'r': model_name is null" in caplog_predlog.text
    assert f"refused row {2**70} of request 'r'" in caplog_predlog.text


# --- several processes -----------------------------------------------------------------------

WORKER = """
import json, random, sys, time
from pathlib import Path
from mlcycle.predlog import PredictionLog

url, worker, n, folder, close = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
folder, close = Path(folder), close == "close"
log = PredictionLog(url, batch_size=50, flush_interval=0.02)
(folder / f"ready{worker}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
rng, sent, request = random.Random(worker), 0, 0
while sent < n:
    k = min(rng.randint(1, 20), n - sent)
    batch = [{"request_id": f"w{worker}-{request}", "model_name": "m", "model_id": "x",
              "inputs": {"worker": worker, "i": sent + j}, "outputs": {"value": sent + j}}
             for j in range(k)]
    while not log.submit(batch):
        time.sleep(0.001)
    sent, request = sent + k, request + 1
if close:
    print(json.dumps({"lost": log.close(), "written": log.written}))
# otherwise the interpreter's exit closes the log (atexit), flushing what is queued
"""


def test_four_processes_write_to_one_sqlite_file(db: Path, tmp_path: Path) -> None:
    n, url = 2500, f"sqlite:///{db}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(w), str(n), str(tmp_path), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w, mode in enumerate(["close", "close", "close", "exit"])
    ]
    # every process has created (or found) the table; start them writing at the same moment
    wait_for(lambda: all((tmp_path / f"ready{w}").exists() for w in range(4)), timeout=60)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "lost" not in err, err
    for out, _ in outs[:3]:
        assert json.loads(out) == {"lost": 0, "written": n}

    frame = read_log(url)
    assert len(frame) == 4 * n and frame["id"].is_unique
    assert not frame.duplicated(["request_id", "row"]).any()
    inputs = pd.DataFrame(frame["inputs"].tolist())
    for w in range(4):
        assert sorted(inputs.loc[inputs["worker"] == w, "i"]) == list(range(n))  # once each
    assert [o["value"] for o in frame["outputs"]] == inputs["i"].tolist()
    # within each request, rows 0..k-1 in order
    by_request = frame.groupby("request_id", sort=False)["row"]
    assert (by_request.apply(lambda r: r.tolist() == list(range(len(r))))).all()


# --- read_log and attach_labels --------------------------------------------------------------


def test_read_log_filters(url: str) -> None:
    with PredictionLog(url) as log:
        for i in range(6):
            version, model_id = ("v1", "aaa") if i < 4 else ("v2", "bbb")
            ts = T0 + timedelta(minutes=i)
            log.submit(rows(f"r{i}", 2, ts=ts, model_version=version, model_id=model_id))

    def ids(**filters) -> list[str]:
        return read_log(url, **filters)["request_id"].iloc[::2].tolist()

    assert ids() == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert ids(last=4) == ["r4", "r5"]
    assert read_log(url, last=3)["row"].tolist() == [1, 0, 1]  # still in id order
    assert ids(since=T0 + timedelta(minutes=2)) == ["r2", "r3", "r4", "r5"]
    assert ids(until=T0 + timedelta(minutes=2)) == ["r0", "r1"]  # until is exclusive
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None)  # naive means UTC
    aware = (T0 + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=-5)))
    assert ids(since=naive, until=aware) == ["r1", "r2"]
    assert ids(model_version="v2") == ["r4", "r5"]
    assert ids(model_id="aaa", last=2) == ["r3"]
    assert ids(model_id="aaa", model_version="v2") == []
    empty = read_log(url, last=0)
    assert list(empty.columns) == list(COLUMNS) and empty.empty
    assert str(empty["ts"].dtype) == str(read_log(url)["ts"].dtype)


def test_read_log_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(PredictionLogError, match="no prediction log at .*missing.db"):
        read_log(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()  # not created by reading
    sqlite3.connect(tmp_path / "other.db").close()
    assert read_log(tmp_path / "other.db").empty  # nothing logged yet
    assert attach_labels(tmp_path / "other.db", {"r": "x"}) == 0


def test_attach_labels(url: str) -> None:
    with PredictionLog(url) as log:
        log.submit(rows("single", 1))
        log.submit(rows("three", 3))
        log.submit(rows("pairs", 2))
        log.submit(rows("unlabelled", 1))
    start = pd.Timestamp.now(tz="UTC")
    assert attach_labels(url, {"single": ">50K", "three": ["a", "b", "c"], "nope": "x"}) == 4
    assert attach_labels(url, [("pairs", 1, np.int64(1)), ("pairs", 5, "no such row")]) == 1
    assert attach_labels(url, {}) == 0

    frame = read_log(url).set_index(["request_id", "row"])
    assert frame.loc[("single", 0), "label"] == ">50K"
    assert frame.loc["three", "label"].tolist() == ["a", "b", "c"]
    assert frame.loc[("pairs", 1), "label"] == "1"  # stored as text
    assert pd.isna(frame.loc[("pairs", 0), "label"]) and pd.isna(
        frame.loc[("pairs", 0), "label_ts"]
    )
    assert pd.isna(frame.loc[("unlabelled", 0), "label"])
    labelled = frame["label_ts"].dropna()
    assert len(labelled) == 5 and (labelled >= start - pd.Timedelta(seconds=1)).all()

    assert attach_labels(url, {"three": None}) == 3  # None clears; every row of the request
    cleared = read_log(url).set_index("request_id").loc["three"]
    assert cleared["label"].isna().all() and cleared["label_ts"].isna().all()


# --- credentials and outages -----------------------------------------------------------------


def test_unreachable_postgres_fails_at_start_without_the_password(caplog_predlog) -> None:
    port = free_port()
    bad = f"postgresql+psycopg://me:s3cr3t-pw@127.0.0.1:{port}/db"
    with pytest.raises(PredictionLogError) as exc:
        PredictionLog(bad, db_timeout=1)
    message = str(exc.value)
    assert f"prediction log postgresql+psycopg://127.0.0.1:{port}/db: cannot open" in message
    assert "s3cr3t" not in message and "me@" not in message
    with pytest.raises(PredictionLogError) as exc:
        read_log(bad)
    assert "s3cr3t" not in str(exc.value) and "refused" in str(exc.value).lower()
    assert "s3cr3t" not in caplog_predlog.text


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(PredictionLogError, match="needs an SQLite file"):
        PredictionLog("sqlite://")


def test_postgres_outage_is_retried_and_never_logs_the_password(
    postgres_url: str, caplog_predlog
) -> None:
    """The log's role loses its right to log in and its connection is cut (the database is
    down for it); rows wait and are retried; once it may log in again, they are written."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ProgrammingError

    role, password = f"predlog_{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex}"
    admin = create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            conn.exec_driver_sql(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    except ProgrammingError as exc:  # pragma: no cover - .ci/run's user is a superuser
        pytest.skip(f"the test server's user cannot create roles: {exc.orig}")
    try:
        url = in_schema(postgres_url, role, username=role, password=password)
        log = PredictionLog(url, flush_interval=0.02, db_timeout=2)
        log.submit(rows("before", 5))
        assert log.flush(10)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {role} NOLOGIN")
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            )
        assert log.submit(rows("during", 5))
        wait_for(lambda: log.write_errors >= 2)
        assert (log.written, log.depth) == (5, 5)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {role} LOGIN")
        assert log.close(timeout=20) == 0
        assert (log.written, log.failed) == (10, 0)
        assert read_log(url)["request_id"].tolist() == ["before"] * 5 + ["during"] * 5
        assert "not permitted to log in" in caplog_predlog.text
        assert "writing again" in caplog_predlog.text
        assert password not in caplog_predlog.text
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {role} CASCADE")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()

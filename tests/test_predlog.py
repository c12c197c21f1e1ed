"""Tests of the prediction log against real databases.

SQLite is a real file in a temporary folder, locked from a second connection when a test needs
the database to be unavailable; concurrency is four real processes appending to one file.
PostgreSQL is the real server `.ci/run` starts (URL in ``MLCYCLE_TEST_POSTGRES_URL``, fixture
``postgres_url`` in conftest.py; without it those tests skip, and fail under CI), each test in a
schema of its own. Nothing is mocked.
"""

from __future__ import annotations

import json
import logging
import math
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
import orjson
import pandas as pd
import pytest
import sqlalchemy as sa

from mlcycle.predlog import (
    COLUMNS,
    Attached,
    PredictionLog,
    PredictionLogError,
    attach_labels,
    labels_from_file,
    local_author,
    read_log,
)
from tests.conftest import cli, in_schema

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
MODEL = {"model_name": "adult", "model_id": "0123456789ab"}
ANSWER = {"label": ">50K", "probabilities": {"<=50K": 0.25, ">50K": 0.75}}


def records(n: int, start: int = 0) -> list[dict]:
    """``n`` records of one request, as a client sends them."""
    return [{"age": 30 + start + i, "city": "Zürich ☃", "note": None} for i in range(n)]


def answers(n: int) -> list[dict]:
    return [dict(ANSWER, probability=i / 10) for i in range(n)]


def submit(log: PredictionLog, request_id: str, n: int, **fields) -> bool:
    """Submit one request of ``n`` records (and their answers) as sequences."""
    return log.submit(
        request_id, records(n), answers(n), **{**MODEL, "model_version": "v1", **fields}
    )


def stored(url: str, column: str) -> list:
    """``column`` of the ``predictions`` table as stored, in id order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.exec_driver_sql(f"SELECT {column} FROM predictions ORDER BY id"))
    finally:
        engine.dispose()


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


# --- PostgreSQL (postgres_url, pg_url and in_schema: conftest.py) -----------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, db: Path) -> str:
    """The log's URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{db}"
    return request.getfixturevalue("pg_url")


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_of_requests_and_json(url: str) -> None:
    paris = timezone(timedelta(hours=1))
    odd = {"n": np.int64(3), "x": np.float32(0.5), "big": 2**60, "list": [1, "a"]}
    odd |= {"arr": np.array([1.5, np.nan]), "day": datetime(2026, 1, 2).date(), "inf": math.inf}
    with PredictionLog(url) as log:
        assert submit(log, "a", 3)
        assert log.submit(
            "b",
            (odd,),  # any sequence
            [{"value": 0.1 + 0.2, "nan": math.nan}],
            model_name="adult",
            model_id="0123456789ab",
            ts=datetime(2026, 3, 1, 13, 0, 0, 5, tzinfo=paris),  # 12:00:00.000005 UTC
        )
        assert submit(log, "c", 1, ts=datetime(2026, 3, 1, 12, 30))  # naive: UTC
        assert log.flush(timeout=10)
        assert (log.written, log.failed, log.depth, log.batches) == (5, 0, 0, 1)
    assert log.close() == 0
    assert [n for (n,) in stored(url, "records")] == [3, 1, 1]  # one table row per request

    frame = read_log(url)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["id"].tolist()[:3] == [frame["id"].iloc[0]] * 3  # a request's records share it
    assert frame["id"].is_monotonic_increasing and frame["id"].nunique() == 3
    assert frame["request_id"].tolist() == ["a", "a", "a", "b", "c"]
    assert frame["row"].tolist() == [0, 1, 2, 0, 0]
    assert frame["inputs"].iloc[:3].tolist() == records(3)  # unicode and nulls as sent
    assert frame["outputs"].iloc[:3].tolist() == answers(3)
    big = {"n": 3, "x": 0.5, "big": 2**60, "list": [1, "a"], "arr": [1.5, None]}
    assert frame["inputs"].iloc[3] == big | {"day": "2026-01-02", "inf": None}
    assert frame["outputs"].iloc[3]["value"] == 0.1 + 0.2  # floats exactly
    assert frame["outputs"].iloc[3]["nan"] is None  # JSON has no NaN: stored as null
    assert frame["model_version"].iloc[:3].tolist() == ["v1"] * 3
    assert pd.isna(frame["model_version"].iloc[3])
    assert frame[["model_name", "model_id"]].drop_duplicates().values.tolist() == [
        ["adult", "0123456789ab"]
    ]
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    assert str(frame["label_ts"].dtype) == "datetime64[us, UTC]"
    assert frame["id"].dtype == "int64" and frame["row"].dtype == "int64"
    assert frame["ts"].iloc[3] == pd.Timestamp("2026-03-01 12:00:00.000005", tz="UTC")
    assert frame["ts"].iloc[4] == pd.Timestamp("2026-03-01 12:30", tz="UTC")
    before = pd.Timestamp.now(tz="UTC")
    assert ((before - frame["ts"].iloc[:3]) < pd.Timedelta(minutes=1)).all()  # default: now
    assert frame["ts"].iloc[:3].nunique() == 1  # the time of the call
    assert frame["label"].isna().all() and frame["label_ts"].isna().all()


def test_json_text_and_bytes_are_stored_verbatim(url: str) -> None:
    """What the service passes: the request body as received (an object whose "records" holds
    the array, extra keys and whitespace included) and the bytes of the predictions it sent."""
    body = b'{ "records" : [ {"age": 41, "city": "Z\\u00fcrich"},\n {"age": 7} ], "extra": 1 }\n'
    array = '[{"age": 1, "city": "Gen\u00e8ve \u2603"}]'
    preds = orjson.dumps(answers(2))
    with PredictionLog(url) as log:
        assert log.submit("body", body, preds, **MODEL, n=2)
        assert log.submit("array", array, "[" + json.dumps(ANSWER) + "]", **MODEL, n=1)
        assert log.submit("mixed", records(2), preds, **MODEL)  # records serialised, bytes kept
    assert log.written == 5
    assert stored(url, "inputs, outputs") == [
        (body.decode(), preds.decode()),
        (array, "[" + json.dumps(ANSWER) + "]"),
        (orjson.dumps(records(2)).decode(), preds.decode()),
    ]
    frame = read_log(url)
    assert frame["request_id"].tolist() == ["body", "body", "array", "mixed", "mixed"]
    assert frame["row"].tolist() == [0, 1, 0, 0, 1]
    assert frame["inputs"].tolist() == [
        {"age": 41, "city": "Zürich"},
        {"age": 7},
        {"age": 1, "city": "Genève ☃"},
        *records(2),
    ]
    assert frame["outputs"].tolist() == [*answers(2), ANSWER, *answers(2)]


def test_invalid_utf8_is_dropped_and_counted(db: Path, caplog_predlog) -> None:
    with PredictionLog(db) as log:
        assert log.submit("ok", b'[{"a": 1}]', b'[{"value": 1}]', **MODEL, n=1)
        assert log.submit("bad", b'[{"a": "\xff"}, {}]', b"[{}, {}]", **MODEL, n=2)
        assert log.submit("bad-out", b"[{}]", b'[{"value": "\xc3"}]', **MODEL, n=1)
    assert (log.written, log.failed, log.depth) == (1, 3, 0)
    assert read_log(db)["request_id"].tolist() == ["ok"]
    text = caplog_predlog.text
    assert "dropped request 'bad' (2 record(s)): inputs are not UTF-8" in text
    assert "dropped request 'bad-out' (1 record(s)): outputs are not UTF-8" in text


def test_sqlite_file_relative_path_folders_and_wal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with PredictionLog("sqlite:///deep/er/p.db") as log:
        assert log.url == f"sqlite:///{tmp_path}/deep/er/p.db"  # where it is, absolute
        submit(log, "a", 1)
    monkeypatch.chdir("/")  # read elsewhere, by the absolute path
    path = tmp_path / "deep/er/p.db"
    assert len(read_log(path)) == 1  # a bare path is an SQLite file too
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    assert {"predictions", "prediction_labels"} <= names
    assert {"ix_predictions_request_id", "ix_predictions_ts", "ix_predictions_model_id"} <= names
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
    with pytest.raises(
        PredictionLogError, match="another layout: it lacks request_id, ts, records"
    ):
        PredictionLog(db)


def test_the_old_per_record_layout_is_refused_clearly(db: Path) -> None:
    db.parent.mkdir()
    with sqlite3.connect(db) as con:  # the table of earlier versions, one row per record
        con.execute(
            'CREATE TABLE predictions (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, "row" '
            "INTEGER NOT NULL, ts DATETIME NOT NULL, model_name TEXT NOT NULL, model_version "
            "TEXT, model_id TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL, label "
            "TEXT, label_ts DATETIME)"
        )
        con.execute(
            "INSERT INTO predictions VALUES (1, 'r', 0, '2026-03-01 12:00:00.000000', 'm', "
            "NULL, 'x', '{}', '{}', NULL, NULL)"
        )
    message = (
        rf"prediction log sqlite:///{db}: table 'predictions' exists with another layout: it "
        r"lacks records \(it is the one-row-per-record layout of earlier versions"
    )
    with pytest.raises(PredictionLogError, match=message):
        PredictionLog(db)
    with pytest.raises(PredictionLogError, match=message):
        read_log(db)
    with pytest.raises(PredictionLogError, match=message):
        attach_labels(db, {"r": "x"})
    with sqlite3.connect(db) as con:  # left as it was
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert names == {"predictions"}
        assert con.execute("SELECT count(*) FROM predictions").fetchone() == (1,)


# --- batching, queue, close ------------------------------------------------------------------


def test_requests_are_written_whole_in_batches(db: Path) -> None:
    log = PredictionLog(db, batch_size=100, flush_interval=60)
    for i in range(25):
        assert submit(log, f"r{i}", 10)
    wait_for(lambda: log.written == 200)
    time.sleep(0.2)  # nothing else is due: the last 50 wait for batch_size or flush_interval
    assert (log.written, log.depth, log.batches) == (200, 50, 2)
    assert len(read_log(db)) == 200  # committed: another connection sees them
    assert log.close() == 0
    assert (log.written, log.depth, log.batches) == (250, 0, 3)

    # a batch is due at batch_size records, taken whole requests at a time (never split)
    log = PredictionLog(db, batch_size=100, flush_interval=60)
    for i in range(3):
        assert submit(log, f"big{i}", 70)
    wait_for(lambda: log.written == 140)
    time.sleep(0.2)
    assert (log.written, log.depth, log.batches) == (140, 70, 1)
    assert log.close() == 0
    assert (log.written, log.batches) == (210, 2)
    counts = read_log(db).groupby("request_id", sort=False).size()
    assert counts.loc[["big0", "big1", "big2"]].tolist() == [70, 70, 70]


def test_flush_interval_writes_a_small_batch(db: Path) -> None:
    with PredictionLog(db, batch_size=10_000, flush_interval=0.1) as log:
        start = time.monotonic()
        submit(log, "r", 3)
        wait_for(lambda: log.written == 3, timeout=5)
        assert 0.08 < time.monotonic() - start < 3
        assert log.batches == 1


def test_full_queue_refuses_the_whole_call_and_enqueues_nothing(db: Path) -> None:
    log = PredictionLog(db, batch_size=1000, flush_interval=60, max_queue=100)
    assert submit(log, "first", 60)
    assert log.accepting
    assert not submit(log, "refused", 41)
    assert (log.depth, log.rejected) == (60, 41)  # records, not requests
    assert not log.submit("refused-bytes", b"[]", b"[]", **MODEL, n=41)  # n counts, unparsed
    assert (log.depth, log.rejected) == (60, 82)
    assert submit(log, "fits", 40)  # exactly full
    assert not log.accepting
    assert not submit(log, "refused-too", 1)
    assert log.close() == 0
    frame = read_log(db)
    assert frame["request_id"].value_counts().to_dict() == {"first": 60, "fits": 40}
    assert not submit(log, "after-close", 1)  # closed: refused, not queued
    assert log.rejected == 84


def test_one_call_larger_than_the_queue_is_taken_when_nothing_waits(db: Path) -> None:
    with PredictionLog(db, flush_interval=60, max_queue=10) as log:
        assert submit(log, "big", 25)
        assert not submit(log, "small", 1)
    assert len(read_log(db)) == 25


def test_bad_calls_raise_and_enqueue_nothing(db: Path) -> None:
    with PredictionLog(db, flush_interval=60) as log:
        two, out = records(2), answers(2)
        with pytest.raises(ValueError, match="request_id is None"):
            log.submit(None, two, out, **MODEL)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="model_name, model_id is None"):
            log.submit("r", two, out, model_name=None, model_id=None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="model_id"):
            log.submit("r", two, out, model_name="m")  # type: ignore[call-arg]
        with pytest.raises(ValueError, match=r"n is 3 but inputs holds 2 record\(s\)"):
            log.submit("r", two, out, **MODEL, n=3)
        with pytest.raises(ValueError, match=r"1 output\(s\) for 2 record\(s\)"):
            log.submit("r", two, out[:1], **MODEL)
        with pytest.raises(ValueError, match=r"1 output\(s\) for 2 record\(s\)"):
            log.submit("r", b"[{}, {}]", out[:1], **MODEL, n=2)
        with pytest.raises(ValueError, match="n, the number of records, is needed"):
            log.submit("r", b"[{}, {}]", b"[{}, {}]", **MODEL)
        with pytest.raises(ValueError, match="n must be >= 0"):
            log.submit("r", "[]", "[]", **MODEL, n=-1)
        with pytest.raises(TypeError):
            log.submit("r", "[]", "[]", **MODEL, n="2")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="inputs must be a sequence .* not a dict"):
            log.submit("r", {"records": two}, out, **MODEL)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="inputs must be a sequence .* not a generator"):
            log.submit("r", (r for r in two), out, **MODEL)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="outputs must be a sequence .* not a dict"):
            log.submit("r", two, {"value": 1}, **MODEL)
        with pytest.raises(TypeError, match="expected a datetime, got str"):
            log.submit("r", two, out, **MODEL, ts="2026-03-01")  # type: ignore[arg-type]
        with pytest.raises(TypeError):  # the old form, one list of rows, is gone
            log.submit([{"request_id": "r", **MODEL, "inputs": {}, "outputs": {}}])  # type: ignore[call-arg]
        assert log.submit("empty", [], [], **MODEL)  # nothing to log: accepted
        assert log.submit("empty", b"[]", b"[]", **MODEL, n=0)
        assert (log.depth, log.rejected, log.flush(5)) == (0, 0, True)
    assert log.written == 0 and read_log(db).empty
    with pytest.raises(ValueError, match="when_full"):
        PredictionLog(db, when_full="drop")  # type: ignore[arg-type]


def test_close_flushes_everything_and_twice_is_safe(db: Path) -> None:
    log = PredictionLog(db, batch_size=10_000, flush_interval=60)
    for i in range(300):
        assert submit(log, f"r{i}", 7)
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
        assert submit(log, "first", 60)  # due at once (>= batch_size); the write waits
        wait_for(lambda: log.write_errors >= 1)
        start = time.monotonic()
        log.block_timeout = 0.3
        assert not submit(log, "times-out", 60)
        assert time.monotonic() - start >= 0.29
        log.block_timeout = 30
        results: list[bool] = []
        waiter = threading.Thread(target=lambda: results.append(submit(log, "waits", 60)))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive() and log.depth == 60
    waiter.join(10)  # the lock is gone: the first 60 are written, the second call goes in
    assert results == [True]
    assert log.close() == 0
    assert read_log(db)["request_id"].value_counts().to_dict() == {"first": 60, "waits": 60}
    assert log.rejected == 60
    assert "retrying" in caplog_predlog.text and "database is locked" in caplog_predlog.text
    assert "lost" not in caplog_predlog.text


def test_store_down_past_close_timeout_reports_the_loss(db: Path, caplog_predlog) -> None:
    log = PredictionLog(db, batch_size=10, flush_interval=0.05, db_timeout=0.1)
    submit(log, "ok", 5)
    assert log.flush(10)
    with locked(db):
        assert submit(log, "lost", 25)
        assert log.submit("lost-too", b"[]", b"[]", **MODEL, n=3)
        wait_for(lambda: log.write_errors >= 1)
        start = time.monotonic()
        assert log.close(timeout=1.0) == 28
        assert time.monotonic() - start < 3
    assert (log.written, log.failed, log.depth) == (5, 28, 0)
    assert log.close() == 28  # the same answer again
    assert "28 prediction(s) lost" in caplog_predlog.text
    assert read_log(db)["request_id"].tolist() == ["ok"] * 5


def test_requests_that_cannot_be_stored_are_dropped_alone(url: str, caplog_predlog) -> None:
    """A batch the database (or its driver) refuses is written request by request: only the
    bad requests are dropped, each counted by its records and logged."""
    nul = url.startswith("postgresql")  # PostgreSQL text cannot hold NUL; SQLite's can
    with PredictionLog(url, flush_interval=60) as log:
        assert submit(log, "good", 2)
        assert log.submit("surrogate", '[{"a": "\ud800"}]', "[{}]", **MODEL, n=1)
        assert log.submit("not-records", [{"a": 1}, ["a", 1]], [{}, {}], **MODEL)
        assert log.submit("bad-utf8", b"[\xff]", b"[{}]", **MODEL, n=1)
        if nul:
            assert log.submit("nul", '[{"a": "\x00"}, {}]', "[{}, {}]", **MODEL, n=2)
        assert submit(log, "good-too", 3)
    assert (log.written, log.failed) == (5, 4 + 2 * nul)
    assert read_log(url)["request_id"].tolist() == ["good"] * 2 + ["good-too"] * 3
    text = caplog_predlog.text
    assert "the database refused request 'surrogate' (1 record(s))" in text
    assert "surrogates not allowed" in text
    assert "dropped request 'not-records' (2 record(s)): inputs[1] is a list, not a mapping" in text
    assert "dropped request 'bad-utf8' (1 record(s)): inputs are not UTF-8" in text
    assert not nul or "the database refused request 'nul' (2 record(s))" in text


def test_postgres_table_of_other_column_types_is_written_too(pg_url: str) -> None:
    """A ``predictions`` table made by hand with wider types (bigint, varchar, timestamp
    without time zone) has our columns: it is used, through a text COPY (the server converts
    the values; a binary COPY would be refused)."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE predictions (id bigserial PRIMARY KEY, request_id varchar(64) NOT "
            "NULL, ts timestamp NOT NULL, records bigint NOT NULL, model_name text NOT NULL, "
            "model_version text, model_id text NOT NULL, inputs text NOT NULL, outputs text "
            "NOT NULL, note text)"
        )
    engine.dispose()
    with PredictionLog(pg_url) as log:
        assert submit(log, "a", 2, ts=T0)
        assert log.submit("b", b"[{}]", b"[{}]", **MODEL, n=1, ts=T0)
    assert (log.written, log.failed) == (3, 0)
    frame = read_log(pg_url)
    assert frame["request_id"].tolist() == ["a", "a", "b"]
    assert frame["inputs"].tolist() == [*records(2), {}]


# --- several processes -----------------------------------------------------------------------

WORKER = """
import json, random, sys, time
from pathlib import Path
import orjson
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
    inputs = [{"worker": worker, "i": sent + j} for j in range(k)]
    outputs = [{"value": sent + j} for j in range(k)]
    if request % 2:  # as the service does: the body as received, the answer's bytes
        inputs = orjson.dumps({"records": inputs})
        outputs = orjson.dumps(outputs)
    while not log.submit(f"w{worker}-{request}", inputs, outputs, model_name="m",
                         model_id="x", n=k):
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
    # every process has created (or found) the tables; start them writing at the same moment
    wait_for(lambda: all((tmp_path / f"ready{w}").exists() for w in range(4)), timeout=60)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err and "lost" not in err, err
    for out, _ in outs[:3]:
        assert json.loads(out) == {"lost": 0, "written": n}

    frame = read_log(url)
    assert len(frame) == 4 * n
    assert not frame.duplicated(["request_id", "row"]).any()
    assert not frame.duplicated(["id", "row"]).any()
    assert frame.groupby("id")["request_id"].nunique().eq(1).all()  # one table row per request
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
            submit(log, f"r{i}", 2, ts=ts, model_version=version, model_id=model_id)

    def ids(**filters) -> list[str]:
        return read_log(url, **filters)["request_id"].iloc[::2].tolist()

    assert ids() == ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert ids(last=4) == ["r4", "r5"]
    assert read_log(url, last=3)["row"].tolist() == [1, 0, 1]  # still in (id, row) order
    assert ids(since=T0 + timedelta(minutes=2)) == ["r2", "r3", "r4", "r5"]
    assert ids(until=T0 + timedelta(minutes=2)) == ["r0", "r1"]  # until is exclusive
    naive = (T0 + timedelta(minutes=1)).replace(tzinfo=None)  # naive means UTC
    aware = (T0 + timedelta(minutes=3)).astimezone(timezone(timedelta(hours=-5)))
    assert ids(since=naive, until=aware) == ["r1", "r2"]
    assert ids(model_version="v2") == ["r4", "r5"]
    assert ids(model_id="aaa", last=2) == ["r3"]
    assert ids(model_id="aaa", last=1000) == ["r0", "r1", "r2", "r3"]
    assert ids(model_id="aaa", model_version="v2") == []
    empty = read_log(url, last=0)
    assert list(empty.columns) == list(COLUMNS) and empty.empty
    assert str(empty["ts"].dtype) == str(read_log(url)["ts"].dtype)
    with pytest.raises(ValueError, match="last must be >= 0"):
        read_log(url, last=-1)


def test_last_keeps_the_last_records_cutting_into_a_request(url: str) -> None:
    """``last`` counts records: the oldest request kept loses its first records. Thousands of
    requests of 1 to 3 records, so the ids are looked up in several chunks."""
    sizes = [1 + i % 3 for i in range(2502)]
    with PredictionLog(url, max_queue=10**6) as log:
        for i, k in enumerate(sizes):
            version = "v2" if i % 5 == 0 else "v1"
            body = orjson.dumps({"records": records(k, start=i)})
            assert log.submit(f"r{i}", body, orjson.dumps(answers(k)), **MODEL, n=k,
                              model_version=version)  # fmt: skip
    whole = read_log(url)
    assert len(whole) == sum(sizes) == 5004
    assert whole["row"].tolist() == [r for k in sizes for r in range(k)]
    for last in (1, 2, 3, 4, 999, 1000, 1001, 2500, 5003, 5004, 5005):
        tail = read_log(url, last=last)
        expected = whole.iloc[-last:].reset_index(drop=True)
        pd.testing.assert_frame_equal(tail, expected)
    tail = read_log(url, last=3)  # r2501 has 3 records, r2500 2
    assert list(zip(tail["request_id"], tail["row"], strict=True)) == [
        ("r2501", r) for r in (0, 1, 2)
    ]
    tail = read_log(url, last=4)
    assert tail["request_id"].tolist() == ["r2500"] + ["r2501"] * 3
    assert tail["row"].tolist() == [1, 0, 1, 2]  # the cut request keeps its last record
    assert tail["inputs"].iloc[0] == records(2, start=2500)[1]
    v2 = whole[whole["model_version"] == "v2"].reset_index(drop=True)
    for last in (1, 2, 7, 1500, 10**6):
        pd.testing.assert_frame_equal(
            read_log(url, last=last, model_version="v2"), v2.iloc[-last:].reset_index(drop=True)
        )


def test_read_log_of_nothing(tmp_path: Path) -> None:
    with pytest.raises(PredictionLogError, match="no prediction log at .*missing.db"):
        read_log(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()  # not created by reading
    sqlite3.connect(tmp_path / "other.db").close()
    assert read_log(tmp_path / "other.db").empty  # nothing logged yet
    assert attach_labels(tmp_path / "other.db", {"r": "x"}) == Attached(0)


def test_an_entry_that_does_not_hold_its_records_is_an_error(db: Path) -> None:
    with PredictionLog(db) as log:
        submit(log, "fine", 2)
    bad = [
        ("short", 3, '[{"a": 1}, {"a": 2}]', "[{}, {}, {}]", "inputs are not an array"),
        ("object", 1, '{"rows": [{}]}', "[{}]", "inputs are not an array"),
        ("outputs", 2, "[{}, {}]", '{"value": 1}', "outputs are not an array of its 2"),
        ("broken", 1, "[{}", "[{}]", "is not valid JSON"),
    ]
    for request_id, n, inputs, outputs, message in bad:
        with sqlite3.connect(db) as con:  # as a buggy writer or a hand edit would leave it
            con.execute(
                "INSERT INTO predictions (request_id, ts, records, model_name, model_id, inputs,"
                " outputs) VALUES (?, '2026-03-01 12:00:00.000000', ?, 'm', 'x', ?, ?)",
                (request_id, n, inputs, outputs),
            )
            (id_,) = con.execute("SELECT max(id) FROM predictions").fetchone()
        pattern = rf"prediction log sqlite:///.*: entry id {id_} \(request '{request_id}'\).*"
        with pytest.raises(PredictionLogError, match=pattern + message):
            read_log(db)
        with sqlite3.connect(db) as con:
            con.execute("DELETE FROM predictions WHERE id = ?", (id_,))
    assert read_log(db)["request_id"].tolist() == ["fine", "fine"]


def test_attach_labels(url: str) -> None:
    with PredictionLog(url) as log:
        submit(log, "single", 1)
        submit(log, "three", 3)
        log.submit("pairs", b'{"records": [{}, {}]}', b"[{}, {}]", **MODEL, n=2)
        submit(log, "unlabelled", 1)
    start = pd.Timestamp.now(tz="UTC")
    labels = {"single": ">50K", "three": ["a", "b", "c", "d"], "nope": "x"}
    assert attach_labels(url, labels, by="ana") == Attached(4, 4)
    assert attach_labels(url, [("pairs", 1, np.int64(1)), ("pairs", 5, "no such row")]).matched == 1
    assert attach_labels(url, [("pairs", -1, "x"), ("nope", 0, "x")]) == Attached(0)
    assert attach_labels(url, {}) == Attached(0)

    frame = read_log(url).set_index(["request_id", "row"])
    assert frame.loc[("single", 0), "label"] == ">50K"
    assert frame.loc["three", "label"].tolist() == ["a", "b", "c"]
    assert frame.loc[("pairs", 1), "label"] == "1"  # stored as text
    assert pd.isna(frame.loc[("pairs", 0), "label"])
    assert pd.isna(frame.loc[("pairs", 0), "label_ts"])
    assert pd.isna(frame.loc[("unlabelled", 0), "label"])
    labelled = frame["label_ts"].dropna()
    assert len(labelled) == 5 and (labelled >= start - pd.Timedelta(seconds=1)).all()
    assert str(frame["label_ts"].dtype) == "datetime64[us, UTC]"
    assert frame.loc["three", "labelled_by"].tolist() == ["ana"] * 3
    assert frame.loc[("pairs", 1), "labelled_by"] == local_author()  # cli:<user>
    assert pd.isna(frame.loc[("pairs", 0), "labelled_by"])

    # a label given already is kept unless the call says overwrite; the same label again
    # changes nothing (a retry is no conflict)
    first = frame.loc[("three", 1), "label_ts"]
    assert attach_labels(url, [("three", 1, "B"), ("three", 0, "a")]) == Attached(1, 0, 1)
    assert read_log(url).set_index(["request_id", "row"]).loc[("three", 1), "label"] == "b"
    time.sleep(0.01)
    twice = [("three", 1, "B"), ("three", 1, "B2")]  # the last wins
    assert attach_labels(url, twice, by="bo", overwrite=True) == Attached(1, 1)
    again = read_log(url).set_index(["request_id", "row"])
    assert again.loc["three", "label"].tolist() == ["a", "B2", "c"]
    assert again.loc["three", "labelled_by"].tolist() == ["ana", "bo", "ana"]
    assert again.loc[("three", 1), "label_ts"] > first
    assert again.loc[("three", 0), "label_ts"] == frame.loc[("three", 0), "label_ts"]

    assert attach_labels(url, {"three": None}) == Attached(0, 0, 3)  # removing is a change too
    cleared = attach_labels(url, {"three": None}, by="bo", overwrite=True)
    assert cleared == Attached(3, 3)  # None clears; every record of the request
    cleared = read_log(url).set_index("request_id").loc["three"]
    assert cleared["label"].isna().all() and cleared["label_ts"].isna().all()
    assert attach_labels(url, {"three": None}) == Attached(3)  # clearing again: no change
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            'SELECT request_id, "row", label FROM prediction_labels ORDER BY 1, 2'
        ).all()
        audit = conn.exec_driver_sql(
            'SELECT request_id, "row", labelled_by, previous, label, ts '
            "FROM prediction_label_changes WHERE request_id = 'three' ORDER BY id"
        ).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [("pairs", 1, "1"), ("single", 0, ">50K")]
    # every change: who, the previous label (None: the first), the new one (None: removed)
    assert [tuple(r)[:5] for r in audit] == [
        ("three", 0, "ana", None, "a"),
        ("three", 1, "ana", None, "b"),
        ("three", 2, "ana", None, "c"),
        ("three", 1, "bo", "b", "B2"),
        ("three", 0, "bo", "a", None),
        ("three", 1, "bo", "B2", None),
        ("three", 2, "bo", "c", None),
    ]
    assert all(r[5] is not None for r in audit)

    with pytest.raises(TypeError, match="labels must be a mapping"):
        attach_labels(url, ["single"])  # type: ignore[list-item]


def test_a_label_table_of_an_earlier_version_gets_its_author_column(url: str) -> None:
    """A log whose prediction_labels was made before labelled_by existed is read as it is
    (its labels' author unknown), and upgraded, not refused, by the next label write or
    service start; its labels are kept."""
    with PredictionLog(url) as log:
        submit(log, "old", 2)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # the label table as earlier versions made it
        conn.exec_driver_sql("DROP TABLE prediction_labels")
        conn.exec_driver_sql("DROP TABLE prediction_label_changes")
        conn.exec_driver_sql(
            'CREATE TABLE prediction_labels (request_id TEXT NOT NULL, "row" INTEGER NOT NULL, '
            "label TEXT NOT NULL, ts TIMESTAMP WITH TIME ZONE NOT NULL, "
            'PRIMARY KEY (request_id, "row"))'
        )
        conn.exec_driver_sql(
            "INSERT INTO prediction_labels VALUES ('old', 0, 'x', '2026-03-01 12:00:00.000000')"
        )
    before = read_log(url)
    assert before["label"].tolist()[:1] == ["x"] and before["labelled_by"].isna().all()
    assert attach_labels(url, [("old", 1, "y")], by="ana") == Attached(1, 1)
    PredictionLog(url).close()  # the service's start finds it upgraded
    frame = read_log(url)
    assert frame["label"].tolist() == ["x", "y"]
    assert pd.isna(frame["labelled_by"].iloc[0]) and frame["labelled_by"].iloc[1] == "ana"
    with engine.connect() as conn:
        changes = conn.exec_driver_sql("SELECT count(*) FROM prediction_label_changes").scalar()
    engine.dispose()
    assert changes == 1


def test_a_log_of_an_earlier_version_gets_roles_and_shadow_outputs(url: str) -> None:
    """A log made before the answering model's role and the shadow's outputs were recorded is
    read as it is (production answered every record, no shadow scored any), and upgraded,
    not refused, by the next start: its rows read "prod", and new rows say who answered and
    carry the shadow's outputs, record by record."""
    with PredictionLog(url) as log:
        submit(log, "old", 2)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # as earlier versions made it
        conn.exec_driver_sql("DROP TABLE prediction_shadows")
        conn.exec_driver_sql("ALTER TABLE predictions DROP COLUMN role")
    before = read_log(url)
    assert list(before.columns) == list(COLUMNS)
    assert before["role"].tolist() == ["prod", "prod"]
    assert before["shadow_output"].isna().all() and before["shadow_model_id"].isna().all()
    shadow = {"model_name": "adult", "model_id": "5had0w5had0w", "model_version": "v2"}
    with PredictionLog(url) as log:  # the service's start upgrades it
        assert submit(log, "new", 3, role="canary")
        assert log.submit_shadow("old", answers(2)[::-1], **shadow, n=2)
        with pytest.raises(ValueError, match="role must be one of"):
            submit(log, "bad", 1, role="shadow")
    engine.dispose()
    frame = read_log(url)
    assert stored(url, "role") == [("prod",), ("canary",)]
    assert frame["role"].tolist() == ["prod"] * 2 + ["canary"] * 3
    assert frame["shadow_output"].tolist() == answers(2)[::-1] + [None] * 3
    assert frame["shadow_model_id"].tolist()[:2] == ["5had0w5had0w"] * 2
    assert frame["shadow_model_version"].tolist()[:2] == ["v2"] * 2
    assert frame["shadow_model_id"].iloc[2:].isna().all()
    last = read_log(url, last=4)  # the first request's records cut: its shadow's too
    assert last["shadow_output"].tolist() == answers(2)[:1] + [None] * 3


def test_labels_of_a_request_id_logged_twice_go_by_position(url: str) -> None:
    with PredictionLog(url) as log:
        submit(log, "again", 2)
        submit(log, "again", 3)
        submit(log, "other", 1)
    assert attach_labels(url, {"again": "x"}).matched == 3  # positions 0..2: the longer one
    assert attach_labels(url, [("again", 2, "z")], overwrite=True).matched == 1
    frame = read_log(url)
    assert frame["request_id"].tolist() == ["again"] * 5 + ["other"]
    assert frame["label"].tolist()[:5] == ["x", "x", "x", "x", "z"]
    assert pd.isna(frame["label"].iloc[5])
    # filters and `last` select requests; their labels follow
    tail = read_log(url, last=2)
    assert tail["request_id"].tolist() == ["again", "other"]
    assert tail["row"].tolist() == [2, 0] and tail["label"].iloc[0] == "z"


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
    with pytest.raises(PredictionLogError) as exc:
        attach_labels(bad, {"r": "x"})
    assert "s3cr3t" not in str(exc.value)
    assert "s3cr3t" not in caplog_predlog.text


def test_in_memory_sqlite_is_refused() -> None:
    with pytest.raises(PredictionLogError, match="needs an SQLite file"):
        PredictionLog("sqlite://")


def test_postgres_outage_is_retried_and_never_logs_the_password(
    postgres_url: str, caplog_predlog
) -> None:
    """The log's role loses its right to log in and its connection is cut (the database is
    down for it); requests wait and are retried; once it may log in again, they are written."""
    from sqlalchemy.exc import ProgrammingError

    role, password = f"predlog_{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex}"
    admin = sa.create_engine(postgres_url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            conn.exec_driver_sql(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    except ProgrammingError as exc:  # pragma: no cover - .ci/run's user is a superuser
        pytest.skip(f"the test server's user cannot create roles: {exc.orig}")
    try:
        url = in_schema(postgres_url, role, username=role, password=password)
        log = PredictionLog(url, flush_interval=0.02, db_timeout=2)
        submit(log, "before", 5)
        assert log.flush(10)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {role} NOLOGIN")
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            )
        assert submit(log, "during", 5)
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


# --- labels from a file ----------------------------------------------------------------------


def test_labels_from_a_file_keep_ids_as_text_and_name_bad_lines(tmp_path: Path) -> None:
    good = tmp_path / "labels.csv"
    good.write_text("request_id,row,label\n007,0,yes\n007,,no\nabc, 2 ,yes\n")
    assert labels_from_file(good) == [("007", 0, "yes"), ("007", None, "no"), ("abc", 2, "yes")]
    jsonl = tmp_path / "labels.jsonl"
    jsonl.write_text('{"request_id": "r1", "label": 1}\n{"request_id": "r2", "label": 0}\n')
    assert labels_from_file(jsonl) == [("r1", None, "1"), ("r2", None, "0")]
    for text, message in [
        ("request_id,lbl\na,yes\n", r"missing column\(s\) \['label'\]"),
        ("request_id,label\na,yes\n,no\n", r"'request_id' is empty in 1 record.*\[1\]"),
        ("request_id,row,label\na,-1,yes\nb,1.5,no\nc,x,no\n", r"'row' must hold.*\[0, 1, 2\]"),
        ("request_id,label\na,\n", r"'label' is empty"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            labels_from_file(bad)


def test_the_feedback_command_labels_the_log(db: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{db}"
    with PredictionLog(url) as log:
        assert log.submit("007", [{"a": 1}, {"a": 2}], [{"value": 1.0}] * 2, **MODEL)
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,row,label\n007,1,yes\n008,0,no\n")
    done = cli(tmp_path, "feedback", str(labels), "--log-url", url, check=False)
    assert done.returncode == 0, done.stderr
    assert "2 label(s) read, 1 logged record(s) labelled" in done.stderr
    assert read_log(url)["label"].tolist()[1] == "yes"
    missing = cli(tmp_path, "feedback", str(tmp_path / "nope.csv"), "--log-url", url, check=False)
    assert missing.returncode == 1 and "nope.csv does not exist" in missing.stderr

"""The prediction log: rows/s written through ``PredictionLog`` against a bare ``executemany``.

The rows are Adult test records (``data/external/adult/adult.test.gz``, resampled to ``--rows``)
with a classifier's outputs, ``--request-rows`` records per request, as the service logs them.

  (a) PredictionLog  ``submit()`` every request as fast as possible, then ``close()``: rows /
                     (first submit to close returning), the writer thread in the same process
  (b) bare sqlite3   ``json.dumps`` of inputs and outputs + one ``executemany`` of the same rows
                     in one transaction, same table and indexes, WAL, ``synchronous=NORMAL``

each in a fresh SQLite file in a temporary folder, best of ``--repeat``; then the cost of one
``submit()`` call (median, microseconds) with the writer idle, for 1 and ``--request-rows``
rows. With ``--postgres URL`` (or $MLCYCLE_TEST_POSTGRES_URL) the same for PostgreSQL, in a
schema created and dropped here, against psycopg's ``executemany`` in one transaction.

    python bench/bench_predlog.py [--rows 200000] [--request-rows 10] [--repeat 3]
        [--batch-size 1000] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle.predlog import PredictionLog, read_log

ROOT = Path(__file__).resolve().parents[1]
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
]
SQLITE_DDL = [
    """CREATE TABLE predictions (id INTEGER NOT NULL PRIMARY KEY, request_id TEXT NOT NULL,
    "row" INTEGER NOT NULL, ts DATETIME NOT NULL, model_name TEXT NOT NULL, model_version TEXT,
    model_id TEXT NOT NULL, inputs TEXT NOT NULL, outputs TEXT NOT NULL, label TEXT,
    label_ts DATETIME)""",
    "CREATE INDEX ix_predictions_model_id ON predictions (model_id)",
    "CREATE INDEX ix_predictions_request_id ON predictions (request_id)",
    "CREATE INDEX ix_predictions_ts ON predictions (ts)",
]
INSERT = (
    'INSERT INTO predictions (request_id, "row", ts, model_name, model_version, model_id, '
    "inputs, outputs) VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0}, {0})"
)


def make_rows(n: int, per_request: int) -> list[dict]:
    """``n`` log rows: resampled Adult test records (raw, as JSON would bring them) and a
    binary classifier's outputs, ``per_request`` rows per request id."""
    raw = pd.read_csv(
        ROOT / "data/external/adult/adult.test.gz",
        header=None,
        skiprows=1,
        names=[*ADULT_COLUMNS, "income"],
        skipinitialspace=True,
    ).drop(columns="income")
    rng = np.random.default_rng(0)
    records = raw.iloc[rng.integers(0, len(raw), n)].to_dict("records")
    p = rng.random(n)
    ts = datetime.now(UTC)
    return [
        {
            "request_id": uuid.UUID(int=i // per_request).hex,
            "row": i % per_request,
            "ts": ts,
            "model_name": "adult",
            "model_version": "v1",
            "model_id": "0123456789ab",
            "inputs": rec,
            "outputs": {
                "label": ">50K" if p[i] >= 0.5 else "<=50K",
                "probabilities": {"<=50K": 1 - float(p[i]), ">50K": float(p[i])},
                "probability": float(p[i]),
            },
        }
        for i, rec in enumerate(records)
    ]


def as_values(rows: list[dict], ts: object) -> list[tuple]:
    return [
        (
            r["request_id"],
            r["row"],
            ts,
            r["model_name"],
            r["model_version"],
            r["model_id"],
            json.dumps(r["inputs"]),
            json.dumps(r["outputs"]),
        )
        for r in rows
    ]


def through_log(url: str, rows: list[dict], per_request: int, batch_size: int) -> float:
    """Seconds from the first submit() to close() returning, every row written."""
    log = PredictionLog(url, batch_size=batch_size, max_queue=len(rows))
    start = time.perf_counter()
    for i in range(0, len(rows), per_request):
        if not log.submit(rows[i : i + per_request]):
            raise SystemExit("submit() refused rows: the queue should hold them all")
    lost = log.close(timeout=600)
    elapsed = time.perf_counter() - start
    if lost or log.written != len(rows):
        raise SystemExit(f"only {log.written} of {len(rows)} rows written")
    return elapsed


def bare_sqlite(path: Path, rows: list[dict]) -> float:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    for ddl in SQLITE_DDL:
        con.execute(ddl)
    start = time.perf_counter()
    ts = rows[0]["ts"].replace(tzinfo=None).isoformat(" ", "microseconds")
    con.execute("BEGIN")
    con.executemany(INSERT.format("?"), as_values(rows, ts))
    con.execute("COMMIT")
    elapsed = time.perf_counter() - start
    con.close()
    return elapsed


def best(repeat: int, fn: Callable[[int], float]) -> float:
    return min(fn(i) for i in range(repeat))


def submit_cost(url: str, rows: list[dict], size: int, calls: int = 20_000) -> float:
    """Median microseconds per submit() of ``size`` rows, the writer idle (nothing is due)."""
    log = PredictionLog(url, batch_size=10**9, flush_interval=3600, max_queue=10**9)
    starts = [i * size % (len(rows) - size) for i in range(calls)]
    chunks = [rows[k : k + size] for k in starts]
    times = []
    for chunk in chunks:
        start = time.perf_counter()
        log.submit(chunk)
        times.append(time.perf_counter() - start)
    log.close(timeout=600)
    return statistics.median(times) * 1e6


def report(name: str, n: int, t_log: float, t_bare: float, bare_name: str) -> None:
    print(f"  PredictionLog   {t_log:7.3f} s  {n / t_log:10,.0f} rows/s")
    print(f"  {bare_name:<15} {t_bare:7.3f} s  {n / t_bare:10,.0f} rows/s   (baseline)")
    print(f"  ratio           {t_log / t_bare:7.2f}x time")


def bench_postgres(url: str, rows: list[dict], args: argparse.Namespace) -> None:
    import psycopg
    import sqlalchemy as sa

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    scoped_url = scoped.render_as_string(hide_password=False)
    libpq = scoped.set(drivername="postgresql").render_as_string(hide_password=False)
    try:

        def log_run(i: int) -> float:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.predictions")
            return through_log(scoped_url, rows, args.request_rows, args.batch_size)

        def bare_run(i: int) -> float:
            with engine.begin() as conn:  # the table PredictionLog made, emptied
                conn.exec_driver_sql(f"TRUNCATE {schema}.predictions")
            with psycopg.connect(libpq) as con:
                start = time.perf_counter()
                with con.cursor() as cur:
                    cur.executemany(INSERT.format("%s"), as_values(rows, rows[0]["ts"]))
                con.commit()
                return time.perf_counter() - start

        t_log = best(args.repeat, log_run)
        t_bare = best(args.repeat, bare_run)
        print(f"PostgreSQL, {len(rows):,} rows, best of {args.repeat}:")
        report("postgres", len(rows), t_log, t_bare, "bare psycopg")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--request-rows", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--postgres", default=os.environ.get("MLCYCLE_TEST_POSTGRES_URL"))
    args = ap.parse_args()
    rows = make_rows(args.rows, args.request_rows)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t_log = best(
            args.repeat,
            lambda i: through_log(
                f"sqlite:///{folder}/log{i}.db", rows, args.request_rows, args.batch_size
            ),
        )
        t_bare = best(args.repeat, lambda i: bare_sqlite(folder / f"bare{i}.db", rows))
        check = read_log(f"sqlite:///{folder}/log0.db", last=1)
        assert check["outputs"].iloc[0] == rows[-1]["outputs"], "round trip"
        print(
            f"SQLite (WAL, synchronous=NORMAL), {args.rows:,} rows in requests of "
            f"{args.request_rows}, batch_size {args.batch_size}, best of {args.repeat}:"
        )
        report("sqlite", args.rows, t_log, t_bare, "bare sqlite3")
        print("submit() per call, writer idle (median of 20,000 calls):")
        for size in sorted({1, args.request_rows}):
            cost = submit_cost(f"sqlite:///{folder}/submit{size}.db", rows, size)
            print(f"  {size:>4} row(s)     {cost:7.2f} us")
    if args.postgres:
        bench_postgres(args.postgres, rows, args)


if __name__ == "__main__":
    main()

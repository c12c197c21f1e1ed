"""The prediction log: records/s written through ``PredictionLog`` against a bare ``executemany``.

The records are Adult test records (``data/external/adult/adult.test.gz``, resampled to
``--rows``) with a classifier's outputs, ``--request-rows`` records per request, one table row
per request, as the service logs them:

  (a) log, sequences  ``submit()`` of every request's records and outputs as lists of dicts
                      (serialised by the writer thread), as fast as possible, then ``close()``:
                      records / (first submit to close returning), the writer in this process
  (b) log, JSON bytes the same with the request body as received (``{"records": [...]}``) and
                      the bytes of the predictions, as the service passes them (no serialising)
  (c) bare sqlite3    ``json.dumps`` of each request's records and outputs + one
                      ``executemany`` of the same per-request rows in one transaction, same
                      table and indexes, WAL, ``synchronous=NORMAL`` (the baseline)
  (d) bare, JSON      the same, the JSON given (the body and predictions of (b), decoded)

each in a fresh SQLite file in a temporary folder, best of ``--repeat``; ``cpu`` is the
process's CPU time per record (what the log takes from the service). Then the cost of one
``submit()`` call (median, microseconds) with the writer idle, for 1 and ``--request-rows``
records, as JSON bytes and as sequences, and the time ``read_log`` takes to read the whole log
back. With ``--postgres URL`` (or $MLCYCLE_TEST_POSTGRES_URL) the same for PostgreSQL, in a
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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.schema import CreateIndex, CreateTable

from mlcycle.predlog import INSERT_COLUMNS, PredictionLog, predictions, read_log

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
# the table and indexes exactly as PredictionLog creates them in SQLite
SQLITE_DDL = [
    str(CreateTable(predictions).compile(dialect=sqlite_dialect.dialect())),
    *(
        str(CreateIndex(ix).compile(dialect=sqlite_dialect.dialect()))
        for ix in sorted(predictions.indexes, key=lambda ix: str(ix.name))
    ),
]
INSERT = (
    f"INSERT INTO predictions ({', '.join(INSERT_COLUMNS)}) "
    f"VALUES ({', '.join(['{0}'] * len(INSERT_COLUMNS))})"
)
MODEL = {"model_name": "adult", "model_id": "0123456789ab", "model_version": "v1"}


@dataclass(frozen=True)
class Request:
    """One logged request: its records and outputs, and the same as the service has them in
    JSON (the body as a client sends it, the predictions as answered)."""

    request_id: str
    records: list[dict]
    outputs: list[dict]
    body: bytes
    preds: bytes


def make_requests(n: int, per_request: int) -> list[Request]:
    """``n`` records: resampled Adult test records (raw, as JSON would bring them) and a binary
    classifier's outputs, ``per_request`` records per request."""
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
    outputs = [
        {
            "label": ">50K" if p[i] >= 0.5 else "<=50K",
            "probabilities": {"<=50K": 1 - float(p[i]), ">50K": float(p[i])},
            "probability": float(p[i]),
        }
        for i in range(n)
    ]
    requests = []
    for start in range(0, n, per_request):
        recs, outs = records[start : start + per_request], outputs[start : start + per_request]
        requests.append(
            Request(
                uuid.UUID(int=start // per_request).hex,
                recs,
                outs,
                json.dumps({"records": recs}).encode(),  # as a client sends it
                orjson.dumps(outs),  # as the service answers
            )
        )
    return requests


def as_values(requests: list[Request], ts: object, given: bool) -> list[tuple]:
    """The insert values of ``requests`` (:data:`INSERT_COLUMNS`), JSON by ``json.dumps`` or,
    ``given``, the request's own JSON decoded."""
    return [
        (
            r.request_id,
            ts,
            len(r.records),
            MODEL["model_name"],
            MODEL["model_version"],
            MODEL["model_id"],
            r.body.decode() if given else json.dumps(r.records),
            r.preds.decode() if given else json.dumps(r.outputs),
        )
        for r in requests
    ]


def through_log(
    url: str, requests: list[Request], raw: bool, batch_size: int
) -> tuple[float, float]:
    """Seconds (wall, CPU) from the first submit() to close() returning, every record written;
    ``raw``: submit the JSON bytes, else the sequences."""
    n = sum(len(r.records) for r in requests)
    log = PredictionLog(url, batch_size=batch_size, max_queue=n)
    submit = log.submit
    start, cpu = time.perf_counter(), time.process_time()
    if raw:
        for r in requests:
            if not submit(r.request_id, r.body, r.preds, **MODEL, n=len(r.records)):
                raise SystemExit("submit() refused a request: the queue should hold them all")
    else:
        for r in requests:
            if not submit(r.request_id, r.records, r.outputs, **MODEL):
                raise SystemExit("submit() refused a request: the queue should hold them all")
    lost = log.close(timeout=600)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    if lost or log.written != n:
        raise SystemExit(f"only {log.written} of {n} records written")
    return elapsed, cpu


def bare_sqlite(path: Path, requests: list[Request], given: bool) -> tuple[float, float]:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    for ddl in SQLITE_DDL:
        con.execute(ddl)
    start, cpu = time.perf_counter(), time.process_time()
    ts = datetime.now(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    con.execute("BEGIN")
    con.executemany(INSERT.format("?"), as_values(requests, ts, given))
    con.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    con.close()
    return elapsed, cpu


def best(repeat: int, fn: Callable[[int], tuple[float, float]]) -> tuple[float, float]:
    return min(fn(i) for i in range(repeat))


def submit_cost(url: str, requests: list[Request], raw: bool, calls: int = 20_000) -> float:
    """Median microseconds per submit() of one of ``requests``, the writer idle (nothing is
    due); the arguments are made before the clock starts."""
    log = PredictionLog(url, batch_size=10**12, flush_interval=3600, max_queue=10**12)
    submit, perf_counter = log.submit, time.perf_counter
    name, model_id, version = MODEL["model_name"], MODEL["model_id"], MODEL["model_version"]
    picked = [requests[i % len(requests)] for i in range(calls)]
    times = []
    if raw:
        for rid, body, preds, n in [
            (r.request_id, r.body, r.preds, len(r.records)) for r in picked
        ]:
            start = perf_counter()
            submit(rid, body, preds, model_name=name, model_id=model_id, model_version=version, n=n)
            times.append(perf_counter() - start)
    else:
        for rid, recs, outs in [(r.request_id, r.records, r.outputs) for r in picked]:
            start = perf_counter()
            submit(rid, recs, outs, model_name=name, model_id=model_id, model_version=version)
            times.append(perf_counter() - start)
    log.close(timeout=600)
    return statistics.median(times) * 1e6


def report(n: int, runs: list[tuple[str, tuple[float, float]]], base: float) -> None:
    for name, (wall, cpu) in runs:
        print(
            f"  {name:<18} {wall:7.3f} s  {n / wall:10,.0f} records/s  "
            f"cpu {cpu / n * 1e6:6.2f} us/record  {wall / base:5.2f}x baseline time"
        )


def bench_postgres(url: str, requests: list[Request], n: int, args: argparse.Namespace) -> None:
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

        def log_run(raw: bool) -> tuple[float, float]:
            with engine.begin() as conn:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {schema}.predictions")
            return through_log(scoped_url, requests, raw, args.batch_size)

        def bare_run(given: bool) -> tuple[float, float]:
            with engine.begin() as conn:  # the table PredictionLog made, emptied
                conn.exec_driver_sql(f"TRUNCATE {schema}.predictions")
            with psycopg.connect(libpq) as con:
                start, cpu = time.perf_counter(), time.process_time()
                with con.cursor() as cur:
                    values = as_values(requests, datetime.now(UTC), given)
                    cur.executemany(INSERT.format("%s"), values)
                con.commit()
                return time.perf_counter() - start, time.process_time() - cpu

        runs = [
            ("log, sequences", best(args.repeat, lambda i: log_run(False))),
            ("log, JSON bytes", best(args.repeat, lambda i: log_run(True))),
            ("bare psycopg", best(args.repeat, lambda i: bare_run(False))),
            ("bare, JSON given", best(args.repeat, lambda i: bare_run(True))),
        ]
        print(
            f"PostgreSQL, {n:,} records in requests of {args.request_rows}, "
            f"batch_size {args.batch_size}, best of {args.repeat}:"
        )
        report(n, runs, runs[2][1][0])
        start = time.perf_counter()
        frame = read_log(scoped_url)
        print(
            f"  read_log           {time.perf_counter() - start:7.3f} s  ({len(frame):,} records)"
        )
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
    requests = make_requests(args.rows, args.request_rows)
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def log_run(raw: bool) -> Callable[[int], tuple[float, float]]:
            name = "bytes" if raw else "seq"
            return lambda i: through_log(
                f"sqlite:///{folder}/log-{name}{i}.db", requests, raw, args.batch_size
            )

        def bare_run(given: bool) -> Callable[[int], tuple[float, float]]:
            return lambda i: bare_sqlite(folder / f"bare-{given}{i}.db", requests, given)

        runs = [
            ("log, sequences", best(args.repeat, log_run(False))),
            ("log, JSON bytes", best(args.repeat, log_run(True))),
            ("bare sqlite3", best(args.repeat, bare_run(False))),
            ("bare, JSON given", best(args.repeat, bare_run(True))),
        ]
        for name in ("seq", "bytes"):  # the round trip, both ways
            check = read_log(f"sqlite:///{folder}/log-{name}0.db", last=1)
            assert check["inputs"].iloc[0] == requests[-1].records[-1], "round trip"
            assert check["outputs"].iloc[0] == requests[-1].outputs[-1], "round trip"
        print(
            f"SQLite (WAL, synchronous=NORMAL), {n:,} records in requests of "
            f"{args.request_rows}, batch_size {args.batch_size}, best of {args.repeat}:"
        )
        report(n, runs, runs[2][1][0])
        start = time.perf_counter()
        frame = read_log(f"sqlite:///{folder}/log-bytes0.db")
        print(
            f"  read_log           {time.perf_counter() - start:7.3f} s  ({len(frame):,} records)"
        )
        del frame
        print("submit() per call, writer idle (median of 20,000 calls):")
        for size in sorted({1, args.request_rows}):
            sample = make_requests(min(2000 * size, 200_000), size)
            for raw in (True, False):
                cost = submit_cost(f"sqlite:///{folder}/submit-{size}-{raw}.db", sample, raw)
                kind = "JSON bytes" if raw else "sequences"
                print(f"  {size:>4} record(s), {kind:<10}  {cost:7.2f} us")
    if args.postgres:
        bench_postgres(args.postgres, requests, n, args)


if __name__ == "__main__":
    main()

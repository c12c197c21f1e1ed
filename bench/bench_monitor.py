"""Monitoring the prediction log: ``mlcycle monitor`` over 1,000,000 logged predictions against
reading the same rows from the log store with pandas.

A SQLite prediction log is filled as the service fills it: Adult test records resampled to
``--rows``, ``--request-rows`` per request, each request's body as received and its outputs
(the bundle's model's), with true labels attached to a tenth of the records. Then, each in a
fresh process (wall time and peak RSS from its rusage), best of ``--repeat``:

  (a) pandas       ``pd.read_sql_table`` of the predictions table, each request's body and
                   outputs parsed (``json.loads``) into one frame of records and one of outputs:
                   what reading the rows takes (the baseline)
  (b) read_log     ``mlcycle.predlog.read_log``: the same rows, one per record, labels joined
  (c) monitor      ``mlcycle monitor --log-url ... --all-models --no-history``: read, judge every
                   input, the predictions and the labels, KPIs on the labelled rows, the
                   estimate, and write monitor.json, .md and .html

The issue's bar: (c) costs at most 3x (a).

    python bench/bench_monitor.py [--rows 1000000] [--request-rows 100] [--repeat 2]
        [--bundle models/bundle]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from mlcycle import config
from mlcycle.bundle import load_bundle
from mlcycle.predict import score
from mlcycle.predlog import PredictionLog, attach_labels
from mlcycle.serve.core import prediction_dicts

ROOT = Path(__file__).resolve().parents[1]

PANDAS = """
import json, sys
import pandas as pd
import sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
table = pd.read_sql_table("predictions", engine)
records = [r for body in table["inputs"] for r in json.loads(body)["records"]]
outputs = [o for text in table["outputs"] for o in json.loads(text)]
frame = pd.DataFrame.from_records(records)
print(len(frame), len(outputs))
"""

READ_LOG = """
import sys
from mlcycle.predlog import read_log
print(len(read_log(sys.argv[1])))
"""


def fill_log(url: str, bundle_dir: str, rows: int, per_request: int) -> None:
    """Log ``rows`` Adult test records in requests of ``per_request``, with outputs, and
    label every tenth request."""
    bundle = load_bundle(bundle_dir)
    params = config.load(ROOT / "params.yaml")
    names = list(params.data.columns)
    adult = pd.read_csv(
        ROOT / "data/external/adult/adult.test.gz", header=None, names=names,
        skipinitialspace=True, na_values="?", comment="|",
    ).dropna(how="all")  # fmt: skip
    adult[params.objectives.target] = adult[params.objectives.target].str.rstrip(".")
    rng = np.random.default_rng(0)
    sample = adult.iloc[rng.choice(len(adult), size=rows, replace=True)].reset_index(drop=True)
    inputs = sample[bundle.signature.input_columns].astype(object)
    inputs = inputs.where(inputs.notna(), None).to_dict("records")
    scores = score(bundle, sample)
    outputs = prediction_dicts(scores.output, scores.labels, bundle.signature)
    labels = sample[params.objectives.target].tolist()
    labelled: list[tuple[str, int]] = []  # (request id, first record) of every tenth request
    with PredictionLog(url, max_queue=10 * rows) as log:
        for start in range(0, rows, per_request):
            rid = uuid.uuid4().hex
            body = orjson.dumps({"records": inputs[start : start + per_request]})
            log.submit(
                rid, body, orjson.dumps(outputs[start : start + per_request]),
                model_name=bundle.metadata.get("name", "model"), model_id=bundle.model_id,
                n=len(inputs[start : start + per_request]),
            )  # fmt: skip
            if (start // per_request) % 10 == 0:
                labelled.append((rid, start))
        log.flush(600)
    triples = [
        (rid, r, labels[start + r])
        for rid, start in labelled
        for r in range(min(per_request, rows - start))
    ]
    attach_labels(url, triples)


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``cmd`` in a fresh process."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} failed:\n{err.read().decode()}")
    return wall, usage.ru_maxrss / 1024**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--request-rows", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--bundle", default=str(ROOT / "models/bundle"))
    args = ap.parse_args()
    mlcycle = str(Path(sys.executable).parent / "mlcycle")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/predictions.db"
        start = time.perf_counter()
        fill_log(url, args.bundle, args.rows, args.request_rows)
        size = Path(tmp, "predictions.db").stat().st_size / 1024**2
        print(
            f"{args.rows:,} records in {args.rows // args.request_rows:,} requests logged in "
            f"{time.perf_counter() - start:.0f} s ({size:.0f} MiB), a tenth labelled",
            flush=True,
        )
        runs = {
            "(a) pandas: read_sql_table + json": [sys.executable, "-c", PANDAS, url],
            "(b) read_log": [sys.executable, "-c", READ_LOG, url],
            "(c) mlcycle monitor": [
                mlcycle, "monitor", "--log-url", url, "--all-models", "--no-history",
                "--bundle", args.bundle, "--out", f"{tmp}/report",
            ],
        }  # fmt: skip
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.repeat):  # alternate, so a noisy spell hits all of them
            for name, cmd in runs.items():
                results[name].append(measure(cmd))
        base = min(w for w, _ in results["(a) pandas: read_sql_table + json"])
        print(f"\n{'':<36}{'seconds':>10}{'x (a)':>8}{'peak RSS GB':>13}")
        for name, values in results.items():
            wall = min(w for w, _ in values)
            rss = min(r for _, r in values)
            print(f"{name:<36}{wall:>10.1f}{wall / base:>8.2f}{rss:>13.2f}")
        verdict = orjson.loads(Path(tmp, "report", "monitor.json").read_bytes())
        print(
            f"\nmonitor: {verdict['rows']:,} rows judged, "
            f"{verdict['performance']['labelled_rows']:,} labelled, drift {verdict['drift']}"
        )


if __name__ == "__main__":
    main()

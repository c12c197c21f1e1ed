"""The service as operators and hostile clients meet it, run for real with `mlcycle serve`.

The Open Inference Protocol V2, request ids, Prometheus metrics, body limits and malformed
requests, the prediction log (every 200 has its row, SIGTERM in the middle of load loses
nothing), hot reload, and a schemathesis run against the OpenAPI document.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import xgboost as xgb

from mlcycle.adapters.xgboost_model import dmatrix
from mlcycle.bundle import write_bundle
from mlcycle.features import Feature, Signature, encode_target, to_model_frame
from mlcycle.predlog import local_author, read_log
from mlcycle.serve.core import warnings_for
from tests.conftest import BIN, cli, serving, start_serving, stop_server, synthetic_records

TARGET = "income"
pytestmark = pytest.mark.server
# Credentials (MLCYCLE_TOKENS lines: name scopes token): the module's server has one for labels
LABELLER = "labeller-token-0123456789"
LABELS = {"Authorization": f"Bearer {LABELLER}"}
ADMIN_TOKEN = "admin-token-0123456789"
TOKEN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def start_server(
    project: Path, *extra: str, env: dict | None = None
) -> tuple[str, subprocess.Popen, Path]:
    """`mlcycle serve` of the project's bundle with a prediction log of its own; waits for it."""
    log_db = project.parent / f"log-{uuid.uuid4().hex[:12]}.db"
    served = start_serving(
        project, "--bundle", str(project / "models/bundle"), "--log-url", f"sqlite:///{log_db}",
        *extra, env=env,
    )  # fmt: skip
    return served.url, served.process, log_db


def call(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    """One request on its own connection: status, headers (lower-case) and body."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def post(
    url: str, path: str, payload: object, headers: dict | None = None
) -> tuple[int, dict, dict]:
    status, hdrs, data = call(url, "POST", path, json.dumps(payload).encode(), headers)
    return status, hdrs, json.loads(data) if data else {}


@pytest.fixture(scope="module")
def records(small_project: Path) -> list[dict]:
    test = pd.read_parquet(small_project / "data/prepared/test.parquet").drop(columns=TARGET)
    test = test.drop(columns=[c for c in test.columns if c.startswith("_")]).head(200)
    return json.loads(test.to_json(orient="records"))


@pytest.fixture(scope="module")
def server(small_project: Path) -> Iterator[tuple[str, subprocess.Popen, Path]]:
    # A short body timeout: the slow-body test waits it out (loopback bodies arrive at once).
    url, proc, log_db = start_server(
        small_project, "--workers", "2", "--max-body-bytes", "200000", "--body-timeout", "3",
        "--header-timeout", "2", env={"MLCYCLE_TOKENS": f"labeller feedback {LABELLER}"},
    )  # fmt: skip
    yield url, proc, log_db
    stop_server(proc)


def tensors(records: list[dict], signature: dict) -> list[dict]:
    """The records as OIP input tensors, one per raw input."""
    out = []
    for feat in signature["inputs"]:
        values = [r[feat["name"]] for r in records]
        dtype = "FP64" if feat["kind"] == "numeric" else "BYTES"
        out.append(
            {"name": feat["name"], "shape": [len(values)], "datatype": dtype, "data": values}
        )
    return out


# --- the protocols --------------------------------------------------------------------------


def test_oip_v2_infer_gives_the_probabilities_of_predict(server, records: list[dict]) -> None:
    url, _, _ = server
    status, _, meta = call(url, "GET", "/metadata")
    doc = json.loads(meta)
    name, signature = doc["model"]["name"], doc["signature"]
    assert call(url, "GET", "/v2/health/live")[0] == 200
    assert json.loads(call(url, "GET", "/v2/health/ready")[2]) == {"ready": True}
    status, _, body = call(url, "GET", f"/v2/models/{name}")
    model = json.loads(body)
    assert status == 200 and [t["name"] for t in model["inputs"]] == [
        f["name"] for f in signature["inputs"]
    ]
    version = model["versions"][0]
    assert call(url, "GET", f"/v2/models/{name}/versions/{version}/ready")[0] == 200

    batch = records[:50]
    status, hdrs, ours = post(url, "/predict", {"records": batch})
    assert status == 200
    for path in (f"/v2/models/{name}/infer", f"/v2/models/{name}/versions/{version}/infer"):
        status, _, v2 = post(url, path, {"id": "abc-1", "inputs": tensors(batch, signature)})
        assert status == 200, v2
        assert v2["id"] == "abc-1" and v2["model_name"] == name
        outs = {o["name"]: o for o in v2["outputs"]}
        assert outs["probability"]["data"] == [p["probability"] for p in ours["predictions"]]
        assert outs["label"]["data"] == [p["label"] for p in ours["predictions"]]
        assert outs["probabilities"]["shape"] == [50, 2]
    # Only the requested outputs.
    status, _, v2 = post(
        url, f"/v2/models/{name}/infer",
        {"inputs": tensors(batch[:2], signature), "outputs": [{"name": "label"}]},
    )  # fmt: skip
    assert [o["name"] for o in v2["outputs"]] == ["label"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t[:-1], "missing input"),
        (lambda t: [*t, {**t[0], "name": "shoe_size"}], "unknown input"),
        (lambda t: [{**t[0], "shape": [3]}, *t[1:]], "needs 3 values"),
        (lambda t: [{**t[0], "datatype": "BYTES"}, *t[1:]], "is numeric"),
        (lambda t: [{**t[0], "data": ["forty", 1]}, *t[1:]], "not a finite number"),
        # what a client sends is quoted short: an error never echoes a large value back
        (lambda t: [{**t[0], "data": [10**400, 1]}, *t[1:]], "row 0: inf is not a finite"),
        (lambda t: [{**t[0], "data": [1, "x" * 150_000]}, *t[1:]], "row 1: 'xxxxx"),
        (lambda t: [*t, {**t[0], "name": "n" * 150_000}], "unknown input(s) ['nnnn"),
        (lambda t: [{**t[1], "data": [{"k": "v" * 150_000}, "x"]}, *t[2:], t[0]], "{'k': 'vvv"),
    ],
)
def test_oip_v2_bad_tensors_are_400_naming_the_input(server, records, change, message) -> None:
    url, _, _ = server
    doc = json.loads(call(url, "GET", "/metadata")[2])
    good = tensors(records[:2], doc["signature"])
    status, _, body = post(
        url, f"/v2/models/{doc['model']['name']}/infer", {"inputs": change(good)}
    )
    assert status == 400, body
    assert message in body["error"]
    assert len(body["error"]) < 600, body["error"][:600]
    assert post(url, "/v2/models/no-such-model/infer", {"inputs": good})[0] == 404


# --- operations -----------------------------------------------------------------------------


def test_request_id_is_kept_or_made_and_returned_even_on_errors(server, records) -> None:
    url, _, _ = server
    status, hdrs, body = post(
        url, "/predict", {"records": records[:1]}, {"X-Request-ID": "trace-42"}
    )
    assert status == 200 and hdrs["x-request-id"] == "trace-42" and body["request_id"] == "trace-42"
    status, hdrs, _ = post(url, "/predict", {"records": []})
    assert status == 422 and re.fullmatch(r"[0-9a-f]{32}", hdrs["x-request-id"])
    status, hdrs, _ = post(url, "/predict", {"records": records[:1]}, {"X-Request-ID": "bad id\t"})
    assert re.fullmatch(r"[0-9a-f]{32}", hdrs["x-request-id"])


def test_metrics_count_requests_rows_and_classes(server, records) -> None:
    url, _, _ = server
    for _ in range(4):  # both workers answer some
        post(url, "/predict", {"records": records[:10]})
    status, hdrs, body = call(url, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    ok = re.search(
        r'mlcycle_requests_total\{method="POST",route="/predict",status="200"\} (\d+)', text
    )
    assert ok and float(ok.group(1)) >= 4
    rows = re.search(
        r'mlcycle_rows_scored_total\{model_id="([0-9a-f]{12})",role="prod"\} ([\d.]+)', text
    )
    assert rows and float(rows.group(2)) >= 40
    assert "mlcycle_predicted_class_total" in text and "mlcycle_request_seconds_bucket" in text
    assert f'mlcycle_model_info{{model_id="{rows.group(1)}"' in text
    assert re.search(r'mlcycle_scoring_seconds_count\{role="prod"\} ([\d.]+)', text)


def test_summed_predictions_count_as_observe_does() -> None:
    """A batch's scores summed per bucket (:func:`predicted`, as a shadow process sums its
    requests') and added to the histogram give the series ``observe`` gives value by value,
    on a bound, past the last finite one and NaN (in no bucket, but in the sum) included."""
    import numpy as np
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from mlcycle.serve.telemetry import Telemetry, predicted, score_bounds

    for probability, values in (
        (True, np.concatenate([np.random.default_rng(0).uniform(0, 1, 500), [0.1, 0.3, 1, 0]])),
        (False, np.array([-3.0, 0.005, 0.01, 7.5, 10.0, 11.0, 1e9, np.nan])),
    ):
        bounds = score_bounds(probability)
        one = CollectorRegistry()
        h1 = Histogram("mlcycle_prediction_score", "h", ["model_id", "role"], buckets=bounds,
                       registry=one)  # fmt: skip
        for v in values.tolist():
            h1.labels("m", "shadow").observe(v)
        telemetry = Telemetry(task_is_probability=probability)
        telemetry.add_predicted("m", "shadow", predicted(None, values, bounds))

        def series(reg: CollectorRegistry) -> tuple[list[str], float]:
            """The bucket and count lines, and the sum (summed in another order)."""
            text = generate_latest(reg).decode().splitlines()
            lines = [x for x in text if x.startswith("mlcycle_prediction_score_")]
            (total,) = [float(x.split()[-1]) for x in lines if "_sum{" in x]
            return [x for x in lines if "_sum{" not in x and "_created" not in x], total

        (counts, total), (summed_counts, summed_total) = series(one), series(telemetry.registry)
        assert counts == summed_counts and len(counts) == len(bounds) + 1
        assert summed_total == pytest.approx(total, rel=1e-12, nan_ok=True)
    for value, bucket in ((0.05, 0), (0.1, 0), (0.95, 9), (1.5, 10), (float("nan"), None)):
        one = predicted(None, np.array([value]), score_bounds(True))  # a one-record request
        assert one.buckets == (() if bucket is None else ((bucket, 1),)), value
    summed = predicted(["a", "b", "a"], None, score_bounds(True))
    assert (summed.rows, summed.labels, summed.buckets) == (3, {"a": 2, "b": 1}, None)


# --- hostile input: a 4xx naming the problem, never a 5xx, never a hang ---------------------


def test_malformed_requests_are_4xx(server, records) -> None:
    url, _, _ = server
    one = records[0]

    def body(**change: object) -> bytes:
        return json.dumps({"records": [{**one, **change}]}).encode()

    huge = body(age=123).replace(b'"age": 123', b'"age": 1' + b"0" * 400)
    digits = body(age=123).replace(b'"age": 123', b'"age": 1' + b"0" * 5000)
    long_name = json.dumps({"records": [{**one, "y" * 150_000: 1}]}).encode()
    nested = b'{"records":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    many = json.dumps({"records": [one] * 10_001}).encode()
    cases = [
        ("wrong content type", "POST", b"{}", {"Content-Type": "text/plain"}, 415),
        ("body too large", "POST", b"[" * 300_000, None, 413),
        ("invalid JSON", "POST", b'{"records": [', None, 400),
        ("nested deeply", "POST", nested, None, 400),
        ("NaN", "POST", body(age=float("nan")), None, 422),
        ("huge number", "POST", huge, None, 422),
        ("5,000 digits", "POST", digits, None, 422),
        ("long field name", "POST", long_name, None, 422),
        ("lone surrogate", "POST", body(sex="\ud800"), None, 422),
        ("long text", "POST", body(sex="x" * 5000), None, 422),
        ("too many records", "POST", many, None, 413),
        ("unknown path", "GET", None, None, 404),
        ("wrong method", "GET", None, None, 405),
    ]
    for name, method, data, headers, expected in cases:
        path = "/nope" if name == "unknown path" else "/predict"
        status, hdrs, answer = call(url, method, path, data, headers)
        assert status == expected, (name, status, answer[:300])
        assert hdrs["content-type"].startswith("application/json"), name
        assert len(answer) < 20_000, name  # nothing large is echoed
        assert b"x" * 100 not in answer and b"y" * 100 not in answer, name
        if expected == 400:  # JSON that is not: says where, or what
            assert b"invalid JSON" in answer, (name, answer[:300])
        if expected == 422 and name != "long field name":  # names the field
            assert b'"age"' in answer or b'"sex"' in answer, (name, answer[:300])
    nested_answer = call(url, "POST", "/predict", nested)[2]
    assert b"nested too deeply" in nested_answer, nested_answer


def test_a_body_shorter_than_its_content_length_is_answered(server) -> None:
    url, _, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"records": '
        )
        answer = b""
        while b"within" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"did not arrive within 3 s" in answer, answer


def test_slow_or_oversized_headers_are_refused_while_others_are_served(server) -> None:
    """50 clients sending their headers a line a second, and one sending nothing: each gets a
    408 and is closed at the header timeout (2 s here) while /health keeps answering; a 64 KiB
    header gets a 431 at once (16 KiB by default), and so do 101 headers."""
    url, _, _ = server
    host, port = url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=30) for _ in range(51)]
    for sock in slow[1:]:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    healthy = []
    while time.monotonic() - started < 1.0:  # inside the 2 s the slow ones are given
        healthy.append(call(url, "GET", "/health")[0])
        for sock in slow[1:]:
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow: 1\r\n")
        time.sleep(0.2)
    assert healthy and set(healthy) == {200}, healthy
    for sock in slow:
        with sock:
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"--header-timeout" in answer, answer
    for headers in ({"X-Big": "b" * 65_536}, {f"X-{i}": "1" for i in range(101)}):
        status, _, body = call(url, "GET", "/health", headers=headers)
        assert status == 431 and b"--max-header" in body, (status, body[:200])


def test_a_burst_past_the_admission_bound_is_refused_with_retry_after(
    small_project: Path, records: list[dict]
) -> None:
    """One worker holding at most 2 requests; 10 arrive together, each body held back by its
    last byte so all 10 are in the worker at once: 8 are answered 503 at once with Retry-After
    and a JSON body naming the limit, the 2 admitted are scored once their bodies complete,
    none is lost, the refusals are counted, and the worker then answers as before."""
    bundle = small_project / "models/bundle"
    args = ("--bundle", str(bundle), "--workers", "1", "--no-log", "--max-in-flight", "2")
    with serving(small_project, *args, "--body-timeout", "120") as served:
        host, port = served.url.removeprefix("http://").split(":")
        body = json.dumps({"records": records[:100]}).encode()
        head = (
            "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        socks = [socket.create_connection((host, int(port)), timeout=120) for _ in range(10)]
        try:
            for sock in socks:
                sock.sendall(head + body[:-1])
            answers: dict[socket.socket, tuple[int, dict, bytes]] = {}
            while len(answers) < 8:  # the refused are answered without their last byte
                readable, _, _ = select.select([s for s in socks if s not in answers], [], [], 120)
                assert readable, f"only {len(answers)} answered"
                for sock in readable:
                    answers[sock] = read_response(sock)
            admitted = [s for s in socks if s not in answers]
            for sock in admitted:
                sock.sendall(body[-1:])
                answers[sock] = read_response(sock)
        finally:
            for sock in socks:
                sock.close()
        refused = [a for s, a in answers.items() if s not in admitted]
        assert len(admitted) == 2 and len(answers) == 10
        assert [a[0] for s, a in answers.items() if s in admitted] == [200, 200]
        for status, hdrs, data in refused:
            assert status == 503 and hdrs["retry-after"] == "1", (status, hdrs)
            assert "--max-in-flight" in json.loads(data)["detail"], data
        status, _, answer = post(served.url, "/predict", {"records": records[:100]})
        assert status == 200 and len(answer["predictions"]) == 100
        _, _, metrics = call(served.url, "GET", "/metrics")
        assert 'mlcycle_refused_total{reason="busy"} 8.0' in metrics.decode()


def test_the_log_stays_under_its_size_bound_and_connections_are_bounded(
    small_project: Path, records: list[dict], tmp_path: Path
) -> None:
    """A stream of large requests (about 1.6 MB to log) into a log bounded to 400 kB: every
    request is answered, the log stays under its bound, the oldest go first, and those whose
    inputs are over --log-max-record-bytes are logged with a marker in their place, counted,
    and left out by readers. And one worker holds at most --max-connections: the next one is
    answered 503 at once, and /health is answered again once they close."""
    log_db, bound = tmp_path / "bounded.db", 400_000
    args = (
        "--bundle", str(small_project / "models/bundle"), "--workers", "1",
        "--log-url", f"sqlite:///{log_db}", "--log-max-bytes", str(bound),
        "--log-max-record-bytes", "20000", "--max-connections", "4",
    )  # fmt: skip
    with serving(small_project, *args) as served:
        for i in range(60):  # 40 records: about 11 kB of inputs; 120: about 34 kB
            for name, batch in ((f"small-{i}", records[:40]), (f"large-{i}", records[:120])):
                status, _, answer = post(
                    served.url, "/predict", {"records": batch}, {"X-Request-ID": name}
                )
                assert status == 200 and len(answer["predictions"]) == len(batch), answer

        def used() -> int:
            with sqlite3.connect(log_db) as con:
                pages, free, size = (
                    con.execute(f"PRAGMA {p}").fetchone()[0]
                    for p in ("page_count", "freelist_count", "page_size")
                )
            return (pages - free) * size

        deadline = time.monotonic() + 30
        while True:  # the last batch written, then the log pruned after it
            frame = read_log(log_db)
            if "small-59" in set(frame["request_id"]) and used() <= bound:
                break
            assert time.monotonic() < deadline, f"the log takes {used()} bytes"
            time.sleep(0.1)
        kept = frame["request_id"].drop_duplicates().tolist()
        assert kept == [f"small-{i}" for i in range(60 - len(kept), 60)]  # the newest
        assert 0 < len(kept) < 60 and frame.attrs["omitted"] > 0
        with sqlite3.connect(log_db) as con:
            markers = con.execute(
                "SELECT request_id, inputs FROM predictions WHERE request_id LIKE 'large-%'"
            ).fetchall()
        assert markers and all(json.loads(m)["omitted"]["limit"] == 20000 for _, m in markers)
        _, _, metrics = call(served.url, "GET", "/metrics")
        assert "mlcycle_log_omitted_records_total 7200.0" in metrics.decode()  # 60 x 120

        host, port = served.url.removeprefix("http://").split(":")
        idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(4)]
        try:
            with socket.create_connection((host, int(port)), timeout=30) as extra:
                refused = read_response(extra)
        finally:
            for sock in idle:
                sock.close()
        assert refused[0] == 503 and refused[1]["retry-after"] == "1", refused
        assert "--max-connections" in json.loads(refused[2])["detail"]
        deadline = time.monotonic() + 30
        while (status := call(served.url, "GET", "/health")[0]) != 200:  # closed connections
            assert status == 503 and time.monotonic() < deadline  # still being closed
        metrics = call(served.url, "GET", "/metrics")[2].decode()
        assert re.search(r'mlcycle_refused_total\{reason="connections"\} [1-9]', metrics)


def read_response(sock: socket.socket) -> tuple[int, dict, bytes]:
    """One HTTP response read from ``sock``: status, headers (lower-case) and body."""
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


def test_a_record_with_every_input_null_is_scored_with_a_warning(server, records) -> None:
    """Where the schema allows every input to be null (here: without its rules, a bundle
    packaged before row_rules.json); with the example schema, whose age is never null, such a
    record is refused by the rules (see the next test)."""
    assert warnings_for([records[0], dict.fromkeys(records[0], None)], {}) == [
        "record(s) 1: every input is null; the prediction is a prior"
    ]
    url, _, _ = server
    empty = dict.fromkeys(records[0], None)
    status, _, body = post(url, "/predict", {"records": [records[0], empty]})
    assert status == 422
    assert ["body", "records", 1, "age"] in [e["loc"] for e in body["detail"]]


def test_the_schemas_rules_decide_at_the_door_on_both_protocols(server, records) -> None:
    """One policy on /predict and the Open Inference Protocol: a value the schema forbids (a
    null where nullable: false) is refused naming the record, the column and the rule; a
    column of the schema the model does not use (fnlwgt) is accepted, not scored, and logged
    with the record, so retrain exports complete rows; any other field is refused; a category
    the schema does not list is scored with a warning (its severity is warning)."""
    url, _, log_db = server
    doc = json.loads(call(url, "GET", "/metadata")[2])
    name, signature = doc["model"]["name"], doc["signature"]
    assert signature["unused_inputs"] == ["fnlwgt"]
    oip = f"/v2/models/{name}/infer"
    rule = "schema.yaml expects a value (nullable: false) (validate.severity.null_rate: error)"

    broken = [records[0], {**records[1], "age": None}]
    status, _, body = post(url, "/predict", {"records": broken})
    assert status == 422, body
    assert body["detail"] == [
        {"loc": ["body", "records", 1, "age"], "msg": f"null; {rule}", "type": "schema_null_rate"}
    ]
    status, _, body = post(url, oip, {"inputs": tensors(broken, signature)})
    assert status == 400 and body["error"] == f"record 1, 'age': null; {rule}", body

    weighted = [{**r, "fnlwgt": 77516 + i} for i, r in enumerate(records[2:4])]
    status, _, body = post(url, "/predict", {"records": weighted}, {"X-Request-ID": "rules-rest"})
    assert status == 200 and body["warnings"] == [], body
    weight = {"name": "fnlwgt", "shape": [2], "datatype": "INT64", "data": [77516, 77517]}
    inputs = [*tensors(weighted, signature), weight]
    status, _, body = post(url, oip, {"id": "rules-oip", "inputs": inputs})
    assert status == 200, body
    out_of_range = {**weight, "data": [77516, 1]}  # below the schema's min: refused as well
    status, _, body = post(url, oip, {"inputs": [*tensors(weighted, signature), out_of_range]})
    assert status == 400 and "record 1, 'fnlwgt': 1 is out of range" in body["error"], body

    status, _, body = post(url, "/predict", {"records": [{**records[0], "client": "app-7"}]})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "records", 0, "client"]
    client = {"name": "client", "shape": [1], "datatype": "BYTES", "data": ["app-7"]}
    status, _, body = post(url, oip, {"inputs": [*tensors(records[:1], signature), client]})
    assert status == 400 and "unknown input(s) ['client']" in body["error"], body

    status, _, body = post(url, "/predict", {"records": [{**records[0], "workclass": "Space"}]})
    assert status == 200, body
    assert any(
        "'workclass': 'Space' is not one of the schema's categories" in w
        and "(validate.severity.unseen_category: warning); scored" in w
        for w in body["warnings"]
    ), body["warnings"]

    wanted = {"rules-rest", "rules-oip"}
    deadline = time.monotonic() + 30
    while True:  # written within the log's flush interval
        log = read_log(f"sqlite:///{log_db}")
        log = log[log["request_id"].isin(wanted)]
        if len(log) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    weights = {rid: g.sort_values("row")["inputs"].map(lambda r: r["fnlwgt"]).tolist()
               for rid, g in log.groupby("request_id")}  # fmt: skip
    assert weights == {"rules-rest": [77516, 77517], "rules-oip": [77516, 77517]}


# --- the prediction log ---------------------------------------------------------------------


def test_the_log_keeps_each_body_as_received(server, records) -> None:
    """/predict logs the body as it came (spacing, a BOM, a field the model does not use), and
    OIP requests their records; all read back one row per record with the answer's outputs."""
    url, _, log_db = server
    doc = json.loads(call(url, "GET", "/metadata")[2])
    unused = doc["signature"]["unused_inputs"]
    assert unused, "the example project's model leaves some columns unused"
    # a column of the schema the model does not use is logged as sent (within the schema's
    # rules, which apply to it as to the inputs: retrain exports it)
    first = {**records[0], unused[0]: 77516}
    raw_first = json.dumps(first)
    bodies = {
        "spaced": b'{ "records" :\n [ ' + raw_first.encode() + b" ] }",
        "bom": b"\xef\xbb\xbf" + json.dumps({"records": records[1:3]}).encode(),
    }
    sent = {"spaced": [first], "bom": records[1:3]}
    # JSON between systems is UTF-8 (RFC 8259): UTF-16 is refused, and nothing is logged
    utf16 = json.dumps({"records": records[3:4]}).encode("utf-16")
    status, _, data = call(url, "POST", "/predict", utf16, {"X-Request-ID": "raw-utf16"})
    assert status == 400 and b"invalid JSON" in data, data
    answers = {}
    for rid, body in bodies.items():
        status, _, data = call(url, "POST", "/predict", body, {"X-Request-ID": f"raw-{rid}"})
        assert status == 200, (rid, data)
        answers[rid] = json.loads(data)["predictions"]
    status, _, v2 = post(
        url,
        f"/v2/models/{doc['model']['name']}/infer",
        {"id": "raw-oip", "inputs": tensors(records[4:6], doc["signature"])},
    )
    assert status == 200
    inputs = [f["name"] for f in doc["signature"]["inputs"]]  # one tensor per model input
    sent["oip"] = [{k: r[k] for k in inputs} for r in records[4:6]]
    wanted = {f"raw-{rid}" for rid in sent}
    deadline = time.monotonic() + 30
    while True:  # written within the log's flush interval
        log = read_log(f"sqlite:///{log_db}")
        log = log[log["request_id"].isin(wanted)]
        if set(log["request_id"]) == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_request = {rid: group for rid, group in log.groupby("request_id")}
    assert set(by_request) == wanted
    for rid, records_sent in sent.items():
        group = by_request[f"raw-{rid}"].sort_values("row")
        assert group["row"].tolist() == list(range(len(records_sent)))
        assert group["inputs"].tolist() == records_sent, rid
        if rid in answers:
            assert group["outputs"].tolist() == answers[rid]
    oip_outputs = by_request["raw-oip"]["outputs"].tolist()
    assert [o["probability"] for o in oip_outputs] == next(
        o["data"] for o in v2["outputs"] if o["name"] == "probability"
    )


def test_feedback_attaches_true_labels_to_logged_records(
    server, records, small_project: Path, tmp_path: Path
) -> None:
    """POST /feedback needs a credential with the feedback scope (the module's server has
    one): without a token, or a wrong one, 401. By record or for a whole request; labels that
    match nothing are counted out, not stored; a label already given is kept (409 when
    nothing else changed) unless the request says overwrite; every change is audited with
    who gave it; a label that is not a class, a bad row or a bad body is a 422."""
    url, _, log_db = server
    classes = json.loads(call(url, "GET", "/metadata")[2])["signature"]["classes"]
    for rid, batch in (("fb-a", records[:3]), ("fb-b", records[3:5])):
        assert post(url, "/predict", {"records": batch}, {"X-Request-ID": rid})[0] == 200
    labels = [
        {"request_id": "fb-a", "row": 0, "label": classes[1]},
        {"request_id": "fb-a", "row": 2, "label": classes[0]},
        {"request_id": "fb-a", "row": 7, "label": classes[0]},  # no such record
        {"request_id": "fb-b", "label": classes[1]},  # every record of the request
        {"request_id": "never-logged", "label": classes[1]},
    ]
    for headers in ({}, {"Authorization": "Bearer not-the-labellers-token"}):
        status, answer, body = post(url, "/feedback", {"labels": labels}, headers)
        assert status == 401 and answer["www-authenticate"] == "Bearer", body
        assert "scope 'feedback'" in body["detail"]
    # right after the predictions: the log writes what is queued before labelling
    status, _, body = post(url, "/feedback", {"labels": labels}, LABELS)
    assert status == 200 and body == {"received": 5, "matched": 4, "conflicts": 0}, body
    log = read_log(f"sqlite:///{log_db}")
    got = {
        (r.request_id, int(r.row)): (r.label, r.labelled_by)
        for r in log[log["request_id"].isin(["fb-a", "fb-b"])].itertuples()
    }
    assert got[("fb-a", 0)] == (classes[1], "labeller") and got[("fb-a", 2)][0] == classes[0]
    assert pd.isna(got[("fb-a", 1)][0])
    assert got[("fb-b", 0)][0] == got[("fb-b", 1)][0] == classes[1]
    # a later, different label is refused, unless the request says overwrite
    fix = {"labels": [{"request_id": "fb-a", "row": 0, "label": classes[0]}]}
    status, _, body = post(url, "/feedback", fix, LABELS)
    assert status == 409 and "1 logged record(s) hold another label" in body["detail"], body
    assert '"overwrite": true' in body["detail"]
    both = {"labels": [*fix["labels"], {"request_id": "fb-a", "row": 1, "label": classes[0]}]}
    assert post(url, "/feedback", both, LABELS)[2] == {
        "received": 2,
        "matched": 1,
        "conflicts": 1,
    }
    status, _, body = post(url, "/feedback", {**fix, "overwrite": True}, LABELS)
    assert status == 200 and body == {"received": 1, "matched": 1, "conflicts": 0}, body
    log = read_log(f"sqlite:///{log_db}")
    assert log[(log.request_id == "fb-a") & (log.row == 0)]["label"].item() == classes[0]
    for bad, where in [
        ({"labels": [{"request_id": "fb-a", "row": 0, "label": "maybe"}]}, "labels.0.label"),
        ({"labels": [{"request_id": "fb-a", "row": -1, "label": classes[0]}]}, "row"),
        ({"labels": [{"request_id": "", "label": classes[0]}]}, "request_id"),
        ({"labels": [{"request_id": "fb-a", "label": True}]}, "label"),
        ({"labels": []}, "labels"),
        ({"labels": [{"request_id": "fb-a", "label": classes[0], "extra": 1}]}, "extra"),
        ({**fix, "overwrite": "yes"}, "overwrite"),
    ]:
        status, _, body = post(url, "/feedback", bad, LABELS)
        assert status == 422 and where in json.dumps(body), (bad, body)
    # the same from a file, while the service runs: labels are checked against the classes
    labels = tmp_path / "labels.csv"
    labels.write_text(f"request_id,row,label\nfb-a,2,{classes[1]}\nfb-b,0,maybe\n")
    command = [
        "feedback", str(labels), "--log-url", f"sqlite:///{log_db}",
        "--bundle", str(small_project / "models/bundle"),
    ]  # fmt: skip
    done = cli(tmp_path, *command, check=False)
    assert done.returncode == 1 and "1 label(s) are not classes" in done.stderr, done.stderr
    labels.write_text(f"request_id,row,label\nfb-a,2,{classes[1]}\n")
    done = cli(tmp_path, *command, check=False)
    assert done.returncode == 1 and "1 kept another label" in done.stderr, done.stderr
    assert "--overwrite replaces them" in done.stderr
    done = cli(tmp_path, *command, "--overwrite", check=False)
    assert done.returncode == 0 and "1 logged record(s) labelled" in done.stderr, done.stderr
    log = read_log(f"sqlite:///{log_db}")
    assert log[(log.request_id == "fb-a") & (log.row == 2)]["label"].item() == classes[1]
    # the audit beside the log: who, when, the label before and after, for each change
    with sqlite3.connect(log_db) as con:
        audit = con.execute(
            'SELECT "row", labelled_by, previous, label, ts FROM prediction_label_changes '
            "WHERE request_id = 'fb-a' ORDER BY id"
        ).fetchall()
    user = local_author()
    assert [a[:4] for a in audit] == [
        (0, "labeller", None, classes[1]),
        (2, "labeller", None, classes[0]),
        (1, "labeller", None, classes[0]),
        (0, "labeller", classes[1], classes[0]),
        (2, user, classes[0], classes[1]),
    ]
    assert all(a[4] for a in audit)


def test_every_answered_prediction_is_in_the_log_even_through_sigterm(
    small_project: Path, records: list[dict]
) -> None:
    """50 clients for a few seconds, SIGTERM in the middle: every 200 has its rows in the log
    with the same inputs and outputs, no client saw a 5xx, and the service exits 0."""
    url, proc, log_db = start_server(small_project, "--workers", "2")
    answered: list[tuple[str, list[dict], list[dict]]] = []
    statuses: list[int] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 4

    def client(i: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            rid = f"c{i}-{n}"
            n += 1
            batch = records[(i + n) % 100 : (i + n) % 100 + 1 + n % 3]
            try:
                status, _, body = post(url, "/predict", {"records": batch}, {"X-Request-ID": rid})
            except OSError:
                return  # the server stopped listening: no answer, nothing promised
            with lock:
                statuses.append(status)
                if status == 200:
                    answered.append((rid, batch, body["predictions"]))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    time.sleep(1.5)  # all 50 busy well before (clients flat out cost a core a second)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    for t in threads:
        t.join()
    assert code == 0
    assert answered and not [s for s in statuses if s >= 500], sorted(set(statuses))
    log = read_log(f"sqlite:///{log_db}")
    logged = {(r.request_id, int(r.row)): (r.inputs, r.outputs) for r in log.itertuples()}
    for rid, batch, preds in answered:
        for row, (record, pred) in enumerate(zip(batch, preds, strict=True)):
            assert logged.get((rid, row)) == (record, pred), (rid, row)
    assert len(logged) == sum(len(p) for _, _, p in answered)


# --- hot reload -----------------------------------------------------------------------------


def test_reload_needs_the_token_and_swaps_the_model(small_project: Path, records) -> None:
    """Each route checks the scope it needs: with a predict credential configured scoring
    needs one too; a valid token without the scope is a 403 naming it. Without an admin
    credential the reload route does not exist."""
    scorer = "scorer-token-0123456789"
    tokens = f"scorer predict {scorer}\nlabeller feedback {LABELLER}"
    url, proc, _ = start_server(
        small_project, "--workers", "1",
        env={"MLCYCLE_ADMIN_TOKEN": ADMIN_TOKEN, "MLCYCLE_TOKENS": tokens},
    )  # fmt: skip
    try:
        assert post(url, "/admin/reload", {})[0] == 401
        assert post(url, "/admin/reload", {}, {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = post(url, "/admin/reload", {}, LABELS)
        assert status == 403 and "'labeller' lacks the scope 'admin'" in body["detail"], body
        status, _, info = post(url, "/admin/reload", {}, TOKEN)
        assert status == 200 and re.fullmatch(r"[0-9a-f]{12}", info["id"])
        # as the docs write it: `curl -X POST -H 'Authorization: ...'`, no body, no type
        host, port = url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.request("POST", "/admin/reload", headers=TOKEN)
        answer = conn.getresponse()
        assert answer.status == 200, answer.read()
        status, answer, _ = post(url, "/predict", {"records": records[:1]})
        assert status == 401 and answer["www-authenticate"] == "Bearer"
        scoring = {"Authorization": f"Bearer {scorer}"}
        assert post(url, "/predict", {"records": records[:1]}, scoring)[0] == 200
        meta = json.loads(call(url, "GET", "/metadata")[2])
        infer = {"inputs": tensors(records[:1], meta["signature"])}
        status, _, body = post(url, "/v2/models/m/infer", infer)
        assert status == 401 and "scope 'predict'" in body["error"], body
        status, _, body = post(url, "/v2/models/m/infer", infer, TOKEN)
        assert status == 403 and "lacks the scope 'predict'" in body["error"], body
        status, _, body = post(url, "/feedback", {"labels": [{"request_id": "x", "label": 1}]})
        assert status == 401, body
        assert (
            post(url, "/feedback", {"labels": [{"request_id": "x", "label": 1}]}, scoring)[0] == 403
        )
    finally:
        assert stop_server(proc) == 0
    url, proc, _ = start_server(small_project, "--workers", "1", "--no-log")
    try:
        assert post(url, "/admin/reload", {}, TOKEN)[0] == 404
        # and without a prediction log, labels have nowhere to go
        status, _, body = post(url, "/feedback", {"labels": [{"request_id": "x", "label": 1}]})
        assert status == 409 and "--no-log" in body["detail"], body
    finally:
        stop_server(proc)


def test_a_shadow_scores_every_answered_request_and_is_logged_beside_production(
    small_project: Path, records, tmp_path: Path
) -> None:
    """`mlcycle serve --shadow-bundle`: production answers /predict and the protocol's infer
    alike; the shadow (here production's model with another threshold) scores the same
    records in each worker, off the request path, and the log holds its outputs beside
    production's for the same request ids. /health, /metadata, /admin/reload and /metrics
    show both."""
    from tests.test_release import tampered_copy  # a bundle with threshold 0.01

    shadow = tampered_copy(small_project / "models/bundle", tmp_path / "shadow")
    url, proc, log_db = start_server(
        small_project, "--workers", "2", "--shadow-bundle", str(shadow),
        env={"MLCYCLE_ADMIN_TOKEN": ADMIN_TOKEN},
    )  # fmt: skip
    try:
        meta = json.loads(call(url, "GET", "/metadata")[2])
        sig, ids = meta["signature"], []
        for i, batch in enumerate(shadowed_requests(records)):
            rid = f"shadowed-{i}"
            if i % 4 == 3:
                status, _, body = post(
                    url, f"/v2/models/{meta['model']['name']}/infer",
                    {"id": rid, "inputs": tensors(batch, sig)},
                )  # fmt: skip
            else:
                status, _, body = post(url, "/predict", {"records": batch}, {"X-Request-ID": rid})
            assert status == 200, body
            ids.append(rid)
        health = json.loads(call(url, "GET", "/health")[2])
        assert health["challenger"]["stage"] == "shadow" and health["challenger"]["share"] == 0
        assert health["challenger"]["decision"] == 0.01 and health["model"]["decision"] != 0.01
        meta = json.loads(call(url, "GET", "/metadata")[2])
        assert meta["challenger"] == health["challenger"]
        status, _, info = post(url, "/admin/reload", {}, TOKEN)
        assert status == 200 and info["challenger"] == health["challenger"], info
        assert {k: info[k] for k in health["model"]} == health["model"]
        text = call(url, "GET", "/metrics")[2].decode()
        assert re.search(r'mlcycle_model_info\{[^}]*role="shadow"[^}]*\} 1', text), text
        assert "mlcycle_shadow_scored_total" in text and "mlcycle_shadow_dropped_total" in text
        assert "mlcycle_shadow_queue_depth" in text
        # The shadow runs at a lower priority: on a machine busy with other jobs it may lag the
        # answers by more than the 5 s a stop gives it (then what is left is dropped, counted).
        # Wait for it to score every record, polled, up to a hang guard.
        sent = sum(len(batch) for batch in shadowed_requests(records))
        deadline = time.monotonic() + 180
        while shadow_scored(url) < sent:
            assert time.monotonic() < deadline, f"the shadow scored {shadow_scored(url)} of {sent}"
            time.sleep(0.1)
    finally:
        assert stop_server(proc) == 0  # the shadows' queues and the log flushed
    frame = read_log(f"sqlite:///{log_db}")
    frame = frame[frame["request_id"].isin(ids)]
    # (two workers, each writing its own requests: the log's order across them is not the
    # order the requests were sent in)
    assert sorted(frame["request_id"].unique()) == sorted(ids)
    assert set(frame["role"]) == {"prod"} and frame["shadow_output"].notna().all()
    for out, shadowed in zip(frame["outputs"], frame["shadow_output"], strict=True):
        assert shadowed["probabilities"] == out["probabilities"]  # the same model...
        positive = shadowed["probability"] >= 0.01  # ...deciding at its own threshold
        assert shadowed["label"] == list(out["probabilities"])[1 if positive else 0]


def shadowed_requests(records: list[dict]) -> list[list[dict]]:
    """The shadow test's 12 requests: 1 to 3 records each."""
    return [records[i * 3 : i * 3 + 1 + i % 3] for i in range(12)]


def shadow_scored(url: str) -> float:
    """Records the service's shadow has scored (every worker's, from /metrics)."""
    text = call(url, "GET", "/metrics")[2].decode()
    return sum(map(float, re.findall(r"^mlcycle_shadow_scored_total (\S+)$", text, re.M)))


def tiny_bundle(
    target: Path, colours: tuple[str, ...], number: str = "y", seed: int = 0, padding: int = 0
) -> Path:
    """Write a small XGBoost bundle to ``target`` (replacing it), trained on records of
    :data:`~tests.conftest.TINY_SIGNATURE`'s shape (drawn with ``seed``) whose ``colour`` takes
    ``colours`` and whose second number is called ``number``; ``padding`` bytes of a listed
    extra file make it slower to verify and load."""
    train = synthetic_records(300, seed).rename(columns={"y": number})
    new = sorted(set(colours) - {"blue", "green", "red"})
    train.loc[train.index % 7 == 1, "colour"] = new[0] if new else "red"
    sig = Signature(
        (
            Feature("x", "numeric"),
            Feature("colour", "categorical", tuple(sorted(colours))),
            Feature(number, "numeric"),
        ),
        "label",
        positive_class="yes",
        negative_class="no",
    )
    X, y = to_model_frame(train, sig), encode_target(train["label"], sig)
    params = {"objective": "binary:logistic", "max_depth": 2, "seed": 0, "nthread": 1}
    booster = xgb.train(params, dmatrix(X, y, nthread=1), num_boost_round=5)
    extra = {"padding.bin": bytes(padding)} if padding else None
    model = bytes(booster.save_raw(raw_format="ubj"))
    return write_bundle(target, model, sig, {"name": "tiny", "threshold": 0.5}, extra_files=extra)


def test_reload_takes_a_model_with_a_new_category_and_refuses_another_input_set(
    small_project: Path, tmp_path: Path
) -> None:
    """A retrained model that learned a category takes the same requests: the reload takes it
    (every worker follows) and it knows the category. One with another input set would need
    other requests: refused, naming the input, and the model in service keeps serving."""
    bundle = tiny_bundle(tmp_path / "bundle", ("blue", "green", "red"))
    violet = {"records": [{"x": 0.5, "colour": "violet", "y": 1.0}]}
    env = {"MLCYCLE_ADMIN_TOKEN": ADMIN_TOKEN}
    args = ("--bundle", str(bundle), "--workers", "2", "--no-log", "--log-level", "info")
    with serving(small_project, *args, env=env) as s:
        for _ in range(600):  # both workers built their app from the first bundle
            if s.output.read_text().count("Application startup complete") == 2:
                break
            time.sleep(0.1)
        status, _, before = post(s.url, "/predict", violet)
        assert status == 200 and "'violet'" in before["warnings"][0], before
        old_id = before["model"]["id"]
        tiny_bundle(bundle, ("blue", "green", "red", "violet"))
        status, _, info = post(s.url, "/admin/reload", {}, TOKEN)
        assert status == 200 and info["id"] != old_id, info
        answers = [post(s.url, "/predict", violet)[2]]
        for _ in range(200):  # the other worker follows within a second or so
            if len(answers) >= 10 and all(a["model"]["id"] == info["id"] for a in answers[-10:]):
                break
            time.sleep(0.05)
            answers.append(post(s.url, "/predict", violet)[2])
        assert answers[-1]["model"]["id"] == info["id"] and answers[-1]["warnings"] == []
        assert {a["model"]["id"] for a in answers} <= {old_id, info["id"]}

        tiny_bundle(bundle, ("blue", "green", "red", "violet"), number="z")
        status, _, body = post(s.url, "/admin/reload", {}, TOKEN)
        assert status == 409, body
        assert "new input 'z' (numeric)" in body["detail"] and "input 'y' is gone" in body["detail"]
        time.sleep(1.5)  # past the other worker's next look at the generation file
        for _ in range(10):
            status, _, again = post(s.url, "/predict", violet)
            assert status == 200 and again["model"]["id"] == info["id"], again


def test_a_reload_loads_aside_while_requests_are_answered(
    small_project: Path, tmp_path: Path
) -> None:
    """While one worker loads a new model, its requests keep being answered by the model in
    service; every answer names the old or the new model, none fails. The longest request
    with and without a swap are printed (figures, not limits: the machine may be loaded)."""
    bundle = tiny_bundle(tmp_path / "bundle", ("blue", "green", "red"))
    record = {"records": [{"x": 0.5, "colour": "red", "y": 1.0}]}
    env = {"MLCYCLE_ADMIN_TOKEN": ADMIN_TOKEN}
    with serving(
        small_project, "--bundle", str(bundle), "--workers", "1", "--no-log", env=env
    ) as s:
        old_id = post(s.url, "/predict", record)[2]["model"]["id"]

        def load(seconds: float, swap: bool) -> tuple[list[tuple[float, int, str]], dict]:
            """4 clients on /predict and /health for ``seconds``; the reload in the middle."""
            done = threading.Event()
            seen: list[tuple[float, int, str]] = []

            def client(i: int) -> None:
                while not done.is_set():
                    start = time.perf_counter()
                    if i % 2:
                        status, _, body = post(s.url, "/predict", record)
                    else:
                        status, _, body = call(s.url, "GET", "/health")
                        body = json.loads(body)
                    seen.append((time.perf_counter() - start, status, body["model"]["id"]))

            threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            time.sleep(seconds / 2)
            reloaded = post(s.url, "/admin/reload", {}, TOKEN) if swap else (200, {}, {})
            time.sleep(seconds / 2)
            done.set()
            for t in threads:
                t.join()
            return seen, reloaded[2]

        quiet, _ = load(1.0, swap=False)
        tiny_bundle(bundle, ("blue", "green", "red"), seed=1, padding=200_000_000)
        swapped, info = load(1.0, swap=True)
    assert info["id"] != old_id, info
    assert all(status == 200 for _, status, _ in quiet + swapped)
    ids = [model for _, _, model in swapped]
    assert set(ids) == {old_id, info["id"]} and ids[-1] == info["id"]
    longest = [sorted((t for t, _, _ in seen), reverse=True)[:2] for seen in (quiet, swapped)]
    print(
        f"longest requests (s), 4 clients: without a swap {longest[0]}, during a swap "
        f"(a 200 MB bundle verified and loaded) {longest[1]}"
    )


# --- the OpenAPI document holds -------------------------------------------------------------


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server, tmp_path) -> None:
    url, _, _ = server
    proc = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--exclude-path",
            "/admin/reload",
            "--workers",
            "1",
            "--seed",
            "1",
            "--header",
            f"Authorization: Bearer {LABELLER}",  # /feedback's bodies get past the door
            "--suppress-health-check",
            "all",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=tmp_path,  # schemathesis keeps its state in the working folder
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]

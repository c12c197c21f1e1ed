"""The web service, run for real: `mlcycle serve` on the bundle of a project after `dvc repro`.

Evaluation, batch prediction and the service must give the very same probabilities for the
same rows, and a malformed request must be a 4xx naming the field, never a 500.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BIN, cli, free_port, run, serving

pytestmark = pytest.mark.server

SAMPLE_ROWS = 500
TARGET = "income"


@dataclass
class Response:
    status: int
    body: bytes

    def json(self):  # noqa: ANN201
        return json.loads(self.body)


def request(url: str, body: bytes | None = None) -> Response:
    """GET (no body) or POST a JSON body; a 4xx/5xx is returned, not raised."""
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req) as resp:
            return Response(resp.status, resp.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read())


def post_json(url: str, payload: object) -> Response:
    return request(url, json.dumps(payload, allow_nan=False).encode())


def to_records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready records: numpy scalars become Python ones, missing values become None."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {
                k: (None if pd.isna(v) else (v.item() if hasattr(v, "item") else v))
                for k, v in row.items()
            }
        )
    return out


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    bundle: Path


@pytest.fixture(scope="module")
def server(small_project: Path) -> Iterator[Server]:
    """`mlcycle serve` on the sample project's bundle, stopped when the module is done. One
    worker: nothing here is about workers (the default, one per core, is the README test's),
    and each other would import and load everything again."""
    bundle = small_project / "models" / "bundle"
    with serving(small_project, "--bundle", str(bundle), "--workers", "1") as served:
        yield Server(url=served.url, process=served.process, bundle=bundle)


@pytest.fixture(scope="module")
def split_frame(small_project: Path) -> pd.DataFrame:
    return pd.read_parquet(small_project / "data" / "prepared" / "test.parquet")


@pytest.fixture(scope="module")
def sample_index(split_frame: pd.DataFrame, small_project: Path) -> list[int]:
    """500 rows of the test split: 100 with missing values, the rest drawn at random; of the
    rows whose categories the model knows (a sample's test split holds a few values its
    training split lacks, which the service warns about: the unseen-category tests' case)."""
    signature = json.loads((small_project / "models/bundle/signature.json").read_text())
    known = pd.Series(True, index=split_frame.index)
    for feat in signature["inputs"]:
        if feat["kind"] == "categorical":
            column = split_frame[feat["name"]]
            known &= column.isna() | column.isin(feat["categories"])
    frame = split_frame[known]
    has_missing = frame.drop(columns=TARGET).isna().any(axis=1)
    missing = frame.index[has_missing].to_series().sample(100, random_state=0)
    complete = frame.index[~has_missing].to_series().sample(SAMPLE_ROWS - 100, random_state=0)
    return sorted([*missing, *complete])


@pytest.fixture(scope="module")
def valid_record(split_frame: pd.DataFrame) -> dict:
    complete = split_frame.dropna()
    return to_records(complete.drop(columns=TARGET).iloc[[0]])[0]


# --- health and metadata -------------------------------------------------------------------


def test_health_names_the_model(server: Server) -> None:
    resp = request(f"{server.url}/health")
    assert resp.status == 200
    doc = resp.json()
    metadata = json.loads((server.bundle / "metadata.json").read_text())
    kind = metadata["model_kind"]
    model_file = {"xgboost": "model.ubj"}.get(kind, "model.skops")
    model_sha = hashlib.sha256((server.bundle / model_file).read_bytes()).hexdigest()
    assert doc["status"] == "ok"
    assert doc["model"]["id"] == model_sha[:12]
    assert doc["model"]["kind"] == kind
    assert doc["model"]["name"] == "income-classifier"
    # The threshold chosen on out-of-fold training predictions, as the bundle records it.
    assert doc["model"]["decision"] == metadata["decision"]
    assert 0.0 < doc["model"]["decision"] < 1.0


def test_metadata_has_signature_and_provenance(server: Server) -> None:
    resp = request(f"{server.url}/metadata")
    assert resp.status == 200
    doc = resp.json()
    assert doc["signature"] == json.loads((server.bundle / "signature.json").read_text())
    assert doc["metadata"] == json.loads((server.bundle / "metadata.json").read_text())
    assert doc["signature"]["target"] == TARGET
    assert doc["signature"]["positive_class"] == ">50K"
    assert [f["name"] for f in doc["signature"]["features"]][:2] == ["age", "workclass"]
    # params.yaml derives capital-net: a model feature the service computes, not an input.
    assert doc["signature"]["features"][-1]["name"] == "capital-net"
    assert "capital-net" not in [f["name"] for f in doc["signature"]["inputs"]]
    assert doc["metadata"]["model_sha256"].startswith(doc["model"]["id"])
    assert {"params", "metrics", "data", "git", "libraries"} <= set(doc["metadata"])


# --- evaluation, batch prediction and the service agree exactly ----------------------------


def test_evaluation_batch_and_service_give_identical_probabilities(
    server: Server,
    small_project: Path,
    split_frame: pd.DataFrame,
    sample_index: list[int],
    tmp_path: Path,
) -> None:
    evaluated = pd.read_parquet(small_project / "data" / "evaluate" / "test_predictions.parquet")
    assert len(evaluated) == len(split_frame)
    # The rows are aligned: evaluation's `actual` is the test split's label.
    assert (evaluated["actual"] == (split_frame[TARGET] == ">50K").astype(int)).all()

    out = tmp_path / "predictions.parquet"
    cli(
        small_project,
        "predict",
        str(small_project / "data/prepared/test.parquet"),
        str(out),
        "--bundle",
        str(server.bundle),
    )
    batch = pd.read_parquet(out)
    assert len(batch) == len(split_frame)

    sample = split_frame.loc[sample_index]
    assert sample.drop(columns=TARGET).isna().any(axis=1).sum() == 100
    resp = post_json(f"{server.url}/predict", {"records": to_records(sample.drop(columns=TARGET))})
    assert resp.status == 200, resp.body
    served = resp.json()
    assert served["warnings"] == []
    served_proba = [p["probability"] for p in served["predictions"]]

    eval_proba = evaluated.loc[sample_index, "probability"].tolist()
    batch_proba = batch.loc[sample_index, "probability"].tolist()
    assert len(served_proba) == SAMPLE_ROWS
    assert served_proba == eval_proba
    assert batch_proba == eval_proba
    # And over the whole test split, batch prediction equals evaluation.
    assert batch["probability"].tolist() == evaluated["probability"].tolist()

    served_labels = [p["label"] for p in served["predictions"]]
    assert served_labels == batch.loc[sample_index, "prediction"].tolist()
    threshold = json.loads((server.bundle / "metadata.json").read_text())["decision"]
    assert served_labels == [">50K" if p >= threshold else "<=50K" for p in eval_proba]
    assert len(set(served_labels)) == 2
    # Every class's probability, in the signature's order: the negative class's is 1 - p.
    for pred in served["predictions"]:
        assert list(pred["probabilities"]) == ["<=50K", ">50K"]
        assert pred["probabilities"][">50K"] == pred["probability"]
        assert pred["probabilities"]["<=50K"] == 1.0 - pred["probability"]
        assert "value" not in pred
    assert batch["probability_>50K"].tolist() == batch["probability"].tolist()


# --- malformed requests: 4xx naming the field, never a 500 ---------------------------------


def _with(record: dict, **changes: object) -> dict:
    out = dict(record)
    for key, value in changes.items():
        out[key.replace("_", "-")] = value
    return out


def _without(record: dict, field: str) -> dict:
    return {k: v for k, v in record.items() if k != field}


MALFORMED = {
    "non-numeric age": (lambda r: {"records": [r, _with(r, age="forty")]}, "age"),
    "missing field": (lambda r: {"records": [_without(r, "hours-per-week")]}, "hours-per-week"),
    "unknown field": (
        lambda r: {"records": [_with(r, favourite_colour="red")]},
        "favourite-colour",
    ),
    "derived feature sent": (lambda r: {"records": [_with(r, capital_net=0.0)]}, "capital-net"),
    "empty records": (lambda r: {"records": []}, "records"),
    "number for a category": (lambda r: {"records": [_with(r, workclass=3)]}, "workclass"),
    "records not a list": (lambda r: {"records": r}, "records"),
    "records missing": (lambda r: {"rows": [r]}, "records"),
    "body not an object": (lambda r: [r], "body"),
    # Python's JSON parser accepts the non-standard literals Infinity and NaN.
    "Infinity for age": (lambda r: {"records": [_with(r, age=math.inf)]}, "age"),
    "NaN for age": (lambda r: {"records": [_with(r, age=math.nan)]}, "age"),
    "NaN for a category": (lambda r: {"records": [_with(r, sex=math.nan)]}, "sex"),
    "boolean for age": (lambda r: {"records": [_with(r, age=True)]}, "age"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_a_4xx_naming_the_field(
    server: Server, valid_record: dict, case: str
) -> None:
    build, field = MALFORMED[case]
    payload = build(valid_record)
    resp = request(f"{server.url}/predict", json.dumps(payload).encode())  # NaN -> NaN literal
    assert 400 <= resp.status < 500, (resp.status, resp.body)
    text = resp.body.decode()
    assert field in text
    errors = resp.json()["detail"]
    assert any(field in [str(part) for part in err["loc"]] for err in errors), errors


def test_non_numeric_value_names_the_record(server: Server, valid_record: dict) -> None:
    records = [valid_record, valid_record, _with(valid_record, age="forty")]
    resp = post_json(f"{server.url}/predict", {"records": records})
    assert resp.status == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "records", 2, "age"]


@pytest.mark.parametrize("body", [b'{"records": [', b"not json", b'{"records": [{"age": 1,}]}'])
def test_invalid_json_body_is_a_4xx(server: Server, body: bytes) -> None:
    resp = request(f"{server.url}/predict", body)
    assert 400 <= resp.status < 500, (resp.status, resp.body)
    assert "json" in resp.body.decode().lower()


def test_valid_record_is_accepted(server: Server, valid_record: dict) -> None:
    """The malformed cases above differ from this accepted request only by the named fault."""
    resp = post_json(f"{server.url}/predict", {"records": [valid_record]})
    assert resp.status == 200, resp.body
    (pred,) = resp.json()["predictions"]
    assert 0.0 < pred["probability"] < 1.0


# --- unseen categories ---------------------------------------------------------------------


def test_unseen_category_is_served_with_a_warning_naming_the_field(
    server: Server, valid_record: dict
) -> None:
    unseen = _with(valid_record, workclass="Space-agency")
    missing = _with(valid_record, workclass=None)
    resp = post_json(f"{server.url}/predict", {"records": [unseen, missing, valid_record]})
    assert resp.status == 200, resp.body
    doc = resp.json()
    # the model's (scored as missing) and the schema's (not one of its categories: a warning)
    assert len(doc["warnings"]) == 2
    assert all("workclass" in w and "Space-agency" in w for w in doc["warnings"])
    assert "treated as missing" in doc["warnings"][0]
    assert "unseen_category: warning" in doc["warnings"][1]
    proba = [p["probability"] for p in doc["predictions"]]
    assert all(math.isfinite(p) for p in proba)
    # An unseen category is scored as missing, exactly.
    assert proba[0] == proba[1]


# --- a tampered bundle is never served -----------------------------------------------------


def test_serve_refuses_a_tampered_bundle(small_project: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(small_project / "models" / "bundle", bundle)
    model = bundle / "model.ubj"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))

    port = free_port()
    proc = run(
        [
            str(BIN / "mlcycle"),
            "serve",
            "--bundle",
            str(bundle),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        small_project,
        check=False,
    )
    assert proc.returncode != 0
    assert "model.ubj" in proc.stderr
    assert "checksum" in proc.stderr
    assert "serving model" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    with pytest.raises(OSError):
        request(f"http://127.0.0.1:{port}/health")

"""Every task type end to end: a multiclass and a regression dataset that scikit-learn ships,
set up with `mlcycle init` and params edits only, run through real `dvc repro`, then served
and batch-scored with identical outputs. And a wrong task for the target stops the run with an
error that names the column and what to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes, load_wine

from tests.conftest import BIN, FAST_PARAMS, git_commit, make_project, run, serving, set_params
from tests.test_serve import post_json, request, to_records

pytestmark = pytest.mark.dvc


def wine_frame() -> pd.DataFrame:
    """UCI wine (178 rows, 13 measurements) with the cultivar as a named class."""
    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["cultivar"] = np.asarray(data.target_names)[data.target]
    return frame


def diabetes_frame() -> pd.DataFrame:
    """The diabetes progression data (442 rows, 10 features, a numeric target)."""
    frame = load_diabetes(as_frame=True).frame
    return frame.rename(columns={"target": "progression"})


def init_project(tmp_path: Path, frame: pd.DataFrame, target: str) -> Path:
    """A fresh project whose own data is ``frame``: `mlcycle init`, then the fast training
    settings of the test suite (a params edit, as a user's would be)."""
    project = make_project(tmp_path / "project")
    data = tmp_path / "mydata.csv"
    frame.to_csv(data, index=False)
    before = data.read_bytes()
    run(
        [str(BIN / "mlcycle"), "init", "--data", str(data), "--target", target, "--force"],
        project,
    )
    assert data.read_bytes() == before  # the user's file is copied, never changed
    set_params(project, {"train": FAST_PARAMS["train"]})
    return project


def build_and_score(project: Path, tmp_path: Path, target: str) -> dict:
    """`dvc repro`, then the same test rows through evaluation, `mlcycle predict` and the
    service; returns what each produced."""
    run(["dvc", "repro"], project)
    git_commit(project, "my data")
    test = pd.read_parquet(project / "data/prepared/test.parquet")
    evaluated = pd.read_parquet(project / "data/evaluate/test_predictions.parquet")
    records = test.drop(columns=target)
    records.to_csv(tmp_path / "new.csv", index=False)
    out = tmp_path / "scored.csv"
    run(
        [str(BIN / "mlcycle"), "predict", str(tmp_path / "new.csv"), str(out)]
        + ["--bundle", "models/bundle"],
        project,
    )
    with serving(project, "--bundle", str(project / "models/bundle")) as served:
        url = served.url
        health = request(f"{url}/health").json()
        resp = post_json(f"{url}/predict", {"records": to_records(records)})
        assert resp.status == 200, resp.body
        served = resp.json()
        bad = post_json(f"{url}/predict", {"records": [{target: 1}]})
    return {
        "test": test,
        "evaluated": evaluated,
        "batch": pd.read_csv(out),
        "served": served,
        "health": health,
        "bad": bad,
        "metrics": json.loads((project / "metrics/evaluate.json").read_text()),
        "signature": json.loads((project / "models/bundle/signature.json").read_text()),
    }


@pytest.mark.server
def test_multiclass_wine_from_init_to_service(tmp_path: Path) -> None:
    frame = wine_frame()
    project = init_project(tmp_path, frame, "cultivar")
    params = (project / "params.yaml").read_text()
    assert "task: multiclass_classification" in params and "positive_class: null" in params
    got = build_and_score(project, tmp_path, "cultivar")

    sig, metrics = got["signature"], got["metrics"]
    classes = ["class_0", "class_1", "class_2"]
    assert sig["task"] == "multiclass_classification" and sig["classes"] == classes
    assert metrics["task"] == "multiclass_classification" and metrics["threshold"] is None
    for kpi in ("f1_macro", "accuracy", "balanced_accuracy", "f1_weighted", "log_loss"):
        assert metrics[kpi] is not None
    assert metrics["f1_macro"] > 0.85  # three well-separated cultivars
    assert set(metrics["per_class"]) == set(classes)
    counts = metrics["confusion"]
    assert sum(sum(row.values()) for row in counts.values()) == len(got["test"])
    assert metrics["objective"]["met"] is True

    # Evaluation, batch prediction and the service give the very same probabilities.
    evaluated = got["evaluated"][[f"probability_{c}" for c in classes]].to_numpy()
    batch = got["batch"][[f"probability_{c}" for c in classes]].to_numpy()
    served = np.array(
        [[p["probabilities"][c] for c in classes] for p in got["served"]["predictions"]]
    )
    np.testing.assert_allclose(batch, evaluated, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(served, evaluated)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-6)
    labels = np.asarray(classes)[evaluated.argmax(axis=1)]
    assert list(got["batch"]["prediction"]) == list(labels)
    assert [p["label"] for p in got["served"]["predictions"]] == list(labels)
    assert "value" not in got["served"]["predictions"][0]
    assert got["health"]["model"]["task"] == "multiclass_classification"
    assert got["bad"].status == 422  # request validation unchanged: the target is no input

    # Every plot in dvc.yaml renders for a multiclass project.
    shown = run(["dvc", "plots", "show", "--json"], project)
    assert "failed" not in shown.stderr.lower(), shown.stderr
    doc = json.loads(shown.stdout)
    assert "errors" not in doc, doc.get("errors")
    (roc,) = [k for k in doc["data"] if k.startswith("ROC")]
    rows = doc["data"][roc][0]["content"]["data"]["values"]
    assert {r["class"] for r in rows} == set(classes)  # one curve per class
    (conf,) = [k for k in doc["data"] if k.startswith("Confusion")]
    assert len(doc["data"][conf][0]["content"]["data"]["values"]) == len(got["test"])


@pytest.mark.server
def test_regression_diabetes_from_init_to_service(tmp_path: Path) -> None:
    frame = diabetes_frame()
    project = init_project(tmp_path, frame, "progression")
    params = (project / "params.yaml").read_text()
    assert "task: regression" in params and "positive_class: null" in params
    got = build_and_score(project, tmp_path, "progression")

    sig, metrics = got["signature"], got["metrics"]
    assert sig["task"] == "regression" and sig["classes"] == []
    for kpi in ("rmse", "mae", "r2", "mape", "residual_std"):
        assert metrics[kpi] is not None
    assert metrics["r2"] > 0.2  # diabetes is noisy: published models reach about 0.4-0.5
    assert metrics["rmse"] < float(got["test"]["progression"].std())  # beats the mean
    assert {"std", "q05", "q95"} <= set(metrics["residuals"])
    assert metrics["objective"]["met"] is True

    evaluated = got["evaluated"]["prediction"].to_numpy()
    np.testing.assert_allclose(got["batch"]["prediction"].to_numpy(), evaluated, rtol=1e-15)
    served = np.array([p["value"] for p in got["served"]["predictions"]])
    np.testing.assert_array_equal(served, evaluated)
    first = got["served"]["predictions"][0]
    assert set(first) == {"value"}
    assert got["health"]["model"]["task"] == "regression"
    plots = json.loads((project / "metrics/plots/predicted_actual.json").read_text())
    assert len(plots) == len(got["test"]) and {"actual", "predicted", "residual"} <= set(plots[0])


# --- a wrong task for the target stops the run, naming the column -----------------------------


def _repro_error(project: Path) -> str:
    proc = run(["dvc", "repro"], project, check=False)
    assert proc.returncode != 0
    return proc.stderr + proc.stdout


def test_regression_on_a_text_target_names_the_column(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    set_params(
        project,
        {
            "objectives": {
                "task": "regression",
                "positive_class": None,
                "primary_metric": "rmse",
                "kpis": ["rmse", "mae"],
                "minimums": None,
                "threshold": None,
                "slices": [],
                "minimum": 1.0,
            },
            "train": {"candidates": ["xgboost"], "baseline": None},
        },
    )
    message = _repro_error(project)
    assert "target 'income' is not numeric" in message
    assert "multiclass_classification" in message  # what to change


def test_a_class_seen_only_in_test_names_it(tmp_path: Path) -> None:
    frame = wine_frame()
    project = init_project(tmp_path, frame, "cultivar")
    # A by-source split whose test file holds a cultivar training never has.
    train, test = frame[frame.cultivar != "class_2"], frame
    train.to_csv(project / "data/external/a.csv", index=False)
    test.to_csv(project / "data/external/b.csv", index=False)
    set_params(
        project,
        {
            "data": {
                "sources": [
                    {"name": "a", "kind": "file", "path": "data/external/a.csv"},
                    {"name": "b", "kind": "file", "path": "data/external/b.csv"},
                ]
            },
            "prepare": {"split": {"method": "by_source", "train_sources": ["a"],
                                  "test_sources": ["b"]}},
        },
    )  # fmt: skip
    message = _repro_error(project)
    assert "class(es) ['class_2'] occur only in the test split" in message


def test_multiclass_with_one_class_is_refused(tmp_path: Path) -> None:
    frame = wine_frame()
    project = init_project(tmp_path, frame, "cultivar")
    frame.assign(cultivar="class_0").to_csv(project / "data/external/mydata.csv", index=False)
    message = _repro_error(project)
    assert "target 'cultivar' has a single class" in message

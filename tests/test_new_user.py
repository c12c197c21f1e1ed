"""A new user's own data: another CSV, other column names, another target.

Only params.yaml and the schema change (the schema drafted with `mlcycle schema infer`), and
`dvc repro` runs end to end; the bundle then scores the user's records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import cli, git_commit, make_project, run, set_params

pytestmark = pytest.mark.dvc


def customers(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    """A churn table whose label depends on tenure, contract and charges."""
    rng = np.random.default_rng(seed)
    tenure = rng.integers(0, 72, n)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.55, 0.25, 0.2])
    charges = np.round(rng.uniform(18, 120, n), 2)
    region = rng.choice(["north", "south", "east", "west"], n)
    logit = (
        1.2 - 0.05 * tenure + 0.015 * charges + np.where(contract == "month-to-month", 1.0, -1.5)
    )
    churned = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame(
        {
            "customer_tenure_months": tenure,
            "contract_type": contract,
            "monthly_charges": charges,
            "sales_region": region,
            "churned": churned,
        }
    )


def test_a_new_dataset_runs_end_to_end_with_params_and_schema_only(tmp_path: Path) -> None:
    """Another CSV, another target, set in params.yaml with `positive_class: yes` unquoted:
    YAML 1.1 (PyYAML's default) reads a boolean there, DVC the string "yes". mlcycle reads it
    as DVC does, so the run works and the positive class is "yes"; quoting it afterwards
    changes nothing DVC sees, so nothing re-runs."""
    project = make_project(tmp_path / "project")
    (project / "schema.yaml").unlink()
    data = customers()
    data.to_csv(project / "data/external/customers.csv", index=False)
    params = {
        "objectives": {
            "target": "churned",
            "positive_class": "POSITIVE",
            "minimum": 0.7,
            "minimums": {"accuracy": 0.6},
            "slices": ["sales_region"],
            "kpis": ["roc_auc", "accuracy", "f1"],
        },
        "data": {
            "columns": None,
            "sources": [
                {"name": "customers", "kind": "file", "path": "data/external/customers.csv"}
            ],
        },
        "prepare": {
            "split": {
                "method": "stratified",
                "train_sources": [],
                "test_sources": [],
                "test_size": 0.25,
                "seed": 1,
            }
        },
        "features": {"derived": [], "include": [], "exclude": []},
    }
    set_params(project, params)
    params_file = project / "params.yaml"
    text = params_file.read_text().replace("positive_class: POSITIVE", "positive_class: yes")
    params_file.write_text(text)
    assert "positive_class: yes\n" in params_file.read_text()

    run(["dvc", "repro", "gather"], project)
    cli(project, "schema", "infer")
    assert "customer_tenure_months" in (project / "schema.yaml").read_text()
    run(["dvc", "repro"], project)
    git_commit(project, "my data")

    metrics = json.loads((project / "metrics/evaluate.json").read_text())
    assert metrics["roc_auc"] > 0.7 and metrics["objective"]["met"] is True
    signature = json.loads((project / "models/bundle/signature.json").read_text())
    assert signature["target"] == "churned" and signature["positive_class"] == "yes"
    assert signature["classes"] == ["no", "yes"]
    assert {i["name"] for i in signature["inputs"]} == set(data.columns) - {"churned"}

    new = data.drop(columns="churned").head(50)
    new.to_csv(tmp_path / "new.csv", index=False)
    cli(project, "predict", str(tmp_path / "new.csv"), str(tmp_path / "out.csv"),
        "--bundle", "models/bundle")  # fmt: skip
    scored = pd.read_csv(tmp_path / "out.csv")
    assert len(scored) == 50 and set(scored["prediction"]) <= {"yes", "no"}
    assert scored["probability"].between(0, 1).all()

    text = params_file.read_text().replace("positive_class: yes", 'positive_class: "yes"')
    params_file.write_text(text)
    status = run(["dvc", "status"], project)
    assert "changed" not in status.stdout, status.stdout

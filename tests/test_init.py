"""`mlcycle init`: a user's data file to a params.yaml and a draft schema.yaml, refusing what
cannot work and overwriting nothing by accident. (The full runs are in tests/test_tasks.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle import config, scaffold
from mlcycle.scaffold import InitError
from mlcycle.schema import load_schema
from tests.conftest import BIN, ROOT, run


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project folder holding the shipped params.yaml and schema.yaml."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("params.yaml", "schema.yaml"):
        shutil.copy2(ROOT / name, project / name)
    return project


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "mine.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def frame(target: object, n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    values = np.resize(np.asarray(target, dtype=object), n)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.choice(["x", "y"], n), "t": values})


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["yes", "no", "no"], "binary_classification"),
        ([0, 1, 1, 0], "binary_classification"),
        ([True, False], "binary_classification"),
        (["red", "green", "blue"], "multiclass_classification"),
        ([1, 2, 3, 4, 5], "multiclass_classification"),
        ([1.5, 2.25, 3.0, 7.0], "regression"),
        (list(range(40)), "regression"),  # many distinct integers: a quantity
    ],
)
def test_task_is_inferred_from_the_target(values: list, task: str) -> None:
    assert scaffold.infer_task(pd.Series(values * 5)) == task


def test_positive_class_is_the_positive_looking_label_or_the_rarer() -> None:
    assert scaffold.positive_class(pd.Series(["no", "yes", "no"])) == "yes"
    assert scaffold.positive_class(pd.Series(["0", "1", "1"])) == "1"
    assert scaffold.positive_class(pd.Series(["False", "True"])) == "True"
    assert scaffold.positive_class(pd.Series(["churn", "stay", "stay"])) == "churn"


@pytest.mark.parametrize(
    ("values", "task", "message"),
    [
        (["a", "b", "c"], "regression", "target 't' holds text .*regression needs numbers"),
        (["a"], "multiclass_classification", "target 't' has a single class"),
        (["a", "b", "c"], "binary_classification", "has 3 classes; binary_classification"),
        ([str(i) for i in range(150)], "multiclass_classification", "150 distinct values"),
    ],
)
def test_a_task_that_cannot_work_is_refused(
    root: Path, tmp_path: Path, values: list, task: str, message: str
) -> None:
    path = write(tmp_path, frame(values, n=150))
    with pytest.raises(InitError, match=message):
        scaffold.plan(root, path, "t", task)


def test_a_class_with_one_row_is_named(root: Path, tmp_path: Path) -> None:
    data = frame(["a", "b"], n=40)
    data.loc[0, "t"] = "lonely"
    with pytest.raises(InitError, match=r"\{'lonely': 1\} have a single row"):
        scaffold.plan(root, write(tmp_path, data), "t")


def test_a_missing_target_lists_the_columns(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InitError, match=r"target 'price' is not a column .*\['a', 'b', 't'\]"):
        scaffold.plan(root, write(tmp_path, frame(["x", "y"])), "price")


@pytest.mark.parametrize(
    ("values", "task", "minimum"),
    [
        (["no", "yes"], "binary_classification", 0.5),
        (["a", "a", "b", "c"], "multiclass_classification", round(2 * 0.5 / 1.5 / 3, 6)),
    ],
)
def test_minimum_is_the_no_skill_baseline(
    root: Path, tmp_path: Path, values: list, task: str, minimum: float
) -> None:
    p = scaffold.plan(root, write(tmp_path, frame(values, n=40)), "t")
    assert p.task == task and p.params["objectives"]["minimum"] == minimum


def test_written_params_validate_for_every_task(root: Path, tmp_path: Path) -> None:
    for values, task in (
        (["no", "yes"], "binary_classification"),
        (["a", "b", "c"], "multiclass_classification"),
        ([1.5, 2.5, 3.25], "regression"),
    ):
        p = scaffold.plan(root, write(tmp_path, frame(values, n=90), f"{task}.parquet"), "t")
        assert p.task == task
        scaffold.write(root, p, force=True)
        params = config.load(root / "params.yaml")
        assert params.objectives.task == task
        assert params.prepare.split.method == ("random" if task == "regression" else "stratified")
        assert set(params.train.candidates) == (
            {"xgboost", "ridge", "random_forest"}
            if task == "regression"
            else {"xgboost", "logistic_regression", "random_forest"}
        )
        spec = {c.name: c for c in load_schema(root / "schema.yaml").columns}["t"]
        # A regression target gets no allowed values nor a range; classes are listed.
        assert (spec.values is None and spec.min is None) == (task == "regression")


def test_user_settings_that_do_not_depend_on_the_data_survive(root: Path, tmp_path: Path) -> None:
    text = (root / "params.yaml").read_text().replace("cv_folds: 4", "cv_folds: 7")
    (root / "params.yaml").write_text(text)
    p = scaffold.plan(root, write(tmp_path, frame([1.5, 2.5, 3.0], n=90)), "t")
    assert p.params["train"]["cv_folds"] == 7
    assert "logistic_regression" not in p.params["train"]["search"]  # not a regression kind
    assert p.params["train"]["models"]["ridge"] == {"alpha": 1.0}


def test_refuses_to_overwrite_without_force_and_copies_never_moves(
    root: Path, tmp_path: Path
) -> None:
    data = write(tmp_path, frame(["no", "yes"]))
    original = data.read_bytes()
    before = {n: (root / n).read_bytes() for n in ("params.yaml", "schema.yaml")}
    proc = run([str(BIN / "mlcycle"), "init", "--data", str(data), "--target", "t"], root, False)
    assert proc.returncode == 1 and "pass --force" in proc.stderr
    assert {n: (root / n).read_bytes() for n in before} == before  # nothing changed
    assert not (root / "data").exists()

    proc = run(
        [str(BIN / "mlcycle"), "init", "--data", str(data), "--target", "t", "--force"], root
    )
    assert "positive class: 'yes'" in proc.stderr
    assert data.read_bytes() == original  # the user's file is where it was
    assert (root / "data/external/mine.csv").read_bytes() == original
    assert "path: data/external/mine.csv" in (root / "params.yaml").read_text()
    # A file already under data/external/ is used where it is.
    again = scaffold.plan(root, root / "data/external/mine.csv", "t")
    assert again.copied_from is None and again.data_path == "data/external/mine.csv"

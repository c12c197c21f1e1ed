"""`mlcycle init`: a user's data file to a params.yaml and a draft schema.yaml, refusing what
cannot work and overwriting nothing by accident. (The full runs through `dvc repro` are in
tests/test_tasks.py.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.metrics import f1_score

from mlcycle import config, prepare, scaffold, schema
from mlcycle.scaffold import InitError
from mlcycle.schema import findings
from tests.conftest import ROOT, cli

SHIPPED = ("params.yaml", "schema.yaml")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project folder holding the shipped params.yaml and schema.yaml, the example data's
    folder and a landing folder."""
    project = tmp_path / "project"
    (project / "data/external/adult").mkdir(parents=True)
    (project / "data/external/adult/adult.data.gz").write_bytes(b"example")
    (project / "data/landing").mkdir()
    (project / "data/landing/.gitkeep").write_bytes(b"")
    for name in SHIPPED:
        shutil.copy2(ROOT / name, project / name)
    return project


def write(tmp_path: Path, data: pd.DataFrame, name: str = "mine.csv") -> Path:
    path = tmp_path / name
    if ".parquet" in name:
        data.to_parquet(path)
    elif ".jsonl" in name:
        data.to_json(path, orient="records", lines=True)
    else:
        data.to_csv(path, index=False)
    return path


def frame(target: object, n: int = 60) -> pd.DataFrame:
    """Two features and a target ``t`` cycling through ``target``'s values."""
    rng = np.random.default_rng(0)
    values = np.resize(np.asarray(target, dtype=object), n)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.choice(["x", "y"], n), "t": values})


def wine() -> pd.DataFrame:
    data = load_wine(as_frame=True)
    out = data.frame.drop(columns="target")
    out["cultivar"] = np.asarray(data.target_names)[data.target]
    return out


def diabetes() -> pd.DataFrame:
    return load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"})


def cancer() -> pd.DataFrame:
    """Breast cancer: a 0/1 integer target (1: benign)."""
    return load_breast_cancer(as_frame=True).frame.rename(columns={"target": "benign"})


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by path: to show that a refusal changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- the task ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["yes", "no", "no"], "binary_classification"),
        (["red", "green", "blue"], "multiclass_classification"),
        ([True, False], "binary_classification"),
        ([0, 1, 1, 0], "binary_classification"),
        ([1, 2, 3, 4, 5], "multiclass_classification"),
        ([0.0, 1.0], "binary_classification"),  # whole numbers stored as floats
        ([1.5, 2.25, 3.0, 7.0], "regression"),
        (list(range(40)), "regression"),  # many distinct whole numbers: a quantity
    ],
)
def test_task_is_inferred_from_the_target(values: list, task: str) -> None:
    assert scaffold.infer_task(pd.Series(values * 5)) == task


@pytest.mark.parametrize(
    ("target", "fmt", "task", "positive"),
    [
        (["no", "Yes", "no"], "csv", "binary_classification", "Yes"),
        ([0, 1, 1], "csv", "binary_classification", "1"),  # an integer column
        ([0.0, 1.0, 1.0, None], "csv", "binary_classification", "1.0"),  # floats: NaN present
        ([True, False, False], "jsonl", "binary_classification", "True"),
        (["a", "b", "c", "a"], "parquet", "multiclass_classification", None),
        ([0.5, 1.75, 3.0, 9.0], "parquet", "regression", None),
    ],
)
def test_classes_are_written_the_way_the_pipeline_sees_them(
    root: Path, tmp_path: Path, target: list, fmt: str, task: str, positive: str | None
) -> None:
    path = write(tmp_path, frame(target, n=60), f"mine.{fmt}")
    p = scaffold.plan(root, path, "t")
    assert (p.task, p.positive_class) == (task, positive)
    scaffold.write(root, p, force=True)
    params = config.load(root / "params.yaml")
    assert params.objectives.positive_class == positive
    # What the prepare stage makes of the same frame: the positive class is one of its labels.
    cleaned, _ = prepare.clean(scaffold.read_data(path, root), params.objectives)
    if positive is not None:
        assert positive in set(cleaned["t"])


def test_positive_class_is_the_positive_looking_label_or_the_rarer() -> None:
    def chosen(*labels: str) -> str:
        return scaffold.positive_class(pd.Series(labels))[0]

    assert chosen("no", "yes", "no") == "yes"
    assert chosen("1", "0", "0", "0") == "1"  # not the rarer: the pair says which
    assert chosen("0.0", "1.0") == "1.0"
    assert chosen("False", "True") == "True"
    assert chosen("N", "Y", "Y") == "Y"
    assert chosen("Negative", "POSITIVE") == "POSITIVE"
    assert chosen("churn", "stay", "stay") == "churn"  # no such pair: the rarer
    assert chosen("a", "b") == "b"  # a tie: the later in sorted order
    _, why = scaffold.positive_class(pd.Series(["churn", "stay", "stay"]))
    assert why == "the rarer class: 1 of 3 rows"


# --- what is refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "task", "message"),
    [
        (
            ["a", "b", "c"],
            "regression",
            r"target 't' is not numeric \(e.g. \['a', 'b', 'c'\]\); regression needs numbers",
        ),
        ([True, False], "regression", r"target 't' is not numeric \(e.g. \['False', 'True'\]\)"),
        (["a"], "multiclass_classification", r"target 't' has a single class \['a'\]"),
        ([1], None, r"target 't' has a single class \['1'\]"),
        (["a", "b", "c"], "binary_classification", "target 't' has 3 classes; binary_"),
        (
            [f"c{i}" for i in range(150)],
            None,
            "target 't' has 150 distinct values: too many .* --task regression",
        ),
        (list(range(60)), "multiclass_classification", "target 't' holds 60 distinct numbers"),
    ],
)
def test_a_task_that_cannot_work_is_refused_naming_the_column(
    root: Path, tmp_path: Path, values: list, task: str | None, message: str
) -> None:
    path = write(tmp_path, frame(values, n=300))
    before = snapshot(root)
    with pytest.raises(InitError, match=message):
        scaffold.plan(root, path, "t", task)
    assert snapshot(root) == before


def test_a_class_with_one_row_is_named(root: Path, tmp_path: Path) -> None:
    data = frame(["a", "b"], n=40)
    data.loc[0, "t"] = "lonely"
    with pytest.raises(InitError, match=r"target 't': class\(es\) \['lonely'\] have a single row"):
        scaffold.plan(root, write(tmp_path, data), "t")


def test_a_missing_target_lists_the_columns(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InitError, match=r"target 'price' is not a column .*\['a', 'b', 't'\]"):
        scaffold.plan(root, write(tmp_path, frame(["x", "y"])), "price")


def test_a_missing_empty_or_unreadable_file_is_named(root: Path, tmp_path: Path) -> None:
    with pytest.raises(InitError, match="nope.csv: no such file"):
        scaffold.plan(root, tmp_path / "nope.csv", "t")
    (tmp_path / "empty.csv").write_text("a,b,t\n")
    with pytest.raises(InitError, match="empty.csv: cannot be read as csv: .*holds no rows"):
        scaffold.plan(root, tmp_path / "empty.csv", "t")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InitError, match="junk.parquet: cannot be read as parquet"):
        scaffold.plan(root, tmp_path / "junk.parquet", "t")
    (tmp_path / "data.xlsx").write_bytes(b"")
    with pytest.raises(InitError, match="data.xlsx: unknown file type"):
        scaffold.plan(root, tmp_path / "data.xlsx", "t")


# --- params.yaml -------------------------------------------------------------------------------


def test_minimum_is_the_no_skill_baseline_of_the_primary_metric(root: Path, tmp_path: Path) -> None:
    binary = scaffold.plan(root, write(tmp_path, cancer(), "cancer.csv"), "benign")
    assert binary.params["objectives"]["minimum"] == 0.5

    data = wine()
    multi = scaffold.plan(root, write(tmp_path, data, "wine.csv"), "cultivar")
    majority = data["cultivar"].value_counts().idxmax()
    expected = f1_score(data["cultivar"], [majority] * len(data), average="macro", zero_division=0)
    assert multi.params["objectives"]["primary_metric"] == "f1_macro"
    assert multi.params["objectives"]["minimum"] == pytest.approx(expected, rel=1e-5)

    data = diabetes()
    reg = scaffold.plan(root, write(tmp_path, data, "diabetes.csv"), "progression")
    rmse_of_mean = np.sqrt(np.mean((data["progression"] - data["progression"].mean()) ** 2))
    assert reg.params["objectives"]["primary_metric"] == "rmse"
    assert reg.params["objectives"]["minimum"] == pytest.approx(rmse_of_mean, rel=1e-5)
    # rmse is lower-is-better: the comment says the bound is a maximum, and to lower it.
    line = next(x for x in reg.params_text.splitlines() if "minimum:" in x)
    following = reg.params_text.split(line, 1)[1].split("\n  kpis")[0]
    assert "a maximum" in line and "Lower it to your real bar" in following


@pytest.mark.parametrize(
    ("make", "target", "task", "candidates"),
    [
        (cancer, "benign", "binary_classification", {"logistic_regression"}),
        (wine, "cultivar", "multiclass_classification", {"logistic_regression"}),
        (diabetes, "progression", "regression", {"ridge"}),
    ],
)
def test_written_params_and_schema_are_accepted_for_every_task(
    root: Path, tmp_path: Path, make, target: str, task: str, candidates: set[str]
) -> None:
    data = make()
    path = write(tmp_path, data, f"{target}.csv")
    p = scaffold.plan(root, path, target)
    scaffold.write(root, p, force=True)

    text = (root / "params.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=params.schema.json\n")
    assert "target: " + target + " " in text and "# the column to predict" in text
    assert config.load_yaml(text) == p.params
    params = config.load(root / "params.yaml")
    assert params.objectives.task == task
    assert params.objectives.primary_metric == scaffold.DEFAULT_PRIMARY[task]
    assert params.prepare.split.method == ("random" if task == "regression" else "stratified")
    assert set(params.train.candidates) == {"xgboost", "random_forest"} | candidates
    assert set(p.params["train"]["models"]) <= {"xgboost", "random_forest"} | candidates
    assert (p.params["objectives"].get("threshold") is not None) == (task.startswith("binary"))
    assert params.data.sources[0].path == f"data/external/{target}.csv"
    assert params.package.name == f"{target}-model"

    draft = schema.load_schema(root / "schema.yaml")
    assert draft.target == target and "_source" not in draft.names
    assert not findings.check(data, draft)  # the data it was drafted from passes
    spec = draft.column(target)
    if task == "regression":
        # No allowed values, no range, and fractions allowed: a new value is no error.
        assert (spec.values, spec.min, spec.max, spec.type) == (None, None, None, "float")
        new = data.head(3).assign(progression=[1e6, -5.5, 151.25])
        assert not findings.check(new, draft)
    else:
        assert spec.values is not None and len(spec.values) == data[target].nunique()


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_file_with_another_delimiter_gets_it_in_params(
    root: Path, tmp_path: Path, sep: str
) -> None:
    """A European CSV (';', decimal commas stay text here) reads as gather will read it."""
    path = tmp_path / "semi.csv"
    frame(["yes", "no"]).to_csv(path, index=False, sep=sep)
    p = scaffold.plan(root, path, "t")
    assert p.params["data"]["sources"][0]["delimiter"] == sep
    scaffold.write(root, p, force=True)
    params = config.load(root / "params.yaml")
    assert params.data.sources[0].delimiter == sep
    assert params.objectives.task == "binary_classification"
    assert schema.load_schema(root / "schema.yaml").names == ("a", "b", "t")


def test_settings_that_do_not_depend_on_the_data_survive(root: Path, tmp_path: Path) -> None:
    text = (root / "params.yaml").read_text()
    text = text.replace("cv_folds: 4", "cv_folds: 7").replace("tolerance: 0.002", "tolerance: 0.01")
    (root / "params.yaml").write_text(text)
    p = scaffold.plan(root, write(tmp_path, diabetes()), "progression")
    assert p.params["train"]["cv_folds"] == 7 and p.params["gate"]["tolerance"] == 0.01
    assert "logistic_regression" not in p.params["train"]["search"]  # not a regression kind
    assert p.params["train"]["models"]["ridge"] == {"alpha": 1.0}
    ridge = {"alpha": {"low": 0.001, "high": 100.0, "log": True}}
    assert p.params["train"]["search"]["ridge"] == ridge
    assert p.params["prepare"]["outliers"] == scaffold.DEFAULT_OUTLIERS


def test_without_a_usable_params_yaml_the_shipped_defaults_are_used(
    root: Path, tmp_path: Path
) -> None:
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, default in {**scaffold.CARRIED_SECTIONS, "train": scaffold.DEFAULT_TRAIN}.items():
        assert {k: shipped[section].get(k) for k in default} == default, section
    path = write(tmp_path, wine())
    (root / "params.yaml").unlink()
    missing = scaffold.plan(root, path, "cultivar")
    (root / "params.yaml").write_text("objectives: [unclosed\n")
    unparsable = scaffold.plan(root, path, "cultivar")
    (root / "params.yaml").write_text("train: {cv_folds: 1}\n")  # parses, does not validate
    invalid = scaffold.plan(root, path, "cultivar")
    assert missing.params == unparsable.params == invalid.params
    assert any("shipped defaults are used" in m for m in invalid.messages)
    config.parse_params(missing.params)


def test_names_are_sanitised(root: Path, tmp_path: Path) -> None:
    path = write(tmp_path, frame(["no", "yes"]), "My Sales (2024).v2.csv.gz")
    p = scaffold.plan(root, path, "t")
    assert p.params["data"]["sources"][0]["name"] == "my_sales_2024_v2"
    assert p.params["data"]["sources"][0]["format"] == "csv"
    assert p.params["package"]["name"] == "my-sales-2024-v2-model"
    assert scaffold.plan(root, path, "t", name="Price Model_1!").params["package"]["name"] == (
        "price-model-1"
    )


# --- writing: copy, never move; replace only with --force -------------------------------------


def test_refuses_without_force_then_overwrites_and_copies_never_moves(
    root: Path, tmp_path: Path
) -> None:
    data = write(tmp_path, frame(["no", "yes"]))
    original = data.read_bytes()
    before = snapshot(root)
    init = ["init", "--data", str(data), "--target", "t"]
    proc = cli(root, *init, check=False)
    assert proc.returncode == 1
    assert "params.yaml and schema.yaml already exist; pass --force" in proc.stderr
    assert snapshot(root) == before  # nothing changed, byte for byte; nothing copied

    proc = cli(root, *init, "--force")
    assert "positive class: 'yes' (the positive one of the pair no/yes)" in proc.stderr
    assert "wrote params.yaml" in proc.stderr and "`dvc repro`" in proc.stderr
    assert data.read_bytes() == original  # the user's file is where it was
    assert (root / "data/external/mine.csv").read_bytes() == original
    assert "path: data/external/mine.csv" in (root / "params.yaml").read_text()
    assert (root / "params.yaml").read_bytes() != before["params.yaml"]
    after = snapshot(root)
    assert {k: after[k] for k in before if k not in SHIPPED} == {
        k: v for k, v in before.items() if k not in SHIPPED
    }  # the example data and the landing folder are untouched

    # A file already under data/external/ is used where it is, and not copied.
    again = scaffold.plan(root, root / "data/external/mine.csv", "t")
    assert again.copied_from is None and again.data_path == "data/external/mine.csv"
    assert not any("copied" in line for line in scaffold.write(root, again, force=True))


def test_only_the_missing_file_needs_force(root: Path, tmp_path: Path) -> None:
    (root / "schema.yaml").unlink()
    p = scaffold.plan(root, write(tmp_path, frame(["no", "yes"])), "t")
    with pytest.raises(InitError, match="params.yaml already exists; pass --force to replace it"):
        scaffold.write(root, p)
    assert not (root / "schema.yaml").exists()


def test_a_different_file_at_the_destination_is_never_overwritten(
    root: Path, tmp_path: Path
) -> None:
    (root / "data/external/mine.csv").write_text("someone else's data\n")
    p = scaffold.plan(root, write(tmp_path, frame(["no", "yes"])), "t")
    before = snapshot(root)
    with pytest.raises(InitError, match="data/external/mine.csv exists with other content"):
        scaffold.write(root, p, force=True)
    assert snapshot(root) == before


def test_schema_infer_drafts_a_regression_target_without_values_or_range(
    root: Path, tmp_path: Path
) -> None:
    data = diabetes()
    scaffold.write(root, scaffold.plan(root, write(tmp_path, data), "progression"), force=True)
    data.to_parquet(tmp_path / "diabetes.parquet")
    wine().to_parquet(tmp_path / "wine.parquet")

    def infer(snapshot: str, *extra: str) -> schema.ColumnSpec:
        args = ["schema", "infer", "--snapshot", str(tmp_path / snapshot), "--force", *extra]
        cli(root, *args)
        draft = schema.load_schema(root / "schema.yaml")
        return draft.column(draft.target)

    # objectives.task in params.yaml is regression: no values, no range, fractions allowed.
    spec = infer("diabetes.parquet")
    assert (spec.values, spec.min, spec.max, spec.type) == (None, None, None, "float")
    # Another target, or no params.yaml (binary by default): the classes are listed.
    assert infer("wine.parquet", "--target", "cultivar").values == ("class_0", "class_1", "class_2")
    (root / "params.yaml").unlink()
    assert infer("wine.parquet", "--target", "cultivar").values == ("class_0", "class_1", "class_2")


# --- the decision threshold's objective --------------------------------------------------------


@pytest.mark.parametrize(
    ("positives", "metric", "share"),
    [(0.05, "f1", "5.0%"), (0.5, "accuracy", "50.0%"), (0.9, "balanced_accuracy", "90.0%")],
)
def test_the_threshold_objective_suits_the_positive_share(
    root: Path, tmp_path: Path, positives: float, metric: str, share: str
) -> None:
    """On imbalanced data init picks a threshold objective a model predicting the majority class
    for every row cannot win (accuracy would), and says the share and the choice in its output
    and in params.yaml; near balance it keeps accuracy."""
    n = 400
    labels = np.where(np.arange(n) < round(positives * n), "yes", "no")
    p = scaffold.plan(root, write(tmp_path, frame(labels, n), "imbalanced.csv"), "t")
    assert p.positive_class == "yes"
    assert p.params["objectives"]["threshold"]["maximize"] == metric
    (said,) = [m for m in p.messages if m.startswith("decision threshold:")]
    assert f"maximises out-of-fold {metric}" in said and f"positives are {share}" in said
    assert "objectives.threshold.maximize" in said
    line = next(x for x in p.params_text.splitlines() if "maximize:" in x)
    assert f"maximize: {metric}" in line and f"# {metric}: positives are {share}" in line
    assert config.load_yaml(p.params_text) == p.params

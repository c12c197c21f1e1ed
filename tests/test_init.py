"""`mlcycle init`: a user's data file to a params.yaml and a draft schema.yaml, refusing what
cannot work and overwriting nothing by accident. (The full runs through `dvc repro` are in
tests/test_tasks.py.)"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.metrics import f1_score

from mlcycle import (
    config,
    drift,
    features,
    models,
    predict,
    preflight,
    prepare,
    scaffold,
    schema,
    sources,
)
from mlcycle.bundle import load_bundle, write_bundle
from mlcycle.scaffold import InitError
from mlcycle.schema import findings, roles
from mlcycle.tasks import BINARY, MULTICLASS, REGRESSION
from mlcycle.tuning import fit_options
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
        # Whole numbers that a missing value made floats are still spelt as integers.
        ([0.0, 1.0, 1.0, None], "csv", "binary_classification", "1"),
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


# --- column roles, a draft that passes its own data, one spelling of labels ---------------------

WORDS = ["the", "a", "of", "river", "night", "story", "long", "city", "war", "love", "old"]


def roles_table(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """A table as users' files come: a row number, a free-text title, a 90 %-null column, a
    constant, dates, many short zip codes, a unique measurement, and an integer target with
    missing values (so pandas reads it as floats)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    grade = np.digitize(x + rng.normal(0, 0.5, n), [-0.7, 0.0, 0.7]).astype(float)
    grade[rng.uniform(size=n) < 0.1] = np.nan
    return pd.DataFrame(
        {
            "row_id": np.arange(1, n + 1),
            "title": [" ".join(rng.choice(WORDS, 4)) + f" {i}" for i in range(n)],
            "sparse": np.where(rng.uniform(size=n) < 0.9, np.nan, rng.normal(size=n)),
            "constant": "same",
            "signup": pd.date_range("2023-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "zip": rng.choice([f"Z{z:04d}" for z in range(300)], n),
            "amount": np.round(rng.lognormal(3, 1, n), 6),
            "x": x,
            "grade": grade,
        }
    )


def passes_validate(root: Path, data_path: Path) -> None:
    """validate's checks in-process, with the project's settings: the snapshot gather would
    make of ``data_path`` against the written schema.yaml (no error-level finding), and the
    settings against the data (none that does not fit)."""
    params = config.load(root / "params.yaml")
    draft = schema.load_schema(root / params.validate.schema)
    data = scaffold.read_data(data_path, root)
    v = params.validate
    found = findings.check(data, draft, severity=v.severity, max_null_rate=v.max_null_rate,
                           examples=v.examples, max_unseen_share=v.max_unseen_share)  # fmt: skip
    assert not [f.message for f in found if f.severity == "error"]
    assert preflight.settings_problems(params, data, draft) == []


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.arange(1, 301), "identifier"),  # a row number
        (np.r_[np.arange(1, 280), [np.nan] * 21], "identifier"),  # missing values: floats
        (np.random.default_rng(1).permutation(400)[:300] + 1000, "identifier"),  # gaps
        ([f"{i:08x}-1c2d-4e5f-8a9b-{i:012x}" for i in range(300)], "identifier"),
        ([f"ORD-{i * 7919 % 100003}" for i in range(300)], "identifier"),
        ([f"{w} {i}" for i, w in enumerate(np.resize(WORDS, 300))], "identifier"),  # short texts
        ([" ".join(np.resize(WORDS, 3 + i % 5)) + f" {i}" for i in range(300)], "free text"),
        (["same"] * 300, "constant"),
        ([np.nan] * 300, "constant"),
        (pd.date_range("2020-01-01", periods=300).astype(str), "date"),
        (np.random.default_rng(2).normal(size=300), None),  # a unique measurement
        ([*np.random.default_rng(2).normal(size=297).astype(str), "n.a.", "-", "x"], None),
        (np.random.default_rng(3).integers(0, 10**9, 300), None),  # distinct, not a sequence
        ([f"{z:05d}" for z in np.random.default_rng(4).integers(0, 500, 300)], None),  # zips
        (np.resize(["yes", None], 300), None),  # one value and missing ones: two states
        (np.arange(1, 41), None),  # 40 rows: too few to tell an identifier from chance
        (np.resize(WORDS, 300), None),  # a category
    ],
)
def test_column_roles_are_decided_by_the_values(values: object, kind: str | None) -> None:
    role = roles.column_role(pd.Series(values), "col")
    assert (role.kind if role else None) == kind, role


def test_the_target_is_never_excluded() -> None:
    table = roles_table()
    assert [r.column for r in roles.column_roles(table, "row_id")] == [
        "title",
        "constant",
        "signup",
    ]


def test_an_identifier_is_also_told_by_its_name() -> None:
    """Distinct whole numbers spread wide are a quantity, unless the name says identifier."""
    spread = pd.Series(np.random.default_rng(0).choice(10**9, 300, replace=False))
    assert roles.column_role(spread, "amount_cents") is None
    for name in ("customer_id", "CustomerID", "userId", "id"):
        assert roles.column_role(spread, name).kind == "identifier"
    assert roles.column_role(spread, "paid") is None


def ids_and_income(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """R's row names of a sample (distinct ids spread wide, in no order), an income in whole
    dollars (distinct too on this many rows, in no order) that the target depends on, and the
    target."""
    rng = np.random.default_rng(seed)
    income = np.round(rng.lognormal(11, 0.5, n))
    spend = income / 100 + rng.normal(0, 150, n)
    return pd.DataFrame({"rownames": rng.choice(np.arange(7_000, 460_000), n, replace=False),
                         "income": income, "spend": spend.round(2)})  # fmt: skip


def test_unordered_distinct_whole_numbers_the_target_ignores_are_an_identifier() -> None:
    """Distinct whole numbers that are no sequence: R's row names of a sample are found by
    their lack of relation to the target, with the figures; an income in dollars, as distinct
    and as unordered, carries signal and stays a feature, on either task."""
    table = ids_and_income()
    assert table["income"].nunique() / len(table) >= roles.ID_DISTINCT_SHARE  # as distinct
    found = {r.column: r for r in roles.column_roles(table, "spend")}
    assert list(found) == ["rownames"] and found["rownames"].kind == "identifier"
    why = found["rownames"].why
    assert why.startswith("600 distinct of 600 rows, whole numbers ") and "in no order" in why
    assert "too little relation to the target 'spend' for a feature: rank correlation" in why
    assert "Cramér's V" in why and "(under 0.1)" in why
    rich = table.assign(rich=np.where(table["spend"] > table["spend"].median(), "yes", "no"))
    found = roles.column_roles(rich.drop(columns="spend"), "rich")
    assert [(r.column, r.kind) for r in found] == [("rownames", "identifier")]
    assert "against its 2 classes" in found[0].why
    # without a target to judge by, or on too few rows, neither is called an identifier
    assert roles.column_role(table["rownames"], "rownames") is None
    small = table.head(roles.RELATION_MIN_ROWS - 1)
    assert roles.column_roles(small, "spend") == []


def test_distinct_whole_numbers_in_file_order_are_an_identifier() -> None:
    """A row number with gaps (a sample of a table, in its order), increasing or decreasing,
    is an identifier whatever the target."""
    ids = np.sort(np.random.default_rng(5).choice(10**6, 300, replace=False))
    for values, way in ((ids, "increasing"), (ids[::-1], "decreasing")):
        role = roles.column_role(pd.Series(values), "rownames")
        assert role.kind == "identifier" and f"{way} in file order" in role.why


def test_init_and_validate_say_an_unordered_identifier_with_its_figures(
    root: Path, tmp_path: Path
) -> None:
    """init excludes the row names with the figures in its output and in params.yaml; validate
    warns about them when they are a feature again."""
    path = write(tmp_path, ids_and_income())
    p = scaffold.plan(root, path, "spend")
    line = next(m for m in p.messages if m.startswith("rownames: "))
    assert "too little relation to the target 'spend'" in line
    assert line.endswith("-> excluded as an identifier")
    assert p.params["features"]["exclude"] == ["rownames"]
    scaffold.write(root, p, force=True)
    assert (
        "- rownames                # an identifier (found by `mlcycle init`): 600 distinct"
        in (root / "params.yaml").read_text()
    )
    warned = roles.feature_warnings(ids_and_income(), "spend", [])
    assert len(warned) == 1 and warned[0].startswith("rownames: 600 distinct of 600 rows")
    assert "too little relation" in warned[0] and "looks like an identifier" in warned[0]


def test_init_excludes_identifiers_free_text_constants_and_dates_saying_why(
    root: Path, tmp_path: Path
) -> None:
    path = write(tmp_path, roles_table())
    p = scaffold.plan(root, path, "grade")
    said = "\n".join(p.messages)
    assert "row_id: 400 distinct of 400 rows, whole numbers 1..400 in sequence -> excluded as " \
        "an identifier" in said  # fmt: skip
    assert "title: 400 distinct of 400 rows, a median of 5 words" in said
    assert "constant: all 400 rows hold 'same' -> excluded as a constant" in said
    assert "signup: 400 distinct dates (2023-01-01 .. 2024-02-04)" in said
    assert "features.exclude in params.yaml lists them" in said
    assert p.params["features"]["exclude"] == ["row_id", "title", "constant", "signup"]
    scaffold.write(root, p, force=True)
    text = (root / "params.yaml").read_text()
    assert (
        "- row_id                  # an identifier (found by `mlcycle init`): 400 distinct" in text
    )
    assert "delete a line to make that column a feature again" in text
    assert config.load(root / "params.yaml").features.exclude == (
        "row_id", "title", "constant", "signup"
    )  # fmt: skip

    draft = schema.load_schema(root / "schema.yaml")
    row_id = draft.column("row_id")
    assert (row_id.type, row_id.min, row_id.max) == ("integer", None, None)
    sparse = draft.column("sparse")  # 90 % null: a limit of its own, above what was seen
    seen = roles_table()["sparse"].isna().mean()
    assert seen > 0.85 and sparse.max_null_rate == min(1.0, np.ceil((seen + 0.1) * 100) / 100)
    assert "seen + a margin of 10%" in (root / "schema.yaml").read_text()
    assert draft.column("x").max_null_rate is None  # no nulls: nullable false
    assert draft.column("signup").type == "datetime"
    passes_validate(root, path)

    # validate warns about a feature that looks like an identifier or free text, e.g. one
    # added after init; not about the excluded ones.
    params = config.load(root / "params.yaml")
    data = roles_table().assign(ticket=[f"T{i:06d}" for i in range(400)])
    warned = roles.feature_warnings(data, "grade", params.features.exclude)
    assert warned == [
        "ticket: 400 distinct of 400 rows, single-word codes such as 'T000000', 'T000001'; it "
        "looks like an identifier and is a feature. Add it to features.exclude in params.yaml "
        "unless it carries meaning"
    ]
    assert roles.feature_warnings(data, "grade", [*params.features.exclude, "ticket"]) == []


def test_the_data_profile_lists_at_most_its_cap_of_categories() -> None:
    data = roles_table(n=600)
    profile = drift.data_profile(data, bins=10)["features"]
    title = profile["title"]
    assert len(title["counts"]) == drift.PROFILE_CATEGORIES + 1 and title["distinct"] == 600
    assert sum(title["counts"].values()) == 600 and title["counts"][drift.OTHER_VALUES] == 500
    assert "distinct" not in profile["zip"] or profile["zip"]["distinct"] > 100
    # Two capped profiles still compare.
    other = drift.data_profile(roles_table(n=600, seed=1), bins=10)
    moved = drift.compare_profiles({"features": profile, "rows": 600}, other,
                                   config.MonitorConfig())  # fmt: skip
    assert {c["column"] for c in moved["columns"]} >= {"title", "zip"}


def customers_table() -> pd.DataFrame:
    from tests.test_new_user import customers

    return customers(n=600)


@pytest.mark.parametrize(
    ("make", "target"),
    [
        (cancer, "benign"),
        (wine, "cultivar"),
        (diabetes, "progression"),
        (customers_table, "churned"),
        (roles_table, "grade"),
        (lambda: roles_table().assign(grade=lambda d: d["amount"]), "grade"),  # regression
        (lambda: frame([0.0, 1.0, 1.0, None], n=200), "t"),
        (lambda: frame(["no", "Yes", "no"], n=200), "t"),
        (lambda: frame([True, False, False], n=200), "t"),
        (
            lambda: frame(list(range(7)), n=210).assign(a=lambda d: d["a"].mask(d.index % 11 > 0)),
            "t",
        ),  # fmt: skip
    ],
)
def test_the_draft_schema_passes_the_data_it_was_drafted_from(
    root: Path, tmp_path: Path, make, target: str
) -> None:
    """Every data set the suite sets up with init: the schema init drafts, checked with
    validate's code and the project's settings on the same data, has no error-level finding,
    and the settings fit the data (a column 91 % null no longer stops the first run)."""
    path = write(tmp_path, make(), f"{target}.csv")
    scaffold.write(root, scaffold.plan(root, path, target), force=True)
    passes_validate(root, path)


def test_an_integer_target_with_missing_values_keeps_one_spelling(
    root: Path, tmp_path: Path
) -> None:
    """Missing values make pandas read an integer target as floats; its classes are still
    "0", "1", ... in the schema, the prepared splits, the signature (so the metrics and the
    bundle) and the labels a prediction returns."""
    path = write(tmp_path, roles_table(n=500), "grades.csv")
    assert scaffold.read_data(path, root)["grade"].dtype == np.float64
    p = scaffold.plan(root, path, "grade")
    scaffold.write(root, p, force=True)
    assert "most frequent class '" in "\n".join(p.messages)
    assert "'1.0'" not in "\n".join(p.messages)
    params = config.load(root / "params.yaml")
    spelt = ("0", "1", "2", "3")
    assert schema.load_schema(root / "schema.yaml").column("grade").values == spelt

    prepared = prepare.prepare(scaffold.read_data(path, root), params.prepare, params.objectives)
    assert set(prepared.train["grade"]) | set(prepared.test["grade"]) == set(spelt)
    sig = features.infer_signature(prepared.train, "grade", None, params.features, task=MULTICLASS)
    assert sig.classes == spelt
    y = features.encode_target(prepared.test["grade"], sig)  # what evaluate's metrics count
    assert sorted(set(y.tolist())) == [0, 1, 2, 3]

    X = features.to_model_frame(prepared.train, sig)
    y_train = features.encode_target(prepared.train["grade"], sig)
    small = {"n_estimators": 20, "learning_rate": 0.3, "max_depth": 3}
    options = fit_options(params.train)
    model = models.fit("xgboost", X, y_train, small, MULTICLASS, len(sig.classes), **options).model
    bundle_path = write_bundle(tmp_path / "bundle", model.to_bytes(), sig,
                               {"threshold": None, "task": MULTICLASS})  # fmt: skip
    bundle = load_bundle(bundle_path)
    assert bundle.signature.classes == spelt
    scored = predict.score(bundle, prepared.test.drop(columns="grade"))
    assert set(scored.labels) <= set(spelt) and len(set(scored.labels)) > 1


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


def test_init_says_a_column_that_leaks_a_class_with_its_figures(root: Path, tmp_path: Path) -> None:
    """A column whose value is held by 97 % of a rare class's rows and almost none elsewhere
    (recorded after the outcome, say) is said by init with its figures and the remedy, and
    left a feature (a leak is the user's call); the honest columns are not named."""
    rng = np.random.default_rng(0)
    n = 3000
    kind = rng.choice(["basic", "plus", "fraud"], n, p=[0.6, 0.33, 0.07])
    fraud = kind == "fraud"
    flagged = np.where(fraud, rng.random(n) < 0.97, rng.random(n) < 0.005)
    data = pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, n) * np.where(kind == "plus", 2, 1),
            "channel": rng.choice(["web", "shop", "phone"], n),
            "review_code": np.where(flagged, "R7", rng.choice(["A1", "B2", "C3"], n)),
            "kind": kind,
        }
    )
    p = scaffold.plan(root, write(tmp_path, data), "kind")
    assert p.task == MULTICLASS
    leaks = [m for m in p.messages if m.startswith("possible leak:")]
    assert len(leaks) == 1, p.messages
    assert re.search(
        r"^possible leak: review_code: alone it nearly determines class 'fraud': out-of-fold "
        r"ROC AUC 0\.9\d\d for 'fraud' against the rest; its value 'R7' holds 9\d% of that "
        r"class's rows and 0\.\d% of the others'\. .*add it to features\.exclude in params\.yaml$",
        leaks[0],
    ), leaks[0]
    assert "review_code" not in p.params["features"]["exclude"]


def test_init_names_no_leak_among_adults_columns(root: Path, tmp_path: Path) -> None:
    """Adult's strong honest features (relationship, capital-gain) are not called leaks."""
    shipped = config.load(ROOT / "params.yaml").data.sources
    adult = sources.union([sources.read_source(s, ROOT) for s in shipped])
    p = scaffold.plan(root, write(tmp_path, adult, "adult.parquet"), "income")
    assert not [m for m in p.messages if "leak" in m], p.messages


# --- search ranges from the data ---------------------------------------------------------------

SMALL = scaffold.DataShape(BINARY, 800, 6, 0, 2, 200)
LARGE = scaffold.DataShape(BINARY, 200_000, 60, 10, 2, 40_000)


def test_search_ranges_follow_the_datas_size_and_width() -> None:
    small, large = (scaffold.search_space(s)["xgboost"] for s in (SMALL, LARGE))
    assert small["max_depth"] == {"low": 2, "high": 5} and large["max_depth"]["high"] == 10
    assert small["learning_rate"]["low"] == 0.01 < large["learning_rate"]["low"] == 0.0447
    assert small["min_child_weight"]["high"] == 2.0 < large["min_child_weight"]["high"] == 32.0
    assert small["subsample"]["low"] == 0.7 > large["subsample"]["low"] == 0.5
    assert small["colsample_bytree"]["low"] == 0.5 > large["colsample_bytree"]["low"] == 0.1
    assert "max_cat_to_onehot" not in small and large["max_cat_to_onehot"] == {"choices": [1, 64]}
    forests = [scaffold.search_space(s)["random_forest"] for s in (SMALL, LARGE)]
    assert [f["min_samples_leaf"]["high"] for f in forests] == [5, 50]
    assert [f["max_features"]["choices"][-1] for f in forests] == [1.0, 0.5]
    rare = scaffold.search_space(replace(LARGE, rarest=2000))["xgboost"]
    assert rare["min_child_weight"]["high"] == 4.0  # a leaf of the rarest class stays possible
    narrow = scaffold.search_space(replace(SMALL, features=3))["xgboost"]
    assert "colsample_bytree" not in narrow


def test_search_ranges_follow_the_task() -> None:
    multi = scaffold.search_space(replace(LARGE, task=MULTICLASS, classes=10))
    regression = scaffold.search_space(scaffold.DataShape(REGRESSION, 200_000, 60, 10))
    assert list(scaffold.search_space(LARGE)) == ["xgboost", "logistic_regression", "random_forest"]
    assert list(multi) == ["xgboost", "logistic_regression", "random_forest"]
    assert list(regression) == ["xgboost", "random_forest", "ridge"]
    # ten trees a round: a higher floor on the learning rate; regression's leaves: all rows
    assert multi["xgboost"]["learning_rate"]["low"] == 0.1
    assert regression["xgboost"]["min_child_weight"]["high"] == 32.0
    tiny = scaffold.DataShape(MULTICLASS, 12, 1, 1, 3, 4)
    for shape in (SMALL, LARGE, tiny, scaffold.DataShape(REGRESSION, 50, 2)):
        space = scaffold.search_space(shape)
        assert config.TrainConfig(search=space).search == space  # valid train.search ranges
        assert "gamma" not in space["xgboost"]  # in the loss's units: no range fits every table


def test_the_data_shape_counts_training_rows_features_and_classes() -> None:
    inputs = pd.DataFrame({"n": [1.0, 2.0] * 50, "c": ["a", "b"] * 50, "f": [True, False] * 50})
    labels = pd.Series(["x"] * 80 + ["y"] * 20)
    shape = scaffold.data_shape(inputs, labels, BINARY, 0.8)
    assert shape == scaffold.DataShape(BINARY, 80, 3, 2, 2, 16)
    assert (
        shape.text()
        == "80 training rows, 3 features (2 categorical), 2 classes (the rarest 16 rows)"
    )
    assert scaffold.data_shape(inputs, labels.index.to_series(), REGRESSION).classes == 0


def test_init_writes_search_ranges_derived_from_the_data(root: Path, tmp_path: Path) -> None:
    """Not the ranges of the current params.yaml (Adult's): ranges from this data's figures,
    with a comment saying which, different for a small and a large table."""
    rng = np.random.default_rng(1)
    n = 20_000
    big = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                        "c": rng.choice(["u", "v", "w"], n), "t": rng.choice(["no", "yes"], n,
                        p=[0.75, 0.25])})  # fmt: skip
    plans = {
        name: scaffold.plan(root, write(tmp_path, data, f"{name}.csv"), target)
        for name, data, target in (("big", big, "t"), ("diabetes", diabetes(), "progression"))
    }
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["search"]["xgboost"]
    for name, p in plans.items():
        data = pd.read_csv(tmp_path / f"{name}.csv")
        target = "t" if name == "big" else "progression"
        labels = scaffold.target_labels(data[target])
        shape = scaffold.data_shape(data.drop(columns=target), labels, p.task, 0.8)
        assert p.params["train"]["search"] == scaffold.search_space(shape)
        assert p.params["train"]["search"]["xgboost"] != shipped
        assert f"from the training split's figures: {shape.text()}" in " ".join(
            line.strip("# ") for line in p.params_text.splitlines()
        )
        assert any(shape.text() in m for m in p.messages)
    xgb = {name: p.params["train"]["search"]["xgboost"] for name, p in plans.items()}
    assert xgb["big"]["max_depth"]["high"] > xgb["diabetes"]["max_depth"]["high"]
    assert xgb["big"]["max_cat_to_onehot"] and "max_cat_to_onehot" not in xgb["diabetes"]

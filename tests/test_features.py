"""Unit tests of feature engineering and selection (src/mlcycle/features.py): derived features,
include/exclude, mutual-information selection on the training split, the signature, and the
request model and drift check built from it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from mlcycle import drift
from mlcycle.config import FeaturesConfig, Selection
from mlcycle.features import (
    Derived,
    Feature,
    FeatureError,
    SchemaError,
    Signature,
    derive,
    infer_signature,
    mutual_info_scores,
    to_model_frame,
    unseen_categories,
)
from mlcycle.serve.rest import record_model
from tests.conftest import FAST_PARAMS, ROOT, merge

NAN = np.nan


def step(name: str, op: str, *columns: str, edges: tuple[float, ...] = ()) -> Derived:
    return Derived(name, op, columns, edges)


# --- derived operations ---------------------------------------------------------------------


def same(got: np.ndarray, expected: list[float]) -> bool:
    return np.array_equal(got, np.array(expected, dtype=np.float64), equal_nan=True)


VALUES = {
    "a": np.array([1.0, 2.0, 0.0, -3.0, NAN, 4.0]),
    "b": np.array([2.0, 0.0, 0.0, 1.5, 1.0, -2.0]),
    "c": np.array([10.0, 10.0, 10.0, 10.0, 10.0, NAN]),
}


@pytest.mark.parametrize(
    ("derived", "expected"),
    [
        (step("s", "sum", "a", "b", "c"), [13.0, 12.0, 10.0, 8.5, NAN, NAN]),
        (step("d", "difference", "a", "b"), [-1.0, 2.0, 0.0, -4.5, NAN, 6.0]),
        (step("p", "product", "a", "b"), [2.0, 0.0, 0.0, -4.5, NAN, -8.0]),
        # x / 0 and 0 / 0 are missing, never infinite.
        (step("r", "ratio", "a", "b"), [0.5, NAN, NAN, -2.0, NAN, -2.0]),
        (step("l", "log1p", "a"), [np.log1p(1.0), np.log1p(2.0), 0.0, NAN, NAN, np.log1p(4.0)]),
        (step("q", "sqrt", "a"), [1.0, np.sqrt(2.0), 0.0, NAN, NAN, 2.0]),
        # Bins: 0 below the first edge, i for [edges[i-1], edges[i]), len(edges) from the last.
        (step("k", "bin", "a", edges=(0.0, 2.0, 4.0)), [1.0, 2.0, 1.0, 0.0, NAN, 3.0]),
    ],
    ids=lambda v: v.op if isinstance(v, Derived) else "",
)
def test_derived_operations(derived: Derived, expected: list[float]) -> None:
    got = derive(derived, VALUES)
    assert got.dtype == np.float64
    assert np.isfinite(got[~np.isnan(got)]).all()
    assert same(got, expected), got


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"op": "mean", "columns": ("a", "b")}, "unknown op 'mean'"),
        ({"op": "ratio", "columns": ("a",)}, "two or more columns"),
        ({"op": "sqrt", "columns": ("a", "b")}, "one column"),
        ({"op": "bin", "columns": ("a",), "edges": (3.0, 1.0)}, "increasing edges"),
    ],
)
def test_invalid_derived_steps_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(FeatureError, match=rf"'x'.*{message}"):
        Derived("x", **kwargs)


def test_derived_steps_read_as_params_yaml_writes_them() -> None:
    raw = [
        {"name": "net", "op": "difference", "columns": ["g", "l"]},
        {"name": "band", "op": "bin", "column": "age", "edges": [18, 30, 65]},
    ]
    steps = [Derived.from_dict(d) for d in raw]
    assert steps[1] == Derived("band", "bin", ("age",), (18.0, 30.0, 65.0))
    assert [s.to_dict() for s in steps] == [raw[0], {**raw[1], "edges": [18.0, 30.0, 65.0]}]


# --- signature from the training split ------------------------------------------------------


def synthetic(n: int, seed: int, informative: str = "signal") -> pd.DataFrame:
    """``label`` depends on ``signal`` (numeric) and ``colour`` (categorical); the rest is noise.
    With ``informative="noise1"`` the roles of ``signal`` and ``noise1`` are swapped."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "signal": rng.normal(size=n),
            "noise1": rng.normal(size=n),
            "colour": rng.choice(["red", "green", "blue"], size=n),
            "noise2": rng.uniform(0, 100, size=n),
            "pet": rng.choice(["cat", "dog"], size=n),
            "gain": rng.choice([0.0, 0.0, 0.0, 500.0, 3000.0], size=n),
            "loss": rng.choice([0.0, 0.0, 0.0, 0.0, 200.0], size=n),
        }
    )
    logit = 2.5 * df[informative] + np.where(df["colour"] == "red", 2.0, -1.0)
    df["label"] = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df.loc[df.index % 11 == 0, "colour"] = None
    df.loc[df.index % 13 == 0, "noise2"] = NAN
    return df


NET = {"name": "net", "op": "difference", "columns": ["gain", "loss"]}


def test_default_signature_uses_every_input() -> None:
    train = synthetic(200, 0)
    sig = infer_signature(train, "label", "yes")
    names = ["signal", "noise1", "colour", "noise2", "pet", "gain", "loss"]
    assert sig.columns == sig.input_columns == names
    assert sig.derived == () and sig.unused_inputs == ()
    assert sig.inputs[2] == Feature("colour", "categorical", ("blue", "green", "red"))
    assert sig.selection["method"] == "none"


def test_derived_features_follow_the_inputs() -> None:
    cfg = FeaturesConfig(
        derived=(NET, {"name": "log_net", "op": "log1p", "column": "net"}),
    )
    train = synthetic(200, 0)
    sig = infer_signature(train, "label", "yes", cfg)
    assert sig.columns[-2:] == ["net", "log_net"]
    X = to_model_frame(train, sig)
    assert X["net"].tolist() == (train["gain"] - train["loss"]).tolist()
    assert same(X["log_net"].to_numpy(), np.log1p((train["gain"] - train["loss"]).where(
        train["gain"] - train["loss"] > -1)).tolist())  # fmt: skip


def test_include_and_exclude_choose_model_inputs() -> None:
    train = synthetic(200, 0)
    sig = infer_signature(
        train, "label", "yes", FeaturesConfig(derived=(NET,), exclude=("gain", "loss", "pet"))
    )
    # net replaces gain and loss as a feature; they are still inputs, since net reads them.
    assert sig.columns == ["signal", "noise1", "colour", "noise2", "net"]
    assert sig.input_columns == ["signal", "noise1", "colour", "noise2", "gain", "loss"]
    assert sig.unused_inputs == ("pet",)

    sig = infer_signature(train, "label", "yes", FeaturesConfig(include=("colour", "signal")))
    assert sig.columns == ["signal", "colour"]  # in the data's order
    assert sig.input_columns == ["signal", "colour"]
    assert sig.unused_inputs == ("noise1", "noise2", "pet", "gain", "loss")
    assert list(to_model_frame(train, sig).columns) == ["signal", "colour"]


@pytest.mark.parametrize("key", ["include", "exclude"])
def test_unknown_include_or_exclude_is_named(key: str) -> None:
    with pytest.raises(FeatureError, match=rf"features.{key} names \['sginal'\]"):
        infer_signature(synthetic(50, 0), "label", "yes", FeaturesConfig(**{key: ("sginal",)}))


@pytest.mark.parametrize(
    ("derived", "message"),
    [
        ({"name": "x", "op": "sqrt", "column": "colour"}, "'colour', which is not numeric"),
        ({"name": "x", "op": "sqrt", "column": "nope"}, "uses 'nope', which is neither"),
        ({"name": "signal", "op": "sqrt", "column": "noise1"}, "'signal' is already a column"),
    ],
)
def test_derived_steps_are_checked_against_the_inputs(derived: dict, message: str) -> None:
    with pytest.raises(FeatureError, match=message):
        infer_signature(synthetic(50, 0), "label", "yes", FeaturesConfig(derived=(derived,)))


def test_mutual_info_keeps_the_informative_features() -> None:
    train = synthetic(3000, 1)
    cfg = FeaturesConfig(derived=(NET,), selection={"method": "mutual_info", "k": 2})
    sig = infer_signature(train, "label", "yes", cfg, seed=3)
    assert sig.columns == ["signal", "colour"]
    # Only the inputs the kept features need are required; the derived step is not needed.
    assert sig.input_columns == ["signal", "colour"]
    assert sig.derived == ()
    assert set(sig.unused_inputs) == {"noise1", "noise2", "pet", "gain", "loss"}
    scores = sig.selection["scores"]
    assert set(scores) == {"signal", "noise1", "colour", "noise2", "pet", "gain", "loss", "net"}
    assert min(scores["signal"], scores["colour"]) > max(
        v for k, v in scores.items() if k not in ("signal", "colour")
    )
    assert sig.selection["k"] == 2
    assert infer_signature(train, "label", "yes", cfg, seed=3) == sig  # seeded


def test_mutual_info_is_fitted_on_the_data_it_is_given() -> None:
    """Selection sees only the frame passed in: the training split in the train stage. A
    'test' split where another column carries the signal does not change the choice."""
    train = synthetic(3000, 1, informative="signal")
    test = synthetic(3000, 2, informative="noise1")
    cfg = FeaturesConfig(selection={"method": "mutual_info", "k": 1})
    assert infer_signature(train, "label", "yes", cfg).columns == ["signal"]
    assert infer_signature(test, "label", "yes", cfg).columns == ["noise1"]


def test_mutual_info_needs_k() -> None:
    # Settings that skipped validation (which refuses k 0): the feature code checks again.
    cfg = FeaturesConfig.model_construct(
        selection=Selection.model_construct(method="mutual_info", k=0)
    )
    with pytest.raises(FeatureError, match="features.selection.k"):
        infer_signature(synthetic(50, 0), "label", "yes", cfg)


def test_mutual_info_scores_handle_missing_values() -> None:
    train = synthetic(500, 4)
    sig = infer_signature(train, "label", "yes")
    scores = mutual_info_scores(to_model_frame(train, sig), (train["label"] == "yes"), seed=0)
    assert set(scores) == set(sig.columns)
    assert all(np.isfinite(v) and v >= 0 for v in scores.values())


def test_train_stage_selects_on_the_training_split_alone(tmp_path: Path) -> None:
    """The train stage runs, and selects features, with no test split on disk at all."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    update = {
        "objectives": {"target": "label", "positive_class": "yes"},
        "features": {
            "derived": [NET],
            "include": [],
            "exclude": [],
            "selection": {"method": "mutual_info", "k": 2},
        },
        "train": {"nthread": 1, "xgb": {"n_estimators": 20, "early_stopping_rounds": 5}},
    }
    params = merge(merge(params, FAST_PARAMS), update)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    synthetic(2000, 5).to_parquet(tmp_path / "data" / "prepared" / "train.parquet")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, "-m", "mlcycle.stages.train"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mutual_info kept 2 of 8" in proc.stderr
    assert not (tmp_path / "data" / "prepared" / "test.parquet").exists()
    doc = json.loads((tmp_path / "models" / "train" / "signature.json").read_text())
    assert [f["name"] for f in doc["features"]] == ["signal", "colour"]
    assert [f["name"] for f in doc["inputs"]] == ["signal", "colour"]
    assert doc["selection"]["method"] == "mutual_info"
    assert Signature.from_dict(doc).columns == ["signal", "colour"]


# --- records -> model input -----------------------------------------------------------------

ALL_OPS = (
    {"name": "total", "op": "sum", "columns": ["gain", "loss", "signal"]},
    NET,
    {"name": "prod", "op": "product", "columns": ["signal", "noise1"]},
    {"name": "share", "op": "ratio", "columns": ["loss", "gain"]},
    {"name": "log_gain", "op": "log1p", "column": "gain"},
    {"name": "root", "op": "sqrt", "column": "signal"},
    {"name": "band", "op": "bin", "column": "noise2", "edges": [10, 50, 90]},
    {"name": "log_root", "op": "log1p", "column": "root"},
)


@pytest.fixture(scope="module")
def engineered() -> tuple[Signature, pd.DataFrame]:
    train = synthetic(400, 6)
    return infer_signature(train, "label", "yes", FeaturesConfig(derived=ALL_OPS)), train


def test_one_record_and_a_batch_get_identical_features(engineered: tuple) -> None:
    sig, train = engineered
    batch = to_model_frame(train, sig)
    assert batch["share"].isna().any() and not np.isinf(batch["share"]).any()
    for i in range(len(train)):
        # As the service builds it: one record of plain Python values.
        record = pd.DataFrame([{k: (None if pd.isna(v) else v) for k, v in train.iloc[i].items()}])
        single = to_model_frame(record, sig)
        for col in sig.columns:
            a, b = single[col].iloc[0], batch[col].iloc[i]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (i, col, a, b)
    # And in one go: the whole frame equals the concatenation of the single rows.
    singles = pd.concat([to_model_frame(train.iloc[[i]], sig) for i in range(len(train))])
    pd.testing.assert_frame_equal(singles, batch, check_exact=True)


def test_integer_and_float_inputs_give_the_same_features(engineered: tuple) -> None:
    sig, train = engineered
    as_float = train.assign(gain=train["gain"].astype(float), loss=train["loss"].astype(float))
    as_int = train.assign(gain=train["gain"].astype(int), loss=train["loss"].astype("Int64"))
    pd.testing.assert_frame_equal(
        to_model_frame(as_int, sig), to_model_frame(as_float, sig), check_exact=True
    )


def test_a_missing_raw_input_is_named(engineered: tuple) -> None:
    sig, train = engineered
    # Sending the derived feature does not replace the inputs it is computed from.
    records = train.drop(columns="loss").assign(net=1.0)
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['loss'\].*raw inputs"):
        to_model_frame(records, sig)


def test_a_bad_raw_input_is_named_with_its_row(engineered: tuple) -> None:
    sig, train = engineered
    records = train.head(5).astype({"gain": object})
    records.loc[3, "gain"] = "lots"
    with pytest.raises(SchemaError, match=r"column 'gain', row 3: expected a number, got 'lots'"):
        to_model_frame(records, sig)


def test_signature_round_trips_through_json(engineered: tuple) -> None:
    sig, _ = engineered
    doc = json.loads(json.dumps(sig.to_dict()))
    assert Signature.from_dict(doc) == sig
    assert [s["name"] for s in doc["derived"]] == [d["name"] for d in ALL_OPS]


def test_signature_without_inputs_takes_its_features_as_inputs() -> None:
    """Signatures written before inputs and derived features existed still load."""
    old = {
        "features": [
            {"name": "age", "kind": "numeric", "categories": []},
            {"name": "sex", "kind": "categorical", "categories": ["F", "M"]},
        ],
        "target": "income",
        "positive_class": ">50K",
        "negative_class": "<=50K",
    }
    sig = Signature.from_dict(old)
    assert sig.input_columns == sig.columns == ["age", "sex"]
    assert sig.derived == ()


def test_unseen_categories_are_reported_for_inputs(engineered: tuple) -> None:
    sig, train = engineered
    records = train.head(3).assign(colour=["red", "purple", None])
    assert unseen_categories(records, sig) == {"colour": ["purple"]}
    assert to_model_frame(records, sig)["colour"].isna().tolist() == [False, True, True]


def test_a_reload_may_change_categories_and_features_but_not_the_contract() -> None:
    """A retrained model that learned a category, lost one, or uses other derived and model
    features takes the same requests and answers in the same shape; another input set, an
    input of another kind, another task or other classes do not, each named."""
    age, colour = Feature("age", "numeric"), Feature("colour", "categorical", ("blue", "red"))
    old = Signature((age, colour), "y", positive_class="yes", negative_class="no")
    grown = Signature(
        (Feature("colour", "categorical", ("blue", "green", "red")), Feature("log_age", "numeric")),
        "y",
        positive_class="yes",
        negative_class="no",
        inputs=(age, Feature("colour", "categorical", ("green", "red"))),
        derived=(step("log_age", "log1p", "age"),),
    )
    assert old.contract_changes(grown) == []
    assert old.contract_changes(old) == []
    other_inputs = Signature(
        (Feature("age", "categorical", ("old", "young")), Feature("height", "numeric")),
        "y",
        positive_class="yes",
        negative_class="no",
    )
    assert old.contract_changes(other_inputs) == [
        "new input 'height' (numeric)",
        "input 'colour' is gone",
        "input 'age' is categorical, was numeric",
    ]
    flipped = Signature((age, colour), "y", positive_class="no", negative_class="yes")
    assert old.contract_changes(flipped) == ["classes ['yes', 'no'], was ['no', 'yes']"]
    three = Signature((age, colour), "y", task="multiclass_classification", classes=("a", "b", "c"))
    assert old.contract_changes(three) == [
        "task multiclass_classification, was binary_classification",
        "classes ['a', 'b', 'c'], was ['no', 'yes']",
    ]
    assert three.contract_changes(
        Signature((age, colour), "y", task="multiclass_classification", classes=("a", "b", "d"))
    ) == ["classes ['a', 'b', 'd'], was ['a', 'b', 'c']"]


# --- the service's request model and drift use the raw inputs -------------------------------


@pytest.fixture(scope="module")
def selected() -> Signature:
    cfg = FeaturesConfig(derived=(NET,), exclude=("pet", "noise1", "noise2"))
    return infer_signature(synthetic(300, 7), "label", "yes", cfg)


def test_request_model_requires_exactly_the_raw_inputs(selected: Signature) -> None:
    Record = TypeAdapter(record_model(selected, selected.unused_inputs))
    good = {"signal": 0.5, "colour": "red", "gain": 100, "loss": None}
    assert Record.validate_python(good)["gain"] == 100.0
    # Columns of the training data the model does not use may be sent (logged, not scored);
    # any other field is refused.
    assert set(selected.unused_inputs) >= {"pet", "noise1"}
    Record.validate_python({**good, "pet": "cat", "noise1": 3.0})
    with pytest.raises(ValidationError, match="noise1"):
        TypeAdapter(record_model(selected)).validate_python({**good, "noise1": 3.0})
    for field, record in [
        ("loss", {k: v for k, v in good.items() if k != "loss"}),  # an input of the derived net
        ("net", {**good, "net": 100.0}),  # derived features are computed, never sent
        ("colour", {**good, "colour": 3}),
        ("gain", {**good, "gain": True}),  # a boolean is not a number
    ]:
        with pytest.raises(ValidationError) as exc:
            Record.validate_python(record)
        assert field in str(exc.value)


def test_drift_compares_raw_inputs(selected: Signature) -> None:
    reference, current = synthetic(1500, 8), synthetic(1500, 9)
    current["signal"] = current["signal"] + 1.0
    results = drift.detect(reference, current, selected)
    assert [r.feature for r in results] == selected.input_columns
    assert "net" not in [r.feature for r in results]
    assert [r.feature for r in results if r.drifted] == ["signal"]
    with pytest.raises(ValueError, match=r"new records lack column\(s\) \['loss'\]"):
        drift.detect(reference, current.drop(columns="loss"), selected)

"""The fast scoring path (src/mlcycle/encoder.py and ``Model.output_encoded``) against today's
path, ``model.output(to_model_frame(records, signature))``: the same matrix and the same
predictions bit for bit (``np.array_equal``, never ``allclose``), the same unseen-category
report and the same errors.

Models are fitted for real: an XGBoost model on the UCI Adult training file scored on the whole
Adult test split, and every kind for every task on small synthetic data. Nothing is mocked.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
import yaml

from mlcycle import config
from mlcycle.encoder import Encoder, compile_encoder, matrix_from_frame, matrix_to_frame
from mlcycle.features import (
    SchemaError,
    Signature,
    encode_target,
    infer_signature,
    to_model_frame,
    unseen_categories,
)
from mlcycle.models import Model, ModelError, adapter, fit
from mlcycle.tasks import BINARY, MODEL_TASKS, MULTICLASS, REGRESSION
from mlcycle.tuning import fit_options, inner_slice, row_keys
from tests.conftest import ROOT

NAN = math.nan
ADULT = ROOT / "data/external/adult"
CFG = config.TrainConfig(seed=0, nthread=1, validation_fraction=0.2)
XGB = {"learning_rate": 0.3, "max_depth": 6, "max_cat_to_onehot": 1}
SMALL = {
    "xgboost": {"learning_rate": 0.3, "max_depth": 4},
    "logistic_regression": {"C": 1.0},
    "random_forest": {"n_estimators": 15, "min_samples_leaf": 3},
    "ridge": {"alpha": 1.0},
}
ADULT_DERIVED = (
    {"name": "capital-net", "op": "difference", "columns": ["capital-gain", "capital-loss"]},
    {"name": "hours-per-age", "op": "ratio", "columns": ["hours-per-week", "age"]},
    {"name": "loss-per-gain", "op": "ratio", "columns": ["capital-loss", "capital-gain"]},  # x/0
    {"name": "age-band", "op": "bin", "column": "age", "edges": [25.0, 40.0, 60.0]},
    {"name": "log-net", "op": "log1p", "column": "capital-net"},  # log1p(<-1): not finite
)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-identical arrays (NaN equal to NaN), shapes and dtypes included."""
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


def raw_frame(records: Any, sig: Signature) -> pd.DataFrame:
    """The raw frame today's code builds: the service's from JSON records, or a batch's."""
    if isinstance(records, list):
        return pd.DataFrame(records, columns=sig.input_columns)
    return records if isinstance(records, pd.DataFrame) else pd.DataFrame(records)


def reference(records: Any, sig: Signature) -> pd.DataFrame:
    """Today's path: ``to_model_frame`` of that raw frame."""
    return to_model_frame(raw_frame(records, sig), sig)


def assert_same_path(model: Model, sig: Signature, records: Any) -> np.ndarray:
    """Both paths agree on ``records``: matrix, frame, unseen report and output. Returns the
    encoded matrix."""
    frame = reference(records, sig)
    encoded = compile_encoder(sig).encode_with_unseen(records)
    assert same(encoded.matrix, matrix_from_frame(frame, sig))
    pd.testing.assert_frame_equal(
        matrix_to_frame(encoded.matrix, sig), frame.reset_index(drop=True), check_exact=True
    )
    assert encoded.unseen == unseen_categories(raw_frame(records, sig), sig)
    assert same(model.output_encoded(encoded.matrix, sig), model.output(frame))
    return encoded.matrix


# --- the Adult data and an XGBoost model on it --------------------------------------------------


def read_adult(name: str, skip_rows: int) -> pd.DataFrame:
    columns = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["columns"]
    df = pd.read_csv(
        ADULT / name, header=None, names=columns, skiprows=skip_rows, na_values=["?"],
        skipinitialspace=True,
    )  # fmt: skip
    df["income"] = df["income"].str.rstrip(".")
    return df


@pytest.fixture(scope="module")
def adult() -> tuple[Signature, Model, pd.DataFrame]:
    """Signature (with derived features; fnlwgt unused), a 30-round XGBoost model and the
    whole test split."""
    train = read_adult("adult.data.gz", 0)
    test = read_adult("adult.test.gz", 1)
    features = config.FeaturesConfig(derived=ADULT_DERIVED, exclude=("fnlwgt",))
    sig = infer_signature(train, "income", ">50K", features)
    X, y = to_model_frame(train, sig), encode_target(train["income"], sig)
    model = fit("xgboost", X, y, XGB, BINARY, 2, rounds=30, **fit_options(CFG)).model
    return sig, model, test


def messy(test: pd.DataFrame) -> list[dict]:
    """The test split as JSON records, with what web clients send: unseen and padded
    categories, numbers as (padded) strings, None, missing keys, garbage in unused columns."""
    records = test.drop(columns="income").to_dict("records")
    for i, r in enumerate(records):
        k = i % 12
        if k == 1:
            r["workclass"] = "Space-agency"  # unseen
        elif k == 2 and isinstance(r["occupation"], str):
            r["occupation"] = f"  {r['occupation']}\t"  # padded
        elif k == 3:
            r["age"] = str(r["age"])  # a number as a string
        elif k == 4:
            r["hours-per-week"] = f" {r['hours-per-week']} "
        elif k == 5:
            r["capital-gain"] = None
        elif k == 6:
            del r["education-num"]  # missing key: missing value
        elif k == 7:
            r["native-country"] = None
        elif k == 8:
            r["age"] = float(r["age"]) + 0.25
        elif k == 9:
            r["capital-loss"] = "1e3"
        elif k == 10:
            r["sex"] = "  "  # blank: unseen "" after stripping
        elif k == 11:
            r["fnlwgt"] = "not a number, but unused"
    return records


def test_adult_test_split_as_json_records_is_bit_identical(adult: tuple) -> None:
    sig, model, test = adult
    assert sig.unused_inputs == ("fnlwgt",) and "log-net" in sig.columns
    records = messy(test)
    matrix = assert_same_path(model, sig, records)
    assert matrix.shape == (len(test), len(sig.columns)) and matrix.dtype == np.float64
    unseen = compile_encoder(sig).encode_with_unseen(records).unseen
    assert unseen["workclass"] == ["Space-agency"] and unseen["sex"] == [""]
    assert np.isnan(matrix[1, sig.columns.index("workclass")])  # unseen -> missing
    assert not np.isnan(matrix[2::12, sig.columns.index("occupation")]).all()  # padded: found


def test_adult_as_dataframe_and_column_mappings_is_bit_identical(adult: tuple) -> None:
    sig, model, test = adult
    frame = pd.DataFrame(messy(test))
    frame.index = frame.index * 3 + 7  # row labels of a batch file's frame
    assert_same_path(model, sig, frame)
    clean = test.drop(columns="income")
    assert_same_path(model, sig, clean)  # typed columns: int64, str with NaN
    assert_same_path(model, sig, {c: clean[c].to_numpy() for c in clean.columns})
    assert_same_path(model, sig, {c: clean[c].tolist() for c in clean.columns})
    assert_same_path(model, sig, {c: clean[c].to_numpy(dtype=object) for c in clean.columns})


def test_one_record_at_a_time_matches_the_batch(adult: tuple) -> None:
    sig, model, test = adult
    records = messy(test)
    encoder = compile_encoder(sig)
    batch_frame = reference(records, sig)
    batch_matrix = matrix_from_frame(batch_frame, sig)
    batch_output = model.output(batch_frame)
    for i in range(0, len(records), 97):  # ~170 records, every kind of mess
        row = encoder.encode([records[i]])
        assert same(row, batch_matrix[i : i + 1])
        assert same(model.output_encoded(row, sig), batch_output[i : i + 1])
    for i in range(12):  # and against today's path for one record
        assert_same_path(model, sig, [records[i]])
    # requests of a few records (the row-by-row path) over the whole split
    for size in (1, 7, 16):
        parts = [encoder.encode(records[i : i + size]) for i in range(0, len(records), size)]
        assert same(np.vstack(parts), batch_matrix), size


def test_an_early_stopped_booster_uses_the_same_trees(adult: tuple) -> None:
    sig, _, test = adult
    train = read_adult("adult.data.gz", 0).iloc[:6000]
    X, y = to_model_frame(train, sig), encode_target(train["income"], sig)
    params = {**XGB, "n_estimators": 300, "early_stopping_rounds": 5}
    inner = inner_slice(row_keys(X, y, CFG.seed), CFG.seed, 0, CFG.validation_fraction)
    result = adapter("xgboost").fit_early_stopped(
        X, y, params, BINARY, 2, np.flatnonzero(~inner), np.flatnonzero(inner), **fit_options(CFG)
    )
    assert result.rounds < 300
    assert_same_path(result.model, sig, messy(test.iloc[:3000]))


def test_the_booster_codes_categories_in_the_signature_order(adult: tuple) -> None:
    """With numpy input XGBoost takes codes as they are (it re-codes only dataframes), so the
    encoder's order must be the booster's: checked, and a mismatch is refused."""
    sig, model, test = adult
    stored = model.stored_categories()
    assert stored == {f.name: f.categories for f in sig.features if f.kind == "categorical"}
    wrong = Signature.from_dict(sig.to_dict())
    feats = [dict(f.to_dict()) for f in wrong.features]
    i = sig.columns.index("race")
    feats[i]["categories"] = list(reversed(feats[i]["categories"]))
    wrong = Signature.from_dict({**sig.to_dict(), "features": feats})
    matrix = compile_encoder(wrong).encode(test.iloc[:5])
    with pytest.raises(ModelError, match=r"feature 'race': the booster was trained with"):
        model.output_encoded(matrix, wrong)
    # A -1 code is not a missing value to XGBoost: it takes another branch. Hence NaN.
    good = compile_encoder(sig).encode(test)
    minus = good.copy()
    for j, f in enumerate(sig.features):
        if f.kind == "categorical":
            minus[np.isnan(minus[:, j]), j] = -1
    assert np.isnan(good).any()
    assert not np.array_equal(
        model.estimator.inplace_predict(minus), model.estimator.inplace_predict(good)
    )


def test_values_xgboost_cannot_take_are_named(adult: tuple) -> None:
    sig, model, test = adult
    records = test.drop(columns="income").iloc[:4].to_dict("records")
    records[2]["age"] = "1e300"  # finite in float64, infinite in XGBoost's float32
    matrix = compile_encoder(sig).encode(records)
    with pytest.raises(xgb.core.XGBoostError, match="inf"):  # today's path
        model.output(reference(records, sig))
    with pytest.raises(SchemaError, match=r"column 'age', row 2: 1e\+300 is infinite"):
        model.output_encoded(matrix, sig)
    records[2]["age"] = math.inf
    with pytest.raises(SchemaError, match=r"column 'age', row 2: inf is infinite"):
        model.output_encoded(compile_encoder(sig).encode(records), sig)
    with pytest.raises(SchemaError, match=r"shape \(n, \d+\)"):
        model.output_encoded(matrix[:, :3], sig)


@pytest.mark.filterwarnings("ignore:.*Empty dataset:UserWarning")  # today's path, XGBoost
def test_no_records_give_no_rows(adult: tuple) -> None:
    sig, model, test = adult
    empty = compile_encoder(sig).encode([])
    assert empty.shape == (0, len(sig.columns))
    assert same(model.output_encoded(empty, sig), model.output(reference(test.iloc[:0], sig)))
    assert compile_encoder(sig).encode(test.iloc[:0]).shape == (0, len(sig.columns))


# --- every kind, every task, on synthetic data ------------------------------------------------


def synthetic(n: int, task: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["blue", "green", "red"], size=n)
    size = rng.uniform(1, 10, size=n)
    signal = 2.0 * x + np.where(colour == "red", 1.5, -0.5) + 0.2 * size + rng.normal(0, 0.5, n)
    if task == REGRESSION:
        target: np.ndarray = 10.0 + 3.0 * signal
    elif task == BINARY:
        target = np.where(signal > 1, "yes", "no")
    else:
        target = np.select([signal < 0, signal < 2], ["2", "10"], "30")
    df = pd.DataFrame({"x": x, "colour": colour, "size": size, "label": target})
    df.loc[df.index % 17 == 0, "colour"] = None
    df.loc[df.index % 23 == 0, "x"] = np.nan
    return df


SYNTH_DERIVED = config.FeaturesConfig(
    derived=(
        {"name": "x-per-size", "op": "ratio", "columns": ["x", "size"]},
        {"name": "size-band", "op": "bin", "column": "size", "edges": [3.0, 6.0]},
        {"name": "root-x", "op": "sqrt", "column": "x"},  # negative x: missing
    )
)


def synthetic_records(test: pd.DataFrame) -> list[dict]:
    records = test.drop(columns="label").to_dict("records")
    for i, r in enumerate(records):
        k = i % 6
        if k == 1:
            r["colour"] = " red "
        elif k == 2:
            r["colour"] = "purple"
        elif k == 3 and not math.isnan(r["x"]):
            r["x"] = repr(r["x"])  # every digit of a float, as text
        elif k == 4:
            r["size"] = None
        elif k == 5:
            del r["colour"]
    return records


KIND_TASKS = [(k, t) for k in sorted(MODEL_TASKS) for t in (BINARY, MULTICLASS, REGRESSION)]


@pytest.mark.parametrize(("kind", "task"), [kt for kt in KIND_TASKS if kt[1] in MODEL_TASKS[kt[0]]])
def test_every_kind_and_task_answers_the_same(kind: str, task: str) -> None:
    train = synthetic(400, task, 0)
    sig = infer_signature(
        train, "label", "yes" if task == BINARY else None, SYNTH_DERIVED, task=task
    )
    X, y = to_model_frame(train, sig), encode_target(train["label"], sig)
    model = fit(
        kind, X, y, SMALL[kind], task, len(sig.classes), rounds=20, **fit_options(CFG)
    ).model
    test = synthetic(300, task, 1)
    records = synthetic_records(test)
    out = model.output_encoded(assert_same_path(model, sig, records), sig)
    assert out.shape == ((300,) if task == REGRESSION else (300, len(sig.classes)))
    assert_same_path(model, sig, test)
    for i in range(6):
        assert_same_path(model, sig, [records[i]])
    if kind != "xgboost":
        assert type(model).output_encoded is Model.output_encoded  # the default path


# --- odd values: the encoder converts exactly as to_model_frame, or fails the same way ---------

ODD_NUMBERS = [
    1, -2, 2.5, -0.0, "3", " 4 ", "+5", "1e3", ".5", "1_000", "0x10", "x", "", "nan", "inf",
    "-Infinity", "1e400", "\u0661\u0662", math.inf, NAN, None, pd.NA, 2**53 + 1, 2**64 - 1,
    2**70, 10**400, np.float32(0.1), np.int64(7), np.float64(1e-320), b"5", "12345678901234567890",
]  # fmt: skip
ODD_TEXTS = [
    "blue", " red ", "red\t", "\u3000green\u3000", "Blue", "purple", "", "  ", None, NAN, pd.NA,
    5, 5.0, True, b"blue", np.str_("green"), "blue\x1c", 0.5,
]  # fmt: skip
TINY = Signature.from_dict(
    {
        "inputs": [
            {"name": "n", "kind": "numeric"},
            {"name": "c", "kind": "categorical", "categories": ["5", "blue", "green", "red"]},
            {"name": "m", "kind": "numeric"},
        ],
        "derived": [{"name": "d", "op": "difference", "columns": ["n", "m"]}],
        "features": [
            {"name": "c", "kind": "categorical", "categories": ["5", "blue", "green", "red"]},
            {"name": "d", "kind": "numeric"},
            {"name": "n", "kind": "numeric"},
        ],
        "target": "label",
        "classes": ["no", "yes"],
    }
)


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:  # compared between both paths: same class, same message
        return type(exc).__name__, str(exc)


def test_odd_values_convert_exactly_as_to_model_frame() -> None:
    rng = np.random.default_rng(0)
    encoder = compile_encoder(TINY)
    agreed = failed = 0
    for trial in range(400):
        rows = int(rng.integers(1, 4))
        records = [
            {
                "n": ODD_NUMBERS[rng.integers(len(ODD_NUMBERS))],
                "c": ODD_TEXTS[rng.integers(len(ODD_TEXTS))],
                "m": [1.5, None, "2"][rng.integers(3)],
            }
            for _ in range(rows)
        ]
        if rng.uniform() < 0.2:
            del records[0]["c"]  # a missing key is a missing value
        columns = {k: [r.get(k, NAN) for r in records] for k in ("n", "c", "m")}
        arrays = {k: np.array(v, dtype=object) for k, v in columns.items()}
        frame = pd.DataFrame(records, columns=["n", "c", "m"], index=range(10, 10 + rows))
        for given in (records, columns, arrays, frame):
            ours = outcome(lambda given=given: encoder.encode(given))
            theirs = outcome(lambda given=given: matrix_from_frame(reference(given, TINY), TINY))
            assert ours[0] == theirs[0], (trial, given, ours, theirs)
            if ours[0] == "ok":
                assert same(ours[1], theirs[1]), (trial, given, ours[1], theirs[1])
                agreed += 1
            else:
                assert ours[1] == theirs[1], (trial, given)
                failed += 1
    assert agreed > 400 and failed > 200  # both outcomes were exercised


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (
            [{"n": 1, "c": "red", "m": 2}, {"n": 2, "c": "red", "m": 3},
             {"n": "forty", "c": "red", "m": 1}, {"n": "x", "c": None, "m": 1}],
            r"column 'n', row 2: expected a number, got 'forty' \(2 such row\(s\)\)",
        ),
        (
            [{"n": 1, "c": "red", "m": 2}, {"n": 2, "c": "red", "m": "nan"}],
            r"column 'm', row 1: expected a number, got 'nan'",
        ),
    ],
)  # fmt: skip
def test_a_bad_number_names_the_column_row_and_value(records: list, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        compile_encoder(TINY).encode(records)
    with pytest.raises(SchemaError, match=message):  # word for word as today
        reference(records, TINY)


def test_booleans_are_not_numbers() -> None:
    encoder = compile_encoder(TINY)
    with pytest.raises(SchemaError, match=r"column 'n', row 1: expected a number, got True"):
        encoder.encode([{"n": 1, "c": "red", "m": 2}, {"n": True, "c": "red", "m": 2}])
    with pytest.raises(SchemaError, match=r"column 'm', row 0: expected a number, got False"):
        encoder.encode({"n": [1.0], "c": ["red"], "m": np.array([False])})
    frame = pd.DataFrame({"n": [1.0, 2.0], "c": ["red", "blue"], "m": [True, False]}, index=[5, 6])
    with pytest.raises(SchemaError, match=r"column 'm', row 5: expected a number, got True"):
        encoder.encode(frame)
    with pytest.raises(SchemaError, match=r"column 'm': expected a number, got booleans"):
        to_model_frame(frame, TINY)  # today's path refuses the same column


def test_a_bad_container_is_named() -> None:
    encoder = compile_encoder(TINY)
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['m'\]; the model needs"):
        encoder.encode({"n": [1], "c": ["red"]})
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['m'\]; the model needs"):
        encoder.encode(pd.DataFrame({"n": [1], "c": ["red"]}))
    with pytest.raises(SchemaError, match=r"row 1: expected a record"):
        encoder.encode([{"n": 1, "c": "red", "m": 2}, [1, "red", 2]])
    with pytest.raises(SchemaError, match=r"column 'n': expected a sequence of values"):
        encoder.encode({"n": 1, "c": "red", "m": 2})
    with pytest.raises(SchemaError, match=r"column 'c' has 2 values, but 'n' has 1"):
        encoder.encode({"n": [1], "c": ["red", "blue"], "m": [2]})
    with pytest.raises(SchemaError, match=r"expected a list of records"):
        encoder.encode("n,c,m\n1,red,2")


def test_matrix_to_frame_refuses_codes_that_are_not_categories() -> None:
    matrix = np.array([[1.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    with pytest.raises(SchemaError, match=r"column 'c': category codes must be whole numbers"):
        matrix_to_frame(matrix, TINY)
    assert Encoder.compile(TINY).to_frame(matrix[:1])["c"].tolist() == ["blue"]

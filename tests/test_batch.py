"""Streaming batch prediction (src/mlcycle/batch.py and `mlcycle predict`).

Real XGBoost bundles, trained here in a second on UCI Adult rows (a derived feature, an unused
input, categorical inputs) and on synthetic records whose categories look like numbers. Every
streamed result is compared with scoring the whole file at once in memory, and with itself
under other chunk sizes, chunk boundaries falling on missing and unseen values.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb
import yaml

from mlcycle.adapters.xgboost_model import dmatrix
from mlcycle.batch import count_rows, predict_file
from mlcycle.bundle import MODEL_FILE, RULES_FILE, Bundle, load_bundle, write_bundle
from mlcycle.config import DEFAULT_SEVERITY, FeaturesConfig
from mlcycle.features import (
    Feature,
    SchemaError,
    Signature,
    encode_target,
    infer_signature,
    to_model_frame,
)
from mlcycle.io import read_table
from mlcycle.predict import score_frame
from mlcycle.schema import load_schema
from mlcycle.schema.rows import RowRules
from tests.conftest import ROOT, cli

ADULT = ROOT / "data/external/adult/adult.data.gz"
TARGET = "income"
PREDICTIONS = ["probability_<=50K", "probability_>50K", "probability", "prediction"]
N_RECORDS = 1500


def train_bundle(
    path: Path, train: pd.DataFrame, sig: Signature, objective: str, rounds: int = 20
) -> Bundle:
    """A real bundle: an XGBoost booster trained on ``train``, written and loaded (verified)."""
    X = to_model_frame(train, sig)
    y = encode_target(train[sig.target], sig)
    params = {"objective": objective, "max_depth": 4, "eta": 0.3, "seed": 0, "nthread": 1}
    booster = xgb.train(params | {"max_cat_to_onehot": 1}, dmatrix(X, y, 1), rounds)
    meta = {"threshold": 0.4} if objective == "binary:logistic" else {}
    write_bundle(path, bytes(booster.save_raw(raw_format="ubj")), sig, meta)
    return load_bundle(path)


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    columns = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["columns"]
    return pd.read_csv(
        ADULT, header=None, names=columns, skipinitialspace=True, na_values=["?"], nrows=6000
    )


@pytest.fixture(scope="module")
def bundle(adult: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Income from Adult: categorical inputs, a derived capital-net, fnlwgt unused."""
    train = adult.head(3000)
    features = FeaturesConfig(
        derived=(
            {
                "name": "capital-net",
                "op": "difference",
                "columns": ["capital-gain", "capital-loss"],
            },
        ),  # fmt: skip
        exclude=("fnlwgt",),
    )
    sig = infer_signature(train, TARGET, ">50K", features)
    assert sig.unused_inputs == ("fnlwgt",) and sig.derived
    return train_bundle(tmp_path_factory.mktemp("adult") / "bundle", train, sig, "binary:logistic")


@pytest.fixture(scope="module")
def regression(adult: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Hours per week from the other Adult columns."""
    train = adult.head(3000)
    sig = infer_signature(train, "hours-per-week", None, task="regression")
    return train_bundle(tmp_path_factory.mktemp("reg") / "bundle", train, sig, "reg:squarederror")


@pytest.fixture(scope="module")
def multiclass(adult: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """Relationship (six classes) from the other Adult columns."""
    train = adult.head(3000)
    sig = infer_signature(train, "relationship", None, task="multiclass_classification")
    path = tmp_path_factory.mktemp("multi") / "bundle"
    X, y = to_model_frame(train, sig), encode_target(train[sig.target], sig)
    params = {"objective": "multi:softprob", "num_class": len(sig.classes), "max_depth": 3}
    booster = xgb.train(params | {"seed": 0, "nthread": 1}, dmatrix(X, y, 1), 10)
    write_bundle(path, bytes(booster.save_raw(raw_format="ubj")), sig, {})
    return load_bundle(path)


@pytest.fixture(scope="module")
def records(adult: pd.DataFrame) -> pd.DataFrame:
    """New Adult records (not trained on) with whole chunks of 10 that are all missing or all
    unseen, fractional numbers, padded text and two extra columns: an id and a count."""
    df = adult.iloc[3000 : 3000 + N_RECORDS].drop(columns=TARGET).reset_index(drop=True)
    df[["age", "hours-per-week"]] = df[["age", "hours-per-week"]].astype(float)
    df.loc[0:9, "age"] = np.nan
    df.loc[10:19, "native-country"] = "Atlantis"  # unseen in training
    df.loc[20:29, "workclass"] = np.nan
    df.loc[40:49, "workclass"] = "  Private "
    df.loc[50:59, "hours-per-week"] = [40.5, 1e-3, 39.999999999999996, 0.1, 7e22, 2.5, 1, 2, 3, 4]
    df.loc[df.index % 37 == 5, "occupation"] = np.nan
    df.insert(0, "id", [f"r{i:05d}" for i in range(len(df))])
    df["count"] = pd.array([i if i % 10 else None for i in range(len(df))], dtype="Int64")
    df.loc[30:39, "count"] = None  # a chunk where the count is all missing
    return df


def write_input(df: pd.DataFrame, path: Path) -> Path:
    """``df`` as a CSV, Parquet or JSON Lines file (gzipped by a .gz suffix)."""
    name = path.name
    if ".csv" in name:
        df.to_csv(path, index=False)
    elif name.endswith(".parquet"):
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True, double_precision=15)
    return path


def assert_same_output(a: Path, b: Path) -> None:
    """The same file: byte for byte for text; the same schema and values for Parquet (whose
    row groups follow the chunks)."""
    if a.suffix == ".parquet":
        ta, tb = pq.read_table(a), pq.read_table(b)
        assert ta.schema == tb.schema
        assert ta.equals(tb)
    else:
        assert a.read_bytes() == b.read_bytes()


def assert_same_predictions(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """The same probabilities (to the last bit) and the same predictions."""
    for name in want.columns:
        if name.startswith("probability") or name == "prediction":
            assert got[name].tolist() == want[name].tolist(), name


def read_output(path: Path) -> pd.DataFrame:
    """An output file; JSON numbers parsed exactly (pandas' default parser may miss by a bit)."""
    if ".jsonl" in path.name:
        return pd.read_json(path, lines=True, dtype=False, precise_float=True)
    return read_table(path)


def whole_file(bundle: Bundle, path: Path) -> pd.DataFrame:
    """Scoring the whole file at once, as `mlcycle predict` did before it streamed."""
    return score_frame(bundle, read_table(path), chunk_rows=10**9)


# --- the same results as the whole file at once ------------------------------------------------


@pytest.mark.parametrize("out_suffix", [".csv", ".parquet", ".jsonl", ".csv.gz"])
@pytest.mark.parametrize("in_suffix", [".csv", ".csv.gz", ".parquet", ".jsonl", ".jsonl.gz"])
def test_streamed_predictions_equal_scoring_the_whole_file(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path, in_suffix: str, out_suffix: str
) -> None:
    src = write_input(records, tmp_path / f"in{in_suffix}")
    out, once = tmp_path / f"out{out_suffix}", tmp_path / f"once{out_suffix}"
    result = predict_file(bundle, src, out, chunk_rows=251, progress=False)
    predict_file(bundle, src, once, chunk_rows=10**6, progress=False)

    assert (result.rows, result.chunks) == (N_RECORDS, math.ceil(N_RECORDS / 251))
    assert result.output_path == out and result.notes == ()
    assert_same_output(out, once)  # chunks change nothing
    got = read_output(out)
    assert list(got.columns) == [*records.columns, *PREDICTIONS]
    assert len(got) == N_RECORDS
    assert_same_predictions(got, whole_file(bundle, src))
    assert got["id"].tolist() == records["id"].tolist()
    assert (got["prediction"] == ">50K").sum() > 50  # the model really discriminates
    assert got["probability"].nunique() > 100


def test_gzipped_output_is_the_same_bytes_every_time(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    src = write_input(records, tmp_path / "in.csv")
    a, b = tmp_path / "a" / "out.csv.gz", tmp_path / "b" / "out.csv.gz"
    predict_file(bundle, src, a, chunk_rows=500, progress=False)
    predict_file(bundle, src, b, chunk_rows=500, progress=False)
    assert a.read_bytes() == b.read_bytes()
    plain = tmp_path / "out.csv"
    predict_file(bundle, src, plain, chunk_rows=500, progress=False)
    assert gzip.decompress(a.read_bytes()) == plain.read_bytes()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_output_does_not_depend_on_where_chunks_end(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    # Rows 0-9: age all missing; 10-19: country all unseen; 20-29: workclass all missing;
    # 30-39: count all missing; 50-59: fractional hours. With 10 rows a chunk, each is a chunk.
    head = records.head(60)
    src = write_input(head, tmp_path / f"in{suffix}")
    outputs = []
    for chunk_rows in (3, 10, 13, 1000):
        out = tmp_path / f"out_{chunk_rows}{suffix}"
        predict_file(bundle, src, out, chunk_rows=chunk_rows, progress=False)
        outputs.append(out)
    for out in outputs[1:]:
        assert_same_output(out, outputs[0])
    got = read_output(outputs[0])
    want = score_frame(bundle, head)
    assert_same_predictions(got, want)
    assert got.loc[10:19, "native-country"].eq("Atlantis").all()


def test_echoed_columns_keep_their_values_and_types(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    # CSV in, CSV out: the input's text, line by line, then the predictions (leading blanks
    # aside: CSV values are read without them, as everywhere in mlcycle).
    src = write_input(records.drop(index=range(40, 50)), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    predict_file(bundle, src, out, chunk_rows=100, progress=False)
    for line_in, line_out in zip(
        src.read_text().splitlines(), out.read_text().splitlines(), strict=True
    ):
        assert line_out.startswith(line_in + ",")

    # Parquet in, Parquet out: the input's own schema, then the prediction columns.
    src = write_input(records, tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    predict_file(bundle, src, out, chunk_rows=100, progress=False)
    schema = pq.read_schema(out)
    source = pq.read_schema(src)
    assert schema.names == [*source.names, *PREDICTIONS]
    for name in source.names:
        assert schema.field(name).type == source.field(name).type, name
    assert schema.field("count").type == pa.int64()  # all missing in rows 30-39
    assert schema.field("prediction").type == pa.string()

    # CSV in, Parquet out: numeric inputs are numbers, every other column text.
    src = write_input(records, tmp_path / "in2.csv")
    out = tmp_path / "out2.parquet"
    predict_file(bundle, src, out, chunk_rows=100, progress=False)
    schema = pq.read_schema(out)
    assert schema.field("age").type == pa.float64()
    assert schema.field("fnlwgt").type == pa.string()  # not an input: its text
    assert schema.field("count").type == pa.string()
    got = pd.read_parquet(out)
    assert np.array_equal(got["hours-per-week"], records["hours-per-week"])
    assert got["age"].isna().sum() == 10


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_other_tasks_stream_the_same(
    regression: Bundle, multiclass: Bundle, records: pd.DataFrame, tmp_path: Path, task: str
) -> None:
    model = regression if task == "regression" else multiclass
    target = model.signature.target
    df = records.drop(columns=target).assign(income=">50K")
    src = write_input(df, tmp_path / "in.csv")
    want = score_frame(model, read_table(src))
    added = [c for c in want.columns if c not in df.columns]
    if task == "regression":
        assert added == ["prediction"]
    else:
        assert added == [f"probability_{c}" for c in model.signature.classes] + ["prediction"]
    for suffix in (".parquet", ".csv", ".jsonl"):
        out = tmp_path / f"out{suffix}"
        predict_file(model, src, out, chunk_rows=400, progress=False)
        got = read_output(out)
        assert list(got.columns) == [*df.columns, *added]
        assert_same_predictions(got, want)
    label = pa.float64() if task == "regression" else pa.string()
    assert pq.read_schema(tmp_path / "out.parquet").field("prediction").type == label


# --- types that per-chunk inference would change -----------------------------------------------


@pytest.fixture(scope="module")
def codes_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """A model whose category ``code`` looks like numbers: 1, 2, 10 and 007."""
    rng = np.random.default_rng(0)
    n = 2000
    code = rng.choice(["1", "2", "10", "007"], size=n)
    x = rng.normal(size=n)
    logit = x + np.select([code == "1", code == "10", code == "007"], [2.0, -2.0, 1.0], 0.0)
    label = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    train = pd.DataFrame({"x": x, "code": code, "label": label})
    sig = Signature(
        features=(Feature("x", "numeric"), Feature("code", "categorical", ("007", "1", "10", "2"))),
        target="label",
        positive_class="yes",
        negative_class="no",
    )
    return train_bundle(tmp_path_factory.mktemp("codes") / "bundle", train, sig, "binary:logistic")


CODES = ["1", "2", "10", "007", None, "3", "1", "2", "2", "10", "1", None]


def codes_records() -> pd.DataFrame:
    return pd.DataFrame(
        {"x": np.linspace(-1.5, 1.5, len(CODES)), "code": pd.array(CODES, dtype="str")}
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl_numbers", "parquet_text", "parquet_int"])
def test_categories_that_look_like_numbers_keep_their_text(
    codes_bundle: Bundle, tmp_path: Path, fmt: str
) -> None:
    """pandas reads a chunk of codes 1, 2 as integers but one with a missing value as floats
    (1.0, which is no category); streaming must not depend on that."""
    df = codes_records()
    want = score_frame(codes_bundle, df)  # in memory, the codes as text
    if fmt == "csv":
        src = write_input(df, tmp_path / "in.csv")
    elif fmt == "jsonl_numbers":  # 1, 2, 10 as JSON numbers; 007 must be a string in JSON
        src = tmp_path / "in.jsonl"
        lines = [
            json.dumps({"x": x, "code": c if c in (None, "007", "3") else int(c)})
            for x, c in zip(df["x"], CODES, strict=True)
        ]
        src.write_text("\n".join(lines) + "\n")
    elif fmt == "parquet_text":
        src = write_input(df, tmp_path / "in.parquet")
    else:  # integer codes with missing values: 007 cannot be one
        df = df[df["code"] != "007"].reset_index(drop=True)
        want = score_frame(codes_bundle, df)
        ints = pd.array([None if pd.isna(c) else int(c) for c in df["code"]], "Int64")
        src = write_input(df.assign(code=ints), tmp_path / "in.parquet")
    for chunk_rows in (1, 2, 4, 100):
        out = tmp_path / f"out_{chunk_rows}.csv"
        predict_file(codes_bundle, src, out, chunk_rows=chunk_rows, progress=False)
        assert_same_predictions(pd.read_csv(out, dtype={"code": str}), want)
    if fmt == "csv":
        assert pd.read_csv(out, dtype=str)["code"].tolist()[:4] == ["1", "2", "10", "007"]


# --- errors name the row in the file; nothing is written ---------------------------------------


def bad_records(records: pd.DataFrame, row: int, value: object) -> pd.DataFrame:
    df = records.copy()
    df["age"] = df["age"].astype(object)
    df.loc[row, "age"] = value
    return df


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_a_bad_value_names_its_row_in_the_file_and_its_column(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    df = bad_records(records, 1234, "abc")
    if suffix == ".parquet":  # one type per Parquet column: text
        df["age"] = df["age"].map(lambda v: None if pd.isna(v) else str(v))
    src = write_input(df, tmp_path / f"in{suffix}")
    out = tmp_path / "out" / "scored.csv"
    with pytest.raises(SchemaError) as streamed:
        predict_file(bundle, src, out, chunk_rows=100, progress=False)
    message = str(streamed.value)
    assert str(src) in message
    assert "column 'age', row 1234: expected a number, got 'abc'" in message
    assert "chunk of rows 1200-1299" in message
    # The very words of scoring the whole file at once.
    with pytest.raises(SchemaError) as whole:
        whole_file(bundle, src)
    assert "column 'age', row 1234: expected a number, got 'abc'" in str(whole.value)
    assert not out.exists() and os.listdir(out.parent) == []


def test_a_boolean_for_a_number_names_its_row(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    src = write_input(bad_records(records, 777, True), tmp_path / "in.jsonl")
    with pytest.raises(SchemaError, match=r"column 'age', row 777: expected a number, got True"):
        predict_file(bundle, src, tmp_path / "out.jsonl", chunk_rows=100, progress=False)


@pytest.mark.parametrize("value", ["inf", "-Infinity", "1e39"])
def test_an_infinite_number_names_its_row_and_leaves_no_output(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path, value: str
) -> None:
    """Infinities (and numbers beyond float32, which the model would read as infinite) are
    refused like any bad value, not passed to XGBoost to fail with its own traceback."""
    src = write_input(bad_records(records, 432, value), tmp_path / "in.csv")
    out = tmp_path / "out.csv"
    with pytest.raises(SchemaError, match=r"column 'age', row 432: .*infinite or too large"):
        predict_file(bundle, src, out, chunk_rows=100, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".csv.gz"])
def test_a_missing_column_is_reported_before_anything_is_written(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path, suffix: str
) -> None:
    src = write_input(records.drop(columns=["education", "sex"]), tmp_path / f"in{suffix}")
    out = tmp_path / "never" / "out.parquet"
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['education', 'sex'\]"):
        predict_file(bundle, src, out, progress=False)
    assert not out.parent.exists()  # not even the directory: the check came first


def test_a_failure_leaves_an_existing_output_untouched(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    out = tmp_path / "scored.parquet"
    out.write_bytes(b"yesterday's predictions")
    src = write_input(bad_records(records, N_RECORDS - 1, "n/a?"), tmp_path / "in.csv")
    with pytest.raises(SchemaError, match=f"row {N_RECORDS - 1}"):
        predict_file(bundle, src, out, chunk_rows=100, progress=False)
    assert out.read_bytes() == b"yesterday's predictions"
    assert sorted(os.listdir(tmp_path)) == ["in.csv", "scored.parquet"]  # no temporary file left

    # A file that breaks mid-way: a line with one field too many.
    lines = src.read_text().splitlines()
    lines[900] += ",extra"
    broken = tmp_path / "broken.csv"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"broken\.csv: cannot read as csv.* in line 901, saw 17$"):
        predict_file(bundle, broken, out, chunk_rows=100, progress=False)
    assert out.read_bytes() == b"yesterday's predictions"
    lines = write_input(records, tmp_path / "in.jsonl").read_text().splitlines()
    lines[250] = lines[250][:-7]  # cut short
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"cannot read as jsonl \(in the chunk from row 200\)"):
        predict_file(bundle, broken, out, chunk_rows=100, progress=False)
    assert out.read_bytes() == b"yesterday's predictions"


def test_bad_arguments_are_refused_up_front(bundle: Bundle, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    with pytest.raises(FileNotFoundError, match="in.csv does not exist"):
        predict_file(bundle, src, tmp_path / "out.csv", progress=False)
    src.write_text("age\n1\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        predict_file(bundle, src, tmp_path / "out.xlsx", progress=False)
    with pytest.raises(ValueError, match="chunk_rows must be"):
        predict_file(bundle, src, tmp_path / "out.csv", chunk_rows=0, progress=False)


# --- edge cases of the formats ------------------------------------------------------------------


@pytest.mark.parametrize("in_suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("out_suffix", [".csv", ".parquet", ".jsonl"])
def test_a_file_without_records_gives_an_output_without_records(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path, in_suffix: str, out_suffix: str
) -> None:
    src = write_input(records.head(0), tmp_path / f"in{in_suffix}")
    out = tmp_path / f"out{out_suffix}"
    result = predict_file(bundle, src, out, progress=False)
    assert result.rows == 0
    if out_suffix == ".jsonl":
        assert out.read_bytes() == b""
    else:
        got = read_output(out)
        assert len(got) == 0 and list(got.columns) == [*records.columns, *PREDICTIONS]


def test_json_lines_keys_missing_or_first_seen_late(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    head = records.head(30).drop(columns="count")
    rows = head.to_dict(orient="records")
    for r in rows[5:]:
        r.pop("occupation")  # a missing key is a missing value
    rows[25]["late"] = 1  # first seen after the first chunk: left out, with a note
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows).replace("NaN", "null"))
    out = tmp_path / "out.csv"
    result = predict_file(bundle, src, out, chunk_rows=10, progress=False)
    assert len(result.notes) == 1 and "['late']" in result.notes[0]
    got = pd.read_csv(out)
    assert "late" not in got.columns and got["occupation"][5:].isna().all()
    want = score_frame(bundle, head.assign(occupation=head["occupation"][:5]))
    assert_same_predictions(got, want)


def test_a_prediction_column_in_the_input_is_replaced_where_it_is(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    df = records.head(50).copy()
    df.insert(1, "prediction", "old")
    for suffix in (".csv", ".parquet"):
        src = write_input(df, tmp_path / f"in{suffix}")
        out = tmp_path / f"out{suffix}"
        predict_file(bundle, src, out, chunk_rows=20, progress=False)
        got = read_output(out)
        assert list(got.columns) == [*df.columns, *PREDICTIONS[:-1]]
        assert set(got["prediction"]) <= {">50K", "<=50K"}


def test_a_stored_pandas_index_is_not_echoed(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    src = tmp_path / "in.parquet"
    records.head(40).set_index("id").to_parquet(src)  # the index stored as a column
    out = tmp_path / "out.parquet"
    predict_file(bundle, src, out, chunk_rows=16, progress=False)
    assert pq.read_schema(out).names == [*records.columns[1:], *PREDICTIONS]


def test_count_rows_is_cheap_and_close(records: pd.DataFrame, tmp_path: Path) -> None:
    df = records.head(123)
    assert count_rows(write_input(df, tmp_path / "a.csv")) == 123
    assert count_rows(write_input(df, tmp_path / "a.csv.gz")) == 123
    assert count_rows(write_input(df, tmp_path / "a.jsonl")) == 123
    assert count_rows(write_input(df, tmp_path / "a.parquet")) == 123
    (tmp_path / "b.csv").write_text("a,b\n1,2\n3,4")  # no newline at the end
    assert count_rows(tmp_path / "b.csv") == 2
    (tmp_path / "c.csv").write_text("a,b\n")
    assert count_rows(tmp_path / "c.csv") == 0


# --- the command ---------------------------------------------------------------------------------


def test_the_command_shows_progress_unless_quiet(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    src = write_input(records, tmp_path / "in.csv")
    shown = cli(tmp_path, "predict", "in.csv", "a.csv", "--bundle", str(bundle.path), check=False)
    assert shown.returncode == 0, shown.stderr
    last = shown.stderr.replace("\r", "\n").splitlines()
    bar = [line for line in last if line.startswith("scoring in.csv")][-1]
    assert "100%" in bar and "1.50k/1.50k" in bar and "rows/s" in bar
    assert f"wrote {N_RECORDS} predictions to a.csv (model {bundle.model_id})" in shown.stderr

    quiet = cli(
        tmp_path, "predict", "in.csv", "b.csv", "--bundle", str(bundle.path), "--quiet",
        "--chunk-rows", "100", check=False,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert "rows/s" not in quiet.stderr and "%|" not in quiet.stderr
    assert quiet.stderr.startswith(f"wrote {N_RECORDS} predictions")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert_same_predictions(pd.read_csv(tmp_path / "a.csv"), whole_file(bundle, src))


def test_the_command_reports_errors_in_one_line(
    bundle: Bundle, records: pd.DataFrame, tmp_path: Path
) -> None:
    write_input(bad_records(records, 321, "old"), tmp_path / "in.jsonl")
    proc = cli(
        tmp_path, "predict", "in.jsonl", "out.parquet", "--bundle", str(bundle.path),
        "--chunk-rows", "50", check=False,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "mlcycle: error: in.jsonl: column 'age', row 321: expected a number" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.parquet").exists()
    zero = cli(tmp_path, "predict", "in.jsonl", "out.csv", "--bundle", str(bundle.path),
               "--chunk-rows", "0", check=False)  # fmt: skip
    assert zero.returncode == 1 and "chunk_rows must be" in zero.stderr


def test_the_schemas_rules_decide_in_batch_as_in_the_service(
    bundle: Bundle, adult: pd.DataFrame, tmp_path: Path
) -> None:
    """With the schema's per-row rules in the bundle (the package stage writes them), a batch
    is judged as the service judges a request: a value breaking a rule whose severity is error
    stops scoring, naming its row, the column and the rule, and nothing is written, in a model
    input or in a column of the schema the model does not use; a rule of severity warning is
    scored and noted, as is a column that is neither an input nor the schema's (copied)."""
    rules = RowRules.of(load_schema(ROOT / "schema.yaml"), DEFAULT_SEVERITY)
    meta = {k: v for k, v in bundle.metadata.items() if k not in ("model_kind", "model_sha256")}
    ruled = load_bundle(
        write_bundle(
            tmp_path / "ruled",
            (bundle.path / MODEL_FILE).read_bytes(),
            bundle.signature,
            meta,
            extra_files={RULES_FILE: json.dumps(rules.to_dict()).encode()},
        )
    )
    rows = adult.iloc[3000:3060].reset_index(drop=True)  # not trained on; with the target
    rows.insert(0, "id", [f"r{i}" for i in range(len(rows))])
    rows.loc[7, "workclass"] = "Space-agency"
    src = tmp_path / "rows.csv"
    rows.to_csv(src, index=False)
    result = predict_file(ruled, src, tmp_path / "ruled.parquet", progress=False, chunk_rows=25)
    predict_file(bundle, src, tmp_path / "plain.parquet", progress=False, chunk_rows=25)
    assert result.rows == 60
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "ruled.parquet"), pd.read_parquet(tmp_path / "plain.parquet")
    )
    category = "1 row(s) (7), column 'workclass': 'Space-agency' is not one of the schema's"
    assert any(category in note and note.endswith("; scored") for note in result.notes)
    assert any("column(s) ['id'] are neither inputs" in note for note in result.notes)
    for column, value, rule in (
        ("age", None, "; schema.yaml expects a value (nullable: false)"),
        ("fnlwgt", 5, "is out of range; schema.yaml expects between 12285 and 1490400"),
    ):
        broken = rows.copy()
        broken[column] = broken[column].astype(object)
        broken.loc[42, column] = value
        for suffix in (".csv", ".parquet"):
            path = tmp_path / f"broken-{column}{suffix}"
            broken.to_csv(path, index=False) if suffix == ".csv" else broken.to_parquet(path)
            out = tmp_path / f"out-{column}{suffix}"
            where = re.escape(f"row 42, column {column!r}: ")  # a CSV's value is text: '5'
            with pytest.raises(SchemaError, match=f"{where}(null|'?5'? ){re.escape(rule)}"):
                predict_file(ruled, path, out, progress=False, chunk_rows=25)
            assert not out.exists()

"""Unit tests of preparation (src/mlcycle/prepare.py): cleaning, duplicates, conflicting labels,
outliers (training split only) and every split method, on small frames and on the real Adult
data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from mlcycle import config
from mlcycle.config import (
    CleanConfig,
    Objectives,
    OutliersConfig,
    PrepareConfig,
    SplitConfig,
)
from mlcycle.prepare import (
    MISSING_TOKENS,
    PrepareError,
    clean,
    label_text,
    outlier_mask,
    prepare,
    remove_outliers,
    remove_training_repeats,
    split,
)
from mlcycle.sources import SOURCE_COLUMN, read_source, union
from tests.conftest import ROOT

OBJ = Objectives(
    task="binary_classification",
    target="y",
    positive_class="yes",
    primary_metric="roc_auc",
    minimum=0.5,
    kpis=("roc_auc",),
)


def cfg(
    method: str = "by_source",
    outliers: OutliersConfig | None = None,
    clean_cfg: CleanConfig | None = None,
    drop_columns: tuple[str, ...] = (),
    **split_kw: object,
) -> PrepareConfig:
    if method == "by_source":
        split_kw = {"train_sources": ("tr",), "test_sources": ("te",), **split_kw}
    return PrepareConfig(
        drop_columns=drop_columns,
        clean=clean_cfg or CleanConfig(),
        outliers=outliers or OutliersConfig(),
        split=SplitConfig(method=method, **split_kw),  # type: ignore[arg-type]
    )


def feature_tuples(frame: pd.DataFrame, target: str = "y") -> set[tuple]:
    """Exact feature vectors (missing values as None), compared without hashing."""
    cols = [c for c in frame.columns if c != target]
    return {
        tuple(None if pd.isna(v) else v for v in row)
        for row in frame[cols].astype(object).itertuples(index=False)
    }


# --- cleaning -------------------------------------------------------------------------------


def test_clean_counts_whitespace_tokens_and_numbers_read_as_text() -> None:
    n = 40
    amount = [str(i) for i in range(n)]
    amount[3] = " 7 "  # whitespace around a number
    amount[5] = "?"  # a missing-value token
    amount[8] = "seven"  # not a number: becomes missing, counted
    df = pd.DataFrame(
        {
            "amount": pd.Series(amount, dtype=object),
            "colour": ["red ", " blue", "NA", "green"] * (n // 4),
            "code": ["A1", "B2", "3", "4"] * (n // 4),  # mostly not numbers: stays text
            "y": ["yes ", "no"] * (n // 2),
            SOURCE_COLUMN: "tr",
        }
    )
    out, report = clean(df, OBJ)
    assert out["amount"].dtype == np.float64
    assert out["amount"].iloc[3] == 7.0 and out["amount"].iloc[10] == 10.0
    assert np.isnan(out["amount"].iloc[5]) and np.isnan(out["amount"].iloc[8])
    assert report.coerced_to_number == {"amount": n - 2}
    assert report.not_a_number == {"amount": 1}
    assert report.missing_tokens == {"amount": 1, "colour": n // 4}
    assert report.whitespace_stripped == {"amount": 1, "colour": n // 2, "y": n // 2}
    assert out["colour"].iloc[0] == "red" and out["colour"].iloc[1] == "blue"
    assert pd.isna(out["colour"].iloc[2]) and out["colour"].iloc[3] == "green"
    assert out["code"].tolist()[:2] == ["A1", "B2"]  # not coerced
    assert set(out["y"]) == {"yes", "no"}
    assert report.missing_values == {"amount": 2, "colour": n // 4}
    assert report.rows_in == report.rows_out == n


def test_clean_of_clean_data_counts_nothing() -> None:
    df = pd.DataFrame(
        {"x": [1, 2, 3], "c": pd.array(["a", "b", None], dtype="string"), "y": ["yes", "no", "no"]}
    )
    out, report = clean(df.assign(**{SOURCE_COLUMN: "tr"}), OBJ)
    assert report.whitespace_stripped == report.missing_tokens == {}
    assert report.coerced_to_number == report.not_a_number == {}
    assert out["x"].tolist() == [1, 2, 3]


def test_missing_label_tokens_drop_the_row() -> None:
    df = pd.DataFrame({"x": range(5), "y": ["yes", "?", "no", "", None], SOURCE_COLUMN: "tr"})
    out, report = clean(df, OBJ)
    assert out["x"].tolist() == [0, 2]
    assert report.target_missing_dropped == 3
    assert "?" in MISSING_TOKENS


# --- duplicates and conflicting labels ------------------------------------------------------


def test_drop_duplicates_within_train_and_rows_repeating_a_test_row() -> None:
    train = pd.DataFrame(
        {
            "a": [1, 1, 2, 3, 4, np.nan, np.nan],
            "b": ["x", "x", "y", "z", "w", "v", "v"],
            "y": ["yes", "yes", "no", "no", "yes", "no", "no"],
        }
    )
    test = pd.DataFrame({"a": [3.0, 9.0, 9.0], "b": ["z", "q", "q"], "y": ["yes", "no", "no"]})
    out, counts = remove_training_repeats(train, test, "y", duplicates=True, conflicts=False)
    # Rows 1 and 6 repeat earlier rows (missing values count as equal); row 3 has a test row's
    # features, although with the other label.
    assert counts == {"duplicates": 2, "matching_test": 1, "conflicting_labels": 0}
    assert out.index.tolist() == [0, 2, 4, 5]
    assert feature_tuples(out).isdisjoint(feature_tuples(test))


def test_drop_conflicting_labels_drops_every_row_of_a_conflicting_vector() -> None:
    train = pd.DataFrame(
        {
            "a": [1, 1, 1, 2, 2, 3],
            "b": ["x", "x", "x", "y", "y", "z"],
            "y": ["yes", "no", "yes", "no", "no", "yes"],
        }
    )
    out, counts = remove_training_repeats(train, train, "y", duplicates=False, conflicts=True)
    # the three (1, x) rows; (2, y) is a duplicate with one label, kept
    assert counts == {"duplicates": 0, "matching_test": 0, "conflicting_labels": 3}
    assert out.index.tolist() == [3, 4, 5]


def snapshot_with_duplicates(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Distinct records, then exact copies of some (with their own source, group and time, so
    copies can fall on either side) and copies of others with the other label."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n).round(3),
            "b": rng.choice(["p", "q", "r"], size=n),
            "g": rng.integers(0, 25, size=n),
            "t": rng.integers(0, 100, size=n),
            "y": rng.choice(["yes", "no"], size=n),
            SOURCE_COLUMN: rng.choice(["tr", "te"], size=n, p=[0.7, 0.3]),
        }
    )
    df.loc[::13, "a"] = np.nan
    copies = df.sample(n // 4, random_state=seed).assign(
        g=rng.integers(0, 25, size=n // 4),
        t=rng.integers(0, 100, size=n // 4),
        **{SOURCE_COLUMN: rng.choice(["tr", "te"], size=n // 4, p=[0.7, 0.3])},
    )
    flipped = df.sample(n // 20, random_state=seed + 1).assign(
        y=lambda d: d["y"].map({"yes": "no", "no": "yes"}), **{SOURCE_COLUMN: "tr"}
    )
    return pd.concat([df, copies, flipped], ignore_index=True)


SPLITS = {
    "by_source": {},
    "stratified": {"test_size": 0.3, "seed": 3},
    "group": {"test_size": 0.3, "seed": 3, "group_column": "g"},
    "time": {"test_size": 0.3, "time_column": "t"},
}


@pytest.mark.parametrize("method", list(SPLITS))
def test_no_duplicate_row_lands_on_both_sides(method: str) -> None:
    df = snapshot_with_duplicates()
    c = cfg(method, drop_columns=("g", "t"), **SPLITS[method])
    result = prepare(df, c, OBJ)
    train, test = result.train, result.test
    assert feature_tuples(train).isdisjoint(feature_tuples(test))
    assert not train.duplicated().any()
    assert len(train) > 0 and len(test) > 0
    removed = result.report["train_removed"]
    assert removed["matching_test"] + removed["duplicates"] > 0
    if method == "by_source":  # the provider's test split stays complete, duplicates and all
        assert removed["conflicting_labels"] > 0
        assert len(test) == (df[SOURCE_COLUMN] == "te").sum()
        assert test.duplicated().any()
        assert "duplicates_dropped_before_split" not in result.report["split"]
    else:  # random splits drop duplicates before splitting
        assert result.report["split"]["duplicates_dropped_before_split"] > 0
        assert not test.duplicated().any()


def test_without_cleaning_duplicates_and_conflicts_are_kept() -> None:
    df = snapshot_with_duplicates()
    keep_all = CleanConfig(drop_duplicates=False, drop_conflicting_labels=False)
    result = prepare(df, cfg(clean_cfg=keep_all), OBJ)
    assert len(result.train) == (df[SOURCE_COLUMN] == "tr").sum()
    assert result.report["train_removed"] == {"outliers": 0}


def test_conflicting_labels_are_dropped_from_train_only() -> None:
    df = pd.DataFrame(
        {
            "a": [1, 1, 2, 3, 5, 5, 6],
            "y": ["yes", "no", "no", "yes", "yes", "no", "no"],
            SOURCE_COLUMN: ["tr", "tr", "tr", "tr", "te", "te", "te"],
        }
    )
    result = prepare(df, cfg(), OBJ)
    assert result.train["a"].tolist() == [2, 3]
    assert result.test["a"].tolist() == [5, 5, 6]  # conflicting too, but test is never filtered
    assert result.report["train_removed"]["conflicting_labels"] == 2


# --- outliers -------------------------------------------------------------------------------


def outlier_frame() -> pd.DataFrame:
    """``a`` is 0..99 with two far values; ``z`` is mostly 0 (zero IQR); ``c`` is constant."""
    a = np.arange(100, dtype=float)
    a[10], a[20] = 1000.0, -900.0
    z = np.zeros(100)
    z[::10] = [5, 50, 500, 5000, 7, 8, 9, 10, 11, 12]
    return pd.DataFrame(
        {"a": a, "z": z, "c": 7.0, "s": ["u", "v"] * 50, "y": ["yes", "no", "no", "no"] * 25}
    )


def test_iqr_removes_values_beyond_k_iqr_and_skips_zero_iqr_columns() -> None:
    df = outlier_frame()
    q1, q3 = df["a"].quantile([0.25, 0.75])
    out, report = remove_outliers(df, OutliersConfig(method="iqr", iqr_k=1.5), "y")
    assert report["columns"]["a"] == {
        "removed": 2,
        "lower": round(q1 - 1.5 * (q3 - q1), 6),
        "upper": round(q3 + 1.5 * (q3 - q1), 6),
    }
    # Capital-gain-like column: IQR is 0, so it is skipped rather than removing all non-zeros.
    assert report["columns"]["z"] == {"skipped": "zero IQR"}
    assert report["columns"]["c"] == {"skipped": "zero IQR"}
    assert "s" not in report["columns"] and "y" not in report["columns"]
    assert report["removed"] == 2
    assert sorted(set(df.index) - set(out.index)) == [10, 20]


def test_zscore_removes_values_beyond_the_threshold_per_column() -> None:
    df = outlier_frame()
    df.loc[5, "a"] = np.nan  # missing is never an outlier
    out, report = remove_outliers(df, OutliersConfig(method="zscore", zscore=3.0), "y")
    # z has a non-zero standard deviation: its 5000 is an outlier; 1000 and -900 are in a.
    assert report["columns"]["a"]["removed"] == 2
    assert report["columns"]["z"]["removed"] == 1
    assert report["columns"]["c"] == {"skipped": "zero standard deviation"}
    assert report["removed"] == 3
    assert sorted(set(df.index) - set(out.index)) == [10, 20, 30]


def test_outlier_columns_can_be_listed() -> None:
    df = outlier_frame()
    mask, report = outlier_mask(
        df, OutliersConfig(method="zscore", zscore=3.0, columns=("z",)), "y"
    )
    assert list(report["columns"]) == ["z"]
    assert np.flatnonzero(mask).tolist() == [30]


@pytest.mark.parametrize(("column", "problem"), [("nope", "not a column"), ("s", "not numeric")])
def test_bad_outlier_columns_are_named(column: str, problem: str) -> None:
    with pytest.raises(
        PrepareError, match=rf"prepare.outliers.columns names '{column}'.*{problem}"
    ):
        remove_outliers(outlier_frame(), OutliersConfig(method="iqr", columns=(column,)), "y")


def test_isolation_forest_removes_the_contamination_share_and_the_obvious_outliers() -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500), "y": "no"})
    df.loc[[7, 77, 177], ["a", "b"]] = [[12.0, -12.0], [15.0, 15.0], [-14.0, 13.0]]
    outliers = OutliersConfig(method="isolation_forest", contamination=0.01, seed=5)
    out, report = remove_outliers(df, outliers, "y")
    removed = sorted(set(df.index) - set(out.index))
    assert report["removed"] == len(removed) == 5  # 1 % of 500
    assert {7, 77, 177} <= set(removed)
    assert report["columns"] == ["a", "b"]
    again, _ = remove_outliers(df, outliers, "y")
    pd.testing.assert_frame_equal(out, again)  # seeded


@pytest.mark.parametrize("method", ["iqr", "zscore", "isolation_forest"])
def test_outliers_never_touch_the_test_split(method: str) -> None:
    train, test = outlier_frame(), outlier_frame()
    df = pd.concat([train.assign(**{SOURCE_COLUMN: "tr"}), test.assign(**{SOURCE_COLUMN: "te"})])
    # Test rows must differ from training rows, or deduplication would remove the training ones.
    df.loc[df[SOURCE_COLUMN] == "te", "s"] = "w"
    outliers = OutliersConfig(method=method, iqr_k=1.5, zscore=3.0, contamination=0.05)
    result = prepare(df.reset_index(drop=True), cfg(outliers=outliers), OBJ)
    assert result.report["train_removed"]["outliers"] > 0
    assert len(result.train) == 100 - result.report["train_removed"]["outliers"]
    assert len(result.test) == 100
    assert {1000.0, -900.0} <= set(result.test["a"])
    assert result.report["outliers"]["method"] == method


# --- splits ---------------------------------------------------------------------------------


def grouped(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(4)
    return pd.DataFrame(
        {
            "row": range(n),
            "g": rng.choice([f"user{i}" for i in range(30)], size=n),
            "t": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 90, n), unit="D"),
            "y": rng.choice(["yes", "no"], size=n),
            SOURCE_COLUMN: "all",
        }
    )


def test_group_split_keeps_each_group_on_one_side_and_is_seeded() -> None:
    df = grouped()
    c = cfg("group", test_size=0.3, seed=1, group_column="g")
    train, test = split(df, c, "y")
    assert set(train["g"]).isdisjoint(test["g"])
    assert len(train) + len(test) == len(df)
    # test_size is a share of rows, met to within about half a group (~10 rows here).
    assert abs(len(test) / len(df) - 0.3) < 0.04
    assert train["row"].is_monotonic_increasing and test["row"].is_monotonic_increasing
    again = split(df, c, "y")
    pd.testing.assert_frame_equal(train, again[0])
    pd.testing.assert_frame_equal(test, again[1])
    other, _ = split(df, cfg("group", test_size=0.3, seed=2, group_column="g"), "y")
    assert set(other["g"]) != set(train["g"])


def test_one_huge_group_does_not_swallow_the_test_split() -> None:
    groups = ["big"] * 600 + [f"small{i // 10}" for i in range(400)]
    df = pd.DataFrame({"g": groups, "y": ["yes", "no"] * 500, SOURCE_COLUMN: "all"})
    for seed in range(5):
        train, test = split(df, cfg("group", test_size=0.3, seed=seed, group_column="g"), "y")
        assert len(test) == 300 and "big" in set(train["g"])


def test_group_split_drops_a_group_column_listed_in_drop_columns() -> None:
    c = cfg("group", test_size=0.3, seed=1, group_column="g", drop_columns=("g",))
    train, test = split(grouped(), c, "y")
    assert "g" not in train.columns and "g" not in test.columns


@pytest.mark.parametrize("time_kind", ["datetime", "text", "number"])
def test_time_split_puts_the_latest_rows_in_test(time_kind: str) -> None:
    df = grouped()
    if time_kind == "text":
        df["t"] = df["t"].dt.strftime("%Y-%m-%d")
    elif time_kind == "number":
        df["t"] = (df["t"] - pd.Timestamp("2024-01-01")).dt.days
    train, test = split(df, cfg("time", test_size=0.25, time_column="t"), "y")
    assert len(train) + len(test) == len(df)
    assert train["t"].max() < test["t"].min()  # strictly older: boundary ties go to test
    assert 0.25 <= len(test) / len(df) < 0.25 + 0.05
    assert train["row"].is_monotonic_increasing


def test_time_split_needs_a_time_for_every_row() -> None:
    df = grouped()
    df.loc[[3, 8], "t"] = pd.NaT
    with pytest.raises(PrepareError, match=r"time_column 't' is missing in 2 row\(s\)"):
        split(df, cfg("time", time_column="t"), "y")


@pytest.mark.parametrize(("method", "key"), [("group", "group_column"), ("time", "time_column")])
def test_split_column_must_exist(method: str, key: str) -> None:
    with pytest.raises(PrepareError, match=rf"prepare.split.{key} 'nope' is not a column"):
        split(grouped(), cfg(method, **{key: "nope"}), "y")


def test_stratified_split_dedupes_first_and_keeps_class_balance() -> None:
    df = snapshot_with_duplicates(2000, seed=5).drop(columns=["g", "t"])
    result = prepare(df, cfg("stratified", test_size=0.25, seed=9), OBJ)
    kept = result.report["split"]["train_rows"] + result.report["split"]["test_rows"]
    assert kept == len(df) - result.report["split"]["duplicates_dropped_before_split"]
    assert feature_tuples(result.train).isdisjoint(feature_tuples(result.test))


@pytest.mark.parametrize("method", list(SPLITS))
def test_prepare_is_deterministic(method: str) -> None:
    outliers = OutliersConfig(method="isolation_forest", contamination=0.05)
    c = cfg(method, outliers=outliers, **SPLITS[method])
    first = prepare(snapshot_with_duplicates(seed=8), c, OBJ)
    second = prepare(snapshot_with_duplicates(seed=8), c, OBJ)
    pd.testing.assert_frame_equal(first.train, second.train)
    pd.testing.assert_frame_equal(first.test, second.test)
    assert first.report == second.report


# --- the real Adult data --------------------------------------------------------------------


@pytest.fixture(scope="module")
def adult_snapshot() -> tuple[pd.DataFrame, dict]:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    data = config.section(raw, "data")
    snapshot = union([read_source(s, ROOT) for s in data.sources])
    return snapshot, raw


def test_adult_keeps_its_official_test_split_whole(adult_snapshot: tuple) -> None:
    snapshot, raw = adult_snapshot
    params_prepare = config.section(raw, "prepare")
    objectives = config.section(raw, "objectives")
    result = prepare(snapshot, params_prepare, objectives)
    assert len(result.test) == 16281  # every record of adult.test, as published
    removed = result.report["train_removed"]
    # Adult's training file has exact duplicates, rows repeating a test record and a
    # feature vector with both labels; each is counted.
    assert removed["duplicates"] > 0
    assert removed["matching_test"] > 0
    assert removed["conflicting_labels"] > 0
    assert len(result.train) == 32561 - sum(removed.values())
    assert feature_tuples(result.train, "income").isdisjoint(feature_tuples(result.test, "income"))


def test_adult_iqr_keeps_capital_gain(adult_snapshot: tuple) -> None:
    """capital-gain and capital-loss are 0 for most rows: IQR 0, so they are skipped, not used
    to remove every row with a capital gain."""
    snapshot, raw = adult_snapshot
    params_prepare = config.section(raw, "prepare")
    outliers = OutliersConfig(method="iqr", iqr_k=3.0)
    c = params_prepare.model_copy(update={"outliers": outliers})
    result = prepare(snapshot, c, config.section(raw, "objectives"))
    columns = result.report["outliers"]["columns"]
    assert columns["capital-gain"] == {"skipped": "zero IQR"}
    assert columns["capital-loss"] == {"skipped": "zero IQR"}
    assert (result.train["capital-gain"] > 0).sum() > 2000
    # Other columns are checked; each row removed is beyond a fence of some column.
    removed = result.report["train_removed"]["outliers"]
    by_column = [c["removed"] for c in columns.values() if "removed" in c]
    assert max(by_column) <= removed <= sum(by_column)
    cleaning = sum(v for k, v in result.report["train_removed"].items() if k != "outliers")
    assert removed == 32561 - cleaning - len(result.train)


@pytest.mark.parametrize(
    ("values", "spelt"),
    [
        ([1.0, np.nan, 0.0, 2.0], ["1", None, "0", "2"]),  # integers a gap made floats
        ([0.5, 1.0, np.nan], ["0.5", "1", None]),
        ([3, 1], ["3", "1"]),
        (pd.Series([1, None], dtype="Int64"), ["1", None]),
        ([True, False], ["True", "False"]),  # as params.yaml's positive_class reads them
        (["1.0", " a", None], ["1.0", " a", None]),  # text as it is (prepare strips it)
        (pd.Series([1.0, "2", True, None], dtype=object), ["1", "2", "True", None]),  # unioned
    ],
)
def test_class_labels_have_one_spelling(values: object, spelt: list) -> None:
    text = label_text(pd.Series(values))
    assert [None if pd.isna(v) else v for v in text] == spelt

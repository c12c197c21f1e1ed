"""The Dask engine's prepare and train stages, called in a temporary folder on a real
LocalCluster: the same preparation, report and profile as the local engine, a split that
ignores partitioning, exact order statistics, and a reproducible model."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle import config, tasks
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.datasets import dataset_rows, row_hash
from mlcycle.drift import _ecdf_distance, data_profile
from mlcycle.engines import Engine
from mlcycle.prepare import PrepareError, prepare
from mlcycle.stages import prepare as prepare_stage
from mlcycle.stages import train as train_stage
from tests.conftest import FAST_PARAMS, ROOT, merge


def params(update: dict) -> config.Params:
    raw = config.read_raw(ROOT / "params.yaml")
    return config.parse_params(merge(merge(raw, FAST_PARAMS), update))


def snapshot(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Two sources with duplicates, rows repeating across sources, conflicting labels and a
    few outliers."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "x": rng.integers(0, 30, n).astype(float),
            "colour": rng.choice(["red", "green", "blue"], n),
            "size": rng.normal(10, 2, n).round(1),
            "label": rng.choice(["yes", "no"], n),
        }
    )
    df.loc[::97, "size"] = 500.0
    df = pd.concat([df, df.iloc[:40]], ignore_index=True)  # duplicates
    conflict = df.iloc[40:60].copy()
    conflict["label"] = np.where(conflict["label"] == "yes", "no", "yes")
    df = pd.concat([df, conflict], ignore_index=True)
    df[SOURCE_COLUMN] = np.where(np.arange(len(df)) % 3 == 0, "adult_test", "adult_train")
    return df


def write_parts(folder: Path, frame: pd.DataFrame, parts: int) -> None:
    folder.mkdir(parents=True)
    for i, idx in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[idx].to_parquet(folder / f"part-{i:05d}.parquet", index=False)


OBJ = {"objectives": {"target": "label", "positive_class": "yes", "slices": [],
                      "minimums": {}, "kpis": ["roc_auc", "accuracy"]},
       "features": {"derived": [], "exclude": []}}  # fmt: skip


def run_prepare(tmp: Path, frame: pd.DataFrame, parts: int, update: dict, client) -> dict:
    write_parts(tmp / "data/raw/snapshot.parquet", frame, parts)
    p = params(merge(OBJ, update))
    prepare_stage.execute(p, Engine(p.engine, print, client))
    return json.loads((tmp / "metrics/prepare.json").read_text())


def hashes(path: Path) -> list[int]:
    return sorted(row_hash(pd.read_parquet(path)).tolist())


BY_SOURCE = {"prepare": {"split": {"method": "by_source", "train_sources": ["adult_train"],
             "test_sources": ["adult_test"]},
             "outliers": {"method": "zscore", "zscore": 4.0}}}  # fmt: skip


def target_summary(target: pd.Series, obj: config.Objectives) -> dict:
    return tasks.get(obj.task).target_summary(target, obj.positive_class)


def local_files(frame: pd.DataFrame, p: config.Params):
    """What the local stage writes: the prepared frames, prepare.json and data_profile.json."""
    local = prepare(frame, p.prepare, p.objectives)
    obj = p.objectives
    report = {
        **local.report,
        "train": {"rows_split": local.report["split"]["train_rows"], "rows": len(local.train),
                  **target_summary(local.train[obj.target], obj)},
        "test": {"rows": len(local.test), **target_summary(local.test[obj.target], obj)},
    }  # fmt: skip
    return local, report, data_profile(local.train, p.monitor.bins)


def same_rows(path: Path, frame: pd.DataFrame) -> bool:
    """The data set at ``path`` holds exactly ``frame``'s rows (in any order)."""
    written = pd.read_parquet(path)
    return hashes(path) == sorted(row_hash(frame.astype(written.dtypes.to_dict())).tolist())


def without_quantiles(profile: dict) -> dict:
    return {**profile, "features": {k: {**v, "quantiles": None} for k, v in
                                    profile["features"].items()}}  # fmt: skip


def keys(doc: object) -> object:
    """The nested key structure of a JSON document (values left out)."""
    if isinstance(doc, dict):
        return {k: keys(v) for k, v in doc.items()}
    return None


@pytest.mark.parametrize(
    ("outliers", "partition_rows"),
    [({"method": "zscore", "zscore": 4.0}, 1_000_000), ({"method": "iqr", "iqr_k": 1.5}, 700)],
)
def test_by_source_matches_the_local_engine(
    tmp_path, monkeypatch, dask_local_client, outliers: dict, partition_rows: int
) -> None:
    """The same rows on each side after the same removals, the same prepare.json (every count
    and key) and the same profile: exactly with one training partition; with several, all but
    the numeric quantiles, which stay within 1 % of the value range."""
    monkeypatch.chdir(tmp_path)
    frame = snapshot()
    update = merge(BY_SOURCE, {"prepare": {"outliers": outliers},
                               "engine": {"partition_rows": partition_rows}})  # fmt: skip
    report = run_prepare(tmp_path, frame, 3, update, dask_local_client)
    local, local_report, local_profile = local_files(frame, params(merge(OBJ, update)))
    assert report == local_report
    assert local_report["train_removed"]["duplicates"] > 0
    assert local_report["train_removed"]["matching_test"] > 0
    assert local_report["train_removed"]["conflicting_labels"] > 0
    assert local_report["train_removed"]["outliers"] > 0
    assert same_rows(tmp_path / "data/prepared/train.parquet", local.train)
    assert same_rows(tmp_path / "data/prepared/test.parquet", local.test)
    profile = json.loads((tmp_path / "metrics/data_profile.json").read_text())
    parts = len(list((tmp_path / "data/prepared/train.parquet").glob("*.parquet")))
    if parts == 1:
        assert profile == local_profile
    else:
        assert without_quantiles(profile) == without_quantiles(local_profile)
        for name, feature in profile["features"].items():
            if feature["kind"] == "numeric":  # the CDFs they describe agree to 0.5 % of rows
                ref = local_profile["features"][name]["quantiles"]
                assert len(feature["quantiles"]) == len(ref)
                assert _ecdf_distance(np.array(feature["quantiles"]), np.array(ref)) <= 0.005


def test_random_split_report_and_profile_have_the_local_format(
    tmp_path, monkeypatch, dask_local_client
) -> None:
    """A hash split is not the local engine's random draw, but its prepare.json has the same
    keys and its profile the same structure and binning rules."""
    monkeypatch.chdir(tmp_path)
    update = {"prepare": {"split": {"method": "random", "test_size": 0.3},
                          "outliers": {"method": "isolation_forest",
                                       "contamination": 0.02}}}  # fmt: skip
    frame = snapshot()
    report = run_prepare(tmp_path, frame, 2, update, dask_local_client)
    _, local_report, local_profile = local_files(frame, params(merge(OBJ, update)))
    assert keys(report) == keys(local_report)
    assert report["clean"] == local_report["clean"]
    assert (report["split"]["duplicates_dropped_before_split"]
            == local_report["split"]["duplicates_dropped_before_split"])  # fmt: skip
    removed = report["train_removed"]["outliers"]
    assert 0.01 * report["split"]["train_rows"] < removed < 0.04 * report["split"]["train_rows"]
    profile = json.loads((tmp_path / "metrics/data_profile.json").read_text())
    assert keys(profile) == keys(local_profile)
    for name, feature in profile["features"].items():
        ref = local_profile["features"][name]
        assert feature["kind"] == ref["kind"]
        assert len(feature["counts"]) == len(ref["counts"])
        assert sum(feature["counts"] if feature["kind"] == "numeric" else
                   feature["counts"].values()) == feature["rows"] - feature["missing"]  # fmt: skip


def test_stratified_split_is_exact_per_class(tmp_path, monkeypatch, dask_local_client) -> None:
    """Each class sends round(test_size x its rows) to test."""
    monkeypatch.chdir(tmp_path)
    frame = snapshot()
    frame["label"] = np.where(np.arange(len(frame)) % 10 == 0, "yes", frame["label"])
    frame.loc[frame.index % 7 == 0, "label"] = "maybe"
    update = {"objectives": {"task": "multiclass_classification", "positive_class": None,
                             "primary_metric": "f1_macro", "kpis": ["f1_macro"],
                             "minimums": None, "threshold": None},
              "prepare": {"split": {"method": "stratified", "test_size": 0.2}}}  # fmt: skip
    report = run_prepare(tmp_path, frame, 4, update, dask_local_client)
    # the rows split: the labelled rows without duplicates (the test split is never filtered)
    split = frame.drop(columns=[SOURCE_COLUMN]).drop_duplicates()
    assert report["split"]["train_rows"] + report["split"]["test_rows"] == len(split)
    test = pd.read_parquet(tmp_path / "data/prepared/test.parquet")["label"]
    expected = {k: round(0.2 * n) for k, n in split["label"].value_counts().items()}
    assert test.value_counts().to_dict() == expected


def test_time_split_matches_the_local_engine(tmp_path, monkeypatch, dask_local_client) -> None:
    """The time cut is an exact order statistic: the local engine's boundary, ties included,
    with dates given as text."""
    monkeypatch.chdir(tmp_path)
    frame = snapshot()
    days = np.random.default_rng(1).integers(0, 200, len(frame))
    frame["when"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(days, unit="D")).strftime(
        "%Y-%m-%d")  # fmt: skip
    update = {"prepare": {"split": {"method": "time", "time_column": "when", "test_size": 0.3}}}
    report = run_prepare(tmp_path, frame, 3, update, dask_local_client)
    local, local_report, _ = local_files(frame, params(merge(OBJ, update)))
    assert report == local_report
    assert same_rows(tmp_path / "data/prepared/test.parquet", local.test)
    assert same_rows(tmp_path / "data/prepared/train.parquet", local.train)


REGRESSION = {"objectives": {"task": "regression", "target": "size", "positive_class": None,
                             "primary_metric": "rmse", "kpis": ["rmse"], "minimums": None,
                             "threshold": None, "minimum": 1.0},
              "train": {"candidates": ["xgboost"], "baseline": None},
              "prepare": {"split": {"method": "random"}}}  # fmt: skip


def test_regression_target_is_checked_over_all_partitions(
    tmp_path, monkeypatch, dask_local_client
) -> None:
    """A regression target's bad values are counted over every partition, as locally; a good
    one gives the local engine's report keys."""
    frame = snapshot()
    frame["w"] = np.random.default_rng(2).normal(size=len(frame))  # distinct feature vectors
    frame["size"] = frame["size"].astype(str)
    frame.loc[[5, 2500, 3900], "size"] = "big"
    (tmp_path / "bad").mkdir()
    monkeypatch.chdir(tmp_path / "bad")
    with pytest.raises(PrepareError, match=r"'size' is not numeric: 3 of 4060 values"):
        run_prepare(tmp_path / "bad", frame, 3, REGRESSION, dask_local_client)
    frame.loc[[5, 2500, 3900], "size"] = "7.5"
    monkeypatch.chdir(tmp_path)
    report = run_prepare(tmp_path, frame, 3, REGRESSION, dask_local_client)
    _, local_report, _ = local_files(frame, params(merge(OBJ, REGRESSION)))
    assert keys(report) == keys(local_report)
    assert report["clean"] == local_report["clean"]


def test_order_statistics_are_exact(dask_local_client, monkeypatch) -> None:
    """Quantiles from the partitioned search equal numpy's (and pandas'), bit for bit, with
    ties, negative numbers and few rows fetched (so the histogram passes run)."""
    import dask.dataframe as dd

    from mlcycle.engines.dask import prepare as engine

    monkeypatch.setattr(engine, "COLLECT_ROWS", 100)
    rng = np.random.default_rng(3)
    values = np.concatenate([np.zeros(3000), rng.normal(0, 1e6, 5000), rng.integers(-3, 3, 2000)])
    frame = dd.from_pandas(pd.DataFrame({"v": rng.permutation(values)}), npartitions=6)
    qs = (0.0, 0.01, 0.25, 0.5, 0.75, 0.999, 1.0)
    stats = engine.order_statistics(
        frame, {"v": functools.partial(engine._float_values, column="v")},
        lambda _name, n: engine.quantile_ranks(n, qs), what="the quantiles of v",
    )  # fmt: skip
    n, found = stats["v"]
    assert n == len(values)
    assert [engine.linear_quantile(n, q, found) for q in qs] == list(np.quantile(values, qs))


@pytest.mark.parametrize("method", ["random", "stratified", "group"])
def test_the_split_ignores_partitioning_and_order(tmp_path, monkeypatch, dask_local_client,
                                                  method: str) -> None:  # fmt: skip
    frame = snapshot()
    update = {"prepare": {"split": {"method": method, "test_size": 0.3, "group_column": "x"}}}
    results = []
    for i, (parts, order) in enumerate([(1, 0), (5, 1)]):
        d = tmp_path / str(i)
        d.mkdir()
        monkeypatch.chdir(d)
        shuffled = frame.sample(frac=1, random_state=order)
        report = run_prepare(d, shuffled, parts, update, dask_local_client)
        results.append((report, hashes(d / "data/prepared/test.parquet")))
    assert results[0] == results[1]
    share = results[0][0]["split"]["test_rows"] / sum(
        results[0][0]["split"][k] for k in ("train_rows", "test_rows")
    )
    assert 0.2 < share < 0.4
    if method == "group":
        test = pd.read_parquet(tmp_path / "0/data/prepared/test.parquet")
        train = pd.read_parquet(tmp_path / "0/data/prepared/train.parquet")
        assert not set(test["x"]) & set(train["x"])


def test_train_is_reproducible_and_loads(tmp_path, monkeypatch, dask_local_client) -> None:
    """Tuning trials in batches on the workers: the same trials, scores and model bytes on a
    rerun; the model loads and predicts; scikit-learn is skipped above its row limit."""
    from mlcycle.models import load_model_dir

    monkeypatch.chdir(tmp_path)
    frame = snapshot(3000)
    run_prepare(tmp_path, frame, 3, {"prepare": {"split": {"method": "stratified"}}},
                dask_local_client)  # fmt: skip
    update = merge(OBJ, {"train": {"candidates": ["xgboost", "logistic_regression"],
                         "tuning": {"trials": 5}}, "engine": {"sklearn_max_rows": 10}})  # fmt: skip
    runs = []
    for _ in range(2):
        p = params(update)
        train_stage.execute(p, Engine(p.engine, print, dask_local_client))
        runs.append(
            (
                (tmp_path / "models/train/model.ubj").read_bytes(),
                [line.split(",")[:5] for line in
                 (tmp_path / "metrics/tuning/trials.csv").read_text().splitlines()],
            )
        )  # fmt: skip
    assert runs[0] == runs[1]
    trials = runs[0][1]
    assert len(trials) == 1 + 6 and {t[0] for t in trials[1:]} == {"xgboost"}
    model, _ = load_model_dir(tmp_path / "models/train")
    from mlcycle.features import Signature, to_model_frame

    sig = Signature.from_dict(json.loads((tmp_path / "models/train/signature.json").read_text()))
    out = model.output(to_model_frame(frame.head(20), sig))
    assert out.shape == (20, 2) and np.allclose(out.sum(axis=1), 1)


def test_a_sample_of_a_hash_split_is_unbiased(tmp_path, monkeypatch, dask_local_client) -> None:
    """The split and a later sample (the signature's, the profile's) use different hashes of
    the same rows with the same seed: the sample is the share it asks for."""
    from mlcycle.datasets import sample_dataset

    monkeypatch.chdir(tmp_path)
    update = {"prepare": {"split": {"method": "random", "test_size": 0.3, "seed": 42}}}
    run_prepare(tmp_path, snapshot(), 2, update, dask_local_client)
    train = tmp_path / "data/prepared/train.parquet"
    rows = dataset_rows(train)
    got = len(sample_dataset(train, rows // 5, seed=42))
    assert 0.8 * rows / 5 < got < 1.2 * rows / 5

"""The Dask engine's prepare and train stages, called in a temporary folder on a real
LocalCluster: the same preparation as the local engine, a split that ignores partitioning, and
a reproducible model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcycle import config
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.engines import dataset_rows, row_hash
from mlcycle.prepare import prepare
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
    from mlcycle.engines.prepare import main_dask

    write_parts(tmp / "data/raw/snapshot.parquet", frame, parts)
    main_dask(params(merge(OBJ, update)), client)
    return json.loads((tmp / "metrics/prepare.json").read_text())


def hashes(path: Path) -> list[int]:
    return sorted(row_hash(pd.read_parquet(path)).tolist())


BY_SOURCE = {"prepare": {"split": {"method": "by_source", "train_sources": ["adult_train"],
             "test_sources": ["adult_test"]},
             "outliers": {"method": "zscore", "zscore": 4.0}}}  # fmt: skip


def test_by_source_matches_the_local_engine(tmp_path, monkeypatch, dask_local_client) -> None:
    monkeypatch.chdir(tmp_path)
    frame = snapshot()
    report = run_prepare(tmp_path, frame, 3, BY_SOURCE, dask_local_client)
    p = params(merge(OBJ, BY_SOURCE))
    local = prepare(frame, p.prepare, p.objectives)
    assert report["train_removed"]["duplicates"] == local.report["train_removed"]["duplicates"]
    assert report["train_removed"] == local.report["train_removed"]
    assert report["clean"] == local.report["clean"]
    assert report["split"] == local.report["split"]
    assert hashes(tmp_path / "data/prepared/train.parquet") == sorted(
        row_hash(local.train.astype(pd.read_parquet(tmp_path / "data/prepared/train.parquet")
                 .dtypes.to_dict())).tolist()
    )  # fmt: skip
    assert dataset_rows(tmp_path / "data/prepared/test.parquet") == len(local.test)


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
    from mlcycle.engines.train import main_dask
    from mlcycle.models import load_model_dir

    monkeypatch.chdir(tmp_path)
    frame = snapshot(3000)
    run_prepare(tmp_path, frame, 3, {"prepare": {"split": {"method": "stratified"}}},
                dask_local_client)  # fmt: skip
    update = merge(OBJ, {"train": {"candidates": ["xgboost", "logistic_regression"],
                         "tuning": {"trials": 5}}, "engine": {"sklearn_max_rows": 10}})  # fmt: skip
    runs = []
    for _ in range(2):
        main_dask(params(update), dask_local_client)
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
    from mlcycle.engines import sample_dataset

    monkeypatch.chdir(tmp_path)
    update = {"prepare": {"split": {"method": "random", "test_size": 0.3, "seed": 42}}}
    run_prepare(tmp_path, snapshot(), 2, update, dask_local_client)
    train = tmp_path / "data/prepared/train.parquet"
    rows = dataset_rows(train)
    got = len(sample_dataset(train, rows // 5, seed=42))
    assert 0.8 * rows / 5 < got < 1.2 * rows / 5

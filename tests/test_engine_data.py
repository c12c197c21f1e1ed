"""The Dask engine's gather and validate: the same data and the same findings as the local
engine, on a real LocalCluster and on a real scheduler with two workers."""

from __future__ import annotations

import json
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mlcycle.engines import read_dataset, row_hash
from mlcycle.engines.validate import check_dataset
from mlcycle.schema import check, parse_schema
from tests.conftest import make_project, run, set_params

COLOURS = ["red", "green", "blue", "teal", "pink"]
SCHEMA = parse_schema(
    {
        "target": "label",
        "columns": {
            "age": {"type": "integer", "min": 0, "max": 120, "nullable": False},
            "colour": {"type": "category", "categories": ["red", "green", "blue"]},
            "score": {"type": "float", "max_null_rate": 0.05},
            "gone": {"type": "float"},
            "label": {"type": "category", "values": ["yes", "no"]},
        },
    }
)


def messy(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Rows breaking every rule: out of range, unseen categories, too many nulls, bad types,
    bad target values, an extra column, a missing column, duplicates far apart."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "age": rng.integers(0, 100, n).astype(object),
            "colour": rng.choice(COLOURS, n, p=[0.3, 0.3, 0.3, 0.06, 0.04]),
            "score": np.where(rng.uniform(size=n) < 0.1, np.nan, rng.normal(size=n)),
            "label": rng.choice(["yes", "no", "maybe"], n, p=[0.45, 0.5, 0.05]),
            "extra": rng.integers(0, 5, n),
        }
    )  # fmt: skip
    df.loc[df.index % 97 == 0, "age"] = 150
    df.loc[df.index % 211 == 0, "age"] = "old"
    df.loc[df.index % 301 == 0, "age"] = None
    df["age"] = df["age"].astype(str).where(df["age"].notna(), None)
    dups = df.iloc[[5, 17, 1200]].copy()
    df = pd.concat([df, dups, df.iloc[[5]]], ignore_index=True)
    df["_source"] = np.where(df.index % 2 == 0, "a", "b")
    return df


@pytest.mark.parametrize("partitions", [1, 4, 7])
def test_findings_equal_the_local_engine(dask_local_client, partitions: int) -> None:
    frame = messy()
    local = check(frame, SCHEMA, severity={"duplicate_rows": "warning"}, examples=4)
    kinds = {f.kind for f in local}
    assert kinds >= {"missing_column", "extra_column", "type", "null_rate", "out_of_range",
                     "unseen_category", "target_values", "duplicate_rows"}  # fmt: skip
    ddf = dd.from_pandas(frame, npartitions=partitions, sort=False)
    found, rows = check_dataset(ddf, SCHEMA, severity={"duplicate_rows": "warning"}, examples=4)
    assert rows == len(frame)
    assert [f.as_dict() for f in found] == [f.as_dict() for f in local]


def test_row_hash_ignores_partitioning_and_index() -> None:
    frame = messy(2000)
    whole = row_hash(frame, 3).to_numpy()
    shuffled = frame.sample(frac=1, random_state=1)
    again = pd.Series(row_hash(shuffled, 3).to_numpy(), index=shuffled.index).sort_index()
    assert (again.to_numpy() == whole).all()
    assert not (row_hash(frame, 4).to_numpy() == whole).all()


def _csv_parts(folder: Path, frame: pd.DataFrame, parts: int) -> None:
    folder.mkdir(parents=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(frame)), parts)):
        frame.iloc[chunk].to_csv(folder / f"part{i}.csv", index=False)


def test_gather_reads_globs_in_any_order_to_the_same_snapshot(
    tmp_path: Path, dask_scheduler: str
) -> None:
    """A glob of CSV files on a real cluster: the same rows as the local engine, and the same
    parts when the rows arrive in another order and other files."""
    frame = pd.read_csv(Path(__file__).parents[1] / "data/external/adult/adult.data.gz",
                        header=None, skipinitialspace=True, na_values=["?"]).head(4000)  # fmt: skip
    columns = yaml_columns()
    frame.columns = columns
    snapshots = []
    for i, (order_seed, parts) in enumerate([(0, 3), (1, 5)]):
        project = make_project(tmp_path / f"p{i}")
        shuffled = frame.sample(frac=1, random_state=order_seed)
        _csv_parts(project / "data/external/csv", shuffled, parts)
        source = {"name": "csv", "kind": "file", "path": "data/external/csv/*.csv",
                  "format": "csv"}  # fmt: skip
        set_params(project, {
            "data": {"sources": [source]},
            "prepare": {"split": {"method": "stratified"}},
            "engine": {"kind": "dask", "scheduler": dask_scheduler, "partition_rows": 1000},
        })  # fmt: skip
        out = run(["dvc", "repro", "validate"], project)
        assert "4000 rows in" in out.stderr
        snapshots.append(project / "data/raw/snapshot.parquet")
        gather = json.loads((project / "metrics/gather.json").read_text())
        assert gather["rows"] == 4000 and len(gather["sources"][0]["files"]) == parts
    assert snapshots[0].is_dir() and len(list(snapshots[0].glob("part-*.parquet"))) == 4
    for a, b in zip(sorted(snapshots[0].iterdir()), sorted(snapshots[1].iterdir()), strict=True):
        assert pd.read_parquet(a).equals(pd.read_parquet(b)), a.name
    got = read_dataset(snapshots[0]).compute()
    assert sorted(row_hash(got.drop(columns="_source")).tolist()) == sorted(
        row_hash(frame.astype(got.drop(columns="_source").dtypes.to_dict())).tolist()
    )


def yaml_columns() -> list[str]:
    import yaml

    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    return params["data"]["columns"]


def test_a_corrupt_file_names_the_file(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", {"engine": {"kind": "dask", "dashboard": ":0"}})
    folder = project / "data/external/gz"
    folder.mkdir()
    (folder / "good.csv.gz").write_bytes(__import__("gzip").compress(b"a,b,income\n1,2,>50K\n"))
    (folder / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    set_params(project, {"data": {"sources": [{"name": "gz", "kind": "file",
               "path": "data/external/gz/*.csv.gz", "format": "csv"}]},
               "prepare": {"split": {"method": "stratified"}}})  # fmt: skip
    out = run(["dvc", "repro", "gather"], project, check=False)
    assert out.returncode != 0
    assert "broken.csv.gz is not valid gzip" in out.stderr
    assert not (project / "data/raw/snapshot.parquet").exists()


@pytest.mark.parametrize("seed", [0, 1, 42, 2**40 + 3])
def test_row_hashes_are_uniform_for_every_seed(seed: int) -> None:
    """The split and the folds rely on hashes uniform in [0, 1) (pandas' keyed hash is not for
    some keys: seed 42 once put no row under 0.3)."""
    from mlcycle.engines import unit_interval

    counts = np.histogram(unit_interval(row_hash(messy(20_000), seed)), bins=10, range=(0, 1))[0]
    assert counts.min() > 0.9 * 2_000 and counts.max() < 1.1 * 2_000, counts

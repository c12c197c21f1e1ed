"""The Dask engine's gather and validate: the same data and the same findings as the local
engine, on a real LocalCluster and on a real scheduler with two workers."""

from __future__ import annotations

import json
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest

from mlcycle import config
from mlcycle.datasets import row_hash
from mlcycle.engines import Engine
from mlcycle.engines.dask.data import read_dataset
from mlcycle.engines.dask.validate import check_dataset, dataset_classes
from mlcycle.preflight import class_counts
from mlcycle.schema import parse_schema
from mlcycle.schema.findings import check
from mlcycle.sources import SourceError
from mlcycle.stages import gather as gather_stage
from mlcycle.stages import validate as validate_stage
from tests.conftest import ROOT, make_project, run, set_params
from tests.test_validate import leaky_workdir

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


def gather_dask(client) -> None:
    """The gather stage on the Dask engine, with params.yaml in the working directory."""
    params = config.load()
    gather_stage.execute(params, Engine(params.engine, print, client))


def validate_dask(client) -> None:
    """The validate stage on the Dask engine, with params.yaml in the working directory."""
    params = config.load()
    validate_stage.execute(params, Engine(params.engine, print, client))


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
    # 60 % of source b's colours missing: 30 % of the snapshot, under the limit of 50 %.
    df.loc[(df.index % 2 == 1) & (df.index % 10 < 6), "colour"] = None
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
    [nulls] = [f for f in found if f.kind == "null_rate" and f.column == "colour"]
    assert nulls.over == ("b",)  # counted per source in each partition, then merged
    classes = dataset_classes(ddf, "label")  # rows per source and class, for train.cv_folds
    assert classes == class_counts(frame, "label") and classes[("a", "maybe")] > 0


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


@pytest.mark.dvc
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
    digests = [json.loads((s.parents[2] / "metrics/gather.json").read_text()) for s in snapshots]
    assert digests[0]["snapshot_sha256"] == digests[1]["snapshot_sha256"]  # byte for byte
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


@pytest.mark.parametrize("seed", [0, 1, 42, 2**40 + 3])
def test_row_hashes_are_uniform_for_every_seed(seed: int) -> None:
    """The split and the folds rely on hashes uniform in [0, 1) (pandas' keyed hash is not for
    some keys: seed 42 once put no row under 0.3)."""
    from mlcycle.datasets import unit_interval

    counts = np.histogram(unit_interval(row_hash(messy(20_000), seed)), bins=10, range=(0, 1))[0]
    assert counts.min() > 0.9 * 2_000 and counts.max() < 1.1 * 2_000, counts


# --- gather: the same snapshot as the local engine ------------------------------------------


def workdir(folder: Path, sources: list[dict], update: dict | None = None) -> Path:
    """A folder holding the project's params.yaml (with ``sources``) and schema.yaml, where
    the stages' main functions can run directly."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("params.yaml", "schema.yaml"):
        (folder / name).write_text((ROOT / name).read_text())
    split = {"prepare": {"split": {"method": "stratified"}}}
    set_params(folder, {"data": {"sources": sources}, **split, **(update or {})})
    return folder


def gather_both(folder: Path, client, monkeypatch) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """Gather ``folder``'s sources with the local engine, then with the Dask engine: both
    snapshots (rows sorted) and both metrics/gather.json."""
    import shutil

    monkeypatch.chdir(folder)
    gather_stage.main()
    local = pd.read_parquet("data/raw/snapshot.parquet")
    local_doc = json.loads(Path("metrics/gather.json").read_text())
    Path("data/raw/snapshot.parquet").unlink()
    shutil.rmtree("data/quarantine", ignore_errors=True)
    gather_dask(client)
    assert Path("data/raw/snapshot.parquet").is_dir()
    dask = pd.read_parquet("data/raw/snapshot.parquet")
    dask_doc = json.loads(Path("metrics/gather.json").read_text())
    return _sorted(local), _sorted(dask), local_doc, dask_doc


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    keys = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return frame.iloc[np.argsort(keys, kind="stable")].reset_index(drop=True)


def adult_rows(n: int) -> pd.DataFrame:
    frame = pd.read_csv(ROOT / "data/external/adult/adult.data.gz", header=None,
                        skipinitialspace=True, na_values=["?"], nrows=n)  # fmt: skip
    frame.columns = yaml_columns()
    return frame


def _write_cases(folder: Path) -> dict[str, list[dict]]:
    """Sources that exercise what gather must agree on: file options, folders of Parquet
    parts, a column of numbers in one source and text in another, files whose column is all
    missing, databases and landing folders."""
    import gzip
    import sqlite3

    data = folder / "in"
    data.mkdir(parents=True)
    adult = adult_rows(600)
    # CSV without a header, ';'-delimited, gzip, two junk lines, '?' for missing, a value_map.
    for i, rows in enumerate(np.array_split(np.arange(len(adult)), 3)):
        text = "junk line\nmore junk\n" + adult.iloc[rows].to_csv(
            sep=";", header=False, index=False, na_rep="?"
        )
        (data / f"adult-{i}.csv.gz").write_bytes(gzip.compress(text.encode()))
    # A folder of Parquet parts (and a glob of them), one JSON Lines file per part.
    (data / "parts").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(adult)), 4)):
        adult.iloc[rows].to_parquet(data / "parts" / f"part-{i:05d}.parquet", index=False)
        adult.iloc[rows].to_json(data / f"rows-{i}.jsonl", orient="records", lines=True)
    # age as text in one source (numbers elsewhere); a file with columns all missing.
    text_age = adult.head(50).astype({"age": str})
    text_age.loc[3, "age"] = "forty"
    text_age.to_csv(data / "text_age.csv", index=False)
    nulls = adult.iloc[50:60].copy()
    nulls[["capital-gain", "workclass"]] = None
    nulls.to_json(data / "rows-9.jsonl", orient="records", lines=True)
    with sqlite3.connect(data / "db.sqlite") as conn:
        adult.iloc[100:200].to_sql("people", conn, index=False)
    (data / "landing").mkdir()
    adult.iloc[200:260].to_csv(data / "landing/a.csv", index=False)
    adult.iloc[260:300].to_json(data / "landing/b.jsonl", orient="records", lines=True)
    (data / "landing/broken.csv").write_text("age,workclass\n1,2,3\n")
    columns = yaml_columns()
    csv_gz = {"name": "gz", "kind": "file", "path": "in/adult-*.csv.gz", "format": "csv",
              "header": False, "columns": columns, "delimiter": ";", "skip_rows": 2,
              "na_values": ["?"], "value_map": {"income": {">50K": "rich", "poor": "<=50K"},
                                                "age": {"90": None}}}  # fmt: skip
    return {
        "csv_options": [csv_gz],
        "parquet_glob_and_text": [
            {"name": "pq", "kind": "file", "path": "in/parts/part-*.parquet", "format": "parquet"},
            {"name": "text", "kind": "file", "path": "in/text_age.csv", "format": "csv"},
        ],
        "jsonl_with_a_missing_column": [
            {"name": "js", "kind": "file", "path": "in/rows-*.jsonl", "format": "jsonl"}
        ],
        "database_and_landing": [
            {"name": "db", "kind": "database", "url": "in/db.sqlite", "table": "people"},
            {"name": "drop", "kind": "landing", "path": "in/landing"},
            csv_gz,
        ],
    }


CASES = ("csv_options", "parquet_glob_and_text",
         "jsonl_with_a_missing_column", "database_and_landing")  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_gather_matches_the_local_engine(
    case: str, tmp_path: Path, dask_local_client, monkeypatch, capsys
) -> None:
    """The same rows, types and lineage as the local engine, for every kind of source."""
    sources = _write_cases(tmp_path)[case]
    workdir(tmp_path, sources)
    local, dask, local_doc, dask_doc = gather_both(tmp_path, dask_local_client, monkeypatch)
    pd.testing.assert_frame_equal(dask, local)
    assert local_doc.pop("snapshot_sha256") != dask_doc.pop("snapshot_sha256")  # file vs parts
    assert dask_doc == local_doc
    if case == "csv_options":  # the rows each value_map entry recoded, added up over files
        recoded = dask_doc["sources"][0]["value_map"]
        assert recoded["income"]["poor"] == 0 and recoded["income"][">50K"] > 0
        warning = (
            "source 'gz': value_map income: 'poor' matches no value of column 'income'; nothing "
            "was recoded (check the spelling and the column's type)"
        )
        assert dask_doc["warnings"] == [warning]
        assert capsys.readouterr().err.count(f"[gather] warning: {warning}\n") == 2  # each engine
    if case == "parquet_glob_and_text":
        assert dask_doc["read_as_text"] == {"age": {"pq": "number", "text": "text"}}
        assert "forty" in set(dask["age"])
    if case == "database_and_landing":
        assert (tmp_path / "data/quarantine/drop/broken.csv").is_file()


def test_a_folder_of_parquet_parts_is_one_source(
    tmp_path: Path, dask_local_client, monkeypatch
) -> None:
    """A folder source is the glob of its parts: the same rows as the local engine reads
    from the glob, each part in the lineage."""
    _write_cases(tmp_path)
    glob = {"name": "pq", "kind": "file", "path": "in/parts/*.parquet", "format": "parquet"}
    workdir(tmp_path, [glob])
    monkeypatch.chdir(tmp_path)
    gather_stage.main()
    local = _sorted(pd.read_parquet("data/raw/snapshot.parquet"))
    Path("data/raw/snapshot.parquet").unlink()
    workdir(tmp_path, [{**glob, "path": "in/parts"}], {"engine": {"partition_rows": 250}})
    gather_dask(dask_local_client)
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet("data/raw/snapshot.parquet")), local)
    doc = json.loads(Path("metrics/gather.json").read_text())
    files = doc["sources"][0]["files"]
    assert [f["file"] for f in files] == [f"in/parts/part-{i:05d}.parquet" for i in range(4)]
    assert sum(f["rows"] for f in files) == doc["rows"] == 600
    assert len(list(Path("data/raw/snapshot.parquet").glob("part-*.parquet"))) == 3


def test_a_corrupt_file_names_the_file(tmp_path: Path, dask_local_client, monkeypatch) -> None:
    import gzip

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.csv.gz").write_bytes(gzip.compress(b"a,b,income\n1,2,>50K\n"))
    (folder / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08not really gzip")
    workdir(tmp_path, [{"name": "gz", "kind": "file", "path": "in/*.csv.gz", "format": "csv"}])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"'gz': in/broken.csv.gz is not valid gzip"):
        gather_dask(dask_local_client)
    assert not Path("data/raw/snapshot.parquet").exists()


def test_a_changed_source_fails_its_checksum(tmp_path: Path, dask_local_client, monkeypatch):
    _write_cases(tmp_path)
    source = {"name": "js", "kind": "file", "path": "in/rows-*.jsonl", "format": "jsonl",
              "sha256": "0" * 64}  # fmt: skip
    workdir(tmp_path, [source])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"the files matching 'in/rows-\*.jsonl' \(combined\)"):
        gather_dask(dask_local_client)


# --- validate: both engines read both layouts, with the same findings -------------------------


def test_both_engines_validate_both_layouts_alike(
    tmp_path: Path, dask_local_client, monkeypatch
) -> None:
    """Local validate of a Dask snapshot (a folder) and Dask validate of a local snapshot (a
    file) write the same report as each engine on its own layout, findings included."""
    adult = adult_rows(800)
    adult.loc[::37, "age"] = 200  # out of range
    adult.loc[::53, "workclass"] = "Space-agency"  # unseen category
    adult.loc[::71, "income"] = "maybe"  # bad target values
    adult = pd.concat([adult, adult.iloc[[3, 500]]], ignore_index=True)  # duplicates
    (tmp_path / "in").mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(adult)), 3)):
        adult.iloc[rows].to_csv(tmp_path / f"in/part{i}.csv", index=False)
    workdir(tmp_path, [{"name": "csv", "kind": "file", "path": "in/*.csv", "format": "csv"}],
            {"engine": {"partition_rows": 300}})  # fmt: skip
    monkeypatch.chdir(tmp_path)
    snapshot = Path("data/raw/snapshot.parquet")
    reports = {}
    for gather in ("local", "dask"):
        if snapshot.is_dir():
            __import__("shutil").rmtree(snapshot)
        if gather == "local":
            gather_stage.main()
        else:
            gather_dask(dask_local_client)
        for engine in ("local", "dask"):
            with pytest.raises(validate_stage.ValidationFailed, match="out_of_range|maybe"):
                if engine == "local":
                    validate_stage.main()
                else:
                    validate_dask(dask_local_client)
            reports[gather, engine] = Path("reports/validation.json").read_text()
    for gather in ("local", "dask"):
        assert reports[gather, "local"] == reports[gather, "dask"], gather
    # The two snapshots hold the same rows in another order: the same findings but for the
    # example row numbers.
    docs = [json.loads(reports[g, "dask"]) for g in ("local", "dask")]
    counts = [[(f["kind"], f["column"], f["rows"]) for f in d["findings"]] for d in docs]
    assert counts[0] == counts[1]
    kinds = {f["kind"] for f in docs[1]["findings"]}
    assert kinds >= {"out_of_range", "unseen_category", "target_values", "duplicate_rows"}


def test_validate_on_dask_says_the_leaks_the_local_engine_says(
    tmp_path: Path, dask_local_client, monkeypatch
) -> None:
    """The leak check runs on the Dask engine too, on the sample the settings check uses (here
    the whole snapshot, padded with rows of target values alone, which it leaves out)."""
    leaky_workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    validate_stage.main()
    local = json.loads(Path("metrics/validation.json").read_text())["leaks"]
    validate_dask(dask_local_client)
    assert json.loads(Path("metrics/validation.json").read_text())["leaks"] == local
    assert [k["column"] for k in local] == ["status"]

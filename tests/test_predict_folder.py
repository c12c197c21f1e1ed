"""`mlcycle predict IN OUT/`: batch prediction into a folder of Parquet parts.

Driven through the command (tests/conftest.py's ``cli``) with the bundle of a project built by
`dvc repro`: the parts hold exactly the rows, columns and types of the single-file Parquet output,
``--part-rows`` rows each; the input may be a file, a glob or a folder of parts; the folder is
replaced only at the end, and never when it holds anything but earlier parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.conftest import cli

TEST = "data/prepared/test.parquet"


@pytest.fixture(scope="module")
def inputs(small_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the sample project's test split as one file (``one.parquet``), as parts
    (``parts/``) and the single-file prediction of it (``expected.parquet``)."""
    work = tmp_path_factory.mktemp("predict-folder")
    frame = pd.read_parquet(small_project / TEST)
    frame.to_parquet(work / "one.parquet", index=False)
    (work / "parts").mkdir()
    for i, ix in enumerate(np.array_split(np.arange(len(frame)), 3)):
        frame.iloc[ix].to_parquet(work / "parts" / f"part-{i:05d}.parquet", index=False)
    (work / "bundle").symlink_to(small_project / "models/bundle")
    done = cli(work, "predict", "one.parquet", "expected.parquet", "--bundle", "bundle",
               "--quiet", check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return work


def parts_of(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def assert_same_as_expected(work: Path, folder: Path) -> None:
    expected = pq.read_table(work / "expected.parquet")
    tables = [pq.read_table(p) for p in parts_of(folder)]
    for table in tables:
        assert table.schema.remove_metadata() == expected.schema.remove_metadata()
    import pyarrow as pa

    assert pa.concat_tables(tables).equals(expected.cast(tables[0].schema))


def test_a_folder_output_holds_parts_of_part_rows(inputs: Path) -> None:
    rows = pq.ParquetFile(inputs / "one.parquet").metadata.num_rows
    done = cli(inputs, "predict", "one.parquet", "out/", "--bundle", "bundle", "--quiet",
               "--part-rows", "800", "--chunk-rows", "300", check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    parts = parts_of(inputs / "out")
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(-(-rows // 800))]
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in parts]
    assert len(parts) > 2 and sizes[:-1] == [800] * (len(parts) - 1) and sum(sizes) == rows
    assert f"to {len(parts)} part(s) in out/" in done.stderr
    assert_same_as_expected(inputs, inputs / "out")


@pytest.mark.parametrize("source", ["parts", "parts/*.parquet"])
def test_a_folder_or_a_glob_of_parts_reads_as_one_input(inputs: Path, source: str) -> None:
    target = "from-" + ("folder" if source == "parts" else "glob")  # no suffix: a folder
    done = cli(inputs, "predict", source, target, "--bundle", "bundle", "--quiet",
               "--chunk-rows", "700", check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(parts_of(inputs / target)) == 1  # fewer rows than the default part size
    assert_same_as_expected(inputs, inputs / target)
    single = cli(inputs, "predict", source, f"{target}.parquet", "--bundle", "bundle",
                 "--quiet", check=False)  # fmt: skip
    assert single.returncode == 0, single.stderr
    assert pq.read_table(inputs / f"{target}.parquet").equals(
        pq.read_table(inputs / "expected.parquet")
    )


def test_the_folder_is_replaced_only_when_all_is_written(inputs: Path) -> None:
    folder = inputs / "replace"
    first = cli(inputs, "predict", "one.parquet", "replace/", "--bundle", "bundle", "--quiet",
                "--part-rows", "600", check=False)  # fmt: skip
    assert first.returncode == 0, first.stderr
    before = {p.name: p.read_bytes() for p in parts_of(folder)}
    assert len(before) > 2
    # a bad value in the last input file: an error naming it, the earlier parts untouched
    bad = inputs / "bad"
    bad.mkdir()
    frame = pd.read_parquet(inputs / "one.parquet")
    frame.iloc[:100].to_parquet(bad / "a.parquet", index=False)
    broken = frame.iloc[100:200].copy()
    broken[broken.columns[0]] = broken[broken.columns[0]].astype("string") + "x"
    broken.to_parquet(bad / "b.parquet", index=False)
    failed = cli(inputs, "predict", "bad", "replace/", "--bundle", "bundle", "--quiet",
                 "--part-rows", "50", check=False)  # fmt: skip
    assert failed.returncode != 0
    assert "b.parquet" in failed.stderr
    assert {p.name: p.read_bytes() for p in parts_of(folder)} == before
    assert not [p for p in inputs.iterdir() if p.name.startswith(".replace")]  # no leftovers
    # a successful run replaces the folder: the old parts beyond the new count are gone
    again = cli(inputs, "predict", "one.parquet", "replace", "--bundle", "bundle", "--quiet",
                check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert [p.name for p in parts_of(folder)] == ["part-00000.parquet"]
    assert_same_as_expected(inputs, folder)


def test_a_folder_with_other_files_is_refused(inputs: Path) -> None:
    mine = inputs / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    done = cli(inputs, "predict", "one.parquet", "mine", "--bundle", "bundle", "--quiet",
               check=False)  # fmt: skip
    assert done.returncode != 0
    assert "holds other files (notes.txt)" in done.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

"""Dask data sets: a Parquet file or a folder of Parquet parts read as a lazy frame, and a
frame written as a folder of parts (``data/raw/snapshot.parquet``, ``data/prepared/*.parquet``
on the Dask engine). Both engines read both layouts (``pd.read_parquet`` and
``dd.read_parquet`` take either), so a project can switch engines without re-gathering."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlcycle.config import EngineConfig
from mlcycle.datasets import parquet_rows
from mlcycle.engines.base import Say
from mlcycle.engines.dask.cluster import bounded
from mlcycle.io import atomic_folder

if TYPE_CHECKING:
    import dask.dataframe as dd

PART_NAME = "part-{:05d}.parquet"


def read_dataset(path: str | Path, columns: list[str] | None = None) -> dd.DataFrame:
    """A Parquet file or a folder of Parquet parts as a lazy Dask frame, one partition per
    part (or row group)."""
    import dask.dataframe as dd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the stage that writes it")
    return dd.read_parquet(str(path), columns=columns, index=False)


def write_dataset(target: str | Path, frame: dd.DataFrame, say: Say | None = None) -> int:
    """Write ``frame`` as a folder of Parquet parts (``part-00000.parquet``...) in place of
    ``target`` (a file or folder), without an index; returns the rows written.

    The parts are written to a temporary folder beside ``target`` and renamed into place, so
    a killed run leaves the previous data set, not a half-written one.
    """
    target = Path(target)
    start = time.perf_counter()
    with atomic_folder(target) as tmp:
        bounded(f"writing {target.name}", lambda: frame.to_parquet(
            str(tmp), write_index=False, name_function=PART_NAME.format,
            write_metadata_file=False,
        ))  # fmt: skip
        rows = sum(parquet_rows(p) for p in sorted(tmp.glob("*.parquet")))
    if say:
        parts = len(list(target.glob("*.parquet")))
        say(
            f"wrote {rows} rows in {parts} part(s) -> {target} ({time.perf_counter() - start:.1f}s)"
        )
    return rows


def partitions_for(rows: int, cfg: EngineConfig) -> int:
    """The number of partitions for ``rows`` rows at ``cfg.partition_rows`` per partition."""
    return max(1, -(-rows // cfg.partition_rows))

"""The gather stage's steps: read every source into one set of rows, and write the snapshot."""

from __future__ import annotations

from pathlib import Path

from mlcycle import config
from mlcycle.engines.base import Engine, SourceSet
from mlcycle.engines.dask import gather as on_dask
from mlcycle.io import write_parquet
from mlcycle.sources import (
    SOURCE_COLUMN,
    canonical_order,
    describe,
    read_quarantining,
    type_conflicts,
    union,
)

__all__ = ["SourceSet", "read_sources", "write_snapshot"]


def read_sources(
    engine: Engine, sources: tuple[config.Source, ...], root: Path, text_columns: tuple[str, ...]
) -> SourceSet:
    """Read and verify every source (quarantining malformed landing files) and unify them."""
    if engine.client is not None:
        return on_dask.read_sources(
            engine.client, sources, root, text_columns, engine.cfg, engine.say
        )
    reads = []
    for source in sources:
        read = read_quarantining(source.with_text_columns(text_columns), root, engine.say)
        engine.say(f"{source.name}: {read.lineage['rows']} rows from {describe(source)}")
        reads.append(read)
    conflicts = type_conflicts([(r.lineage["name"], r.frame) for r in reads])
    # A canonical row order: the same rows in another order are the same snapshot.
    snapshot = canonical_order(union(reads))
    columns = [c for c in snapshot.columns if c != SOURCE_COLUMN]
    return SourceSet([r.lineage for r in reads], conflicts, columns, snapshot)


def write_snapshot(engine: Engine, read: SourceSet, path: str) -> int:
    """Write the unified sources in a canonical row order at ``path``; the rows written."""
    if engine.client is not None:
        return on_dask.write_snapshot(engine.client, read, path, engine.cfg, engine.say)
    write_parquet(path, read.rows)
    return len(read.rows)

"""Stage `gather`: read every declared source, verify it and write one snapshot.

Inputs: params `data`, `objectives.target`, `validate.schema`; the sources (files, databases,
downloads, landing folders); schema.yaml when it exists (its text columns are read as text).
The snapshot's rows are in a canonical order (by a hash of each row), so a source whose rows
arrive in another order gives the same snapshot and re-runs nothing downstream.
Outputs: data/raw/snapshot.parquet; metrics/gather.json (the lineage: rows, columns and content
hash per source, landing files taken and set aside); data/quarantine/<source>/ (malformed
landing files, each with a .reason.txt).
"""

from __future__ import annotations

from pathlib import Path

from mlcycle import config
from mlcycle.engines import dask_client
from mlcycle.engines.gather import main_dask
from mlcycle.io import sha256_file, write_json, write_parquet
from mlcycle.schema import TEXT_TYPES, load_schema
from mlcycle.sources import (
    SOURCE_COLUMN,
    SourceError,
    canonical_order,
    describe,
    quarantine_folder,
    read_source,
    type_conflicts,
    union,
    write_quarantine,
)
from mlcycle.stages import METRICS, SNAPSHOT, log, run


def text_columns(schema_path: Path) -> tuple[str, ...]:
    """The columns the schema types as text (category, string): read as text from every
    source, so an identifier such as "02134" is not turned into the number 2134. None without
    a schema yet (`mlcycle schema infer` drafts it from the first snapshot)."""
    if not schema_path.is_file():
        return ()
    return tuple(s.name for s in load_schema(schema_path).columns if s.type in TEXT_TYPES)


def main() -> None:
    params = config.load()
    root = Path.cwd()
    text = text_columns(Path(params.validate.schema))
    if params.engine.is_dask:
        with dask_client(params.engine, lambda msg: log("gather", msg)) as client:
            main_dask(params, client, text)
        return
    reads = []
    for source in params.data.sources:
        read = read_source(source.with_text_columns(text), root)
        log("gather", f"{source.name}: {read.lineage['rows']} rows from {describe(source)}")
        if source.kind == "landing":
            write_quarantine(read, quarantine_folder(root, source.name))
            for q in read.quarantined:
                log("gather", f"{source.name}: quarantined {q.file}: {q.reason}")
        reads.append(read)
    conflicts = type_conflicts([(r.lineage["name"], r.frame) for r in reads])
    for col, kinds in conflicts.items():
        held = ", ".join(f"{kind} in {name}" for name, kind in kinds.items())
        log("gather", f"column {col!r} kept as text ({held}); validate checks its values")
    # A canonical row order: the same rows in another order are the same snapshot.
    snapshot = canonical_order(union(reads))
    target = params.objectives.target
    if target not in snapshot.columns:
        raise SourceError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in snapshot.columns if c != SOURCE_COLUMN]}"
        )
    write_parquet(SNAPSHOT, snapshot)
    write_json(
        f"{METRICS}/gather.json",
        {
            "rows": len(snapshot),
            "columns": len(snapshot.columns) - 1,
            "sources": [r.lineage for r in reads],
            "snapshot_sha256": sha256_file(SNAPSHOT),
            "read_as_text": conflicts,
        },
    )
    log("gather", f"snapshot: {len(snapshot)} rows -> {SNAPSHOT}")


if __name__ == "__main__":
    run("gather", main)

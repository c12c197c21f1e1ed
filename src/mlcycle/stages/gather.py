"""Stage `gather`: read every declared source, verify it and write one snapshot.

Inputs: params `data`, `objectives.target`, `validate.schema`; the sources (files, databases,
downloads, landing folders); schema.yaml when it exists (its text columns are read as text).
The snapshot's rows are in a canonical order (by a hash of each row), so a source whose rows
arrive in another order gives the same snapshot and re-runs nothing downstream.
Outputs: data/raw/snapshot.parquet; metrics/gather.json (the lineage: rows, columns and content
hash per source, landing files taken and set aside, rows each value_map entry recoded, and
warnings, such as an entry that matched nothing); data/quarantine/<source>/ (malformed landing
files, each with a .reason.txt).
"""

from __future__ import annotations

from pathlib import Path

from mlcycle import config
from mlcycle.datasets import dataset_digest
from mlcycle.engines import Engine, open_engine
from mlcycle.engines.gather import SourceSet, read_sources, write_snapshot
from mlcycle.io import write_json
from mlcycle.schema import TEXT_TYPES, load_schema
from mlcycle.sources import SourceError
from mlcycle.stages import METRICS, SNAPSHOT, log, run


def say(message: str) -> None:
    """A progress line of the gather stage (the engine's too)."""
    log("gather", message)


def text_columns(schema_path: Path) -> tuple[str, ...]:
    """The columns the schema types as text (category, string): read as text from every
    source, so an identifier such as "02134" is not turned into the number 2134. None without
    a schema yet (`mlcycle schema infer` drafts it from the first snapshot)."""
    if not schema_path.is_file():
        return ()
    return tuple(s.name for s in load_schema(schema_path).columns if s.type in TEXT_TYPES)


def main() -> None:
    params = config.load()
    with open_engine(params.engine, say) as engine:
        execute(params, engine)


def execute(params: config.Params, engine: Engine) -> None:
    """Read every source, check the target is among its columns, write the snapshot and its
    lineage."""
    text = text_columns(Path(params.validate.schema))
    read = read_sources(engine, params.data.sources, Path.cwd(), text)
    check_target(read, params.objectives.target)
    rows = write_snapshot(engine, read, SNAPSHOT)
    write(read, rows)


def warnings(read: SourceSet) -> list[str]:
    """The sources' warnings (value_map entries that matched nothing), from their lineage."""
    return [w for entry in read.lineage for w in entry.get("warnings", [])]


def check_target(read: SourceSet, target: str) -> None:
    """Log the columns kept as text and the sources' warnings; a SourceError when the target
    is not a column."""
    for line in warnings(read):
        say(f"warning: {line}")
    for col, kinds in read.conflicts.items():
        held = ", ".join(f"{kind} in {name}" for name, kind in kinds.items())
        say(f"column {col!r} kept as text ({held}); validate checks its values")
    if target not in read.columns:
        raise SourceError(
            f"objectives.target {target!r} is not a column of the data; columns are {read.columns}"
        )


def write(read: SourceSet, rows: int) -> None:
    """metrics/gather.json: the lineage of every source and the snapshot's digest."""
    write_json(
        f"{METRICS}/gather.json",
        {
            "rows": rows,
            "columns": len(read.columns),
            "sources": read.lineage,
            "snapshot_sha256": dataset_digest(SNAPSHOT),
            "read_as_text": read.conflicts,
            "warnings": warnings(read),
        },
    )
    say(f"snapshot: {rows} rows -> {SNAPSHOT}")


if __name__ == "__main__":
    run("gather", main)

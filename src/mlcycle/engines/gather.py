"""The gather stage on the Dask engine: every file a partition, read on the workers, and a
snapshot written as a folder of Parquet parts in a canonical order.

A ``file`` source (one path or a glob; CSV, JSON Lines or Parquet, gzip or not) becomes one
partition per file, parsed and cleaned on a worker by the local engine's own code
(:func:`mlcycle.sources.parse`), so both engines read a file alike. The content digests come
back with the partitions, never the rows. Databases, downloads and landing folders are read
as on the local engine (their size is bounded by what one query, download or device drop
holds) and sent to the cluster.

The snapshot's order does not depend on the input's: rows go to partitions by a hash of their
values and are sorted by it within each, so the same rows in another order or in other files
give the same parts.
"""

from __future__ import annotations

import operator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mlcycle import config
from mlcycle.engines import partitions_for, row_hash, write_dataset
from mlcycle.io import sha256_bytes, write_json
from mlcycle.sources import (
    GLOB_CHARS,
    SOURCE_COLUMN,
    SourceError,
    _check_digest,
    _concat,
    _glob,
    _kind,
    _parse_bytes,
    as_text,
    clean,
    combined_digest,
    describe,
    quarantine_folder,
    read_content,
    read_source,
    write_quarantine,
)

if TYPE_CHECKING:
    from distributed import Client

HASH = "__row_hash"


def read_file(source: Any, root: str, rel: str) -> tuple[pd.DataFrame, str]:
    """One file of a source, parsed and cleaned (on a worker), with its content digest."""
    content = read_content(source, Path(root), rel)
    frame = clean(source, _concat([_parse_bytes(source, content, source.format, rel)]))
    frame[SOURCE_COLUMN] = source.name
    return frame, sha256_bytes(content)


def _describe_part(frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        "kinds": {str(c): _kind(frame[c]) for c in frame.columns},
        "empty": frame.head(0),
    }


def _unify(frame: pd.DataFrame, text: list[str], dtypes: pd.Series, columns: list[str]):
    frame = frame[columns].copy()
    for col in text:
        frame[col] = as_text(frame[col])
    for col, dtype in dtypes.items():
        if col not in text and frame[col].dtype != dtype:
            frame[col] = frame[col].astype(dtype)
    return frame


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(HASH, kind="stable").drop(columns=HASH).reset_index(drop=True)


def main_dask(params: config.Params, client: Client, text_columns: tuple[str, ...]) -> None:
    """Read every source onto the cluster, check and unify them, write the snapshot."""
    import dask.dataframe as dd

    from mlcycle.engines import dataset_digest
    from mlcycle.stages import METRICS, SNAPSHOT, log

    say = lambda msg: log("gather", msg)  # noqa: E731
    root = Path.cwd()
    parts: list[tuple[Any, dict, str]] = []  # (future of a frame, its description, source)
    lineages: list[dict[str, Any]] = []
    for source in params.data.sources:
        source = replace(source, text_columns=text_columns)
        if source.kind == "file":
            rels = (
                _glob(source, root) if any(c in source.path for c in GLOB_CHARS) else [source.path]
            )
            if not (root / rels[0]).is_file():
                raise SourceError(f"source {source.name!r}: file {rels[0]} does not exist")
            futures = client.map(read_file, [source] * len(rels), [str(root)] * len(rels), rels)
            digests = client.gather(client.map(operator.itemgetter(1), futures))
            frames = client.map(operator.itemgetter(0), futures)
            infos = client.gather(client.map(_describe_part, frames))
            rows = sum(i["rows"] for i in infos)
            if len(rels) == 1 and rels[0] == source.path:
                _check_digest(source, digests[0], f"content of {source.path}")
                lineage = {"path": source.path, "format": source.format, "sha256": digests[0]}
            else:
                files = [
                    {"file": r, "sha256": d, "rows": i["rows"]}
                    for r, d, i in zip(rels, digests, infos, strict=True)
                ]
                digest = combined_digest([(r, d) for r, d in zip(rels, digests, strict=True)])
                _check_digest(source, digest, f"the files matching {source.path!r} (combined)")
                lineage = {
                    "path": source.path,
                    "format": source.format,
                    "files": files,
                    "sha256": digest,
                }
            columns = infos[0]["columns"]
            for rel, info in zip(rels, infos, strict=True):
                if set(info["columns"]) != set(columns):
                    raise SourceError(
                        f"source {source.name!r}: columns "
                        f"{[c for c in info['columns'] if c != SOURCE_COLUMN]} of {rel} differ "
                        f"from {[c for c in columns if c != SOURCE_COLUMN]} of {rels[0]}"
                    )
            if not rows and not source.allow_empty:
                raise SourceError(
                    f"source {source.name!r} ({describe(source)}) holds no rows (an empty "
                    "file, a header line only, or an empty table or query); if it may be "
                    "empty, set allow_empty: true on it"
                )
            full = {"name": source.name, "kind": source.kind, **lineage}
            full.update(rows=rows, columns=[c for c in columns if c != SOURCE_COLUMN])
            say(f"{source.name}: {rows} rows in {len(rels)} file(s) from {describe(source)}")
        else:
            read = read_source(source, root)
            say(f"{source.name}: {read.lineage['rows']} rows from {describe(source)}")
            if source.kind == "landing":
                write_quarantine(read, quarantine_folder(root, source.name))
                for q in read.quarantined:
                    say(f"{source.name}: quarantined {q.file}: {q.reason}")
            frame = read.frame.copy()
            frame[SOURCE_COLUMN] = source.name
            [future] = client.scatter([frame])
            frames, full = [future], read.lineage
            infos = [_describe_part(frame)]
        lineages.append(full)
        parts += [(f, i, source.name) for f, i in zip(frames, infos, strict=True)]
    # The union's columns and types: the first non-empty part's columns (a source that may be
    # empty and is adds nothing); a column that is numbers in one source and text in another
    # is text everywhere, as on the local engine.
    nonempty = [p for p in parts if p[1]["rows"]] or parts[:1]
    first_owner = nonempty[0][2]
    columns = nonempty[0][1]["columns"]
    for _, info, owner in nonempty:
        if set(info["columns"]) != set(columns):
            missing = sorted(set(columns) - set(info["columns"]))
            extra = sorted(set(info["columns"]) - set(columns))
            raise SourceError(
                f"source {owner!r} has different columns from {first_owner!r}: missing "
                f"{missing}, extra {extra}"
            )
    conflicts: dict[str, dict[str, str]] = {}
    for col in columns:
        if col == SOURCE_COLUMN:
            continue
        seen: dict[str, set[str]] = {}
        for _, info, owner in nonempty:
            seen.setdefault(owner, set()).add(info["kinds"][col])
        kinds = {}
        for owner, held_by in seen.items():
            real = held_by - {"empty"}
            kinds[owner] = "empty" if not real else real.pop() if len(real) == 1 else "mixed"
        held = set(kinds.values()) - {"empty"}
        if len(held) > 1 or "mixed" in held:
            conflicts[str(col)] = kinds
    for col, kinds in conflicts.items():
        held = ", ".join(f"{kind} in {name}" for name, kind in kinds.items())
        say(f"column {col!r} kept as text ({held}); validate checks its values")
    text = sorted(conflicts)
    empties = [_unify(i["empty"], text, pd.Series(dtype=object), columns) for _, i, _ in nonempty]
    meta = pd.concat(empties, ignore_index=True).infer_objects()
    dtypes = meta.dtypes
    target = params.objectives.target
    if target not in columns:
        raise SourceError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in columns if c != SOURCE_COLUMN]}"
        )
    unified = client.map(
        _unify, [f for f, _, _ in nonempty], text=text, dtypes=dtypes, columns=columns
    )
    ddf = dd.from_delayed(unified, meta=meta, verify_meta=False)
    rows = sum(i["rows"] for _, i, _ in nonempty)
    hashed = ddf.assign(**{HASH: ddf.map_partitions(row_hash, 0, "order", meta=(HASH, "uint64"))})
    npart = partitions_for(rows, params.engine)
    ordered = hashed.shuffle(on=HASH, npartitions=npart).map_partitions(_order, meta=meta)
    written = write_dataset(SNAPSHOT, ordered, say)
    write_json(
        f"{METRICS}/gather.json",
        {
            "rows": written,
            "columns": len(columns) - 1,
            "sources": lineages,
            "snapshot_sha256": dataset_digest(SNAPSHOT),
            "read_as_text": conflicts,
        },
    )
    say(f"snapshot: {written} rows -> {SNAPSHOT}")

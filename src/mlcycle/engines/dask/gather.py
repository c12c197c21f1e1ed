"""The gather stage on the Dask engine: every file a partition, read on the workers, and a
snapshot written as a folder of Parquet parts in a canonical order.

A ``file`` source (one path, a glob, or a folder of Parquet parts; CSV, JSON Lines or Parquet,
gzip or not) becomes one partition per file, parsed on a worker by the local engine's own
parser (:func:`mlcycle.sources._parse_bytes`: the same options, checks and error messages).
The content digests come back with the partitions, never the rows. Databases, downloads and
landing folders are read as on the local engine (their size is bounded by what one query,
download or device drop holds) and sent to the cluster.

Types are decided as the local engine decides them, without collecting the data: each part
sends back a few *representative rows* (per column, the first row of each type of value and
the first missing value), and the driver runs the local code (:func:`mlcycle.sources._concat`,
:func:`~mlcycle.sources.clean`, :func:`~mlcycle.sources.union`) on those rows alone. The
column types that come out are the ones the whole data would get, because pandas decides a
concatenation's types from the parts' types and, for Python objects, from which types of
value occur. The parts are then cast to them on the workers.

The snapshot's order does not depend on the input's: rows go to partitions by a hash of their
values and are sorted by it within each, so the same rows in another order or in other files
give the same parts, byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config
from mlcycle.config import EngineConfig
from mlcycle.datasets import row_hash
from mlcycle.engines.base import Say, SourceSet
from mlcycle.engines.dask.cluster import bounded, guarded
from mlcycle.engines.dask.data import partitions_for, write_dataset
from mlcycle.io import sha256_bytes
from mlcycle.sources import (
    GLOB_CHARS,
    SOURCE_COLUMN,
    Recoded,
    SourceError,
    SourceRead,
    _check_digest,
    _concat,
    _glob,
    _kind,
    _parse_bytes,
    add_recoded,
    check_rows,
    check_same_columns,
    clean,
    describe,
    files_lineage,
    read_content,
    read_quarantining,
    recode_lineage,
    type_conflicts,
    unify,
    union,
)

if TYPE_CHECKING:
    from distributed import Client, Future

HASH = "__row_hash"


# --- on the workers ----------------------------------------------------------------------------


def read_file(source: config.Source, root: str, rel: str) -> tuple[pd.DataFrame, str]:
    """One file of a source parsed as the local engine parses it (not yet cleaned), with the
    SHA-256 of its content (after decompression)."""
    content = read_content(source, Path(root), rel)
    return _parse_bytes(source, content, source.format, rel), sha256_bytes(content)


def representative(frame: pd.DataFrame) -> pd.DataFrame:
    """A few rows of ``frame`` that decide its types as the whole does: per column its first
    row, its first missing value and, in a column of Python objects, the first row of each
    type of value. Concatenating these rows gives the types concatenating the frames gives."""
    if frame.empty:
        return frame.head(0)
    picks = {0}
    for col in range(frame.shape[1]):
        series = frame.iloc[:, col]
        missing = np.flatnonzero(series.isna().to_numpy())
        picks.update(missing[:1].tolist())
        if series.dtype == object:
            types = pd.Series([type(v) for v in series.tolist()])
            picks.update(np.flatnonzero(~types.duplicated().to_numpy()).tolist())
    return frame.iloc[sorted(picks)].reset_index(drop=True)


def profile(frame: pd.DataFrame) -> dict[str, Any]:
    """What the driver needs to know about a part: rows, columns, kinds, representative rows."""
    return {
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        "kinds": {str(c): _kind(frame[c]) for c in frame.columns},
        "sample": representative(frame),
    }


def cast(series: pd.Series, dtype: Any) -> pd.Series:
    """``series`` as ``dtype`` (missing values of any kind stay missing)."""
    if series.dtype == dtype:
        return series
    try:
        return series.astype(dtype)
    except (TypeError, ValueError):
        plain = series.astype(object)
        return plain.where(plain.notna(), None).astype(dtype)


def clean_part(
    frame: pd.DataFrame, source: config.Source, dtypes: dict[str, Any] | None
) -> tuple[pd.DataFrame, Recoded]:
    """One file's rows cleaned as the local engine cleans the source's concatenated files:
    first given the types the concatenation has (``dtypes``, in the first file's column
    order), so :func:`clean` makes the same decisions for every file; and the rows each
    ``value_map`` key recoded (added up over the files on the driver)."""
    if dtypes is not None:
        frame = frame[list(dtypes)]
        frame = pd.DataFrame({c: cast(frame[c], t) for c, t in dtypes.items()})
    return clean(source, frame)


def unify_part(
    frame: pd.DataFrame, name: str, text: list[str], dtypes: dict[str, Any]
) -> pd.DataFrame:
    """One part of source ``name`` as a part of the snapshot: its columns in the snapshot's
    order, the columns read as text made text, the source column added, the snapshot's
    types (:func:`mlcycle.sources.unify`, then cast)."""
    frame = unify(frame, name, [c for c in dtypes if c != SOURCE_COLUMN], text)
    return pd.DataFrame({c: cast(frame[c], t) for c, t in dtypes.items()})


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(HASH, kind="stable").drop(columns=HASH).reset_index(drop=True)


# --- on the driver -----------------------------------------------------------------------------


@dataclass
class Gathered:
    """One source on the cluster: its cleaned parts (futures), their profiles, its lineage."""

    source: config.Source
    parts: list[Future]
    profiles: list[dict[str, Any]]
    lineage: dict[str, Any]

    @property
    def rows(self) -> int:
        return sum(p["rows"] for p in self.profiles)

    def sample(self) -> pd.DataFrame:
        """The representative rows of the whole source, typed as the source's frame is."""
        return _concat([p["sample"] for p in self.profiles])


def source_files(source: config.Source, root: Path) -> list[str]:
    """The files of a ``file`` source relative to ``root``: its path, every file its glob
    matches, or every Parquet file under its folder, in sorted order."""
    if any(c in source.path for c in GLOB_CHARS):
        return _glob(source, root)
    if (root / source.path).is_dir():
        rels = sorted(
            p.relative_to(root).as_posix() if p.is_relative_to(root) else p.as_posix()
            for p in (root / source.path).rglob("*.parquet")
            if p.is_file() and not any(s.startswith(".") for s in p.parts[-1:])
        )
        if source.format != "parquet" or not rels:
            raise SourceError(
                f"source {source.name!r}: {source.path} is a folder; a folder source must "
                "hold Parquet parts (*.parquet) and say format: parquet"
            )
        return rels
    if not (root / source.path).is_file():
        raise SourceError(f"source {source.name!r}: file {source.path} does not exist")
    return [source.path]


def gather_files(source: config.Source, root: Path, client: Client) -> Gathered:
    """Read a ``file`` source on the workers, one partition per file."""
    rels = source_files(source, root)
    n = len(rels)

    def fetch(step: str, fn: Callable[[Any], Any], futures: list[Future]) -> list[Any]:
        """``fn`` of each future, brought here: a :func:`bounded` call."""
        what = f"{step} source {source.name!r} ({n} file(s))"
        return bounded(what, lambda: client.gather(client.map(fn, futures)))

    raw = client.map(read_file, [source] * n, [str(root)] * n, rels, pure=False)
    digests = fetch("reading", _second, raw)
    frames = client.map(_first, raw)
    del raw
    first = fetch("profiling", profile, frames)
    columns = list(first[0]["sample"].columns)
    for rel, info in zip(rels, first, strict=True):
        check_same_columns(source, rel, info["columns"], rels[0], first[0]["columns"])
    # The types the local engine's concatenation of these files would have.
    dtypes = None
    if n > 1:
        typed = _concat([i["sample"][columns] for i in first])
        dtypes = dict(typed.dtypes.items())
    cleaned = client.map(clean_part, frames, source=source, dtypes=dtypes)
    del frames
    recoded = add_recoded(fetch("cleaning", _second, cleaned))
    parts = client.map(_first, cleaned)
    del cleaned
    profiles = fetch("profiling the cleaned", profile, parts)
    if n == 1 and rels[0] == source.path:
        _check_digest(source, digests[0], f"content of {source.path}")
        lineage = {"path": source.path, "format": source.format, "sha256": digests[0]}
    else:
        lineage = files_lineage(source, [
            {"file": r, "sha256": d, "rows": i["rows"]}
            for r, d, i in zip(rels, digests, first, strict=True)
        ])  # fmt: skip
    rows = sum(i["rows"] for i in profiles)
    full = {"name": source.name, "kind": source.kind, **lineage,
            **recode_lineage(source, recoded, rows)}  # fmt: skip
    full.update(rows=rows, columns=profiles[0]["columns"])
    check_rows(source, empty=not rows)
    return Gathered(source, parts, profiles, full)


def _first(pair: tuple) -> Any:
    return pair[0]


def _second(pair: tuple) -> Any:
    return pair[1]


def gather_other(source: config.Source, root: Path, client: Client, say: Say) -> Gathered:
    """A database, download or landing folder: read here as on the local engine (a bounded
    input by nature), quarantine as on the local engine, then sent to the cluster."""
    read = read_quarantining(source, root, say)
    [future] = bounded(f"sending source {source.name!r} to the workers",
                       lambda: client.scatter([read.frame]))  # fmt: skip
    return Gathered(source, [future], [profile(read.frame)], read.lineage)


def snapshot_types(
    gathered: list[Gathered],
) -> tuple[dict[str, dict[str, str]], dict[str, Any]]:
    """The columns read as text (``{column: {source: kind}}``, as :func:`type_conflicts`) and
    the snapshot's column types, from the sources' representative rows run through the local
    engine's :func:`union`. A column the local engine would write as Python objects gets the
    type it reads back as (text as ``str``; whole numbers as int64, or float64 with gaps)."""
    reads = [SourceRead(g.sample(), g.lineage) for g in gathered]
    conflicts = type_conflicts([(r.lineage["name"], r.frame) for r in reads])
    merged = union(reads)  # raises on sources whose columns differ, as the local engine does
    dtypes = {
        col: merged[col].dtype if merged[col].dtype != object else _object_type(merged[col])
        for col in merged.columns
    }
    return conflicts, dtypes


def text_columns_of(gathered: list[Gathered]) -> list[Any]:
    """The columns :func:`union` turns into text: those whose kinds differ between the
    sources with rows."""
    reads = [(g.source.name, g.sample()) for g in gathered if g.rows] or [
        (gathered[0].source.name, gathered[0].sample())
    ]
    return [c for c in reads[0][1].columns if str(c) in type_conflicts(reads)]


def _object_type(series: pd.Series) -> Any:
    """The type a column of Python objects is read back as after Parquet (Dask cannot write a
    column of objects without reading it first)."""
    import pyarrow as pa

    try:
        kind = pa.array(series, from_pandas=True).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return "str"
    if pa.types.is_integer(kind):
        return "float64" if series.isna().any() else "int64"
    if pa.types.is_floating(kind):
        return "float64"
    if pa.types.is_boolean(kind):
        return "boolean" if series.isna().any() else "bool"
    return "str"


def read_sources(
    client: Client,
    sources: tuple[config.Source, ...],
    root: Path,
    text_columns: tuple[str, ...],
    cfg: EngineConfig,
    say: Say,
) -> SourceSet:
    """Read every source onto the cluster, check them and decide the snapshot's types; the
    rows stay on the workers (``SourceSet.rows`` holds the sources and the column types).
    Every blocking call is bounded (:func:`~mlcycle.engines.dask.cluster.guarded`); the rows
    are not known before they are read, so a null ``engine.task_timeout`` gives the floor."""
    gathered: list[Gathered] = []
    with guarded(client, cfg, 0, say):
        for source in sources:
            source = source.with_text_columns(text_columns)
            if source.kind == "file":
                got = gather_files(source, root, client)
                say(f"{source.name}: {got.rows} rows in {len(got.parts)} file(s) from "
                    f"{describe(source)}")  # fmt: skip
            else:
                got = gather_other(source, root, client, say)
                say(f"{source.name}: {got.rows} rows from {describe(source)}")
            gathered.append(got)
    conflicts, dtypes = snapshot_types(gathered)
    columns = [c for c in dtypes if c != SOURCE_COLUMN]
    return SourceSet([g.lineage for g in gathered], conflicts, columns, (gathered, dtypes))


def write_snapshot(client: Client, read: SourceSet, path: str, cfg: EngineConfig, say: Say) -> int:
    """Unify the sources' parts on the workers and write them as a folder of Parquet parts in
    a canonical order (by row hash); the rows written. The writing is bounded
    (:func:`~mlcycle.engines.dask.cluster.guarded`, for the sources' rows)."""
    import dask.dataframe as dd

    gathered, dtypes = read.rows
    # A source that may be empty and is adds nothing (as the local union).
    kept = [g for g in gathered if g.rows] or gathered[:1]
    text = text_columns_of(gathered)
    parts = []
    for g in kept:
        parts += client.map(unify_part, g.parts, name=g.source.name, text=text, dtypes=dtypes)
    meta = pd.DataFrame({c: pd.Series(dtype=t) for c, t in dtypes.items()})
    ddf = dd.from_delayed(parts, meta=meta, verify_meta=False)
    rows = sum(g.rows for g in kept)
    hashed = ddf.assign(**{HASH: ddf.map_partitions(row_hash, 0, "order", meta=(HASH, "uint64"))})
    npart = partitions_for(rows, cfg)
    ordered = hashed.shuffle(on=HASH, npartitions=npart).map_partitions(_order, meta=meta)
    with guarded(client, cfg, rows, say):
        return write_dataset(path, ordered, say)

"""Read the declared data sources, verifying each one's checksum.

A source is a file (CSV, Parquet or JSON Lines, optionally gzip-compressed). Its SHA-256 is
computed over the *content* (after decompression), so it matches the digest a data provider
publishes, and a changed file is an error rather than a silently different dataset.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlcycle.config import Source
from mlcycle.io import sha256_bytes

SOURCE_COLUMN = "_source"


class SourceError(ValueError):
    """A source could not be read or did not match what params.yaml expects."""


@dataclass(frozen=True)
class SourceRead:
    """A source's records and its lineage entry."""

    frame: pd.DataFrame
    lineage: dict


def read_content(source: Source, root: Path) -> bytes:
    """Return the source file's bytes, decompressed if it ends in ``.gz``; verify its checksum."""
    path = root / source.path
    if not path.is_file():
        raise SourceError(f"source {source.name!r}: file {source.path} does not exist")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise SourceError(
                f"source {source.name!r}: {source.path} is not valid gzip: {exc}"
            ) from exc
    digest = sha256_bytes(raw)
    if source.sha256 and digest != source.sha256:
        raise SourceError(
            f"source {source.name!r}: content of {source.path} has SHA-256 {digest}, but "
            f"params.yaml expects {source.sha256}. If the data changed on purpose, put the new "
            f"digest in data.sources[].sha256."
        )
    return raw


def parse(source: Source, content: bytes) -> pd.DataFrame:
    """Parse a source's bytes into a DataFrame with string cells stripped of whitespace."""
    buf = io.BytesIO(content)
    try:
        if source.format == "csv":
            df = pd.read_csv(
                buf,
                header=0 if source.header else None,
                names=list(source.columns) if source.columns and not source.header else None,
                index_col=False,
                skiprows=source.skip_rows,
                skipinitialspace=True,
                na_values=list(source.na_values),
                skip_blank_lines=True,
            )
        elif source.format == "parquet":
            df = pd.read_parquet(buf)
        else:  # jsonl
            df = pd.read_json(buf, lines=True)
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise SourceError(f"source {source.name!r}: cannot parse {source.path}: {exc}") from exc
    if source.columns and source.header and list(df.columns) != list(source.columns):
        raise SourceError(
            f"source {source.name!r}: columns {list(df.columns)} differ from the declared "
            f"{list(source.columns)}"
        )
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            stripped = df[col].astype("string").str.strip()
            df[col] = stripped.mask(stripped.isin(["", *source.na_values]))
    for col, mapping in source.value_map.items():
        if col not in df.columns:
            raise SourceError(f"source {source.name!r}: value_map names unknown column {col!r}")
        df[col] = df[col].replace(mapping)
    return df


def read_source(source: Source, root: Path) -> SourceRead:
    """Read one source and describe it for the lineage record."""
    content = read_content(source, root)
    frame = parse(source, content)
    lineage = {
        "name": source.name,
        "path": source.path,
        "format": source.format,
        "sha256": sha256_bytes(content),
        "rows": len(frame),
        "columns": [str(c) for c in frame.columns],
    }
    return SourceRead(frame=frame, lineage=lineage)


def union(reads: list[SourceRead]) -> pd.DataFrame:
    """Stack the sources' records; all sources must have the same columns.

    Adds :data:`SOURCE_COLUMN` naming each record's source, which a by-source split uses.
    """
    first = reads[0]
    expected = list(first.frame.columns)
    parts = []
    for read in reads:
        cols = list(read.frame.columns)
        if set(cols) != set(expected):
            missing = sorted(set(expected) - set(cols))
            extra = sorted(set(cols) - set(expected))
            raise SourceError(
                f"source {read.lineage['name']!r} has different columns from "
                f"{first.lineage['name']!r}: missing {missing}, extra {extra}"
            )
        part = read.frame[expected].copy()
        part[SOURCE_COLUMN] = read.lineage["name"]
        parts.append(part)
    merged = pd.concat(parts, ignore_index=True)
    # Columns that are numeric in one source and text in another become text: prepare decides.
    return merged

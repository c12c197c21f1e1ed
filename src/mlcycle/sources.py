"""Read the declared data sources, each into a frame and a lineage record.

Four kinds of source (``data.sources[].kind`` in params.yaml):

``file``
    A path or a glob of CSV, Parquet or JSON Lines files, optionally gzip-compressed. Its SHA-256
    is of the *content* (after decompression), so it matches the digest a provider publishes.
    For a glob it is the SHA-256 of a ``SHA256SUMS``-style listing of the matched files, one
    line ``<content sha256>  <path relative to the project>`` per file, in sorted order.
``database``
    A SQLAlchemy URL (``url``, or the environment variable named by ``url_env`` when it holds
    credentials; a bare path is an SQLite file) and a ``table`` or a ``query``. Its SHA-256 is of
    the result written as CSV (header, ``\\N`` for NULL), so unchanged data hashes the same.
``http``
    An HTTP(S) URL pinned by ``sha256``, downloaded with a timeout and bounded retries.
``landing``
    A folder where devices and apps drop CSV / JSON Lines / Parquet files. A malformed file is
    set aside with its reason (:func:`write_quarantine`) instead of breaking the others.

Every kind goes through the same :func:`clean` (whitespace, ``na_values``, ``value_map``), and
a checksum given in ``sha256`` is verified for every kind: a changed source is an error, not a
silently different dataset. Lineage never holds credentials (:func:`redact_url`).
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import re
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from glob import escape, glob
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from mlcycle.config import Source
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.io import sha256_bytes, value_text, write_bytes, write_text

QUARANTINE_DIR = "data/quarantine"
REASON_SUFFIX = ".reason.txt"
# Waits between attempts of a download or a database connection: 0.5 s, 1 s, 2 s ... at most 10 s.
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
DOWNLOAD_CHUNK = 1 << 16
GLOB_CHARS = "*?["
# Delimiters a CSV file might use instead of the declared one, and how many of its first
# records are looked at to say so.
CSV_DELIMITERS = (",", ";", "\t", "|")
SNIFF_LINES = 50  # a file source whose path holds one of these is a glob
# The format of a landing file, by the end of its name.
LANDING_SUFFIXES = {
    ".csv": "csv", ".csv.gz": "csv", ".jsonl": "jsonl", ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl", ".ndjson.gz": "jsonl", ".parquet": "parquet",
}  # fmt: skip


class SourceError(ValueError):
    """A source could not be read or did not match what params.yaml expects."""


@dataclass(frozen=True)
class Quarantined:
    """A landing file that was set aside: its name in the folder, where it is and why."""

    file: str
    path: Path
    reason: str


@dataclass(frozen=True)
class SourceRead:
    """A source's records, its lineage entry and any landing files set aside."""

    frame: pd.DataFrame
    lineage: dict[str, Any]
    quarantined: tuple[Quarantined, ...] = ()


# --- shared: bytes -> frame -> clean frame ---------------------------------------------------


def _decompress(raw: bytes, name: str, source: Source) -> bytes:
    """``raw`` decompressed when ``name`` ends in ``.gz``; otherwise ``raw`` itself."""
    if not name.endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"source {source.name!r}: {name} is not valid gzip: {exc}") from exc


def _check_digest(source: Source, digest: str, what: str) -> None:
    if source.sha256 and digest != source.sha256:
        raise SourceError(
            f"source {source.name!r}: {what} has SHA-256 {digest}, but params.yaml expects "
            f"{source.sha256}. If the data changed on purpose, put the new digest in "
            "data.sources[].sha256."
        )


def combined_digest(entries: list[tuple[str, str]]) -> str:
    """SHA-256 of a ``SHA256SUMS``-style listing: one ``<digest>  <name>`` line per entry."""
    listing = "".join(f"{digest}  {name}\n" for name, digest in entries)
    return sha256_bytes(listing.encode("utf-8"))


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame written as CSV (header, ``\\N`` for missing): equal data, equal hash."""
    text = frame.to_csv(index=False, lineterminator="\n", na_rep="\\N")
    return sha256_bytes(text.encode("utf-8"))


FieldCounts = tuple[np.ndarray, np.ndarray]  # line numbers (from 1), fields per record


def _field_counts(content: bytes, delimiter: str, skip_rows: int) -> FieldCounts:
    """The line number and number of fields of each non-blank record of a CSV file, after
    ``skip_rows`` lines. Without quote characters a record is a line and its fields are the
    delimiters plus one, counted on the bytes with numpy (a few ms per million lines); with
    quotes (a field may hold the delimiter or a line break) Python's csv module reads it."""
    if b'"' in content or len(delimiter.encode("utf-8")) != 1:
        reader = csv.reader(
            io.StringIO(content.decode("utf-8-sig", errors="replace")),
            delimiter=delimiter,
            skipinitialspace=True,
        )
        rows = [
            (reader.line_num, len(row))
            for row in reader
            if reader.line_num > skip_rows and (len(row) > 1 or (row and row[0].strip()))
        ]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        lines, counts = zip(*rows, strict=True)
        return np.asarray(lines, np.int64), np.asarray(counts, np.int64)
    data = np.frombuffer(content, dtype=np.uint8)
    breaks = np.flatnonzero(data == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(data)]))

    marks = np.flatnonzero(data == ord(delimiter))
    counts = np.searchsorted(marks, ends) - np.searchsorted(marks, starts) + 1
    # A blank line (nothing, or a lone carriage return) is no record, as for pandas.
    length = ends - starts - (data[np.maximum(ends - 1, 0)] == ord("\r")) * (ends > starts)
    visible = length > 0
    lines = np.arange(1, len(starts) + 1)
    keep = (lines > skip_rows) & ((visible > 0) | (counts > 1))
    return lines[keep], counts[keep]


def _head(content: bytes, size: int = 1 << 16) -> bytes:
    """The first ``size`` bytes of a file, cut after its last whole line."""
    if len(content) <= size:
        return content
    cut = content.rfind(b"\n", 0, size)
    return content[: cut + 1] if cut > 0 else content[:size]


def _other_delimiter(content: bytes, source: Source, expected: int | None) -> str | None:
    """A delimiter other than the source's that splits the first lines evenly into more fields
    (into ``expected`` fields when that is known), or None."""
    head = _head(content)
    for candidate in CSV_DELIMITERS:
        if candidate == source.delimiter:
            continue
        counts = set(_field_counts(head, candidate, source.skip_rows)[1][:SNIFF_LINES].tolist())
        if len(counts) == 1 and (n := counts.pop()) > 1 and expected in (None, n):
            return candidate
    return None


def sniff_delimiter(source: Source, content: bytes) -> str | None:
    """The delimiter a CSV file seems to use when it is not the source's: one that splits its
    first records evenly into more fields than the source's delimiter does; else None."""
    counts = _field_counts(_head(content), source.delimiter, source.skip_rows)[1]
    if len(counts) and counts[0] > 1:
        return None
    return _other_delimiter(content, source, None)


def _shown_delimiter(delimiter: str) -> str:
    return "a tab" if delimiter == "\t" else repr(delimiter)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def check_csv_shape(source: Source, content: bytes, label: str) -> None:
    """Every record of a CSV file must have one field per column: the header's, or the declared
    ``columns`` of a file without one. A file that seems to use another delimiter, or whose
    records have more or fewer fields (a missing column shifts every value after it), is a
    :class:`SourceError` that says so, instead of values silently landing in the wrong column.
    """
    lines, counts = _field_counts(content, source.delimiter, source.skip_rows)
    if not len(counts):
        return  # no records at all: read_source reports the empty source
    if source.header:
        expected = int(counts[0])
        what = f"the header (line {lines[0]}) has {expected} fields"
        lines, counts = lines[1:], counts[1:]
    else:
        expected = len(source.columns or ())
        what = f"{expected} columns are declared ({', '.join(source.columns or ())})"
    first = int(counts[0]) if len(counts) else expected
    if expected <= 1 or first != expected:
        # One field in the header, or records that do not fit the declared columns: a file
        # written with another delimiter looks exactly like this.
        other = _other_delimiter(content, source, None if source.header else expected)
        if other is not None:
            raise SourceError(
                f"source {source.name!r}: {label} seems to be delimited by "
                f"{_shown_delimiter(other)}, not {_shown_delimiter(source.delimiter)} (its "
                f"first lines split evenly on it); set delimiter: {other!r} on the source"
            )
    wrong = counts != expected
    if not wrong.any():
        return
    bad_lines, bad_counts = lines[wrong], counts[wrong]
    rows, n_bad = len(counts), int(wrong.sum())
    values, freq = np.unique(bad_counts, return_counts=True)
    usual = ", ".join(
        f"{_plural(int(k), 'field')} in {_plural(int(v), 'line')}"
        for k, v in zip(values, freq, strict=True)
    )
    shown = ", ".join(str(n) for n in bad_lines[:5].tolist())
    leading = bool(np.all(np.flatnonzero(wrong) == np.arange(n_bad)))
    if n_bad * 2 > rows:
        hint = "; a column is missing or extra, so values would land in the wrong columns"
    elif leading and bad_lines[-1] <= SNIFF_LINES and n_bad < rows:
        hint = f"; if they are not records, set skip_rows: {bad_lines[-1]} on the source"
    else:
        hint = ""
    raise SourceError(
        f"source {source.name!r}: {label}: {what}, but {n_bad} of {rows} records have "
        f"another number of fields ({usual}; lines {shown}{', ...' if n_bad > 5 else ''}){hint}"
    )


def _parse_bytes(source: Source, content: bytes, fmt: str, label: str) -> pd.DataFrame:
    """Parse ``content`` as ``fmt`` with the source's CSV options; check declared columns."""
    if not content.strip():  # 0 bytes, a gzip of nothing, blank lines: no records at all
        return pd.DataFrame(columns=list(source.columns or ()))
    buf = io.BytesIO(content)
    if fmt == "csv":
        check_csv_shape(source, content, label)
    try:
        if fmt == "csv":
            df = pd.read_csv(
                buf,
                sep=source.delimiter,
                header=0 if source.header else None,
                names=list(source.columns) if source.columns and not source.header else None,
                index_col=False,
                skiprows=source.skip_rows,
                skipinitialspace=True,
                na_values=list(source.na_values),
                skip_blank_lines=True,
                dtype=dict.fromkeys(source.text_columns, str),
            )
        elif fmt == "parquet":
            df = pd.read_parquet(buf)
        else:  # jsonl
            df = pd.read_json(buf, lines=True, dtype=dict.fromkeys(source.text_columns, str))
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise SourceError(f"source {source.name!r}: cannot parse {label}: {exc}") from exc
    return _check_columns(source, df, fmt, label)


def _check_columns(source: Source, df: pd.DataFrame, fmt: str, label: str) -> pd.DataFrame:
    """Declared columns must match: in order for a CSV header, as a set for JSON and Parquet."""
    if not source.columns or (fmt == "csv" and not source.header):
        return df
    if df.empty and not len(df.columns):  # no records at all: read_source says so
        return df
    declared, got = list(source.columns), [str(c) for c in df.columns]
    if got == declared:
        return df
    if fmt != "csv" and sorted(got) == sorted(declared):
        return df[declared]
    raise SourceError(
        f"source {source.name!r}: columns {got} of {label} differ from the declared {declared}"
    )


# What recoded values are called in messages, by the kind of column they go into.
VALUE_KINDS = {"number": "a number", "boolean": "true or false", "datetime": "a date and time",
               "timedelta": "a duration", "text": "text"}  # fmt: skip
Recoded = dict[str, dict[str, int]]  # per column of value_map, the rows each key recoded


def _dtype_kind(dtype: Any) -> str | None:
    """``boolean``, ``number`` or ``datetime`` for a column of that dtype, else None."""
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return None


def _value_kind(series: pd.Series) -> str:
    """What a cleaned column holds, for reading value_map's keys and values as its type."""
    dtype = series.dtype
    if found := _dtype_kind(dtype):
        return found
    return "timedelta" if pd.api.types.is_timedelta64_dtype(dtype) else "text"


def _as_kind(text: str, kind: str, series: pd.Series) -> Any:
    """``text`` (a value_map key or value) as a value of ``series``, which holds ``kind``; a
    ValueError when it cannot be one."""
    if kind == "number":
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(text)
        return number
    if kind == "boolean":
        words = {"true": True, "false": False}
        if text.strip().lower() not in words:
            raise ValueError(text)
        return words[text.strip().lower()]
    if kind == "datetime":
        stamp, zone = pd.Timestamp(text), getattr(series.dt, "tz", None)
        if (stamp.tz is None) != (zone is None):
            if zone is None:
                raise ValueError(text)
            stamp = stamp.tz_localize(zone)
        return stamp
    if kind == "timedelta":
        return pd.Timedelta(text)
    return text


def recode(source: Source, column: str, series: pd.Series) -> tuple[pd.Series, dict[str, int]]:
    """``series`` with the source's ``value_map`` for ``column`` applied, and the rows each key
    recoded. Keys and values are read as the column's type (text matches text exactly; in a
    numeric column "6", 6 and 6.0 all match 6); a null value makes the cell missing. Every key
    matches the original values, so ``{1: 2, 2: 3}`` swaps nothing twice. A key or value that
    cannot be of the column's type, or two keys that mean the same value, are a SourceError
    naming the source, the column and the key."""
    kind = _value_kind(series)
    where = f"source {source.name!r}: value_map {column}"
    olds: dict[Any, str] = {}
    changes: list[tuple[str, np.ndarray, Any]] = []

    def read(text: str, key: str, what: str) -> Any:
        try:
            return _as_kind(text, kind, series)
        except (ValueError, TypeError):
            raise SourceError(
                f"{where}: key {key!r} cannot apply: column {column!r} holds {kind} values in "
                f"this source, and {what} {text!r} is not {VALUE_KINDS[kind]}; write keys and "
                "new values as the column's values (a new value may be null: missing)"
            ) from None

    for key, new in source.value_map[column].items():
        old = read(key, key, "the key")
        value = None if new is None else read(new, key, "its new value")
        if old in olds:
            raise SourceError(f"{where}: keys {olds[old]!r} and {key!r} are the same value")
        olds[old] = key
        changes.append((key, np.asarray((series == old).fillna(False), dtype=bool), value))
    out = series
    values = [value for _, _, value in changes]
    if kind == "boolean" and None in values:
        out = out.astype("boolean")
    if kind == "number" and any(v is not None and not float(v).is_integer() for v in values):
        out = out.astype("Float64" if isinstance(out.dtype, pd.api.extensions.ExtensionDtype)
                          else "float64")  # fmt: skip
    for _, mask, value in changes:
        if mask.any():
            out = out.mask(mask, value)
    return out, {key: int(mask.sum()) for key, mask, _ in changes}


def unmatched(source: Source, recoded: Recoded) -> list[str]:
    """A warning per ``value_map`` entry of the source that recoded no row."""
    return [
        f"source {source.name!r}: value_map {column}: {key!r} matches no value of column "
        f"{column!r}; nothing was recoded (check the spelling and the column's type)"
        for column, keys in recoded.items()
        for key, rows in keys.items()
        if not rows
    ]


def add_recoded(parts: list[Recoded]) -> Recoded:
    """The rows each ``value_map`` key recoded, added up over the parts of a source."""
    out: Recoded = {}
    for part in parts:
        for column, keys in part.items():
            added = out.setdefault(column, {})
            for key, rows in keys.items():
                added[key] = added.get(key, 0) + rows
    return out


def recode_lineage(source: Source, recoded: Recoded, rows: int) -> dict[str, Any]:
    """A source's lineage about ``value_map``: the rows each key recoded and, when the source
    has rows, a warning per key that recoded none (:func:`unmatched`)."""
    if not source.value_map:
        return {}
    warnings = unmatched(source, recoded) if rows else []
    return {"value_map": recoded, **({"warnings": warnings} if warnings else {})}


def clean(source: Source, df: pd.DataFrame) -> tuple[pd.DataFrame, Recoded]:
    """Strip whitespace from text cells, turn blanks and ``na_values`` into missing values and
    apply ``value_map`` (:func:`recode`); the same for every kind of source. Also returns the
    rows each ``value_map`` key recoded."""
    dups = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dups:
        raise SourceError(f"source {source.name!r}: column names {dups} occur more than once")
    for col in df.columns:
        dtype = df[col].dtype
        if (
            pd.api.types.is_numeric_dtype(dtype)
            or pd.api.types.is_bool_dtype(dtype)
            or pd.api.types.is_datetime64_any_dtype(dtype)
            or pd.api.types.is_timedelta64_dtype(dtype)
        ):
            continue
        stripped = df[col].astype("string").str.strip()
        df[col] = stripped.mask(stripped.isin(["", *source.na_values]))
    for col in source.text_columns:  # Parquet and databases bring their own types
        if col in df.columns and _kind(df[col]) not in ("text", "empty"):
            df[col] = as_text(df[col])
    recoded: Recoded = {}
    for col in source.value_map:
        if col not in df.columns:
            raise SourceError(f"source {source.name!r}: value_map names unknown column {col!r}")
        df[col], recoded[col] = recode(source, col, df[col])
    return df, recoded


def parse(
    source: Source, content: bytes, fmt: str | None = None, label: str = ""
) -> tuple[pd.DataFrame, Recoded]:
    """Parse a source's bytes (format ``fmt``, default the source's) into a clean DataFrame
    (:func:`clean`)."""
    return clean(source, _parse_bytes(source, content, fmt or source.format, label or source.path))


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Stack the frames of one source's files. A column that is all missing in one file (JSON
    nulls read as objects) takes the type of the others rather than turning them into text."""
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True).infer_objects()


def _result(
    source: Source, cleaned: tuple[pd.DataFrame, Recoded], lineage: dict[str, Any], **kw
) -> SourceRead:
    """Finish a lineage entry (name and kind first, then what value_map recoded, rows and
    columns last) and pair it up with the clean frame."""
    frame, recoded = cleaned
    full = {"name": source.name, "kind": source.kind, **lineage}
    full.update(recode_lineage(source, recoded, len(frame)))
    full.update(rows=len(frame), columns=[str(c) for c in frame.columns])
    return SourceRead(frame=frame, lineage=full, **kw)


# --- file --------------------------------------------------------------------------------------


def read_content(source: Source, root: Path, rel: str | None = None) -> bytes:
    """Return one file's bytes, decompressed if it ends in ``.gz``.

    ``rel`` is the file's path relative to ``root`` (default: the source's ``path``, whose
    checksum is then verified).
    """
    name = rel or source.path
    path = root / name
    if not path.is_file():
        raise SourceError(f"source {source.name!r}: file {name} does not exist")
    content = _decompress(path.read_bytes(), name, source)
    if rel is None:
        _check_digest(source, sha256_bytes(content), f"content of {name}")
    return content


def _glob(source: Source, root: Path) -> list[str]:
    """The files a glob matches, relative to ``root``, sorted; none is an error."""
    pattern = os.path.join(escape(str(root)), source.path)  # an absolute path stays as it is
    matches = [Path(p) for p in glob(pattern, recursive=True)]
    rels = sorted(
        (p.relative_to(root) if p.is_relative_to(root) else p).as_posix()
        for p in matches
        if p.is_file()
    )
    if not rels:
        raise SourceError(f"source {source.name!r}: no file matches the pattern {source.path!r}")
    return rels


def read_files(source: Source, root: Path) -> SourceRead:
    """Read a ``file`` source: one path, or every file a glob matches, in sorted order."""
    if not any(c in source.path for c in GLOB_CHARS):
        content = read_content(source, root)
        return _result(
            source,
            parse(source, content),
            {"path": source.path, "format": source.format, "sha256": sha256_bytes(content)},
        )
    files, frames = [], []
    for rel in _glob(source, root):
        content = read_content(source, root, rel)
        df = _parse_bytes(source, content, source.format, rel)
        if frames:
            check_same_columns(source, rel, df.columns, files[0]["file"], frames[0].columns)
            df = df[list(frames[0].columns)]  # JSON keys and Parquet columns in another order
        files.append({"file": rel, "sha256": sha256_bytes(content), "rows": len(df)})
        frames.append(df)
    lineage = files_lineage(source, files)
    return _result(source, clean(source, _concat(frames)), lineage)


def check_same_columns(
    source: Source, rel: str, columns: Any, first_rel: str, first_columns: Any
) -> None:
    """A SourceError when file ``rel`` of a source has other columns than its first file,
    ``first_rel`` (in any order: JSON keys and Parquet columns may come in another)."""
    if set(columns) != set(first_columns):
        raise SourceError(
            f"source {source.name!r}: columns {[str(c) for c in columns]} of {rel} "
            f"differ from {[str(c) for c in first_columns]} of {first_rel}"
        )


def files_lineage(source: Source, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The lineage of a source read from several files (each ``file``, ``sha256``, ``rows``):
    the files and their combined digest, which must be the one the source declares."""
    digest = combined_digest([(f["file"], f["sha256"]) for f in files])
    _check_digest(source, digest, f"the files matching {source.path!r} (combined)")
    return {"path": source.path, "format": source.format, "files": files, "sha256": digest}


# --- URLs and credentials ----------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` without user, password, query string and fragment: safe to log and to record."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    if "://" in url:  # keep an empty host: sqlite:///file.db
        return f"{parts.scheme}://{host}{parts.path}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _scrub(message: str, url: str) -> str:
    """``message`` with the URL's password and query string replaced by ``***``."""
    parts = urlsplit(url)
    secrets = [url, parts.password, parts.password and unquote(parts.password), parts.query]
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(secret, "***" if secret != url else redact_url(url))
    return " ".join(message.split())


def resolve_url(source: Source) -> str:
    """The source's URL: ``url``, or the value of the environment variable named by
    ``url_env`` (an error naming the variable if it is unset or empty)."""
    if source.url_env:
        value = os.environ.get(source.url_env, "").strip()
        if not value:
            raise SourceError(
                f"source {source.name!r}: environment variable {source.url_env} is not set; "
                "it should hold the URL (with its credentials)"
            )
        return value
    return source.url or ""


def _backoff(attempt: int) -> None:
    time.sleep(min(BACKOFF_SECONDS * 2**attempt, MAX_BACKOFF_SECONDS))


def _retrying(
    call: Callable[[], Any],
    retryable: type[Exception],
    attempts: int,
    failed: str,
    reason: Callable[[Exception], str],
) -> Any:
    """``call()``, tried up to ``attempts`` times with a growing wait while it raises
    ``retryable``; then a SourceError: ``failed`` (attempts) ``reason(error)``."""
    for attempt in range(attempts):
        try:
            return call()
        except retryable as exc:
            if attempt + 1 == attempts:
                raise SourceError(
                    f"{failed} ({attempts} attempt{'s' if attempts > 1 else ''}): {reason(exc)}"
                ) from None
            _backoff(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


# --- database ----------------------------------------------------------------------------------


def _sqlalchemy_url(source: Source, raw: str, root: Path):
    """Parse ``raw`` as a SQLAlchemy URL; a bare or relative SQLite path is under ``root``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in raw:
        raw = f"sqlite:///{raw}"
    try:
        url = make_url(raw)
    except (ArgumentError, ValueError):
        where = f"environment variable {source.url_env}" if source.url_env else "url"
        raise SourceError(
            f"source {source.name!r}: {where} does not hold a valid SQLAlchemy URL "
            "(dialect+driver://user:password@host:port/database)"
        ) from None
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        path = Path(url.database)
        path = path if path.is_absolute() else root / path
        if not path.is_file():  # SQLite would create an empty database: say what is wrong
            raise SourceError(
                f"source {source.name!r}: database file {url.database} does not exist"
            )
        url = url.set(database=str(path))
    return url


def _connect_args(backend: str, timeout: float) -> dict[str, Any]:
    if backend in ("postgresql", "mysql", "mariadb"):
        return {"connect_timeout": max(1, math.ceil(timeout))}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}


def _db_reason(exc: BaseException, raw: str) -> str:
    """The driver's own message (not SQLAlchemy's wrapper), on one line, without secrets."""
    if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ is not None:
        exc = exc.__cause__  # pandas' wrapper repeats the SQL; the driver's message is enough
    orig = getattr(exc, "orig", None)
    return _scrub(str(orig if orig is not None else exc), raw)


def _read_table(conn, table: str) -> pd.DataFrame:
    """Every row of ``table`` (``schema.table`` allowed), ordered by its primary key, or by all
    columns when it has none, so the same data always comes back in the same order."""
    from sqlalchemy import MetaData, Table, select

    schema, _, name = table.rpartition(".")
    t = Table(name, MetaData(), autoload_with=conn, schema=schema or None)
    order = list(t.primary_key.columns) or list(t.columns)
    return pd.read_sql_query(select(t).order_by(*order), conn)


def _connect(engine, source: Source, label: str, raw: str):
    """A connection, after up to ``source.retries`` more attempts with a growing wait."""
    from sqlalchemy.exc import SQLAlchemyError

    return _retrying(
        engine.connect,
        SQLAlchemyError,
        source.retries + 1,
        f"source {label}: cannot connect to the database",
        lambda exc: _db_reason(exc, raw),
    )


def _query(conn, source: Source, label: str, raw: str) -> pd.DataFrame:
    """The table's rows or the query's result; a missing table or bad SQL is a SourceError."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    try:
        if source.table:
            schema, _, name = source.table.rpartition(".")
            if not inspect(conn).has_table(name, schema=schema or None):
                raise SourceError(f"source {label}: table {source.table!r} does not exist")
            return _read_table(conn, source.table)
        return pd.read_sql_query(source.query, conn)
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
        what = f"reading table {source.table!r}" if source.table else "the query"
        raise SourceError(f"source {label}: {what} failed: {_db_reason(exc, raw)}") from None


def read_database(source: Source, root: Path) -> SourceRead:
    """Read a ``database`` source: a whole table, or a query's result in the query's order."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import NoSuchModuleError
    from sqlalchemy.pool import NullPool

    raw = resolve_url(source)
    url = _sqlalchemy_url(source, raw, root)
    shown = redact_url(raw if "://" in raw else f"sqlite:///{raw}")
    label = f"{source.name!r} ({shown})"
    try:
        engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args=_connect_args(url.get_backend_name(), source.timeout),
        )
    except (NoSuchModuleError, ImportError) as exc:
        raise SourceError(
            f"source {label}: no driver for {url.drivername!r} is installed: {exc}"
        ) from None
    try:
        with _connect(engine, source, label, raw) as conn:
            frame = _query(conn, source, label, raw)
    finally:
        engine.dispose()
    digest = frame_digest(frame)
    _check_digest(source, digest, "the result (as CSV)")
    lineage: dict[str, Any] = {"url": shown}
    if source.url_env:
        lineage["url_env"] = source.url_env
    lineage.update({"table": source.table} if source.table else {"query": source.query})
    lineage["sha256"] = digest
    return _result(source, clean(source, frame), lineage)


# --- http --------------------------------------------------------------------------------------


class _Retryable(Exception):
    """A failure worth another attempt: no connection, a timeout, a 5xx, a cut-off body."""


def _get(session, url: str, source: Source) -> bytes:
    """One attempt at downloading ``url``; raises :class:`_Retryable` or :class:`SourceError`."""
    import requests

    shown = redact_url(url)
    try:
        with session.get(
            url, stream=True, timeout=source.timeout, headers={"Accept-Encoding": "identity"}
        ) as resp:
            if resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code} {resp.reason}")
            if resp.status_code != 200:
                raise SourceError(
                    f"source {source.name!r}: {shown} answered HTTP {resp.status_code} "
                    f"{resp.reason}"
                )
            body = bytearray()
            for chunk in resp.iter_content(DOWNLOAD_CHUNK):
                body += chunk
            expected = resp.headers.get("Content-Length")
            encoded = resp.headers.get("Content-Encoding", "identity") != "identity"
            if expected and expected.isdigit() and not encoded and len(body) != int(expected):
                raise _Retryable(f"truncated download: received {len(body)} of {expected} bytes")
            return bytes(body)
    except requests.exceptions.SSLError as exc:
        raise SourceError(
            f"source {source.name!r}: TLS error for {shown}: {_scrub(str(exc), url)}"
        ) from None
    except requests.exceptions.ChunkedEncodingError as exc:
        raise _Retryable(f"truncated download (connection closed early): {exc}") from None
    except requests.exceptions.Timeout:
        raise _Retryable(f"no answer within the timeout of {source.timeout} s") from None
    except requests.exceptions.ConnectionError as exc:
        errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))  # the OS's own reason
        raise _Retryable(f"connection failed: {errno.group(0) if errno else exc}") from None
    except requests.exceptions.RequestException as exc:
        raise SourceError(
            f"source {source.name!r}: cannot download {shown}: {_scrub(str(exc), url)}"
        ) from None


def download(source: Source, url: str) -> bytes:
    """Download ``url``'s body, retrying connection failures, timeouts, 5xx answers and
    truncated bodies up to ``source.retries`` times with a growing wait; never a 4xx."""
    import requests

    shown = redact_url(url)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise SourceError(f"source {source.name!r}: {shown!r} is not an http(s) URL")
    with requests.Session() as session:
        return _retrying(
            lambda: _get(session, url, source),
            _Retryable,
            source.retries + 1,
            f"source {source.name!r}: download of {shown} failed",
            lambda exc: _scrub(str(exc), url),
        )


def read_http(source: Source, root: Path) -> SourceRead:
    """Read an ``http`` source: download, decompress a ``.gz``, verify the pinned SHA-256."""
    url = resolve_url(source)
    shown = redact_url(url)
    raw = download(source, url)
    content = _decompress(raw, urlsplit(url).path, source)
    digest = sha256_bytes(content)
    _check_digest(source, digest, f"the content downloaded from {shown}")
    cleaned = parse(source, content, label=shown)
    lineage = {"url": shown, "format": source.format, "bytes": len(raw), "sha256": digest}
    return _result(source, cleaned, lineage)


# --- landing -----------------------------------------------------------------------------------


def _landing_format(name: str) -> str | None:
    lower = name.lower()
    return next((f for s, f in LANDING_SUFFIXES.items() if lower.endswith(s)), None)


def _landing_files(source: Source, root: Path) -> list[Path]:
    """Files under the landing folder, sorted by their path in it; hidden ones (being written,
    by convention) and README files are not records."""
    folder = root / source.path
    if not folder.is_dir():
        raise SourceError(f"source {source.name!r}: landing folder {source.path} does not exist")
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not p.name.upper().startswith("README")
    ]
    if not files and not source.allow_empty:
        raise SourceError(
            f"source {source.name!r}: landing folder {source.path} has no files (if it may be "
            "empty between uploads, set allow_empty: true on it)"
        )
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _column_diff(got: list[str], expected: list[str]) -> str:
    missing = [c for c in expected if c not in got]
    extra = [c for c in got if c not in expected]
    return f"columns differ from the other files': missing {missing}, extra {extra}"


def read_landing(source: Source, root: Path) -> SourceRead:
    """Read a ``landing`` folder: every file in sorted order; malformed ones are set aside.

    A file is malformed when it cannot be parsed, or when its columns differ from the declared
    ``columns`` or, with none declared, from those most of the files share. It is returned in
    :attr:`SourceRead.quarantined`; an empty folder, or one with no good file, is an error.
    """
    folder = root / source.path
    good: list[tuple[str, str, pd.DataFrame]] = []
    bad: list[Quarantined] = []
    for path in _landing_files(source, root):
        rel = path.relative_to(folder).as_posix()
        label = f"{source.path}/{rel}"
        fmt = _landing_format(path.name)
        if fmt is None:
            kinds = ", ".join(LANDING_SUFFIXES)
            bad.append(Quarantined(rel, path, f"unsupported file type; expected one of {kinds}"))
            continue
        try:
            content = _decompress(path.read_bytes(), label, source)
            df = _parse_bytes(source, content, fmt, label)
        except SourceError as exc:
            bad.append(Quarantined(rel, path, str(exc)))
            continue
        good.append((rel, sha256_bytes(content), df))
    if good and not source.columns:
        # The reference is the column set most files share (the earliest file breaks a tie).
        counts = Counter(frozenset(map(str, df.columns)) for _, _, df in good)
        best = max(counts.values())
        ref = next(
            [str(c) for c in df.columns]
            for _, _, df in good
            if counts[frozenset(map(str, df.columns))] == best
        )
        kept = []
        for rel, digest, df in good:
            got = [str(c) for c in df.columns]
            if set(got) == set(ref):
                kept.append((rel, digest, df[ref] if got != ref else df))
            else:
                bad.append(Quarantined(rel, folder / rel, _column_diff(got, ref)))
        good = kept
    bad.sort(key=lambda q: q.file)
    if not good and not bad and source.allow_empty:  # between uploads: nothing yet
        frame = pd.DataFrame(columns=list(source.columns or ()))
        return _result(source, (frame, {}), {"path": source.path, "files": [], "sha256": None})
    if not good:
        reasons = "; ".join(f"{q.file}: {q.reason}" for q in bad)
        raise SourceError(
            f"source {source.name!r}: no file in landing folder {source.path} could be read: "
            f"{reasons}"
        )
    files = [{"file": rel, "sha256": digest, "rows": len(df)} for rel, digest, df in good]
    digest = combined_digest([(f["file"], f["sha256"]) for f in files])
    _check_digest(source, digest, f"the files taken from {source.path} (combined)")
    cleaned = clean(source, _concat([df for _, _, df in good]))
    lineage = {
        "path": source.path,
        "files": files,
        "quarantined": [{"file": q.file, "reason": q.reason} for q in bad],
        "sha256": digest,
    }
    return _result(source, cleaned, lineage, quarantined=tuple(bad))


def quarantine_folder(root: Path, name: str) -> Path:
    """Where a source's quarantined files go: ``data/quarantine/<name>/`` under ``root``."""
    if not name or name in (".", "..") or any(sep in name for sep in "/\\"):
        raise SourceError(f"source {name!r}: a landing source's name must be a plain folder name")
    return root / QUARANTINE_DIR / name


def write_quarantine(read: SourceRead, folder: Path) -> None:
    """Make ``folder`` hold exactly the read's quarantined files, each copied under its name in
    the landing folder with ``<name>.reason.txt`` beside it (earlier rejects are cleared)."""
    if folder.exists():
        shutil.rmtree(folder)
    for q in read.quarantined:
        target = folder / q.file
        write_bytes(target, q.path.read_bytes())
        write_text(target.with_name(target.name + REASON_SUFFIX), q.reason + "\n")


# --- all kinds ---------------------------------------------------------------------------------

READERS: dict[str, Callable[[Source, Path], SourceRead]] = {
    "file": read_files,
    "database": read_database,
    "http": read_http,
    "landing": read_landing,
}


def read_source(source: Source, root: Path) -> SourceRead:
    """Read one source of any kind (relative paths are under ``root``) with its lineage.

    A source with no rows (an empty file, a gzip of nothing, a header line only, an empty
    table) is an error naming it, unless it says ``allow_empty``: an empty source is almost
    always a broken upstream export, and would otherwise only surface much later.
    """
    read = READERS[source.kind](source, root)
    check_rows(source, empty=read.frame.empty)
    return read


def check_rows(source: Source, empty: bool) -> None:
    """A SourceError when a source that does not say ``allow_empty`` is ``empty``."""
    if empty and not source.allow_empty:
        raise SourceError(
            f"source {source.name!r} ({describe(source)}) holds no rows (an empty file, a "
            "header line only, or an empty table or query); if it may be empty, set "
            "allow_empty: true on it"
        )


def read_quarantining(source: Source, root: Path, say: Callable[[str], None]) -> SourceRead:
    """:func:`read_source`; a landing source's rejected files then go to its quarantine folder
    (:func:`write_quarantine`), each one said."""
    read = read_source(source, root)
    if source.kind == "landing":
        write_quarantine(read, quarantine_folder(root, source.name))
        for q in read.quarantined:
            say(f"{source.name}: quarantined {q.file}: {q.reason}")
    return read


def describe(source: Source) -> str:
    """Where a source's records come from, for progress lines (no credentials)."""
    if source.kind == "database":
        what = f"table {source.table}" if source.table else "a query"
        where = f"${source.url_env}" if source.url_env else redact_url(source.url or "")
        return f"{what} of {where}"
    if source.kind == "http":
        return f"${source.url_env}" if source.url_env else redact_url(source.url or "")
    return source.path or ""


def canonical_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows sorted by a stable 64-bit hash of each row's values (its source included), so
    the same rows in any order give the same snapshot, byte for byte, and no later stage
    re-runs for a reordering. Identical rows are interchangeable, so ties need no rule."""
    if frame.empty:
        return frame.reset_index(drop=True)
    keys = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return frame.iloc[np.argsort(keys, kind="stable")].reset_index(drop=True)


def _kind(series: pd.Series) -> str:
    """What a column holds, for deciding whether sources agree: number, boolean, datetime,
    text, mixed (Python objects of several types) or empty (no values)."""
    if series.isna().all():
        return "empty"
    dtype = series.dtype
    if found := _dtype_kind(dtype):
        return found
    if not pd.api.types.is_object_dtype(dtype):
        return "text"  # pandas' string dtypes
    types = {type(v) for v in series.dropna().tolist()}
    return "text" if types <= {str} else "mixed"


def as_text(series: pd.Series) -> pd.Series:
    """``series`` as text values (see :func:`mlcycle.io.value_text`), missing values kept
    missing."""
    return pd.Series(
        [value_text(v) for v in series.tolist()],
        index=series.index,
        dtype=object,
        name=series.name,
    )


def type_conflicts(frames: list[tuple[str, pd.DataFrame]]) -> dict[str, dict[str, str]]:
    """The columns that cannot keep one type across the named frames: numbers in one source
    and text in another, or values of several types in one. ``{column: {source: kind}}``."""
    conflicts: dict[str, dict[str, str]] = {}
    if not frames:
        return conflicts
    for col in frames[0][1].columns:
        kinds = {name: _kind(df[col]) for name, df in frames if col in df.columns}
        held = set(kinds.values()) - {"empty"}
        if len(held) > 1 or "mixed" in held:
            conflicts[str(col)] = kinds
    return conflicts


def union(reads: list[SourceRead]) -> pd.DataFrame:
    """Stack the sources' records; all sources must have the same columns.

    Adds :data:`SOURCE_COLUMN` naming each record's source, which a by-source split uses.
    A column of :func:`type_conflicts` becomes text (:func:`as_text`) in every source, so the
    snapshot can always be written: ``validate`` then reports the values that do not fit the
    schema's type as ``type`` findings naming the column and the source, instead of a crash.
    """
    # A source that may be empty and is adds no rows, and may not even know its columns.
    reads = [r for r in reads if len(r.frame)] or reads[:1]
    first = reads[0]
    expected = list(first.frame.columns)
    for read in reads:
        cols = list(read.frame.columns)
        if set(cols) != set(expected):
            missing = sorted(set(expected) - set(cols))
            extra = sorted(set(cols) - set(expected))
            raise SourceError(
                f"source {read.lineage['name']!r} has different columns from "
                f"{first.lineage['name']!r}: missing {missing}, extra {extra}"
            )
    text = list(type_conflicts([(r.lineage["name"], r.frame[expected]) for r in reads]))
    parts = [unify(r.frame, r.lineage["name"], expected, text) for r in reads]
    # A column with no values in one source takes the others' type rather than object.
    return pd.concat(parts, ignore_index=True).infer_objects()


def unify(frame: pd.DataFrame, name: str, columns: list[Any], text: list[Any]) -> pd.DataFrame:
    """One source's rows (or a part of them) as rows of the snapshot: its ``columns`` in the
    snapshot's order, the ``text`` columns made text, :data:`SOURCE_COLUMN` added (``name``)."""
    frame = frame[columns].copy()
    for col in text:
        frame[col] = as_text(frame[col])
    frame[SOURCE_COLUMN] = name
    return frame

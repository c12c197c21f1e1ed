"""Batch prediction that streams: score a CSV, Parquet or JSON Lines file chunk by chunk and
write every record with its predictions, holding one chunk in memory however large the file.

Chunks change nothing: every chunk is read with the same column types, decided by the format
and the model's signature, never by what one chunk happens to hold (pandas would read a
column of whole numbers as integers in one chunk and as floats in the next, where a value is
missing, so a category ``1`` would become ``1.0``):

- CSV: every column is text, exactly as written (``007`` stays ``007``); the signature's
  numeric inputs are parsed to float64 for scoring, bit for bit as pandas' CSV reader parses
  them. The text is what a CSV output echoes.
- JSON Lines: each value keeps its JSON type (no guessing of dates or numbers in strings); a
  whole number stays whole in every chunk, so a category sent as ``1`` is the text ``"1"``.
  A key missing from a record is a missing value; the columns are those of the first chunk
  (keys first seen later are left out, and :attr:`BatchResult.notes` says so).
- Parquet: the file's own schema; integer and boolean columns keep their type where values
  are missing.

The output, chosen by its suffix (``.csv``, ``.csv.gz``, ``.parquet``, ``.jsonl``,
``.jsonl.gz``), holds the input columns and then the columns of
:func:`mlcycle.predict.output_columns` (one of the same name replaces the input's, in place).
A Parquet output has one schema for every chunk: a Parquet input's own types; from CSV or
JSON Lines, the numeric inputs as float64 and every other input column as text;
probabilities float64; the prediction text (classification) or float64 (regression).

The output is written to a temporary file beside it and renamed at the end: a failure leaves
no partial file and never replaces an existing one. A missing column is reported before
anything is written; a bad value names its column and its row counted from 0 over the whole
file (the first record is row 0), as scoring the whole file at once would. So does a value that
breaks a per-row rule of the bundle's schema whose severity is error (:mod:`mlcycle.schema.rows`,
as the service refuses it); one of severity warning is scored and counted in
:attr:`BatchResult.notes`, with the columns that are neither the model's inputs nor the schema's
(copied to the output, not used).
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlcycle.bundle import Bundle
from mlcycle.encoder import Encoder
from mlcycle.features import SchemaError, Signature
from mlcycle.io import atomic_folder, atomic_path
from mlcycle.predict import PREDICTION, Scores, decide, output_columns
from mlcycle.schema.rows import RowBreak, errors, warnings

_encode_text = json.encoder.encode_basestring  # type: ignore[attr-defined]  # C-accelerated

CSV, PARQUET, JSONL = "csv", "parquet", "jsonl"
FORMATS = {".csv": CSV, ".csv.gz": CSV, ".parquet": PARQUET, ".jsonl": JSONL, ".jsonl.gz": JSONL}
DEFAULT_CHUNK_ROWS = 100_000
DEFAULT_PART_ROWS = 1_000_000  # rows per Parquet part of a folder output
PART_NAME = "part-{:05d}.parquet"  # as the Dask engine names its parts
_PART_RE = re.compile(r"part-\d{5,}\.parquet")

Predictions = dict[str, np.ndarray | list]

_NULLABLE = {  # Parquet -> pandas: integers and booleans stay so where values are missing
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}
_WHOLE_LIMIT = 2.0**53  # floats below this are exact integers


@dataclass(frozen=True)
class BatchResult:
    """What :func:`predict_file` did: ``rows`` scored in ``chunks`` in ``seconds``, and
    ``notes`` a person should read (left-out columns)."""

    input_path: Path
    output_path: Path
    rows: int
    chunks: int
    seconds: float
    notes: tuple[str, ...] = ()
    parts: int = 0  # Parquet parts written (a folder output), else 0


def file_format(path: str | Path) -> tuple[str, bool]:
    """The format of ``path`` by its suffix (csv, parquet or jsonl) and whether it is gzipped;
    a :class:`ValueError` naming the suffixes we read for any other."""
    name = Path(path).name.lower()
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt, suffix.endswith(".gz")
    raise ValueError(f"{path}: unsupported file type; use one of {', '.join(FORMATS)}")


def score_chunk(
    bundle: Bundle, records: pd.DataFrame, encoder: Encoder | None = None
) -> Predictions:
    """The prediction columns for one chunk of ``records`` (index: the rows' numbers).

    The one place batch prediction calls the model: through the compiled ``encoder`` (built
    from the bundle's signature when not given) and ``output_encoded``, the service's path, bit
    for bit the values of :func:`mlcycle.predict.score` without a pandas model frame. A value
    the model cannot take (infinite, beyond float32) is a SchemaError naming its column and
    its row number.
    """
    sig = bundle.signature
    if len(records) == 0:
        empty = np.zeros((0, len(sig.classes))) if sig.is_classification else np.zeros(0)
        return output_columns(Scores(empty, [] if sig.is_classification else None), sig)
    matrix = (encoder or Encoder.compile(sig)).encode(records)
    with np.errstate(over="ignore"):
        infinite = np.isinf(matrix.astype(np.float32, copy=False))
    if infinite.any():
        at, col = (int(i) for i in np.argwhere(infinite)[0])
        raise SchemaError(
            f"column {sig.columns[col]!r}, row {records.index[at]}: {float(matrix[at, col])!r} "
            f"is infinite or too large for the model ({int(infinite.sum())} such value(s) in "
            "this chunk)"
        )
    output = bundle.model.output_encoded(matrix, sig)
    return output_columns(Scores(output, decide(output, sig, bundle.decision)), sig)


def count_rows(path: str | Path) -> int | None:
    """The number of records in ``path``, cheaply: Parquet's metadata, else the newlines of the
    (decompressed) bytes, less CSV's header line. For CSV an estimate (a quoted value may
    hold a newline, a blank line is no record); None if the file cannot be read."""
    fmt, gz = file_format(path)
    try:
        if fmt == PARQUET:
            return pq.ParquetFile(path).metadata.num_rows
        lines, last = 0, b"\n"
        with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                lines += block.count(b"\n")
                last = block[-1:]
    except (OSError, EOFError, pa.ArrowException):
        return None
    lines += last != b"\n"
    return max(lines - (fmt == CSV), 0)


def is_folder_output(path: str | Path) -> bool:
    """Whether an output names a folder of Parquet parts: an existing folder, a path ending
    with a slash, or a name without a suffix."""
    text = str(path)
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        return True
    return not Path(text).suffix


def input_files(spec: str | Path) -> list[Path]:
    """The files an input names: the file itself, the files of a glob (``data/*.parquet``),
    or the readable files of a folder (its parts, e.g. a Dask data set), in name order. All of
    one format; a :class:`FileNotFoundError` when nothing matches."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
            and _readable(p)
        )
        if not found:
            raise FileNotFoundError(f"{spec}: a folder without CSV, Parquet or JSON Lines files")
    elif any(c in text for c in "*?[") and not path.exists():
        found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not found:
            raise FileNotFoundError(f"{spec}: no file matches")
    else:
        if not path.is_file():
            raise FileNotFoundError(f"{spec} does not exist")
        return [path]
    formats = {file_format(p)[0] for p in found}
    if len(formats) > 1:
        kinds = ", ".join(sorted(formats))
        raise ValueError(f"{spec}: mixes formats ({kinds}); score one format at a time")
    return found


def _readable(path: Path) -> bool:
    try:
        file_format(path)
    except ValueError:
        return False
    return True


def predict_file(
    bundle: Bundle,
    input_path: str | Path,
    output_path: str | Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: bool = True,
    part_rows: int = DEFAULT_PART_ROWS,
) -> BatchResult:
    """Score ``input_path`` chunk by chunk into ``output_path`` (formats by their suffixes;
    see the module's notes on types), with a progress bar on stderr if ``progress``.

    The input may be a file, a glob or a folder of files of one format (read in name order,
    as one). An output that is a folder (see :func:`is_folder_output`) receives Parquet parts
    ``part-00000.parquet``... of ``part_rows`` rows each, with exactly the columns and types
    of the single-file Parquet output; they are written to a temporary folder beside it that
    replaces it at the end.

    The predictions equal those of scoring the whole file at once. Raises
    :class:`~mlcycle.features.SchemaError` for a missing column (before anything is written)
    or a bad value (naming the column and the row in the file), :class:`ValueError` for a
    file that cannot be read, :class:`FileNotFoundError` for a missing input; the output is
    then left as it was.
    """
    start_time = time.perf_counter()
    folder = is_folder_output(output_path)
    output_path = Path(output_path)
    files = input_files(input_path)
    in_fmt, _ = file_format(files[0])
    out_fmt, out_gz = (PARQUET, False) if folder else file_format(output_path)
    _check_counts(chunk_rows=chunk_rows, part_rows=part_rows)
    if folder:
        _check_output_folder(output_path)
    sig = bundle.signature
    encoder = Encoder.compile(sig)
    reader = _READERS[in_fmt](files[0], sig, chunk_rows)
    notes: list[str] = []
    chunks = reader.chunks(notes)
    first = next(chunks, None)  # reading the first chunk checks the columns: nothing written yet
    rules = _RowChecks(bundle, reader.columns)
    total = _total_rows(files) if progress else None
    bar = _progress_bar(Path(input_path), total, progress)
    rows = n_chunks = 0
    done = False
    place = atomic_folder(output_path) if folder else atomic_path(output_path)
    try:
        with place as tmp:
            if folder:
                writer: Any = _PartsWriter(tmp, reader, sig, part_rows)
            else:
                writer = _WRITERS[out_fmt](tmp, out_gz, reader, sig)
            try:
                for i, path in enumerate(files):
                    if i:
                        later = _READERS[in_fmt](path, sig, chunk_rows)
                        chunks = later.chunks(notes)
                        first = next(chunks, None)
                        _same_columns(later, reader, path, files[0])
                    pending = [first] if first is not None else []
                    first = None  # hold one chunk at a time
                    for chunk in _chain(pending, chunks):
                        rules.check(chunk, path)
                        preds = _score(bundle, encoder, chunk, path)
                        writer.write(chunk, preds)
                        rows += chunk.rows
                        n_chunks += 1
                        bar.update(chunk.rows)
                        del chunk, preds  # before the next one is read
                if n_chunks == 0:
                    writer.write(reader.empty_chunk(), score_chunk(bundle, reader.empty_records()))
            finally:
                writer.close()
        done = True
    finally:
        _close_bar(bar, rows if done else None)
    seconds, parts = time.perf_counter() - start_time, writer.parts if folder else 0
    notes += rules.notes(Path(input_path))
    return BatchResult(Path(input_path), output_path, rows, n_chunks, seconds, tuple(notes), parts)


def _check_counts(**counts: Any) -> None:
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


def _total_rows(files: list[Path]) -> int | None:
    """The rows of ``files`` for the progress bar; None if one cannot be counted."""
    counts = [count_rows(f) for f in files]
    return None if None in counts else sum(c for c in counts if c is not None)


def _close_bar(bar: Any, rows: int | None) -> None:
    """Close the progress bar; after a complete run (``rows`` scored) it ends at 100 %, the
    count having been an estimate (a newline inside quotes)."""
    if rows is not None and bar.total != rows:
        bar.total = rows
        bar.refresh()
    bar.close()


def _same_columns(reader: _Reader, first: _Reader, path: Path, first_path: Path) -> None:
    if reader.columns != first.columns:
        raise SchemaError(
            f"{path}: columns {reader.columns} differ from those of {first_path} "
            f"({first.columns}); every input file must have the same columns"
        )


def _check_output_folder(target: Path) -> None:
    """An output folder may be replaced only if it holds nothing but earlier parts."""
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} is a file; give a folder (ending with /) for the parts")
    if target.is_dir():
        other = [p.name for p in target.iterdir() if not _PART_RE.fullmatch(p.name)]
        if other:
            raise ValueError(
                f"{target} holds other files ({', '.join(sorted(other)[:5])}); the parts "
                "replace the folder, so give an empty folder or a new path"
            )


class _PartsWriter:
    """Parquet parts of ``part_rows`` rows, each with the single-file output's schema; a chunk
    that crosses a part's end is split."""

    def __init__(self, folder: Path, reader: _Reader, sig: Signature, part_rows: int) -> None:
        self.folder, self.reader, self.sig, self.part_rows = folder, reader, sig, part_rows
        self.current: _ParquetWriter | None = None
        self.rows_in_part = 0
        self.parts = 0

    def _next_part(self) -> _ParquetWriter:
        if self.current is not None:
            self.current.close()
        path = self.folder / PART_NAME.format(self.parts)
        self.current = _ParquetWriter(path, False, self.reader, self.sig)
        self.parts += 1
        self.rows_in_part = 0
        return self.current

    def write(self, chunk: _Chunk, preds: Predictions) -> None:
        while True:
            writer = self.current
            if writer is None or (self.rows_in_part >= self.part_rows and chunk.rows):
                writer = self._next_part()
            room = self.part_rows - self.rows_in_part
            if chunk.rows <= room:
                writer.write(chunk, preds)
                self.rows_in_part += chunk.rows
                return
            head, head_preds, chunk, preds = _split(chunk, preds, room)
            writer.write(head, head_preds)
            self.rows_in_part += head.rows

    def close(self) -> None:
        if self.current is not None:
            self.current.close()


def _split(
    chunk: _Chunk, preds: Predictions, at: int
) -> tuple[_Chunk, Predictions, _Chunk, Predictions]:
    """A chunk and its predictions cut after ``at`` rows."""

    def cut(c: _Chunk, a: int, b: int) -> _Chunk:
        return _Chunk(
            c.start + a,
            c.records.iloc[a:b],
            frame=None if c.frame is None else c.frame.iloc[a:b],
            batch=None if c.batch is None else c.batch.slice(a, b - a),
            text=c.text,
        )

    n = chunk.rows
    head = {k: v[:at] for k, v in preds.items()}
    tail = {k: v[at:] for k, v in preds.items()}
    return cut(chunk, 0, at), head, cut(chunk, at, n), tail


# --- chunks ----------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """One chunk as read: ``records`` (the signature's inputs, typed for scoring, indexed by
    row number in the file) and the input columns for writing: ``frame`` (pandas) or
    ``batch`` (a Parquet input's own record batch)."""

    start: int
    records: pd.DataFrame
    frame: pd.DataFrame | None = None
    batch: pa.RecordBatch | None = None
    text: bool = False  # frame holds text (CSV): typed outputs write the parsed numbers

    @property
    def rows(self) -> int:
        return len(self.records)


def _chain(pending: list[_Chunk], rest: Iterator[_Chunk]) -> Iterator[_Chunk]:
    while pending:
        yield pending.pop()  # not kept once handed out
    yield from rest


def _score(bundle: Bundle, encoder: Encoder, chunk: _Chunk, path: Path) -> Predictions:
    try:
        return score_chunk(bundle, chunk.records, encoder)
    except SchemaError as exc:
        last = chunk.start + chunk.rows - 1
        raise SchemaError(
            f"{path}: {exc} [in the chunk of rows {chunk.start}-{last}, rows numbered from 0 "
            f"(the first record); scoring stopped there and wrote nothing]"
        ) from exc


class _RowChecks:
    """The bundle's per-row rules (:mod:`mlcycle.schema.rows`) over each chunk's columns of
    the schema, as the service applies them to a request: a row breaking a rule whose
    severity is error stops scoring, naming its row in the file, the column and the rule; the
    rules of severity warning are counted for the notes. Bundles without rules check
    nothing."""

    def __init__(self, bundle: Bundle, columns: list[str]) -> None:
        self.rules = bundle.rules
        data = self.rules.data_columns if self.rules is not None else ()
        self.names = [c for c in data if c in set(columns)]
        known = {*bundle.signature.input_columns, *bundle.signature.unused_inputs, *data}
        if self.rules is not None:
            known.add(self.rules.schema.target)
        self.unknown = [c for c in columns if c not in known]
        self.warned: dict[tuple[str, str], tuple[RowBreak, list[int], int]] = {}

    def check(self, chunk: _Chunk, path: Path) -> None:
        if self.rules is None or not self.names or not chunk.rows:
            return
        if chunk.frame is not None:
            frame = chunk.frame[self.names]
        else:
            assert chunk.batch is not None
            frame = chunk.batch.select(self.names).to_pandas(types_mapper=_NULLABLE.get)
        breaks = self.rules.check_frame(frame)
        refused = errors(breaks)
        if refused:
            first = min(refused, key=lambda b: b.rows[0])
            count = sum(len(b.rows) for b in refused)
            raise SchemaError(
                f"{path}: row {chunk.start + first.rows[0]}, column {first.column!r}: "
                f"{first.problem(first.values[0])} [{count} such value(s) in the chunk of rows "
                f"{chunk.start}-{chunk.start + chunk.rows - 1}, rows numbered from 0 (the first "
                "record); scoring stopped there and wrote nothing]"
            )
        for item in warnings(breaks):
            key = (item.column, item.kind)
            seen, rows, n = self.warned.get(key, (item, [], 0))
            rows += [chunk.start + r for r in item.rows[: 5 - len(rows)]]
            self.warned[key] = (seen, rows, n + len(item.rows))

    def notes(self, path: Path) -> list[str]:
        """What the rules of severity warning found, and the columns not used."""
        out = [
            f"{path}: {n} row(s) ({', '.join(map(str, rows))}{', ...' if n > len(rows) else ''})"
            f", column {item.column!r}: {item.problem(item.values[0])}; scored"
            for item, rows, n in self.warned.values()
        ]
        if self.rules is not None and self.unknown:
            out.append(
                f"{path}: column(s) {self.unknown} are neither inputs of the model nor columns "
                "of its schema: copied to the output, not used"
            )
        return out


def _missing_inputs(columns: list[str], sig: Signature, path: Path) -> None:
    missing = [c for c in sig.input_columns if c not in set(columns)]
    if missing:
        raise SchemaError(
            f"{path}: missing column(s) {missing}; the model needs the raw inputs "
            f"{sig.input_columns}"
        )


def _numbers_for_scoring(col: pd.Series, name: str) -> np.ndarray | pd.Series:
    """A numeric input's float64 values where they are certain (the very values
    :func:`mlcycle.features.to_model_frame` computes), else the column itself for it to
    convert or refuse, naming the row. Booleans are refused here, with their row."""
    dtype = col.dtype
    if pd.api.types.is_bool_dtype(dtype):
        _refuse_booleans(col, name, col.notna().to_numpy())
    if pd.api.types.is_numeric_dtype(dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    mixed = pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(
        col, skipna=True
    ) not in ("string", "empty")
    if mixed:  # JSON values of several types
        flags = col.map(lambda v: isinstance(v, bool | np.bool_)).to_numpy(dtype=bool)
        if flags.any():
            _refuse_booleans(col, name, flags)
    elif pd.api.types.is_string_dtype(dtype):
        parsed = _parse_text(col)
        if parsed is not None:
            return parsed
    return col


def _parse_text(col: pd.Series) -> np.ndarray | None:
    """float64 of numbers written as text, by Arrow (correctly rounded, as pandas' parser);
    None if a value is not plainly a number (Arrow refuses it or reads it as NaN): pandas
    then decides, so every value converts as in :func:`mlcycle.features.to_model_frame`."""
    try:
        values = pc.cast(pa.array(col, from_pandas=True), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    out = values.to_numpy(zero_copy_only=False)
    if np.isnan(out).sum() != values.null_count:  # "nan" spelled oddly: pandas refuses it
        return None
    return out


def _refuse_booleans(col: pd.Series, name: str, flags: np.ndarray) -> None:
    i = int(np.flatnonzero(flags)[0])
    raise SchemaError(
        f"column {name!r}, row {col.index[i]}: expected a number, got {bool(col.iloc[i])!r} "
        f"({int(flags.sum())} such row(s))"
    )


def _records(frame: pd.DataFrame, sig: Signature) -> pd.DataFrame:
    """The signature's inputs of ``frame`` (same index), numeric ones as float64 if certain."""
    records = frame[sig.input_columns].copy(deep=False)
    for feat in sig.inputs:
        if feat.kind == "numeric":
            records[feat.name] = _numbers_for_scoring(records[feat.name], feat.name)
    return records


def _as_numbers(col: pd.Series) -> np.ndarray:
    """float64 values of a scored numeric input (scoring already refused bad values)."""
    if not pd.api.types.is_numeric_dtype(col.dtype):
        col = pd.to_numeric(col, errors="coerce")
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


class _Reader:
    """Reads one format in chunks; ``columns`` are known once the first chunk is read."""

    kind = ""
    text = False  # chunks hold text (CSV)

    def __init__(self, path: Path, sig: Signature, chunk_rows: int) -> None:
        self.path, self.sig, self.chunk_rows = path, sig, chunk_rows
        self.columns: list[str] = []
        self.arrow_schema: pa.Schema | None = None  # a Parquet input's own

    def chunks(self, notes: list[str]) -> Iterator[_Chunk]:
        raise NotImplementedError

    def empty_chunk(self) -> _Chunk:
        frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in self.columns})
        return _Chunk(0, self.empty_records(), frame=frame, text=self.text)

    def empty_records(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                f.name: pd.Series([], dtype=np.float64 if f.kind == "numeric" else object)
                for f in self.sig.inputs
            }
        )

    def _failed(self, exc: Exception, start: int) -> ValueError:
        return ValueError(
            f"{self.path}: cannot read as {self.kind} (in the chunk from row {start}): "
            f"{str(exc).strip()}"
        )


class _CsvReader(_Reader):
    kind, text = CSV, True

    def chunks(self, notes: list[str]) -> Iterator[_Chunk]:
        options: dict[str, Any] = {"skipinitialspace": True, "dtype": str}
        start = 0
        try:
            self.columns = [str(c) for c in pd.read_csv(self.path, nrows=0, **options).columns]
            _missing_inputs(self.columns, self.sig, self.path)
            reader = pd.read_csv(self.path, chunksize=self.chunk_rows, **options)
        except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise self._failed(exc, start) from exc
        with reader:
            while True:
                try:
                    frame = next(reader)
                except StopIteration:
                    return
                except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:
                    raise self._failed(exc, start) from exc
                frame.index = pd.RangeIndex(start, start + len(frame))
                yield _Chunk(start, _records(frame, self.sig), frame=frame, text=True)
                start += len(frame)


class _JsonlReader(_Reader):
    kind = JSONL

    def chunks(self, notes: list[str]) -> Iterator[_Chunk]:
        start = 0
        extra: set[str] = set()
        try:
            reader = pd.read_json(
                self.path, lines=True, chunksize=self.chunk_rows, dtype=False, precise_float=True
            )
        except (ValueError, OSError) as exc:
            raise self._failed(exc, start) from exc
        with reader:
            while True:
                try:
                    frame = next(reader)
                except StopIteration:
                    break
                except (ValueError, OSError, EOFError) as exc:
                    raise self._failed(exc, start) from exc
                if start == 0:
                    self.columns = [str(c) for c in frame.columns]
                    _missing_inputs(self.columns, self.sig, self.path)
                else:
                    extra.update(str(c) for c in frame.columns if c not in set(self.columns))
                    frame = frame.reindex(columns=self.columns)
                frame.index = pd.RangeIndex(start, start + len(frame))
                # Numbers are scored as pandas read them; the echo is typed by value alone.
                records = _records(frame, self.sig)
                frame = pd.DataFrame({c: _json_values(frame[c]) for c in self.columns})
                for feat in self.sig.inputs:
                    if feat.kind == "categorical":
                        records[feat.name] = frame[feat.name]
                yield _Chunk(start, records, frame=frame)
                start += len(frame)
        if extra:
            notes.append(
                f"{self.path}: key(s) {sorted(extra)} first appear after row "
                f"{self.chunk_rows - 1}; the output has the columns of the first "
                f"{self.chunk_rows} records and leaves them out"
            )


def _json_values(col: pd.Series) -> pd.Series:
    """A JSON column typed by its values alone, the same in every chunk: a number that is
    whole is an integer (pandas gives floats where a chunk has a missing value)."""
    dtype = col.dtype
    if pd.api.types.is_float_dtype(dtype):
        v = col.to_numpy(dtype=np.float64)
        whole = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < _WHOLE_LIMIT)
        missing = np.isnan(v)
        if (whole | missing).all():
            return col.astype("Int64")
        if whole.any():
            out = col.astype(object)
            out[whole] = v[whole].astype(np.int64).tolist()
            return out
        return col
    if pd.api.types.is_object_dtype(dtype) and pd.api.types.infer_dtype(col, skipna=True) not in (
        "string",
        "integer",
        "boolean",
        "empty",
    ):
        return col.map(_json_value)
    return col


def _json_value(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer() and abs(v) < _WHOLE_LIMIT:
        return int(v)
    return v


class _ParquetReader(_Reader):
    kind = PARQUET

    def chunks(self, notes: list[str]) -> Iterator[_Chunk]:
        start = 0
        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise self._failed(exc, start) from exc
        schema = pf.schema_arrow
        # A pandas index stored as a column is no record field (pandas reads it as the index).
        stored = (schema.pandas_metadata or {}).get("index_columns", [])
        index_cols = {c for c in stored if isinstance(c, str)}
        keep = [n for n in schema.names if n not in index_cols]
        self.arrow_schema = pa.schema([schema.field(n) for n in keep])
        self.columns = keep
        _missing_inputs(self.columns, self.sig, self.path)
        inputs = self.sig.input_columns
        batches = pf.iter_batches(batch_size=self.chunk_rows, columns=keep)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (pa.ArrowException, OSError) as exc:
                raise self._failed(exc, start) from exc
            frame = batch.select(inputs).to_pandas(types_mapper=_NULLABLE.get)
            frame.index = pd.RangeIndex(start, start + len(frame))
            yield _Chunk(start, _records(frame, self.sig), batch=batch)
            start += batch.num_rows

    def empty_chunk(self) -> _Chunk:
        assert self.arrow_schema is not None
        batch = pa.RecordBatch.from_pylist([], schema=self.arrow_schema)
        return _Chunk(0, self.empty_records(), batch=batch)


_READERS: dict[str, Callable[[Path, Signature, int], _Reader]] = {
    CSV: _CsvReader,
    JSONL: _JsonlReader,
    PARQUET: _ParquetReader,
}


# --- writers ---------------------------------------------------------------------------------


def _prediction_types(sig: Signature) -> dict[str, pa.DataType]:
    """Arrow types of the prediction columns, fixed by the signature (never by a chunk)."""
    empty = np.zeros((0, len(sig.classes))) if sig.is_classification else np.zeros(0)
    probe = output_columns(Scores(empty, None), sig)
    label = pa.string() if sig.is_classification else pa.float64()
    return {name: label if name == PREDICTION else pa.float64() for name in probe}


def _frame(chunk: _Chunk, numbers: bool, sig: Signature) -> pd.DataFrame:
    """The chunk's input columns as pandas; ``numbers``: a text frame's numeric inputs as
    their parsed values (for typed outputs)."""
    if chunk.frame is None:
        assert chunk.batch is not None
        frame = chunk.batch.to_pandas(types_mapper=_NULLABLE.get)
        frame.index = chunk.records.index
        return frame
    if not (numbers and chunk.text):
        return chunk.frame
    frame = chunk.frame.copy(deep=False)
    for feat in sig.inputs:
        if feat.kind == "numeric":
            frame[feat.name] = _as_numbers(chunk.records[feat.name])
    return frame


def _with_predictions(frame: pd.DataFrame, preds: Predictions) -> pd.DataFrame:
    out = frame.copy(deep=False)
    for name, values in preds.items():
        out[name] = values  # a column of the same name is replaced where it is
    return out


class _TextWriter:
    """CSV or JSON Lines, gzipped if asked (with a fixed header time: same rows, same bytes)."""

    def __init__(self, tmp: Path, gz: bool, reader: _Reader, sig: Signature) -> None:
        self.sig = sig
        self._raw: BinaryIO = open(tmp, "wb")  # noqa: SIM115 - closed in close()
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0, filename="") if gz else None
        self.fh = io.TextIOWrapper(self._gz or self._raw, encoding="utf-8", newline="")
        self.first = True

    def close(self) -> None:
        self.fh.close()  # closes the gzip stream, then the file
        if not self._raw.closed:
            self._raw.close()


class _CsvWriter(_TextWriter):
    def write(self, chunk: _Chunk, preds: Predictions) -> None:
        out = _with_predictions(_frame(chunk, False, self.sig), preds)
        out.to_csv(self.fh, header=self.first, index=False, lineterminator="\n")
        self.first = False


class _JsonlWriter(_TextWriter):
    def write(self, chunk: _Chunk, preds: Predictions) -> None:
        self.fh.write(_json_lines(_with_predictions(_frame(chunk, True, self.sig), preds)))


def _json_lines(frame: pd.DataFrame) -> str:
    """``frame`` as JSON Lines, one object per row, floats exact (the shortest text that reads
    back as the same double; pandas' writer rounds to at most 15 decimals, so a probability of
    1e-20 would become 0). Missing values and non-finite numbers are null."""
    if frame.empty:
        return ""
    names = [json.dumps(str(c), ensure_ascii=False).replace("%", "%%") for c in frame.columns]
    template = "{" + ",".join(f"{n}:%s" for n in names) + "}\n"
    columns = [_json_texts(frame.iloc[:, j]) for j in range(frame.shape[1])]
    return "".join([template % row for row in zip(*columns, strict=True)])


def _json_texts(col: pd.Series) -> list[str]:
    """The JSON text of every value of ``col``."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        values = col.to_numpy()
        if dtype.kind == "b":
            return ["true" if v else "false" for v in values.tolist()]
        texts = list(map(repr, values.tolist()))
        if dtype.kind == "f":
            for i in np.flatnonzero(~np.isfinite(values)).tolist():
                texts[i] = "null"
        return texts
    if pd.api.types.is_string_dtype(dtype) and (
        not pd.api.types.is_object_dtype(dtype) or pd.api.types.infer_dtype(col) == "string"
    ):
        missing = col.isna().to_numpy()
        texts = col.to_numpy(dtype=object, na_value="").tolist()
        texts = list(map(_encode_text, texts))
        for i in np.flatnonzero(missing).tolist():
            texts[i] = "null"
        return texts
    return [_json_value_text(v) for v in col.tolist()]


def _json_value_text(v: Any) -> str:
    if v is None or v is pd.NA or v is pd.NaT:
        return "null"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, float | np.floating):
        return repr(float(v)) if math.isfinite(v) else "null"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, str):
        return _encode_text(v)
    return json.dumps(v, ensure_ascii=False, default=str)


class _ParquetWriter:
    """One Parquet schema for every chunk, decided before the first is written."""

    def __init__(self, tmp: Path, gz: bool, reader: _Reader, sig: Signature) -> None:
        self.sig = sig
        self.numeric = (
            set()
            if reader.arrow_schema is not None
            else {f.name for f in sig.inputs if f.kind == "numeric"}
        )  # a text input's numeric inputs: written as their float64 values
        preds = _prediction_types(sig)
        if reader.arrow_schema is not None:
            fields = {f.name: f for f in reader.arrow_schema}
        else:  # CSV, JSON Lines: no types of their own
            fields = {
                c: pa.field(c, pa.float64() if c in self.numeric else pa.string())
                for c in reader.columns
            }
        for name, typ in preds.items():
            fields[name] = pa.field(name, typ)  # replaces an input column of that name in place
        self.schema = pa.schema(list(fields.values()))
        self.writer = pq.ParquetWriter(tmp, self.schema)

    def write(self, chunk: _Chunk, preds: Predictions) -> None:
        arrays = []
        for f in self.schema:
            if f.name in preds:
                values: Any = preds[f.name]
            elif chunk.batch is not None:
                values = chunk.batch.column(f.name)
            elif f.name in self.numeric:
                values = _as_numbers(chunk.records[f.name])
            else:
                col = chunk.frame[f.name]  # type: ignore[index]
                values = col if pd.api.types.is_string_dtype(col.dtype) else col.astype("string")
            arrays.append(_arrow(values, f.type))
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def _arrow(values: Any, typ: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values if values.type == typ else values.cast(typ)
    arr = pa.array(values, from_pandas=True)
    return arr if arr.type == typ else arr.cast(typ)


_WRITERS: dict[str, Callable[[Path, bool, _Reader, Signature], Any]] = {
    CSV: _CsvWriter,
    JSONL: _JsonlWriter,
    PARQUET: _ParquetWriter,
}


# --- progress --------------------------------------------------------------------------------


@dataclass
class _NoBar:
    n: int = 0
    total: int | None = None

    def update(self, k: int) -> None:
        self.n += k

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(path: Path, total: int | None, show: bool) -> Any:
    """A bar on stderr: rows done, rows/s and, with a ``total``, the time left."""
    if not show:
        return _NoBar()
    from tqdm import tqdm  # installed with dvc; loaded only to draw the bar

    return tqdm(
        total=total,
        desc=f"scoring {path.name}",
        unit=" rows",
        unit_scale=True,
        file=sys.stderr,
        mininterval=0.5,
        smoothing=0.1,
        dynamic_ncols=True,
    )

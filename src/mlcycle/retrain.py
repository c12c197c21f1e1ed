"""Retraining: labelled production rows back into the pipeline, and the gate decides again.

``mlcycle retrain`` closes the loop the service opens. Every prediction is in the prediction
log (:mod:`mlcycle.predlog`); true labels arrive later (``POST /feedback``, ``mlcycle
feedback``). :func:`retrain` then

1. exports the labelled records of a window of the log that no earlier export holds as ONE new
   Parquet file ``production-<UTC time>-<n>rows.parquet`` in the folder of a ``landing`` source
   (``production`` by default): the data's own columns and types, the label as the target.
   Production rows enter through the same ``gather`` stage as every other source: there is no
   second code path for "production data";
2. runs ``dvc repro``, its output streamed;
3. reads the gate's decision (the new model against the production one, on the same test
   split);
4. if it passed, commits the exported file, dvc.lock and the metrics, and releases the commit
   (:func:`mlcycle.registry.release`);
5. optionally asks a running service to reload (``POST /admin/reload``) and checks that it now
   serves the new model.

Which rows were exported is written into each file's Parquet metadata (key
:data:`KEYS_METADATA`: the log's ``(request_id, row)`` pairs), not into the data: the file and
its record of what it holds are written in one atomic rename, so a killed run can neither
export rows twice nor lose them, and deleting a file makes its rows exportable again. The
columns stay exactly the data's (``gather`` requires every source to have the same columns).

Each export also says whose labels it holds: how many came from each credential of the
service (``labelled_by`` in the log: a credential's name, ``anonymous``, ``cli:<user>``), in
the run's output, the file's metadata (key ``labelled_by``) and the commit message.

Rows that break a per-row rule of ``schema.yaml`` whose severity is ``error`` (a type, a
range, a non-nullable column, a target value: :mod:`mlcycle.schema.rows`, the rules the
service refuses a record by) or whose label is not a class of the model are left out and
reported, with their request ids, so one bad record cannot stop retraining in the ``validate``
stage after the file was written. The service refuses such records at its door, so only a
log written before (an older bundle, a looser schema) holds them. They are decided once: the
export's metadata lists them beside the rows it holds (key ``left_out``, by reason), so no
later run reads, reports or trips over them again; deleting the file makes both exportable
again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlcycle import config, registry
from mlcycle.bundle import load_bundle
from mlcycle.config import Params, Source
from mlcycle.constants import ADMIN_TOKEN_ENV, SOURCE_COLUMN
from mlcycle.features import Signature
from mlcycle.io import atomic_path, read_json, value_text
from mlcycle.pipeline import DVC_LOCK, DVC_YAML, dvc_command, read_stages
from mlcycle.predlog import PredictionLogError, read_log
from mlcycle.schema import load_schema
from mlcycle.schema.findings import KIND_PHRASES
from mlcycle.schema.rows import RowRules, errors
from mlcycle.sources import as_text, redact_url
from mlcycle.stages import BUNDLE, METRICS, SNAPSHOT

DEFAULT_SOURCE = "production"
DEFAULT_MIN_LABELS = 100
# The same defaults as `mlcycle serve` (mlcycle.serve.runner, not imported here: it pulls in
# the whole web stack); tests/test_retrain.py checks they agree.
DEFAULT_LOG_URL = "sqlite:///logs/predictions.db"
#: The Parquet metadata key of an exported file that lists the log records it holds.
KEYS_METADATA = b"mlcycle.retrain"
FILE_PREFIX = "production-"
GATE_METRICS = f"{METRICS}/gate.json"
GATE_REPORT = "reports/gate.json"  # written by the gate even when it fails the run
GATHER_METRICS = f"{METRICS}/gather.json"
RELOAD_TIMEOUT = 300.0  # seconds: a reload fetches and verifies the bundle
SHOWN_KEYS = 5  # request ids named per reason a row was left out

# Exit codes of `mlcycle retrain` (1: bad input or state, nothing changed; 2: bad usage).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_TOO_FEW = 4
EXIT_REJECTED = 5
EXIT_REPRO_FAILED = 6
EXIT_RELOAD_FAILED = 7


class RetrainError(ValueError):
    """Retraining stopped; the message says why and what to do, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- the landing source ---------------------------------------------------------------------


def source_yaml(name: str, path: str) -> str:
    """The params.yaml entry that declares the landing source retrain exports to."""
    return (
        "data:\n"
        "  sources:\n"
        "    # ... the existing sources, then:\n"
        f"    - name: {name}\n"
        "      kind: landing\n"
        f"      path: {path}\n"
        "      allow_empty: true       # no production rows yet is not an error\n"
    )


def find_source(params: Params, name: str) -> Source:
    """The ``landing`` source named ``name`` in ``data.sources``, or an error that shows the
    YAML to add (or what is wrong with the declared one)."""
    found = next((s for s in params.data.sources if s.name == name), None)
    default = f"data/landing/{name}"
    if found is None:
        raise RetrainError(
            f"params.yaml declares no source {name!r}; retrain exports labelled production "
            "rows into a landing folder that `gather` reads. Add it, commit, and run retrain "
            "again (it creates the folder):\n\n"
            + source_yaml(name, default)
            + split_hint(params, name)
        )
    if found.kind != "landing" or not found.path:
        raise RetrainError(
            f"source {name!r} in params.yaml is of kind {found.kind!r}; retrain exports into a "
            "source of kind landing (a folder), such as:\n\n" + source_yaml(name, default)
        )
    return found


def split_hint(params: Params, name: str) -> str:
    """For a by_source split: the train_sources line that puts ``name`` on the training side."""
    split = params.prepare.split
    if split.method != "by_source" or name in split.train_sources:
        return ""
    names = ", ".join([*split.train_sources, name])
    return (
        "\nand, since prepare.split.method is by_source, put it on the training side:\n\n"
        "prepare:\n"
        "  split:\n"
        f"    train_sources: [{names}]\n"
    )


def check_split(params: Params, name: str) -> None:
    """With a by_source split, production rows must train, never test: the gate compares the
    new model with the production one on the same test rows. (Other split methods deal
    production rows like every other row, and both models are scored on the same new test
    split.)"""
    split = params.prepare.split
    if split.method != "by_source":
        return
    if name in split.test_sources:
        raise RetrainError(
            f"source {name!r} is in prepare.split.test_sources: production rows would change the "
            "test split the gate compares the models on. Move it to train_sources."
        )
    if name not in split.train_sources:
        raise RetrainError(
            f"source {name!r} is not in prepare.split.train_sources; with a by_source split "
            "every source must be on one side, and production rows belong to training:\n"
            + split_hint(params, name)
        )


def landing_folder(root: Path, source: Source) -> Path:
    """The source's folder, which must be inside the project (the export is committed)."""
    folder = (root / (source.path or "")).resolve()
    if not folder.is_relative_to(root.resolve()):
        raise RetrainError(
            f"source {source.name!r}: landing folder {source.path} is outside the project; "
            "retrain commits what it exports, so the folder must be inside it"
        )
    return folder


def check_gather_reads(root: Path, source: Source, folder: Path) -> None:
    """The landing ``folder`` must be (under) a dep of the gather stage in dvc.yaml, or `dvc
    repro` would not notice the new file."""
    path = root / DVC_YAML
    if not path.is_file():
        raise RetrainError(f"{path} not found: run retrain from the project's root")
    gather = read_stages(path).get("gather")
    deps = list(gather.deps) if gather is not None else []
    rel = folder.relative_to(root.resolve())
    if not any(rel.is_relative_to(os.path.normpath(d)) for d in deps):
        raise RetrainError(
            f"source {source.name!r}: its folder {source.path} is not a dep of the gather stage "
            f"in dvc.yaml (deps: {deps}), so `dvc repro` would not see new files there; put it "
            "under data/landing/ or add it to the gather stage's deps"
        )


# --- the data's layout ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """The snapshot's columns (its source column left out), in order, and what each holds:
    ``int``, ``float``, ``text``, ``bool``, ``datetime`` or ``other``. ``utc`` columns are
    time-zone aware datetimes. Every source must have exactly these columns."""

    columns: tuple[str, ...]
    kinds: dict[str, str]
    utc: frozenset[str] = frozenset()


def _arrow_kind(dtype: Any) -> str:
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "float"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return "datetime"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "text"
    if pa.types.is_dictionary(dtype):
        return _arrow_kind(dtype.value_type)
    return "other"


SCHEMA_KINDS = {
    "integer": "int",
    "float": "float",
    "category": "text",
    "string": "text",
    "boolean": "bool",
    "datetime": "datetime",
}


def layout_of_snapshot(path: Path) -> Layout:
    """The layout of a snapshot file, from its Parquet schema (no data is read)."""
    schema = pq.read_schema(path)
    columns = tuple(n for n in schema.names if n != SOURCE_COLUMN)
    kinds = {n: _arrow_kind(schema.field(n).type) for n in columns}
    utc = frozenset(
        n
        for n in columns
        if pa.types.is_timestamp(schema.field(n).type) and schema.field(n).type.tz
    )
    return Layout(columns, kinds, utc)


def load_layout(root: Path, params: Params) -> tuple[Layout, str]:
    """The layout the export must have and where it was read: the current snapshot, else
    schema.yaml (a fresh clone before `dvc pull`)."""
    snapshot = root / SNAPSHOT
    if snapshot.is_file():
        return layout_of_snapshot(snapshot), SNAPSHOT
    schema_path = root / params.validate.schema
    if schema_path.is_file():
        schema = load_schema(schema_path)
        kinds = {s.name: SCHEMA_KINDS.get(s.type, "other") for s in schema.columns}
        return Layout(tuple(kinds), kinds), params.validate.schema
    raise RetrainError(
        f"neither {SNAPSHOT} nor {params.validate.schema} exists, so the columns of the data "
        "are unknown; run `dvc pull` or `dvc repro` first"
    )


# --- which records to export ----------------------------------------------------------------


Key = tuple[str, int]


def decided_keys(folder: Path) -> tuple[set[Key], set[Key]]:
    """The log records (request_id, row) the exported files in ``folder`` decided: those they
    hold, and those they left out (a rule of the schema, a label that is not a class), read
    from their Parquet metadata. A file that cannot be read is reported by `gather`, not
    here."""
    keys: set[Key] = set()
    left: set[Key] = set()
    if not folder.is_dir():
        return keys, left
    for path in sorted(folder.rglob("*.parquet")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        try:
            meta = pq.read_schema(path).metadata or {}
        except (OSError, ValueError):
            continue
        raw = meta.get(KEYS_METADATA)
        if raw is None:
            continue
        try:
            doc = json.loads(raw)
            for request_id, rows in doc["records"].items():
                keys.update((str(request_id), int(r)) for r in rows)
            for by_request in doc.get("left_out", {}).values():  # exports before 0.x: none
                for request_id, rows in by_request.items():
                    left.update((str(request_id), int(r)) for r in rows)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RetrainError(
                f"{path}: its {KEYS_METADATA.decode()} metadata (the log records it holds) "
                f"cannot be read: {exc}; without it retrain could export them twice"
            ) from None
    return keys, left


UNRECORDED = "(not recorded)"  # who gave labels attached before authors were recorded


def label_authors(records: pd.DataFrame, keys: Iterable[Key]) -> dict[str, int]:
    """How many labels of the records ``keys`` (an export's) each author gave, by the log's
    ``labelled_by`` (:func:`new_labelled`'s records): a credential's name, ``anonymous`` or
    ``cli:<user>``; :data:`UNRECORDED` for labels from before authors were recorded."""
    pairs = zip(records["request_id"].astype(str), records["row"].astype(int), strict=True)
    author = dict(zip(pairs, records["labelled_by"], strict=True))
    counts: dict[str, int] = {}
    for key in keys:
        name = author.get(key)
        name = name if isinstance(name, str) and name else UNRECORDED  # None or NaN: unknown
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def authors_text(counts: dict[str, int]) -> str:
    """``labeller 580, cli:ana 20``: who gave how many labels (:func:`label_authors`)."""
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "nobody"


def new_labelled(log: pd.DataFrame, done: set[Key]) -> pd.DataFrame:
    """The records of ``log`` (:func:`mlcycle.predlog.read_log`'s frame) that have a label and
    are not in ``done``; a record logged twice (a client reusing a request id) once."""
    labelled = log[log["label"].notna()]
    labelled = labelled.drop_duplicates(["request_id", "row"], keep="first")
    if done and len(labelled):
        keys = list(zip(labelled["request_id"], labelled["row"].astype(int), strict=True))
        labelled = labelled[[k not in done for k in keys]]
    return labelled.reset_index(drop=True)


# --- records -> the data's columns and types --------------------------------------------------


KIND_NAMES = {
    "int": "whole number",
    "float": "number",
    "bool": "boolean",
    "datetime": "date and time",
    "text": "text",
}
TRUE = {"true", "t", "yes", "y", "1"}
FALSE = {"false", "f", "no", "n", "0"}


def convert(values: pd.Series, kind: str, utc: bool = False) -> tuple[pd.Series, pd.Series]:
    """``values`` (as callers sent them: JSON numbers, strings, booleans, null) as ``kind``:
    ``(converted, bad)``, where ``bad`` marks values present that do not fit (text in a number
    column). Converted values are objects or floats; :func:`finish` gives the final dtype."""
    present = values.notna()
    bad = pd.Series(False, index=values.index)
    if kind in ("int", "float"):
        text = values.where(~values.map(lambda v: isinstance(v, bool)), other="not a number")
        text = text.map(lambda v: v.strip() if isinstance(v, str) else v)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = present & ~np.isfinite(numbers.fillna(0.0))
        bad |= present & numbers.isna()
        if kind == "int":
            bad |= present & numbers.notna() & (numbers % 1 != 0)
        return numbers.mask(bad), bad
    if kind == "bool":

        def as_bool(v: Any) -> Any:
            if isinstance(v, bool | np.bool_):
                return bool(v)
            word = str(v).strip().lower()
            return True if word in TRUE else False if word in FALSE else None

        out = values.map(lambda v: None if v is None or v is pd.NA else as_bool(v))
        out = out.where(present, None).astype(object)
        return out, present & out.isna()
    if kind == "datetime":
        given = values.where(present, None)
        stamps = pd.to_datetime(given, errors="coerce", utc=True, format="mixed")
        if not utc:
            stamps = stamps.dt.tz_convert(None)
        return stamps, present & stamps.isna()
    if kind == "text":
        return as_text(values), bad
    return values, bad


def finish(values: pd.Series, kind: str) -> pd.Series:
    """The final column: whole numbers without gaps as int64 (as the other sources hold them),
    with gaps as float64; booleans without gaps as bool."""
    if kind == "int":
        return values.astype("int64") if values.notna().all() else values.astype("float64")
    if kind == "bool" and values.notna().all():
        return values.astype(bool)
    return values


@dataclass(frozen=True)
class LeftOut:
    """Rows of the log not exported, why, and their (request_id, row) keys."""

    reason: str
    keys: tuple[Key, ...]

    @property
    def message(self) -> str:
        shown = ", ".join(f"{rid}#{row}" for rid, row in self.keys[:SHOWN_KEYS])
        more = ", ..." if len(self.keys) > SHOWN_KEYS else ""
        return f"{len(self.keys)} row(s): {self.reason} (request_id#row: {shown}{more})"


@dataclass(frozen=True)
class Export:
    """What an export holds: the rows in the data's columns, their log keys, the rows left out
    and the keys callers sent that are not columns of the data (ignored)."""

    frame: pd.DataFrame
    keys: tuple[Key, ...]
    left_out: tuple[LeftOut, ...] = ()
    ignored_keys: tuple[str, ...] = ()
    filled: tuple[str, ...] = ()  # columns no record held: all null


def _reject(drop: dict[str, list[int]], reason: str, positions: Iterable[int]) -> None:
    """Note rows (by position) to leave out for ``reason``; a row is reported under the first
    reason noted for it."""
    drop.setdefault(reason, []).extend(int(p) for p in positions)


def build_export(
    records: pd.DataFrame,
    layout: Layout,
    target: str,
    *,
    classes: tuple[str, ...] = (),
    schema: Any = None,
    severity: dict[str, str] | None = None,
) -> Export:
    """The labelled log records ``records`` (:func:`new_labelled`) as rows of the data.

    Each record's inputs go into the layout's columns, converted to each column's kind; keys
    that are not columns are ignored (reported), columns a record lacks are null; the label
    becomes ``target``. A row is left out (reported, with its keys) when a value does not fit
    its column's kind, its label is not one of ``classes`` (the model's, for classification),
    or it breaks a per-row rule of ``schema`` (:class:`mlcycle.schema.Schema`) whose
    ``severity`` is error.
    """
    if target not in layout.columns:
        raise RetrainError(
            f"objectives.target {target!r} is not a column of the data ({list(layout.columns)})"
        )
    keys = list(zip(records["request_id"].astype(str), records["row"].astype(int), strict=True))
    inputs = records["inputs"].tolist()
    drop: dict[str, list[int]] = {}
    not_objects = [i for i, r in enumerate(inputs) if not isinstance(r, dict)]
    _reject(drop, "the logged record is not a JSON object", not_objects)
    dicts = [r if isinstance(r, dict) else {} for r in inputs]
    features = [c for c in layout.columns if c != target]
    seen: set[str] = set()
    for r in dicts:
        seen.update(r)
    ignored = tuple(sorted(str(k) for k in seen - set(features)))
    filled = tuple(c for c in features if c not in seen)
    raw = pd.DataFrame({c: pd.Series([r.get(c) for r in dicts], dtype=object) for c in features})
    raw[target] = pd.Series(records["label"].tolist(), dtype=object)
    raw = raw[list(layout.columns)]
    converted = {}
    for col in layout.columns:
        kind = layout.kinds.get(col, "other")
        values, bad = convert(raw[col], kind, col in layout.utc)
        what = "label" if col == target else f"value of {col!r}"
        if bad.any():
            expected = KIND_NAMES.get(kind, kind)
            _reject(drop, f"the {what} is not a {expected}", np.flatnonzero(bad))
        converted[col] = values
    frame = pd.DataFrame(converted)
    if classes:
        known = set(classes)
        unknown = frame[target].map(
            lambda v: v is not None and v == v and value_text(v) not in known
        )
        _reject(
            drop,
            f"the label is not a class of the model ({', '.join(classes)})",
            np.flatnonzero(unknown.to_numpy(dtype=bool)),
        )
    gone = {p for positions in drop.values() for p in positions}
    if schema is not None:
        _schema_rows(frame, gone, schema, severity or {}, drop)
        gone = {p for positions in drop.values() for p in positions}
    keep = np.array([i not in gone for i in range(len(frame))], dtype=bool)
    frame = frame[keep].reset_index(drop=True)
    for col in layout.columns:
        frame[col] = finish(frame[col], layout.kinds.get(col, "other"))
    left_out, taken = [], set()
    for reason, positions in drop.items():
        mine = [p for p in dict.fromkeys(positions) if p not in taken]
        taken.update(mine)
        if mine:
            left_out.append(LeftOut(reason, tuple(keys[p] for p in sorted(mine))))
    return Export(
        frame=frame,
        keys=tuple(k for k, ok in zip(keys, keep, strict=True) if ok),
        left_out=tuple(left_out),
        ignored_keys=ignored,
        filled=filled,
    )


def _schema_rows(
    frame: pd.DataFrame,
    gone: set[int],
    schema: Any,
    severity: dict[str, str],
    drop: dict[str, list[int]],
) -> None:
    """Add to ``drop`` the rows that break a per-row rule of the schema whose severity is
    error: :mod:`mlcycle.schema.rows`, the rules the service refuses a record by and the
    validate stage's own checks."""
    if not len(frame):
        return
    positions = np.array([i for i in range(len(frame)) if i not in gone], dtype=np.int64)
    if not len(positions):
        return
    part = frame.iloc[positions].reset_index(drop=True)
    for item in errors(RowRules.of(schema, severity).check_frame(part)):
        reason = f"{item.column}: {KIND_PHRASES[item.kind]}; schema.yaml expects {item.expected}"
        _reject(drop, reason, positions[list(item.rows)])


# --- writing the file -------------------------------------------------------------------------


def export_name(now: datetime, rows: int) -> str:
    """``production-<UTC yyyymmddTHHMMSSZ>-<n>rows.parquet``."""
    stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{FILE_PREFIX}{stamp}-{rows}rows.parquet"


def _by_request(keys: Iterable[Key]) -> dict[str, list[int]]:
    """Log keys grouped by request id: ``{request_id: [row, ...]}``."""
    grouped: dict[str, list[int]] = {}
    for request_id, row in keys:
        grouped.setdefault(request_id, []).append(row)
    return grouped


def write_export(
    export: Export, folder: Path, now: datetime, meta: dict[str, Any] | None = None
) -> Path:
    """Write the export as one new Parquet file in ``folder``, atomically (a hidden temporary
    file, which gather skips, renamed into place), with its log keys and those of the rows it
    left out (by reason) in the file's metadata. An existing file of the same name is never
    replaced."""
    target = folder / export_name(now, len(export.frame))
    if target.exists():
        raise RetrainError(f"{target} already exists; run retrain again in a second")
    left_out = {item.reason: _by_request(item.keys) for item in export.left_out}
    doc = {
        **(meta or {}),
        "rows": len(export.frame),
        "records": _by_request(export.keys),
        "left_out": left_out,
    }
    table = pa.Table.from_pandas(export.frame, preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[KEYS_METADATA] = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    table = table.replace_schema_metadata(metadata)
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)
        if target.exists():  # written meanwhile by another run: keep it
            raise RetrainError(f"{target} appeared while writing; nothing was replaced")
    return target


# --- git, dvc, the gate -------------------------------------------------------------------------


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RetrainError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def tracked_changes(root: Path) -> list[str]:
    """Paths of tracked files with uncommitted changes (staged or not)."""
    proc = _git(root, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    entries = proc.stdout.split("\0")
    paths, i = [], 0
    while i < len(entries):
        entry = entries[i]
        if not entry:
            i += 1
            continue
        paths.append(entry[3:])
        i += 2 if entry[0] in "RC" else 1  # a rename is followed by its old path
    return paths


def _under(path: str, prefixes: Iterable[str]) -> bool:
    p = Path(path)
    return any(p == Path(x) or p.is_relative_to(Path(x)) for x in prefixes)


def pipeline_outputs_in_git(root: Path) -> list[str]:
    """What `dvc repro` may change that git tracks: dvc.lock and every stage's ``cache:
    false`` outputs (metrics and plot data)."""
    out = [DVC_LOCK, "metrics"]
    for stage in read_stages(root / DVC_YAML).values():
        out += [path.as_posix() for path in stage.git_outputs]
    return list(dict.fromkeys(out))


def landing_paths(root: Path, params: Params) -> list[str]:
    """The folders of every landing source inside the project (gather reads them all)."""
    found = []
    for s in params.data.sources:
        if s.kind == "landing" and s.path:
            folder = (root / s.path).resolve()
            if folder.is_relative_to(root.resolve()):
                found.append(folder.relative_to(root.resolve()).as_posix())
    return found


def check_clean(root: Path, allowed: list[str]) -> None:
    """The commit retrain makes must describe the model: refuse uncommitted changes to tracked
    files other than the pipeline's own results and the landing folders (params.yaml, code,
    schema.yaml, dvc.yaml would train the model but stay out of the commit)."""
    if _git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode != 0:
        raise RetrainError(
            f"{root} is not a git repository with a commit; retrain commits and tags its result"
        )
    dirty = [p for p in tracked_changes(root) if not _under(p, allowed)]
    if dirty:
        shown = ", ".join(dirty[:10]) + (", ..." if len(dirty) > 10 else "")
        raise RetrainError(
            f"uncommitted changes to {shown}: the retrained model would depend on them but the "
            "commit would not hold them; commit or revert them first"
        )


def run_repro(root: Path) -> int:
    """Run `dvc repro` in ``root`` with this environment's tools first on PATH; its output
    goes straight to ours, so progress shows as it happens. Returns its exit status."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    sys.stdout.flush()
    sys.stderr.flush()
    return subprocess.run([*dvc_command(), "repro"], cwd=root, env=env).returncode


def gate_decision(root: Path, since: float, repro_ok: bool) -> dict[str, Any] | None:
    """The gate's decision of this run: metrics/gate.json after a successful `dvc repro`
    (written by this run or still valid for it); after a failed one, reports/gate.json if the
    gate wrote it during the run (a rejection stops the run); else None."""
    if repro_ok:
        path = root / GATE_METRICS
        return read_json(path) if path.is_file() else None
    path = root / GATE_REPORT
    if path.is_file() and path.stat().st_mtime >= since:
        return read_json(path)
    return None


def gather_took(root: Path, source: str, file: str) -> tuple[bool, str | None]:
    """Whether gather read ``file`` (relative to the landing folder) from ``source``, and the
    reason it set it aside if it did not."""
    path = root / GATHER_METRICS
    if not path.is_file():
        return False, f"{GATHER_METRICS} does not exist"
    for entry in read_json(path).get("sources", []):
        if entry.get("name") != source:
            continue
        if any(f.get("file") == file for f in entry.get("files") or []):
            return True, None
        for q in entry.get("quarantined") or []:
            if q.get("file") == file:
                return False, f"quarantined by gather: {q.get('reason')}"
        return False, f"{GATHER_METRICS} does not list it for source {source!r}"
    return False, f"{GATHER_METRICS} has no source {source!r}"


# --- the service ----------------------------------------------------------------------------


def _request(url: str, method: str, token: str | None, timeout: float) -> tuple[int, Any]:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = b"{}" if method == "POST" else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        # bandit B310 (urlopen opens file: too): --service, held to http(s) by check_service
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310  # nosec B310
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, body.decode("utf-8", "replace")[:300]


def check_service(url: str) -> None:
    """The service answers GET /health (checked before any work: a retrain takes a while)."""
    if not url.startswith(("http://", "https://")):
        raise RetrainError(f"--service {url!r} is not an http(s) URL")
    try:
        status, body = _request(f"{url.rstrip('/')}/health", "GET", None, 10.0)
    except (OSError, urllib.error.URLError) as exc:
        raise RetrainError(f"--service {url}: no answer on /health: {exc}") from None
    if status != 200:
        raise RetrainError(f"--service {url}: /health answered {status}: {body}")


def reload_service(url: str, token: str, expected_id: str | None = None) -> dict[str, Any]:
    """POST /admin/reload and check the service now serves the model ``expected_id`` (if
    given); returns the model it names. Any other answer is a :class:`RetrainError`."""
    where = f"{url.rstrip('/')}/admin/reload"
    try:
        status, body = _request(where, "POST", token, RELOAD_TIMEOUT)
    except (OSError, urllib.error.URLError) as exc:
        raise RetrainError(f"{where}: no answer: {exc}", EXIT_RELOAD_FAILED) from None
    if status != 200 or not isinstance(body, dict):
        detail = body.get("detail") if isinstance(body, dict) else body
        hint = {
            401: " (the token is wrong: it must be the service's MLCYCLE_ADMIN_TOKEN)",
            404: " (the service was started without an admin token, so reload is off)",
        }.get(status, "")
        raise RetrainError(
            f"{where} answered {status}: {detail}{hint}; the service still serves its old model",
            EXIT_RELOAD_FAILED,
        )
    if expected_id is not None and body.get("id") != expected_id:
        raise RetrainError(
            f"{where}: the service reloaded model {body.get('id')} ({body.get('version')}), not "
            f"the new one {expected_id}; does it serve this project's registry (started here "
            "without --bundle, or with --bundle models/bundle)?",
            EXIT_RELOAD_FAILED,
        )
    return body


def reload_or_withdraw(
    root: Path, name: str, service: str, token: str, result: Result
) -> dict[str, Any]:
    """Reload the service (:func:`reload_service`) to the model ``result`` names. A release
    is a transaction: when the service does not answer with that model, the version this run
    released (``result.version``) is taken out of production again
    (:func:`mlcycle.registry.withdraw`), so the registry never names a model the service does
    not serve, and the error says so."""
    try:
        return reload_service(service, token, result.model_id or "")
    except RetrainError as exc:
        if not result.version:
            raise
        version = result.version
        try:
            now = registry.withdraw(root, name, version, f"{service} did not take {version}")
        except Exception as undo:  # gto's errors, git's
            raise RetrainError(
                f"{exc}; taking {name}@{version} out of {registry.PROD} failed too ({undo}): "
                "the registry names a model the service does not serve; fix it by hand",
                exc.code,
            ) from None
        back = f"{name}@{now.version} is" if now else "no version is"
        raise RetrainError(
            f"{exc}. {name}@{version} was taken out of {registry.PROD}, {back} in "
            f"{registry.PROD} again (the commit {(result.commit or '')[:12]} and the tag "
            f"{name}@{version} stay). To serve it, restart the service with it (`mlcycle "
            f"serve --version {version}`), then `gto assign {name} --version {version} "
            f"--stage {registry.PROD}`",
            exc.code,
        ) from None


def follow_registry(root: Path, name: str, service: str, token: str) -> dict[str, Any]:
    """Reload ``service`` and check it serves what the registry says: production's version
    and the challenger's (shadow or canary; none when there is none). Returns the service's
    answer; any other is a :class:`RetrainError` (:data:`EXIT_RELOAD_FAILED`)."""
    prod, challenger = registry.production(root, name), registry.challenger(root, name)
    want = (prod.version if prod else None, challenger.version.version if challenger else None)
    body = reload_service(service, token)
    got = (body.get("version"), (body.get("challenger") or {}).get("version"))
    if got != want:
        raise RetrainError(
            f"{service} serves {got[0]} with challenger {got[1]} after the reload, the "
            f"registry says {want[0]} with challenger {want[1]}",
            EXIT_RELOAD_FAILED,
        )
    return body


def reload_or_roll_back(
    root: Path, name: str, service: str, token: str, result: Result
) -> dict[str, Any]:
    """Reload the service to serve the challenger ``result`` released beside production
    (:func:`follow_registry`); when it does not, the challenger's stage is ended again
    (:func:`mlcycle.registry.rollback`), so the registry never names a model the service does
    not serve, and the error says so."""
    try:
        return follow_registry(root, name, service, token)
    except RetrainError as exc:
        registry.rollback(root, name, f"{service} did not take {result.version}")
        raise RetrainError(
            f"{exc}. {name}@{result.version} was rolled back out of its stage (the commit "
            f"{(result.commit or '')[:12]} and the tag {name}@{result.version} stay)",
            exc.code,
        ) from None


# --- the whole loop -------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What `mlcycle retrain` was asked (see its --help)."""

    log_url: str = DEFAULT_LOG_URL
    source: str = DEFAULT_SOURCE
    since: datetime | None = None
    until: datetime | None = None
    model_version: str | None = None
    min_labels: int = DEFAULT_MIN_LABELS
    bump: str = "patch"
    release: bool = True
    service: str | None = None
    token_env: str = ADMIN_TOKEN_ENV
    dry_run: bool = False


@dataclass
class Result:
    """What a retrain did."""

    exported: Path | None = None
    rows: int = 0
    labelled_by: dict[str, int] = field(default_factory=dict)  # labels per author
    left_out: tuple[LeftOut, ...] = ()
    commit: str | None = None
    version: str | None = None
    model_id: str | None = None
    gate: dict[str, Any] | None = None
    reloaded: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def parse_time(value: str | None, flag: str) -> datetime | None:
    """An ISO 8601 time from the command line (a naive one is UTC), or a clear error."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise RetrainError(
            f"{flag} {value!r} is not an ISO 8601 time, such as 2024-05-01 or 2024-05-01T12:00:00Z"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _model_classes(root: Path) -> tuple[str, ...]:
    """The classes of the workspace model (models/bundle), for classification; () otherwise."""
    path = root / BUNDLE / "signature.json"
    if not path.is_file():
        return ()
    sig = Signature.from_dict(json.loads(path.read_text(encoding="utf-8")))
    return tuple(sig.classes)


@dataclass(frozen=True)
class Project:
    """What a retrain works on, checked before any work: the project's root and settings, the
    landing source and its folder, the paths its commit may hold, and the service's admin
    token (when asked to reload a service)."""

    root: Path
    params: Params
    source: Source
    folder: Path
    allowed: tuple[str, ...]
    token: str | None

    @property
    def name(self) -> str:
        """The model's name in the registry (``package.name``)."""
        return self.params.package.name


def retrain(root: Path, opts: Options, say: Callable[[str], None] = print) -> Result:
    """Export labelled production rows, `dvc repro`, and on a passed gate commit, release and
    reload (see the module's docstring). ``say`` gets progress lines. Raises
    :class:`RetrainError` with the exit code of each way it can stop; nothing is changed when
    it stops before the export."""
    project = check_project(root.resolve(), opts)
    shown_url = redact_url(opts.log_url if "://" in opts.log_url else f"sqlite:///{opts.log_url}")
    records = read_new_labelled(project, opts, shown_url, say)
    export, columns_from = export_records(project, records, say)
    authors = label_authors(records, export.keys)
    result = Result(left_out=export.left_out, rows=len(export.frame), labelled_by=authors)
    check_enough(project, result.rows, opts.min_labels)
    say(f"labels given by: {authors_text(authors)}")
    now = datetime.now(UTC)
    meta = {**export_meta(opts, shown_url, now, columns_from), "labelled_by": authors}
    if opts.dry_run:
        result.exported = dry_run(project, opts, export, now, meta, say)
        return result
    result.exported = write_export(export, project.folder, now, meta)
    say(f"exported {result.rows} labelled row(s) to {result.exported.relative_to(project.root)}")
    result.gate = repro_and_gate(project, result.exported, say)
    result.commit = commit_export(project, result.exported, result.rows, meta, result.gate, say)
    result.model_id = load_bundle(project.root / BUNDLE).model_id
    if opts.release:
        result.version = release_commit(project, opts, result.commit, result.model_id, say)
        result.notes.append("share the release with `git push --tags` and `dvc push`")
    else:
        result.notes.append("not released (--no-release): `mlcycle release` does it")
    if opts.service and project.token:
        challenger = result.version and project.params.rollout.release_as != registry.PROD
        reload = reload_or_roll_back if challenger else reload_or_withdraw
        result.reloaded = reload(project.root, project.name, opts.service, project.token, result)
        say(
            f"{opts.service} reloaded: it serves {result.reloaded.get('name')} "
            f"{result.reloaded.get('version')} (model {result.reloaded.get('id')})"
        )
    return result


def check_project(root: Path, opts: Options) -> Project:
    """Everything checked before any work, so a bad option or state changes nothing: the
    options, the landing source and the split, that gather reads the landing folder, that the
    work tree holds no other change, and the service (when asked to reload one)."""
    if opts.min_labels < 1:
        raise RetrainError(f"--min-labels must be at least 1, not {opts.min_labels}")
    params = config.load(root / "params.yaml")
    source = find_source(params, opts.source)
    check_split(params, opts.source)
    folder = landing_folder(root, source)
    check_gather_reads(root, source, folder)
    allowed = [*pipeline_outputs_in_git(root), *landing_paths(root, params)]
    check_clean(root, allowed)
    return Project(root, params, source, folder, tuple(allowed), service_token(opts))


def service_token(opts: Options) -> str | None:
    """The admin token a reload needs, from the environment, once the service answers; None
    when no service is to be reloaded."""
    if not opts.service:
        return None
    token = os.environ.get(opts.token_env, "").strip()
    if not token:
        raise RetrainError(
            f"--service needs the service's admin token in the environment variable "
            f"{opts.token_env} (--token-env names another), which is not set"
        )
    check_service(opts.service)
    return token


def read_new_labelled(
    project: Project, opts: Options, shown_url: str, say: Callable[[str], None]
) -> pd.DataFrame:
    """The labelled records of the log's window that no earlier export holds
    (:func:`new_labelled`); says how many records the window has and how many were exported."""
    try:
        log = read_log(
            opts.log_url, since=opts.since, until=opts.until, model_version=opts.model_version
        )
    except PredictionLogError as exc:
        raise RetrainError(str(exc)) from None
    exported, left = decided_keys(project.folder)
    labelled = log[log["label"].notna()]
    pairs = zip(labelled["request_id"], labelled["row"], strict=True)
    keys = [(rid, int(row)) for rid, row in pairs]
    before = sum(k in exported for k in keys)
    left_before = sum(k in left and k not in exported for k in keys)
    also = f", {left_before} left out by an earlier export" if left_before else ""
    say(
        f"prediction log {shown_url}: {len(log)} record(s) in the window, {len(labelled)} "
        f"labelled, {before} of them exported before{also}"
    )
    return new_labelled(log, exported | left)


def export_records(
    project: Project, records: pd.DataFrame, say: Callable[[str], None]
) -> tuple[Export, str]:
    """The records as rows of the data (:func:`build_export`, with the model's classes and
    schema.yaml's per-row rules), saying what was left out or ignored; and where the data's
    columns were read (:func:`load_layout`)."""
    root, params = project.root, project.params
    layout, columns_from = load_layout(root, params)
    schema_path = root / params.validate.schema
    export = build_export(
        records,
        layout,
        params.objectives.target,
        classes=_model_classes(root),
        schema=load_schema(schema_path) if schema_path.is_file() else None,
        severity=dict(params.validate.severity),
    )
    for item in export.left_out:
        say(f"left out {item.message}")
    if export.ignored_keys:
        say(f"ignored record keys that are not columns of the data: {list(export.ignored_keys)}")
    if export.filled:
        say(f"no record holds {list(export.filled)}: exported as missing values")
    return export, columns_from


def check_enough(project: Project, rows: int, min_labels: int) -> None:
    """Stop, changing nothing, when fewer than ``min_labels`` rows are to be exported (naming
    exports of earlier runs that are not committed yet, which `dvc repro` would use)."""
    if rows >= min_labels:
        return
    pending = uncommitted_exports(project.root, project.folder)
    extra = (
        f"; exported before but not committed yet (a failed or rejected run): {pending}, "
        "which `dvc repro` would use"
        if pending
        else ""
    )
    raise RetrainError(
        f"{rows} new labelled row(s) to export, fewer than --min-labels {min_labels}: "
        f"nothing was changed{extra}",
        EXIT_TOO_FEW,
    )


def export_meta(opts: Options, shown_url: str, now: datetime, columns_from: str) -> dict[str, Any]:
    """Where an export came from, written into the file's metadata beside its log keys."""
    return {
        "log_url": shown_url,
        "exported_at": now.isoformat(),
        "since": opts.since.isoformat() if opts.since else None,
        "until": opts.until.isoformat() if opts.until else None,
        "model_version": opts.model_version,
        "columns_from": columns_from,
    }


def dry_run(
    project: Project,
    opts: Options,
    export: Export,
    now: datetime,
    meta: dict[str, Any],
    say: Callable[[str], None],
) -> Path:
    """Write the export to a temporary folder for a look and say what a real run would do;
    the project is unchanged. Returns the file written."""
    exported = write_export(export, Path(tempfile.mkdtemp(prefix="mlcycle-retrain-")), now, meta)
    nxt = registry.next_version(project.root, project.name, opts.bump)
    say(f"dry run: would write {len(export.frame)} row(s) to {project.source.path}/{exported.name}")
    say(f"dry run: the file is at {exported} for a look; the project is unchanged")
    steps = ["commit"]
    if opts.release:
        steps.append(f"release {project.name}@{nxt} as {project.params.rollout.release_as}")
    if opts.service:
        steps.append(f"reload {opts.service}")
    say(f"dry run: would then run `dvc repro` and, if the gate passes, {', '.join(steps)}")
    return exported


def repro_and_gate(project: Project, path: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Run `dvc repro` and return the gate's decision when it passed; a rejection, a failed
    run, an export gather did not use, or no decision is a :class:`RetrainError` (the exported
    file stays: it is data)."""
    root = project.root
    say("running `dvc repro` ...")
    started = time.time() - 1.0  # file times may be coarser than a second
    code = run_repro(root)
    kept = f"the exported file {path.relative_to(root)} stays (it is data); nothing was committed"
    gate = gate_decision(root, started, code == 0)
    if gate is not None and not gate.get("passed"):
        reasons = "; ".join(r for r in gate.get("reasons", []) if r.startswith("FAIL"))
        raise RetrainError(
            f"the gate rejected the retrained model: {reasons or gate.get('reasons')}; "
            f"production is unchanged; {kept}",
            EXIT_REJECTED,
        )
    if code != 0:
        raise RetrainError(
            f"`dvc repro` failed (exit status {code}; its output above names the stage and "
            f"why); {kept} or released. Fix the cause and run `dvc repro`, or remove the file "
            "to export its rows again",
            EXIT_REPRO_FAILED,
        )
    took, why = gather_took(root, project.source.name, path.relative_to(project.folder).as_posix())
    if not took:
        raise RetrainError(
            f"gather did not use {path.relative_to(root)} ({why}); {kept}", EXIT_REPRO_FAILED
        )
    if gate is None:
        raise RetrainError(f"`dvc repro` wrote no {GATE_METRICS}; {kept}", EXIT_REPRO_FAILED)
    say("the gate passed: " + "; ".join(gate.get("reasons", [])))
    return gate


def commit_export(
    project: Project,
    path: Path,
    rows: int,
    meta: dict[str, Any],
    gate: dict[str, Any],
    say: Callable[[str], None],
) -> str:
    """Commit the exported file and what `dvc repro` changed (dvc.lock, the metrics, the
    .gitignore files DVC wrote), with a message saying where the rows came from; returns the
    commit."""
    root = project.root
    paths = [p for p in dict.fromkeys(project.allowed) if (root / p).exists() or _tracked(root, p)]
    ignores = _git(
        root, "ls-files", "-m", "-o", "--exclude-standard", "--", ":(glob)**/.gitignore"
    ).stdout.split()  # DVC lists new outputs in .gitignore files
    _git(root, "add", "-A", "--", *paths, *ignores)
    window = ", ".join(
        f"{k} {v}"
        for k, v in [
            ("since", meta["since"]),
            ("until", meta["until"]),
            ("model version", meta["model_version"]),
        ]
        if v
    )
    champion = gate.get("champion_version")
    message = (
        f"retrain: {rows} labelled production rows ({path.relative_to(project.folder).as_posix()})"
        f"\n\nExported from the prediction log {meta['log_url']}"
        + (f" ({window})" if window else "")
        + f" into source {project.source.name!r}; `dvc repro` passed the gate"
        + (f" against {project.name}@{champion}" if champion else "")
        + f".\nLabels given by: {authors_text(meta.get('labelled_by', {}))}.\n"
    )
    _git(root, "commit", "-q", "-m", message)
    commit = _git(root, "rev-parse", "HEAD").stdout.strip()
    say(f"committed {commit[:12]}: {message.splitlines()[0]}")
    return commit


def release_commit(
    project: Project, opts: Options, commit: str, model_id: str, say: Callable[[str], None]
) -> str:
    """Release the commit (:func:`mlcycle.registry.release`) as ``rollout.release_as`` says:
    to production, or beside it as shadow or canary (answering ``rollout.canary_share``
    percent of requests), for `mlcycle monitor --compare --act` to promote or roll back;
    returns the version."""
    rollout = project.params.rollout
    stage = rollout.release_as
    share = registry.check_share(rollout.canary_share) if stage == registry.CANARY else 0.0
    try:
        version = registry.release(
            project.root, project.name, bump=opts.bump, say=say, stage=stage, share=share
        )
    except registry.RegistryError as exc:
        raise RetrainError(
            f"committed {commit[:12]} but the release failed: {exc}; fix that, then "
            "run `mlcycle release`"
        ) from None
    if stage == registry.PROD:
        say(f"released {project.name}@{version} (model {model_id}) to {registry.PROD}")
    else:
        answers = f", answering {share:.0%} of requests" if share else ""
        say(f"released {project.name}@{version} (model {model_id}) as {stage}{answers} "
            f"(rollout.release_as); `mlcycle monitor --compare --act` promotes or rolls it "
            "back")  # fmt: skip
    return version


def uncommitted_exports(root: Path, folder: Path) -> list[str]:
    """Exported files in ``folder`` that git does not track yet (left by a run whose `dvc
    repro` failed or whose model the gate rejected)."""
    if not folder.is_dir():
        return []
    untracked = _git(root, "ls-files", "-o", "--exclude-standard", "--", str(folder)).stdout
    return sorted(Path(p).name for p in untracked.split() if Path(p).name.startswith(FILE_PREFIX))


def _tracked(root: Path, path: str) -> bool:
    return bool(_git(root, "ls-files", "--", path).stdout.strip())

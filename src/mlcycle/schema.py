"""The data schema and the checks of a snapshot against it.

``schema.yaml`` (project root, in git) says what each column may hold: its type, whether it may
be missing, its categories or range, and the target's allowed values. People edit it;
:func:`infer_schema` and :func:`dump_schema` draft it from a snapshot.

:func:`check` compares a snapshot with the schema and returns :class:`Finding` objects, each
naming its kind (one of :data:`mlcycle.config.FINDING_KINDS`), the column, how many rows and
a few examples. Everything here is pure: reading the snapshot and writing reports is the
``validate`` stage's job.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mlcycle.config import FINDING_KINDS, SEVERITIES

TYPES = ("integer", "float", "category", "string", "boolean", "datetime")
NUMERIC_TYPES = ("integer", "float")
TEXT_TYPES = ("category", "string")
# Columns the gather stage adds for its own bookkeeping (mlcycle.sources.SOURCE_COLUMN); they are
# neither checked nor drafted. Spelled out here so validation does not import the source readers
# (a test keeps the two in step).
BOOKKEEPING_COLUMNS = ("_source",)
# A text column with at most this many distinct values is drafted as a category.
MAX_CATEGORIES = 100
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)
COLUMN_KEYS = ("type", "nullable", "max_null_rate", "categories", "min", "max", "values")
WIDTH = 100  # line width of a drafted schema.yaml
# Comment lines at the top of a drafted schema.yaml: what each key means.
DRAFT_HEADER = """\
# The data schema: what each column of the snapshot (data/raw/snapshot.parquet) may hold.
# The `validate` stage checks every snapshot against it before `prepare`; how serious each kind
# of finding is (error stops `dvc repro`, warning is reported) is set in params.yaml under
# validate.severity. Keep this file in git and review changes to it like code.
#
#   target           the column to predict; must equal objectives.target in params.yaml
#   columns          one block per column, in the order of the data
#     type           integer | float | category | string | boolean | datetime
#                    (category and string both hold text; a category lists its values)
#     nullable       false: any missing value is a null_rate finding
#     max_null_rate  highest share of missing values allowed, 0 to 1 (when nullable);
#                    if absent, validate.max_null_rate in params.yaml
#     categories     allowed values of a text column; others are unseen_category findings
#     min, max       allowed range of a numeric column, inclusive; others are out_of_range
#     values         the target's allowed values; others are target_values findings
#
# Drafted by `mlcycle schema infer` from {snapshot}: types, ranges, categories and
# nullability are what that snapshot held. Widen a range or add a category where the world is
# wider than the sample; tighten where you know better.
"""

# What a finding of each kind says about its rows, after "<n> of <total> rows".
KIND_PHRASES = {
    "missing_column": "lack this column",
    "extra_column": "have this column, which the schema does not list",
    "type": "hold values of the wrong type",
    "null_rate": "are null",
    "unseen_category": "hold categories the schema does not list",
    "out_of_range": "are out of range",
    "duplicate_rows": "repeat an earlier row exactly",
    "target_values": "hold an unexpected target value",
}


class SchemaError(ValueError):
    """schema.yaml is missing or invalid; the message names the file and the key."""


@dataclass(frozen=True)
class ColumnSpec:
    """What one column may hold.

    ``categories`` (text columns) and ``values`` (the target) are kept as label strings (see
    :func:`label`); ``min``/``max`` apply to numeric columns and are inclusive.
    """

    name: str
    type: str
    nullable: bool = True
    max_null_rate: float | None = None
    categories: tuple[str, ...] | None = None
    min: int | float | None = None
    max: int | float | None = None
    values: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Schema:
    """The target column and one :class:`ColumnSpec` per column, in order."""

    target: str
    columns: tuple[ColumnSpec, ...]

    def column(self, name: str) -> ColumnSpec:
        """The spec of column ``name``."""
        for spec in self.columns:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        """The column names, in the schema's order."""
        return tuple(spec.name for spec in self.columns)


@dataclass(frozen=True)
class Finding:
    """One problem of the snapshot: ``rows`` of ``total`` rows break one rule of the schema.

    ``column`` is None for findings about whole rows (duplicates). ``examples`` are a few
    offending values (most frequent first; for duplicates, pairs of a row and the earlier row
    it repeats), ``first_rows`` the positions (from 0) of the first offending rows in the
    snapshot, ``sources`` how many of the rows came from each source (when the snapshot says).
    """

    kind: str
    column: str | None
    rows: int
    total: int
    expected: str
    examples: tuple[Any, ...] = ()
    first_rows: tuple[int, ...] = ()
    severity: str = "error"
    sources: tuple[tuple[str, int], ...] = ()

    @property
    def message(self) -> str:
        """One line naming the column, the row count, what was expected and examples."""
        where = self.column if self.column is not None else "all columns"
        text = f"{where}: {self.rows} of {self.total} rows {KIND_PHRASES[self.kind]}"
        if self.kind == "null_rate" and self.total:
            text += f" ({self.rows / self.total:.2%})"
        text += f"; expected {self.expected}"
        if self.examples:
            text += f"; examples: {', '.join(render(v) for v in self.examples)}"
        if self.first_rows:
            text += f" (rows {', '.join(str(r) for r in self.first_rows)})"
        if self.sources:
            text += "; from source " + ", ".join(f"{name!r} ({n})" for name, n in self.sources)
        return text

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description, including :attr:`message`."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "column": self.column,
            "rows": self.rows,
            "rate": round(self.rows / self.total, 6) if self.total else 0.0,
            "expected": self.expected,
            "examples": [list(v) if isinstance(v, tuple) else v for v in self.examples],
            "first_rows": list(self.first_rows),
            "sources": dict(self.sources),
            "message": self.message,
        }


# --- values ------------------------------------------------------------------------------------


def label(value: Any) -> str:
    """The text form used to compare categories and target values: ``1.0`` and ``1`` agree."""
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars unwrapped, non-finite numbers and dates as text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def render(value: Any) -> str:
    """A value as shown in messages: text quoted, so spaces and empty strings are visible."""
    if value is None:
        return "null"
    if isinstance(value, tuple | list):  # a duplicate row and the row it repeats
        return " = ".join(f"row {v}" for v in value)
    if isinstance(value, str):
        return repr(value)
    return str(value)


def _examples(values: pd.Series, limit: int) -> tuple[Any, ...]:
    """Up to ``limit`` distinct values, most frequent first (ties: first seen first)."""
    if limit <= 0 or values.empty:
        return ()
    keys = values.map(label) if values.dtype == object else values
    order: dict[Any, int] = {}
    counts: dict[Any, int] = {}
    firsts: dict[Any, Any] = {}
    for i, (key, value) in enumerate(zip(keys.tolist(), values.tolist(), strict=True)):
        if key not in order:
            order[key], counts[key], firsts[key] = i, 0, value
        counts[key] += 1
    ranked = sorted(order, key=lambda k: (-counts[k], order[k]))
    return tuple(json_value(firsts[k]) for k in ranked[:limit])


def _first_rows(mask: pd.Series, limit: int) -> tuple[int, ...]:
    positions = np.flatnonzero(mask.to_numpy(dtype=bool))
    return tuple(int(p) for p in positions[: max(limit, 0)])


def _is_text_dtype(series: pd.Series) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_datetime64_any_dtype(series)
    )


def _text(series: pd.Series) -> pd.Series:
    """Non-null values of a column as stripped text (numbers and booleans as labels)."""
    if pd.api.types.is_string_dtype(series) and series.dtype != object:
        return series.str.strip()
    return series.map(lambda v: v.strip() if isinstance(v, str) else label(v)).astype(object)


def parse_numbers(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse a column as numbers: ``(numbers, bad)``.

    ``numbers`` is float (NaN where missing or unparsable); ``bad`` marks values present but not
    numbers, such as text in a numeric column (a source with junk makes the snapshot hold text).
    """
    present = series.notna()
    if pd.api.types.is_bool_dtype(series):
        return pd.Series(np.nan, index=series.index), present
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64"), pd.Series(False, index=series.index)
    if pd.api.types.is_datetime64_any_dtype(series):
        return pd.Series(np.nan, index=series.index), present
    text = _text(series[present])
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    numbers = pd.Series(np.nan, index=series.index)
    numbers[present] = parsed
    return numbers, present & numbers.isna()


def _bad_type(series: pd.Series, type_: str) -> tuple[pd.Series, pd.Series | None]:
    """Rows whose value does not fit ``type_``, and the parsed numbers for numeric types."""
    present = series.notna()
    if type_ in NUMERIC_TYPES:
        numbers, bad = parse_numbers(series)
        if type_ == "integer":
            fraction = numbers.notna() & (numbers % 1 != 0)
            bad = bad | fraction
            numbers = numbers.mask(fraction)
        return bad, numbers
    if type_ == "boolean":
        if pd.api.types.is_bool_dtype(series):
            return pd.Series(False, index=series.index), None
        words = _text(series[present]).str.lower()
        ok = words.isin(TRUE_WORDS + FALSE_WORDS)
        bad = pd.Series(False, index=series.index)
        bad[present] = ~ok.to_numpy(dtype=bool)
        return bad, None
    if type_ == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            return pd.Series(False, index=series.index), None
        bad = pd.Series(False, index=series.index)
        if _is_text_dtype(series):
            text = _text(series[present])
            uniques = pd.unique(text)
            parsed = pd.to_datetime(pd.Series(uniques), errors="coerce", format="mixed")
            unparsable = set(uniques[parsed.isna().to_numpy()])
            bad[present] = text.isin(unparsable).to_numpy(dtype=bool)
        else:
            bad = present
        return bad, None
    return pd.Series(False, index=series.index), None  # text holds anything


# --- reading and writing schema.yaml -----------------------------------------------------------


def _labels(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or any(isinstance(v, dict | list) or v is None for v in raw):
        raise SchemaError(f"{where} must be a list of values")
    return tuple(label(v) for v in raw)


def _number(raw: Any, where: str) -> int | float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SchemaError(f"{where} must be a number, got {raw!r}")
    return raw


def parse_column(name: str, raw: Any, source: str = "schema.yaml") -> ColumnSpec:
    """Validate one column block; the message names the file and the key."""
    where = f"{source}: columns.{name}"
    if not isinstance(raw, dict):
        raise SchemaError(f"{where} must be a mapping with at least 'type'")
    unknown = sorted(set(map(str, raw)) - set(COLUMN_KEYS))
    if unknown:
        raise SchemaError(f"{where} has unknown key(s) {unknown}; known: {list(COLUMN_KEYS)}")
    type_ = raw.get("type")
    if type_ not in TYPES:
        raise SchemaError(f"{where}.type is {type_!r}; use one of {list(TYPES)}")
    nullable = raw.get("nullable", True)
    if not isinstance(nullable, bool):
        raise SchemaError(f"{where}.nullable must be true or false, got {nullable!r}")
    rate = raw.get("max_null_rate")
    if rate is not None:
        rate = float(_number(rate, f"{where}.max_null_rate"))
        if not 0.0 <= rate <= 1.0:
            raise SchemaError(f"{where}.max_null_rate must be between 0 and 1, got {rate}")
    categories = raw.get("categories")
    if categories is not None:
        if type_ not in TEXT_TYPES:
            raise SchemaError(f"{where}.categories is for category or string columns, not {type_}")
        categories = _labels(categories, f"{where}.categories")
    bounds = {}
    for key in ("min", "max"):
        if raw.get(key) is not None:
            if type_ not in NUMERIC_TYPES:
                raise SchemaError(f"{where}.{key} is for integer or float columns, not {type_}")
            bounds[key] = _number(raw[key], f"{where}.{key}")
    if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
        raise SchemaError(f"{where}: min {bounds['min']} is above max {bounds['max']}")
    values = raw.get("values")
    return ColumnSpec(
        name=name,
        type=type_,
        nullable=nullable,
        max_null_rate=rate,
        categories=categories,
        min=bounds.get("min"),
        max=bounds.get("max"),
        values=None if values is None else _labels(values, f"{where}.values"),
    )


def parse_schema(raw: Any, source: str = "schema.yaml") -> Schema:
    """Validate a loaded schema document: a target and a mapping of column blocks."""
    if not isinstance(raw, dict):
        raise SchemaError(f"{source} must be a mapping with 'target' and 'columns'")
    unknown = sorted(set(map(str, raw)) - {"target", "columns"})
    if unknown:
        raise SchemaError(
            f"{source} has unknown top-level key(s) {unknown}; known: target, columns"
        )
    target = raw.get("target")
    if not isinstance(target, str) or not target:
        raise SchemaError(f"{source}: 'target' must name the column to predict")
    columns = raw.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise SchemaError(f"{source}: 'columns' must map each column name to its block")
    specs = tuple(parse_column(str(name), block, source) for name, block in columns.items())
    if target not in {s.name for s in specs}:
        raise SchemaError(f"{source}: target {target!r} is not one of the columns")
    for spec in specs:
        if spec.values is not None and spec.name != target:
            raise SchemaError(
                f"{source}: columns.{spec.name}.values is for the target ({target}); "
                "use categories for other columns"
            )
    return Schema(target=target, columns=specs)


def load_schema(path: str | Path) -> Schema:
    """Read and validate schema.yaml, naming the file in every error."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(
            f"{path} not found; draft one with `mlcycle schema infer --out {path}` and review it"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path} is not valid YAML: {exc}") from exc
    return parse_schema(raw, str(path))


def _scalar(value: Any, flow: bool = False) -> str:
    """``value`` as a YAML scalar that reads back as the same value (plain if possible)."""
    if not isinstance(value, str):
        return yaml.safe_dump(value).split("\n", 1)[0]
    probe = f"[{value}]" if flow else f"k: {value}"
    try:
        back = yaml.safe_load(probe)
    except yaml.YAMLError:
        back = None
    same = back == ([value] if flow else {"k": value})
    if same and value[:1].isalnum() and value == value.strip() and "#" not in value:
        return value
    return json.dumps(value, ensure_ascii=False)


def _key(name: str) -> str:
    try:
        same = yaml.safe_load(f"{name}: 1") == {name: 1}
    except yaml.YAMLError:
        same = False
    return name if same and name == name.strip() and "#" not in name else json.dumps(name)


def _flow_list(key: str, items: Iterable[Any], indent: str) -> list[str]:
    """``key: [a, b, ...]`` wrapped at :data:`WIDTH`, continuation lines indented."""
    lines, line = [], f"{indent}{key}: ["
    parts = [_scalar(v, flow=True) for v in items]
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "]")
        if len(line) + len(piece) + 1 > WIDTH and not line.endswith("["):
            lines.append(line)
            line = f"{indent}  {piece}"
        else:
            line += piece if line.endswith("[") else f" {piece}"
    if not parts:
        line += "]"
    lines.append(line)
    return lines


def _with_note(line: str, note: str | None) -> str:
    return f"{line}  # {note}" if note else line


def dump_schema(
    schema: Schema,
    header: str = "",
    notes: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """schema.yaml text: ``header`` (comment lines), the target, then one block per column.

    ``notes[column][key]`` adds a trailing comment to that key's line. Categories and values
    are written as label strings; numbers that look alike in YAML are quoted.
    """
    notes = notes or {}
    out = [header.rstrip("\n"), ""] if header else []
    out += [f"target: {_key(schema.target)}", "", "columns:"]
    ind = "    "
    for spec in schema.columns:
        note = notes.get(spec.name, {})
        out.append(f"  {_key(spec.name)}:")
        out.append(_with_note(f"{ind}type: {spec.type}", note.get("type")))
        out.append(_with_note(f"{ind}nullable: {_scalar(spec.nullable)}", note.get("nullable")))
        if spec.max_null_rate is not None:
            out.append(
                _with_note(
                    f"{ind}max_null_rate: {_scalar(spec.max_null_rate)}", note.get("max_null_rate")
                )
            )
        for key in ("min", "max"):
            value = getattr(spec, key)
            if value is not None:
                out.append(_with_note(f"{ind}{key}: {_scalar(value)}", note.get(key)))
        if spec.categories is not None:
            out += _flow_list("categories", spec.categories, ind)
        if spec.values is not None:
            out += _flow_list("values", spec.values, ind)
    return "\n".join(out) + "\n"


# --- drafting a schema from data ---------------------------------------------------------------


def infer_type(series: pd.Series, max_categories: int = MAX_CATEGORIES) -> str:
    """The type a column's observed values suggest (see :data:`TYPES`).

    Whole numbers give ``integer``, even when stored as floats (a missing value makes pandas
    store integers as floats) or as text; text with few distinct values gives ``category``.
    """
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    distinct = pd.Series(series.dropna().unique())
    if distinct.empty:
        return "string"
    numbers, bad = parse_numbers(distinct)
    if not bad.any():
        finite = numbers[np.isfinite(numbers)]
        return "integer" if (finite % 1 == 0).all() else "float"
    text = _text(distinct)
    if text.str.lower().isin(["true", "false"]).all():
        return "boolean"
    if text.str.match(ISO_DATE).all():
        return "datetime"
    return "category" if text.nunique() <= max_categories else "string"


def _number_value(value: float, type_: str) -> int | float:
    return int(value) if type_ == "integer" else float(value)


def infer_column(
    series: pd.Series,
    name: str,
    is_target: bool,
    max_categories: int = MAX_CATEGORIES,
    target_values: bool = True,
) -> ColumnSpec:
    """Draft one column's spec from its observed values: type, nullable, range or categories.

    With ``target_values=False`` (a regression target) the target gets its type and
    nullability only: a new value outside the observed range is not an error, and whole
    numbers are drafted as ``float``, so a new fractional value is not one either.
    """
    type_ = infer_type(series, max_categories)
    if is_target and not target_values:
        type_ = "float" if type_ == "integer" else type_
        return ColumnSpec(name=name, type=type_, nullable=bool(series.isna().any()))
    distinct = pd.Series(series.dropna().unique())
    spec: dict[str, Any] = {"name": name, "type": type_, "nullable": bool(series.isna().any())}
    numbers = (
        parse_numbers(distinct)[0].dropna() if type_ in NUMERIC_TYPES else pd.Series(dtype=float)
    )
    numbers = numbers[np.isfinite(numbers)]
    if not numbers.empty:
        spec["min"] = _number_value(numbers.min(), type_)
        spec["max"] = _number_value(numbers.max(), type_)
    labels = sorted(set(_text(distinct))) if type_ in TEXT_TYPES else []
    if is_target:
        if type_ == "boolean":
            spec["values"] = ("false", "true")
        elif type_ == "integer" and len(numbers) <= max_categories:
            spec["values"] = tuple(label(v) for v in sorted({int(v) for v in numbers}))
        elif type_ == "category":
            spec["values"] = tuple(labels)
        if "values" in spec:
            spec.pop("min", None)
            spec.pop("max", None)
    elif type_ == "category":
        spec["categories"] = tuple(labels)
    return ColumnSpec(**spec)


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    ignore: Iterable[str] = BOOKKEEPING_COLUMNS,
    max_categories: int = MAX_CATEGORIES,
    target_values: bool = True,
) -> Schema:
    """Draft a schema from a snapshot: observed ranges, sorted categories, observed nullability.

    ``target`` gets its observed values as the allowed ``values`` (not with
    ``target_values=False``, for a regression target); ``ignore`` columns
    (bookkeeping) are left out. The draft is a starting point for a person to review.
    """
    if target not in frame.columns:
        raise SchemaError(f"target {target!r} is not a column of the data: {list(frame.columns)}")
    skip = set(ignore)
    columns = tuple(
        infer_column(frame[c], str(c), c == target, max_categories, target_values)
        for c in frame.columns
        if c not in skip
    )
    return Schema(target=target, columns=columns)


def observed_notes(frame: pd.DataFrame, schema: Schema) -> dict[str, dict[str, str]]:
    """Trailing comments for a draft: where min/max come from and how many nulls were seen."""
    notes: dict[str, dict[str, str]] = {}
    total = len(frame)
    for spec in schema.columns:
        if spec.name not in frame.columns:
            continue
        note: dict[str, str] = {}
        nulls = int(frame[spec.name].isna().sum())
        if nulls:
            note["nullable"] = f"{nulls} of {total} rows null ({nulls / total:.2%}) in the draft"
        if spec.min is not None:
            note["min"] = "observed minimum"
        if spec.max is not None:
            note["max"] = "observed maximum"
        if note:
            notes[spec.name] = note
    return notes


# --- checking a snapshot -----------------------------------------------------------------------


def _range_text(spec: ColumnSpec) -> str:
    if spec.min is not None and spec.max is not None:
        return f"between {spec.min} and {spec.max}"
    return f"at least {spec.min}" if spec.min is not None else f"at most {spec.max}"


def _short_list(items: Iterable[str], limit: int = 8) -> str:
    items = list(items)
    head = ", ".join(items[:limit])
    return head + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def by_source(
    mask: pd.Series | np.ndarray, origin: pd.Series | None
) -> tuple[tuple[str, int], ...]:
    """How many of the ``mask`` rows came from each source (``origin`` names each row's
    source), in order of source name; empty without ``origin``."""
    if origin is None:
        return ()
    counts = origin[np.asarray(mask, dtype=bool)].astype(str).value_counts()
    return tuple((str(name), int(n)) for name, n in sorted(counts.items()))


def column_masks(
    series: pd.Series, spec: ColumnSpec, target: str, wanted: set[str]
) -> list[tuple[str, pd.Series, str, bool]]:
    """The rules of ``spec`` that ``series`` breaks, as ``(kind, mask of the offending rows,
    expected, whether the offending values are examples)``; the null rate's mask is every
    missing value (whether it is too many depends on the share, see :func:`null_limit`)."""
    out: list[tuple[str, pd.Series, str, bool]] = []
    present = series.notna()
    out.append(("null_rate", ~present, "", False))
    bad, numbers = _bad_type(series, spec.type)
    out.append(("type", bad, f"{spec.type} values", True))
    ok = present & ~bad
    if numbers is not None and (spec.min is not None or spec.max is not None):
        low = numbers < spec.min if spec.min is not None else False
        high = numbers > spec.max if spec.max is not None else False
        out.append(("out_of_range", ok & (low | high), _range_text(spec), True))
    if spec.name == target and spec.values is not None:
        kind, allowed, what = "target_values", spec.values, "values"
    else:
        kind, allowed, what = "unseen_category", spec.categories, "categories"
    if allowed is not None and kind in wanted and ok.any():
        text = _text(series[ok])
        if spec.type == "boolean":  # "Yes", "1", True all read as "true"
            text = text.str.lower().isin(TRUE_WORDS).map({True: "true", False: "false"})
        mask = pd.Series(False, index=series.index)
        mask[text.index[~text.isin(set(allowed)).to_numpy(dtype=bool)]] = True
        out.append((kind, mask, f"one of the {what} in the schema ({_short_list(allowed)})", True))
    return out


def null_limit(spec: ColumnSpec, max_null_rate: float) -> tuple[float, str]:
    """The largest share of missing values ``spec`` allows, and how a finding says it."""
    if not spec.nullable:
        return 0.0, "no nulls (nullable: false)"
    limit = spec.max_null_rate if spec.max_null_rate is not None else max_null_rate
    return limit, f"at most {limit:.2%} nulls"


def _check_column(
    series: pd.Series,
    spec: ColumnSpec,
    target: str,
    max_null_rate: float,
    examples: int,
    wanted: set[str],
    origin: pd.Series | None = None,
) -> list[Finding]:
    total = len(series)
    found: list[Finding] = []
    for kind, mask, expected, show in column_masks(series, spec, target, wanted):
        count = int(mask.sum())
        if not count or kind not in wanted:
            continue
        if kind == "null_rate":
            limit, expected = null_limit(spec, max_null_rate)
            if not (total and count / total > limit):
                continue
        found.append(
            Finding(
                kind,
                spec.name,
                count,
                total,
                expected,
                _examples(series[mask], examples) if show else (),
                _first_rows(mask, examples),
                sources=by_source(mask, origin),
            )
        )
    return found


def check(
    frame: pd.DataFrame,
    schema: Schema,
    *,
    severity: Mapping[str, str] | None = None,
    max_null_rate: float = 0.5,
    examples: int = 5,
    ignore: Iterable[str] = BOOKKEEPING_COLUMNS,
    max_unseen_share: float = 1.0,
) -> list[Finding]:
    """Check a snapshot against the schema; return its findings, errors first.

    ``severity`` maps each kind to error, warning or ignore (kinds not given are errors);
    ignored kinds are not computed. ``max_null_rate`` applies to nullable columns whose spec
    gives none; ``examples`` bounds the example values and rows of each finding. ``ignore``
    columns (bookkeeping) are neither checked nor counted as extra, nor compared for
    duplicates. Unseen categories in more than ``max_unseen_share`` of the rows are an error
    whatever their severity (unless ignored).
    """
    levels = severity_levels(severity)
    wanted = {kind for kind, level in levels.items() if level != "ignore"}
    skip = set(ignore)
    total = len(frame)
    origin = frame[BOOKKEEPING_COLUMNS[0]] if BOOKKEEPING_COLUMNS[0] in frame.columns else None
    data_columns = [c for c in frame.columns if c not in skip]
    found: list[Finding] = []

    for spec in schema.columns:
        if spec.name not in frame.columns:
            if "missing_column" in wanted:
                found.append(
                    Finding(
                        "missing_column", spec.name, total, total, "the column schema.yaml lists"
                    )
                )
            continue
        found += _check_column(
            frame[spec.name], spec, schema.target, max_null_rate, examples, wanted, origin
        )

    extra = [c for c in data_columns if c not in set(schema.names)]
    if "extra_column" in wanted:
        expected = f"only the columns in the schema ({_short_list(schema.names)})"
        for name in extra:
            shown = _examples(frame[name].dropna(), examples)
            found.append(Finding("extra_column", str(name), total, total, expected, shown))

    if "duplicate_rows" in wanted and data_columns and total:
        found += [
            replace(f, sources=by_source(frame.index.isin(f_rows), origin))
            for f, f_rows in _duplicates(frame[data_columns], examples)
        ]

    return grade(found, schema, [str(c) for c in extra], levels, max_unseen_share)


def severity_levels(severity: Mapping[str, str] | None) -> dict[str, str]:
    """Each finding kind's level (error unless ``severity`` says otherwise), checked."""
    levels = {kind: "error" for kind in FINDING_KINDS} | dict(severity or {})
    for kind, level in levels.items():
        if kind not in FINDING_KINDS or level not in SEVERITIES:
            raise ValueError(f"severity {kind}: {level} is not a known kind and level")
    return levels


def grade(
    found: list[Finding],
    schema: Schema,
    extra: list[str],
    levels: Mapping[str, str],
    max_unseen_share: float,
) -> list[Finding]:
    """Give each finding its severity and sort them: errors first, then by column (schema
    order, then extra columns), then by kind."""
    order: dict[str, int] = {}
    for name in [*schema.names, *extra]:
        order.setdefault(name, len(order))

    def graded(f: Finding) -> Finding:
        large = f.kind == "unseen_category" and f.total and f.rows / f.total > max_unseen_share
        if not large:
            return replace(f, severity=levels[f.kind])
        why = f"; more than {max_unseen_share:.2%} of rows (validate.max_unseen_share)"
        return replace(f, severity="error", expected=f.expected + why)

    return sorted(
        (graded(f) for f in found),
        key=lambda f: (
            SEVERITIES.index(f.severity),
            order.get(f.column, len(order)) if f.column is not None else len(order),
            FINDING_KINDS.index(f.kind),
        ),
    )


def _duplicates(frame: pd.DataFrame, examples: int) -> list[tuple[Finding, pd.Index]]:
    """Rows that repeat an earlier row in every column (examples say which row they repeat),
    with the index labels of the repeats."""
    groups = frame.groupby(list(frame.columns), dropna=False, sort=False).ngroup()
    repeats = groups.duplicated()
    count = int(repeats.sum())
    if not count:
        return []
    first_of = {g: i for i, g in reversed(list(enumerate(groups.tolist())))}
    rows = _first_rows(repeats, examples)
    shown = tuple((r, first_of[groups.iloc[r]]) for r in rows)
    finding = Finding("duplicate_rows", None, count, len(frame), "each row once", shown, rows)
    return [(finding, frame.index[repeats.to_numpy()])]


# --- reporting ---------------------------------------------------------------------------------


def summarize(
    findings: list[Finding], rows: int, columns: int, schema_path: str = "schema.yaml"
) -> dict[str, Any]:
    """The metrics document: passed (no errors), counts by severity and every finding."""
    counts = {level: 0 for level in SEVERITIES if level != "ignore"}
    for f in findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    return {
        "passed": counts["error"] == 0,
        "rows": rows,
        "columns": columns,
        "schema": schema_path,
        "counts": counts,
        "findings": [f.as_dict() for f in findings],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(findings: list[Finding]) -> str:
    """A Markdown table of findings, padded so it also reads well in a terminal."""
    head = ("severity", "kind", "column", "rows", "expected", "examples")
    body = [
        (
            f.severity,
            f.kind,
            f.column if f.column is not None else "(all columns)",
            f"{f.rows} of {f.total}",
            f.expected,
            ", ".join(render(v) for v in f.examples),
        )
        for f in findings
    ]
    body = [tuple(_cell(c) for c in row) for row in body]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(r) for r in body)])


def markdown_report(doc: dict[str, Any], findings: list[Finding]) -> str:
    """reports/validation.md: the verdict, the counts and the table of findings."""
    counts = doc["counts"]
    verdict = "passed" if doc["passed"] else "FAILED"
    lines = [
        "# Data validation",
        "",
        f"Snapshot of {doc['rows']} rows and {doc['columns']} columns checked against "
        f"`{doc['schema']}`: **{verdict}** ({counts['error']} error(s), "
        f"{counts['warning']} warning(s)).",
        "",
    ]
    if findings:
        lines += [format_table(findings), "", "Details:", ""]
        lines += [f"- **{f.severity}** `{f.kind}` {f.message}" for f in findings]
    else:
        lines.append("No findings.")
    return "\n".join(lines) + "\n"

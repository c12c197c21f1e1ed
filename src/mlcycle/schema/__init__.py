"""The data schema: what each column of the snapshot may hold, and schema.yaml.

``schema.yaml`` (project root, in git) says what each column may hold: its type, whether it may
be missing, its categories or range, and the target's allowed values. People edit it; this
module reads it (:func:`load_schema`, every error naming the file and the key) and writes it
(:func:`dump_schema`). The package's other modules do the other jobs:

- :mod:`mlcycle.schema.values`: a column's values read as the schema's types;
- :mod:`mlcycle.schema.infer`: drafting a schema from a snapshot (``mlcycle schema infer``);
- :mod:`mlcycle.schema.findings`: checking a snapshot against the schema (its findings);
- :mod:`mlcycle.schema.rows`: the rules one record can break, checked record by record (the
  service, the batch scorer, retrain's export);
- :mod:`mlcycle.schema.report`: the validation metrics and report.

Everything here is pure: reading the snapshot and writing reports is the ``validate`` stage's
job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mlcycle.io import value_text, yaml_flow_list, yaml_key, yaml_scalar

TYPES = ("integer", "float", "category", "string", "boolean", "datetime")
NUMERIC_TYPES = ("integer", "float")
TEXT_TYPES = ("category", "string")
# Columns the gather stage adds for its own bookkeeping (mlcycle.sources.SOURCE_COLUMN); they are
# neither checked nor drafted. Spelled out here so validation does not import the source readers
# (a test keeps the two in step).
BOOKKEEPING_COLUMNS = ("_source",)
COLUMN_KEYS = ("type", "nullable", "max_null_rate", "categories", "min", "max", "values")
WIDTH = 100  # line width of a drafted schema.yaml


class SchemaError(ValueError):
    """schema.yaml is missing or invalid; the message names the file and the key."""


@dataclass(frozen=True)
class ColumnSpec:
    """What one column may hold.

    ``categories`` (text columns) and ``values`` (the target) are kept as label strings (see
    :func:`mlcycle.io.value_text`); ``min``/``max`` apply to numeric columns and are inclusive.
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


# --- reading and writing schema.yaml -----------------------------------------------------------


def _labels(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or any(isinstance(v, dict | list) or v is None for v in raw):
        raise SchemaError(f"{where} must be a list of values")
    return tuple(value_text(v) for v in raw)


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


def schema_doc(schema: Schema) -> dict[str, Any]:
    """The schema as the plain document :func:`parse_schema` reads (for JSON files such as
    the bundle's row rules); keys that are not set are left out."""
    columns: dict[str, dict[str, Any]] = {}
    for spec in schema.columns:
        block: dict[str, Any] = {"type": spec.type, "nullable": spec.nullable}
        for key in ("max_null_rate", "min", "max", "categories", "values"):
            value = getattr(spec, key)
            if value is not None:
                block[key] = list(value) if isinstance(value, tuple) else value
        columns[spec.name] = block
    return {"target": schema.target, "columns": columns}


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
    out += [f"target: {yaml_key(schema.target)}", "", "columns:"]
    ind = "    "
    for spec in schema.columns:
        note = notes.get(spec.name, {})
        out.append(f"  {yaml_key(spec.name)}:")
        out.append(_with_note(f"{ind}type: {spec.type}", note.get("type")))
        out.append(_with_note(f"{ind}nullable: {yaml_scalar(spec.nullable)}", note.get("nullable")))
        if spec.max_null_rate is not None:
            rate = yaml_scalar(spec.max_null_rate)
            out.append(_with_note(f"{ind}max_null_rate: {rate}", note.get("max_null_rate")))
        for key in ("min", "max"):
            value = getattr(spec, key)
            if value is not None:
                out.append(_with_note(f"{ind}{key}: {yaml_scalar(value)}", note.get(key)))
        if spec.categories is not None:
            out += yaml_flow_list("categories", spec.categories, ind, WIDTH)
        if spec.values is not None:
            out += yaml_flow_list("values", spec.values, ind, WIDTH)
    return "\n".join(out) + "\n"

"""The schema's rules one record can break, checked where records enter: the service, the batch
scorer (``mlcycle predict``) and retrain's export of labelled production rows.

``validate`` judges a whole snapshot. Some of its rules are about a share of rows (a null
*rate*, unseen categories in more than ``validate.max_unseen_share`` of the rows, duplicates),
which no single record breaks; the others are per row, :data:`ROW_KINDS`: a value not of the
column's type, a null where the schema says ``nullable: false``, a number outside ``min`` and
``max``, a text outside ``categories``, a target outside ``values``. A record that breaks one
of those whose severity (``validate.severity``) is ``error`` would stop ``dvc repro`` at
validate if it were trained on, so every entry point refuses it; ``warning`` is accepted and
said; ``ignore`` is not checked. What the service accepts, retrain can train on.

:class:`RowRules` is a schema and those severities; the package stage writes it into the
bundle (:data:`mlcycle.bundle.RULES_FILE`), so the service and the batch scorer apply the rules
of the data the model was trained on. The checks are :func:`mlcycle.schema.findings.rule_masks`,
the very code validate runs over a snapshot, applied to a request's records (read by
:func:`mlcycle.schema.values.read_items`) or to a frame's columns.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.schema import NUMERIC_TYPES, TEXT_TYPES, ColumnSpec, Schema, parse_schema, schema_doc
from mlcycle.schema.findings import (
    labels_wanted,
    listed_values,
    render,
    rule_masks,
    severity_levels,
)
from mlcycle.schema.values import ColumnValues, json_value, read_items, read_series

#: The kinds of finding a single row can break (see the module's docstring).
ROW_KINDS = ("type", "null_rate", "out_of_range", "unseen_category", "target_values")
#: What one offending value is, after the value.
ROW_PHRASES = {
    "type": "is not of the column's type",
    "out_of_range": "is out of range",
    "unseen_category": "is not one of the schema's categories",
    "target_values": "is not one of the target's values",
}
NOT_NULL = "a value (nullable: false)"
SHOWN = 60  # characters of an offending text a message repeats


@dataclass(frozen=True)
class RowBreak:
    """The ``rows`` (positions) whose value of ``column`` breaks one rule, with each row's
    offending value (as JSON) and the rule's severity."""

    kind: str
    column: str
    severity: str
    expected: str
    rows: tuple[int, ...]
    values: tuple[Any, ...]

    def problem(self, value: Any) -> str:
        """What is wrong with one offending ``value``, and the rule: ``'forty' is not of the
        column's type; schema.yaml expects integer values (validate.severity.type: error)``."""
        shown = render(value)
        if len(shown) > SHOWN:
            shown = shown[:SHOWN] + "..."
        what = "null" if self.kind == "null_rate" else f"{shown} {ROW_PHRASES[self.kind]}"
        return (
            f"{what}; schema.yaml expects {self.expected} "
            f"(validate.severity.{self.kind}: {self.severity})"
        )

    def message(self, first: int = 5) -> str:
        """One line for every record: the records (their first ``first``), the column, the
        first offending value and the rule."""
        rows = ", ".join(str(r) for r in self.rows[:first])
        more = f", ... ({len(self.rows)} in all)" if len(self.rows) > first else ""
        return f"record(s) {rows}{more}, {self.column!r}: {self.problem(self.values[0])}"


@dataclass(frozen=True)
class _Column:
    """One column's rules, prepared once: what to read and what a value may plainly be."""

    spec: ColumnSpec
    labels: bool  # whether the category (or target value) rule is checked
    allowed: frozenset[str] | None  # the labels allowed, when checked

    def plainly_kept(self, items: Sequence[Any]) -> bool:
        """True when every value plainly keeps this column's rules (numbers in range, listed
        texts, no null where none is allowed), so :func:`rule_masks` would find nothing:
        a request's usual records skip the arrays. Anything else, :func:`rule_masks` decides."""
        spec = self.spec
        present = items
        if None in items:
            if not spec.nullable:
                return False
            present = [v for v in items if v is not None]
            if not present:
                return True
        if spec.type in NUMERIC_TYPES:
            if not set(map(type, present)) <= {int, float}:
                return False
            try:
                if not math.isfinite(math.fsum(present)):  # NaN or an infinity
                    return False
            except OverflowError:
                return False
            if spec.min is not None and min(present) < spec.min:
                return False
            if spec.max is not None and max(present) > spec.max:
                return False
            return spec.type != "integer" or all(map(float.is_integer, map(float, present)))
        if spec.type in TEXT_TYPES:
            return self.allowed is None or self.allowed.issuperset(present)
        return False  # booleans and dates: read as rule_masks reads them


@dataclass(frozen=True)
class RowRules:
    """A schema and the severity of each of :data:`ROW_KINDS` (``validate.severity``)."""

    schema: Schema
    levels: Mapping[str, str]

    @classmethod
    def of(cls, schema: Schema, severity: Mapping[str, str] | None = None) -> RowRules:
        """The rules of ``schema`` graded by ``severity`` (kinds not given: error)."""
        levels = severity_levels(severity)
        return cls(schema, {kind: levels[kind] for kind in ROW_KINDS})

    def to_dict(self) -> dict[str, Any]:
        """The JSON document the bundle holds: the schema and the severities."""
        return {"schema": schema_doc(self.schema), "severity": dict(self.levels)}

    @classmethod
    def from_dict(cls, doc: Any, source: str = "row rules") -> RowRules:
        """Read :meth:`to_dict`'s document; a ValueError names ``source`` and what is wrong."""
        if not isinstance(doc, dict) or not isinstance(doc.get("severity"), dict):
            raise ValueError(f"{source}: expected an object with 'schema' and 'severity'")
        try:
            return cls.of(parse_schema(doc.get("schema"), source), doc["severity"])
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None

    @property
    def data_columns(self) -> tuple[str, ...]:
        """The schema's columns other than the target: what a record may hold."""
        return tuple(n for n in self.schema.names if n != self.schema.target)

    def numeric(self, name: str) -> bool:
        """Whether column ``name`` holds numbers."""
        return self.schema.column(name).type in NUMERIC_TYPES

    @functools.cached_property
    def _wanted(self) -> set[str]:
        return {kind for kind, level in self.levels.items() if level != "ignore"}

    @functools.cached_property
    def _prepared(self) -> tuple[_Column, ...]:
        """Every column's rules, prepared once."""
        wanted, target = self._wanted, self.schema.target
        out = []
        for spec in self.schema.columns:
            labels = labels_wanted(spec, target, wanted)
            allowed = frozenset(listed_values(spec, target)[1] or ()) if labels else None
            out.append(_Column(spec, labels, allowed))
        return tuple(out)

    def _columns(self, names: Sequence[str]) -> list[_Column]:
        """The prepared columns among ``names``, in schema order."""
        present = set(names)
        return [c for c in self._prepared if c.spec.name in present]

    def _breaks(
        self, column: _Column, values: ColumnValues, given: Callable[[int], Any], rows: np.ndarray
    ) -> list[RowBreak]:
        """The rules one column's read ``values`` break (``given(i)``: the i-th value as given;
        ``rows``: the positions of the values)."""
        spec = column.spec
        out = []
        for kind, mask, expected, _ in rule_masks(values, spec, self.schema.target, self._wanted):
            level = self.levels.get(kind, "ignore")
            if level == "ignore" or (kind == "null_rate" and spec.nullable):
                continue  # a null *rate* is the snapshot's business
            hit = np.flatnonzero(mask)
            if not len(hit):
                continue
            shown = tuple(json_value(given(i)) for i in hit)
            expected = NOT_NULL if kind == "null_rate" else expected
            out.append(RowBreak(kind, spec.name, level, expected, tuple(rows[hit].tolist()), shown))
        return out

    def check_records(self, records: Sequence[Mapping[str, Any]]) -> list[RowBreak]:
        """The rules ``records`` (JSON records: numbers, text, None) break, in schema order.
        A data column a record leaves out is not checked in it (a column the model does not
        use may be left out); the target is not checked (records carry inputs)."""
        names = self.data_columns
        if not records or not names:
            return []
        common = [n for n in names if n in records[0]]
        table: dict[str, Any] = {}
        if common:
            try:  # the first record's columns in every record: one pass, then transpose
                rows_of = list(map(operator.itemgetter(*common), records))
            except KeyError:  # records of different shapes: column by column below
                pass
            else:
                columns = zip(*rows_of, strict=True) if len(common) > 1 else [rows_of]
                table = dict(zip(common, columns, strict=True))

        def items_of(name: str) -> tuple[Sequence[Any], list[int] | None]:
            if name in table:
                return table[name], None
            rows = [i for i, r in enumerate(records) if name in r]  # some records leave it out
            return [records[i][name] for i in rows], rows

        return self._check(items_of)

    def check_columns(self, columns: Mapping[str, Sequence[Any]]) -> list[RowBreak]:
        """The rules a request's ``columns`` (JSON values, one list per field, rows aligned)
        break: :meth:`check_records` for a request that comes as columns (the Open Inference
        Protocol's tensors), without building its records."""
        return self._check(lambda name: (columns.get(name, ()), None))

    def _check(
        self, items_of: Callable[[str], tuple[Sequence[Any], list[int] | None]]
    ) -> list[RowBreak]:
        """Every data column's breaks, in schema order; ``items_of(name)`` gives a column's
        values and the rows they are at (None: every row, in order)."""
        out: list[RowBreak] = []
        for column in self._columns(self.data_columns):
            items, rows = items_of(column.spec.name)
            if not len(items) or column.plainly_kept(items):
                continue
            values = read_items(items, column.spec.type, column.labels)
            at = np.arange(len(items)) if rows is None else np.asarray(rows, dtype=np.int64)
            out += self._breaks(column, values, items.__getitem__, at)
        return out

    def check_frame(self, frame: pd.DataFrame) -> list[RowBreak]:
        """The rules the columns of ``frame`` break (its columns of the schema; rows by
        position), in schema order."""
        out: list[RowBreak] = []
        for column in self._columns(list(frame.columns)):
            series = frame[column.spec.name]
            values = read_series(series, column.spec.type, column.labels)
            given = series.iloc.__getitem__
            out += self._breaks(column, values, given, np.arange(len(series)))
        return out


def errors(breaks: Sequence[RowBreak]) -> list[RowBreak]:
    """The breaks of rules whose severity is error: what refuses a record."""
    return [b for b in breaks if b.severity == "error"]


def warnings(breaks: Sequence[RowBreak]) -> list[RowBreak]:
    """The breaks of rules whose severity is warning: accepted, and said."""
    return [b for b in breaks if b.severity == "warning"]

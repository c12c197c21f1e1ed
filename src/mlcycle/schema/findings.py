"""Checking a snapshot against the schema: :func:`check` returns :class:`Finding` objects,
each naming its kind (one of :data:`mlcycle.config.FINDING_KINDS`), the column, how many rows
and a few examples, graded by the severity params.yaml gives each kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.config import FINDING_KINDS, SEVERITIES
from mlcycle.io import value_text
from mlcycle.schema import BOOKKEEPING_COLUMNS, ColumnSpec, Schema
from mlcycle.schema.values import TRUE_WORDS, bad_type, json_value, stripped_text

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
    keys = values.map(value_text) if values.dtype == object else values
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


def _range_text(spec: ColumnSpec) -> str:
    if spec.min is not None and spec.max is not None:
        return f"between {spec.min} and {spec.max}"
    return f"at least {spec.min}" if spec.min is not None else f"at most {spec.max}"


def short_list(items: Iterable[str], limit: int = 8) -> str:
    """The first ``limit`` of ``items``, comma-separated, and how many there are in all."""
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
    bad, numbers = bad_type(series, spec.type)
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
        text = stripped_text(series[ok])
        if spec.type == "boolean":  # "Yes", "1", True all read as "true"
            text = text.str.lower().isin(TRUE_WORDS).map({True: "true", False: "false"})
        mask = pd.Series(False, index=series.index)
        mask[text.index[~text.isin(set(allowed)).to_numpy(dtype=bool)]] = True
        out.append((kind, mask, f"one of the {what} in the schema ({short_list(allowed)})", True))
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
        expected = f"only the columns in the schema ({short_list(schema.names)})"
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

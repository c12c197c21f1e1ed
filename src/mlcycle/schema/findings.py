"""Checking a snapshot against the schema: :func:`check` returns :class:`Finding` objects,
each naming its kind (one of :data:`mlcycle.config.FINDING_KINDS`), the column, how many rows
and a few examples, graded by the severity params.yaml gives each kind.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.config import FINDING_KINDS, SEVERITIES
from mlcycle.io import value_text
from mlcycle.schema import BOOKKEEPING_COLUMNS, ColumnSpec, Schema
from mlcycle.schema.values import ColumnValues, json_value, read_series

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
SOURCE = BOOKKEEPING_COLUMNS[0]
VALUE_CAP = 1000  # distinct offending values a partition reports per rule (most frequent)


@dataclass(frozen=True)
class Finding:
    """One problem of the snapshot: ``rows`` of ``total`` rows break one rule of the schema.

    ``column`` is None for findings about whole rows (duplicates). ``examples`` are a few
    offending values (most frequent first; for duplicates, pairs of a row and the earlier row
    it repeats), ``first_rows`` the positions (from 0) of the first offending rows in the
    snapshot, ``sources`` how many of the rows came from each source (when the snapshot says),
    ``source_rows`` how many rows each source has in the snapshot, and ``over`` the sources
    whose own share of offending rows breaks a limit that is a share of rows
    (``max_null_rate``, ``max_unseen_share``): a limit holds for each source, so a clean source
    cannot hide a broken one.
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
    source_rows: tuple[tuple[str, int], ...] = ()
    over: tuple[str, ...] = ()

    def shares(self) -> dict[str, tuple[int, int]]:
        """Per source with offending rows: ``(offending rows, rows of the source)``."""
        totals = dict(self.source_rows)
        return {name: (n, totals[name]) for name, n in self.sources if totals.get(name)}

    def breaking(self, limit: float) -> tuple[str, ...]:
        """The sources whose own share of offending rows is above ``limit``."""
        return tuple(name for name, (n, rows) in self.shares().items() if n / rows > limit)

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
        if self.over:
            shares = self.shares()
            text += "; above the limit in source " + ", ".join(
                f"{name!r}: {shares[name][0] / shares[name][1]:.2%} ({shares[name][0]} of "
                f"{shares[name][1]} rows)"
                for name in self.over
            )
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
            "over_limit": {
                name: {"rows": n, "of": rows, "rate": round(n / rows, 6)}
                for name, (n, rows) in self.shares().items()
                if name in self.over
            },
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
) -> list[tuple[str, np.ndarray, str, bool]]:
    """The rules of ``spec`` that ``series`` (a column of a frame) breaks: :func:`rule_masks`
    of its values read as the schema's type."""
    return rule_masks(read_series(series, spec.type, labels_wanted(spec, target, wanted)),
                      spec, target, wanted)  # fmt: skip


def listed_values(spec: ColumnSpec, target: str) -> tuple[str, tuple[str, ...] | None, str]:
    """The kind of the rule on a column's listed values (the target's ``values``, another
    column's ``categories``), the values, and what they are called."""
    if spec.name == target and spec.values is not None:
        return "target_values", spec.values, "values"
    return "unseen_category", spec.categories, "categories"


def labels_wanted(spec: ColumnSpec, target: str, wanted: set[str]) -> bool:
    """Whether a column's values are compared with listed values (so read as labels)."""
    kind, allowed, _ = listed_values(spec, target)
    return allowed is not None and kind in wanted


def _outside(labels: np.ndarray, allowed: frozenset[str]) -> np.ndarray:
    """Which labels (None: not judged) are not ``allowed``."""
    if len(labels) <= 4096:  # a request's records: cheaper than a pandas hash table
        return np.fromiter((v is not None and v not in allowed for v in labels), bool, len(labels))
    known = pd.Series(labels, dtype=object)
    return (known.notna() & ~known.isin(allowed)).to_numpy(dtype=bool)


def rule_masks(
    values: ColumnValues, spec: ColumnSpec, target: str, wanted: set[str]
) -> list[tuple[str, np.ndarray, str, bool]]:
    """The rules of ``spec`` that a column's ``values`` (:func:`mlcycle.schema.values.
    read_series` of a frame's column, or :func:`~mlcycle.schema.values.read_items` of
    records') break, as ``(kind, mask of the offending rows, expected, whether the offending
    values are examples)``; the null rate's mask is every missing value (whether it is too
    many depends on the share, see :func:`null_limit`). The one implementation of the rules,
    for a snapshot (validate) as for a request's records (the service)."""
    expected = _expected(spec, target)
    out: list[tuple[str, np.ndarray, str, bool]] = []
    out.append(("null_rate", ~values.present, "", False))
    out.append(("type", values.bad, expected["type"], True))
    ok = values.present & ~values.bad
    numbers = values.numbers
    if numbers is not None and (spec.min is not None or spec.max is not None):
        low = numbers < spec.min if spec.min is not None else False
        high = numbers > spec.max if spec.max is not None else False
        out.append(("out_of_range", ok & (low | high), expected["out_of_range"], True))
    kind, allowed, _ = listed_values(spec, target)
    if allowed is not None and kind in wanted and values.labels is not None and ok.any():
        mask = ok & _outside(values.labels, expected["allowed"])
        out.append((kind, mask, expected[kind], True))
    return out


@functools.lru_cache(maxsize=1024)
def _expected(spec: ColumnSpec, target: str) -> dict[str, Any]:
    """What each rule of ``spec`` expects, as findings say it, and its allowed labels as a set:
    made once per column, not per request."""
    kind, allowed, what = listed_values(spec, target)
    out: dict[str, Any] = {"type": f"{spec.type} values", "allowed": frozenset(allowed or ())}
    if spec.min is not None or spec.max is not None:
        out["out_of_range"] = _range_text(spec)
    if allowed is not None:
        out[kind] = f"one of the {what} in the schema ({short_list(allowed)})"
    return out


def null_limit(spec: ColumnSpec, max_null_rate: float) -> tuple[float, str]:
    """The largest share of missing values ``spec`` allows, and how a finding says it."""
    if not spec.nullable:
        return 0.0, "no nulls (nullable: false)"
    limit = spec.max_null_rate if spec.max_null_rate is not None else max_null_rate
    return limit, f"at most {limit:.2%} nulls"


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
    whatever their severity (unless ignored). Both shares are limits for the snapshot and for
    each source in it (its ``_source`` column), each judged on its own rows.
    """
    levels = severity_levels(severity)
    wanted = {kind for kind, level in levels.items() if level != "ignore"}
    skip = set(ignore)
    # The snapshot as one partition: the counts the Dask engine gathers per partition.
    counts = partition_counts(frame, 0, schema, wanted, examples, skip)
    found, extra = merge_counts([counts], list(frame.columns), schema, wanted, max_null_rate,
                                examples, skip)  # fmt: skip
    total = len(frame)
    data_columns = [c for c in frame.columns if c not in skip]
    if "duplicate_rows" in wanted and data_columns and total:
        origin = frame[SOURCE] if SOURCE in frame.columns else None
        found += [
            replace(f, sources=by_source(frame.index.isin(f_rows), origin))
            for f, f_rows in _duplicates(frame[data_columns], examples)
        ]
    return grade(found, schema, extra, levels, max_unseen_share)


# --- the per-column rules as counts of a partition, and their merge ------------------------


def _value_stats(values: pd.Series, offset: int, cap: int) -> list[tuple[Any, int, int, Any]]:
    """``(key, count, first row, first value)`` per distinct value, most frequent first."""
    keys = values.map(value_text) if values.dtype == object else values
    frame = pd.DataFrame({"key": keys.to_numpy(), "pos": np.arange(len(values)) + offset})
    frame["value"] = values.to_numpy()
    grouped = frame.groupby("key", sort=False, dropna=False)
    stats = grouped.agg(count=("pos", "size"), first=("pos", "min"))
    firsts = frame.drop_duplicates("key").set_index("key")["value"]
    stats = stats.sort_values(["count", "first"], ascending=[False, True]).head(cap)
    return [(k, int(r["count"]), int(r["first"]), firsts[k]) for k, r in stats.iterrows()]


def _source_counts(mask: np.ndarray, origin: pd.Series | None) -> dict[str, int]:
    if origin is None:
        return {}
    return {str(k): int(v) for k, v in origin[mask].astype(str).value_counts().items()}


def partition_counts(
    part: pd.DataFrame,
    offset: int,
    schema: Schema,
    wanted: set[str],
    examples: int,
    ignore: Iterable[str] = BOOKKEEPING_COLUMNS,
) -> dict[str, Any]:
    """What one partition of a snapshot breaks, as counts that add up over partitions: per
    rule of a column, the offending rows' count, first row numbers (offset by ``offset``,
    the partition's first row in the snapshot), count per source and, per offending value
    (at most ``VALUE_CAP``), its count and first row; the same for the values of extra
    columns."""
    part = part.reset_index(drop=True)
    origin = part[SOURCE] if SOURCE in part.columns else None
    rules: dict[str, dict[str, Any]] = {}
    for spec in schema.columns:
        if spec.name not in part.columns:
            continue
        series = part[spec.name]
        for kind, mask, expected, show in column_masks(series, spec, schema.target, wanted):
            m = np.asarray(mask, dtype=bool)
            count = int(m.sum())
            if not count:
                continue
            rules[f"{kind}\0{spec.name}"] = {
                "count": count,
                "expected": expected,
                "first": (np.flatnonzero(m)[: max(examples, 0)] + offset).tolist(),
                "sources": _source_counts(m, origin),
                "values": _value_stats(series[m], offset, VALUE_CAP) if show else None,
            }
    skip = set(ignore)
    extra = [c for c in part.columns if c not in set(schema.names) and c not in skip]
    values = {str(c): _value_stats(part[c].dropna(), offset, VALUE_CAP) for c in extra}
    everyone = np.ones(len(part), dtype=bool)
    return {
        "rows": len(part),
        "source_rows": _source_counts(everyone, origin),
        "rules": rules,
        "extra": values,
    }


def _merge_values(lists: list[list[tuple]], limit: int) -> tuple[Any, ...]:
    """The ``limit`` most frequent values over the partitions (ties: first seen first)."""
    counts: dict[Any, int] = {}
    first: dict[Any, tuple[int, Any]] = {}
    for items in lists:
        for key, n, pos, value in items:
            counts[key] = counts.get(key, 0) + n
            if key not in first or pos < first[key][0]:
                first[key] = (pos, value)
    ranked = sorted(counts, key=lambda k: (-counts[k], first[k][0]))
    return tuple(json_value(first[k][1]) for k in ranked[: max(limit, 0)])


def _added(counts: list[dict[str, int]]) -> dict[str, int]:
    """Counts by name, added up over partitions."""
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def merge_counts(
    checks: list[dict[str, Any]],
    columns: list[Any],
    schema: Schema,
    wanted: set[str],
    max_null_rate: float,
    examples: int,
    ignore: Iterable[str] = BOOKKEEPING_COLUMNS,
) -> tuple[list[Finding], list[str]]:
    """The per-column findings (ungraded) from every partition's :func:`partition_counts`,
    in partition order, and the extra columns; ``columns`` are the snapshot's. Missing values
    are a finding when their share is above the column's limit in the snapshot or in any one
    source."""
    total = sum(c["rows"] for c in checks)
    source_rows = tuple(sorted(_added([c["source_rows"] for c in checks]).items()))
    found: list[Finding] = []
    for spec in schema.columns:
        if spec.name not in columns:
            if "missing_column" in wanted:
                found.append(
                    Finding(
                        "missing_column", spec.name, total, total, "the column schema.yaml lists"
                    )
                )
            continue
        kinds: dict[str, list[dict]] = {}
        for c in checks:
            for key, entry in c["rules"].items():
                kind, name = key.split("\0")
                if name == spec.name:
                    kinds.setdefault(kind, []).append(entry)
        for kind in ("null_rate", "type", "out_of_range", "target_values", "unseen_category"):
            entries = kinds.get(kind)
            if not entries or kind not in wanted:
                continue
            count = sum(e["count"] for e in entries)
            shown = (
                _merge_values([e["values"] for e in entries], examples)
                if entries[0]["values"] is not None
                else ()
            )
            sources = tuple(sorted(_added([e["sources"] for e in entries]).items()))
            first = tuple(sorted(r for e in entries for r in e["first"])[: max(examples, 0)])
            finding = Finding(kind, spec.name, count, total, entries[0]["expected"], shown, first,
                              sources=sources, source_rows=source_rows)  # fmt: skip
            if kind == "null_rate":
                limit, expected = null_limit(spec, max_null_rate)
                over = finding.breaking(limit)
                if not (total and count / total > limit) and not over:
                    continue
                finding = replace(finding, expected=expected, over=over)
            found.append(finding)
    skip = set(ignore)
    extra = [str(c) for c in columns if c not in skip and c not in set(schema.names)]
    if "extra_column" in wanted:
        expected = f"only the columns in the schema ({short_list(schema.names)})"
        for name in extra:
            shown = _merge_values([c["extra"].get(name, []) for c in checks], examples)
            found.append(Finding("extra_column", name, total, total, expected, shown))
    return found, extra


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
    order, then extra columns), then by kind. Unseen categories in more than
    ``max_unseen_share`` of the rows of the snapshot, or of one source, are an error."""
    order: dict[str, int] = {}
    for name in [*schema.names, *extra]:
        order.setdefault(name, len(order))

    def graded(f: Finding) -> Finding:
        if f.kind != "unseen_category":
            return replace(f, severity=levels[f.kind])
        over = f.breaking(max_unseen_share)
        if not (f.total and f.rows / f.total > max_unseen_share) and not over:
            return replace(f, severity=levels[f.kind])
        why = f"; more than {max_unseen_share:.2%} of rows (validate.max_unseen_share)"
        return replace(f, severity="error", expected=f.expected + why, over=over)

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

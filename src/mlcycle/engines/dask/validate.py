"""The validate stage on the Dask engine: the same findings as the local engine, from
per-partition checks merged on the driver.

Each partition runs the schema's rules (:func:`mlcycle.schema.findings.column_masks`, the local
code) and sends back only counts: per rule, the offending rows' count, their first row numbers
(offset by the partition's first row, so they are row numbers of the whole snapshot), their
count per source, and per offending value its count and first row. The driver adds them up:
a null rate is summed nulls over summed rows, examples are the most frequent values over all
partitions (ties: first seen first), exactly as :func:`mlcycle.schema.findings.check` ranks them.
Duplicate rows are found across partitions by shuffling a hash of each row's values, so equal
rows meet in one partition; the positions of the first repeats come back, never the rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config
from mlcycle.datasets import row_hash, unit_interval
from mlcycle.engines.base import Checked
from mlcycle.engines.dask.data import read_dataset
from mlcycle.io import value_text
from mlcycle.schema import BOOKKEEPING_COLUMNS, Schema
from mlcycle.schema.findings import (
    Finding,
    column_masks,
    grade,
    null_limit,
    severity_levels,
    short_list,
)
from mlcycle.schema.values import json_value

if TYPE_CHECKING:
    import dask.dataframe as dd

SOURCE = BOOKKEEPING_COLUMNS[0]
VALUE_CAP = 1000  # distinct offending values a partition reports per rule (most frequent)
PREFLIGHT_ROWS = 10_000  # rows of the sample the settings are checked against
PREFLIGHT_VALUES = 1000  # distinct target values the settings check sees at most


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


def partition_checks(
    part: pd.DataFrame,
    offset: int,
    schema: Schema,
    wanted: set[str],
    examples: int,
) -> dict[str, Any]:
    """What one partition (whose first row is row ``offset`` of the snapshot) breaks."""
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
                "first": (np.flatnonzero(m)[:examples] + offset).tolist(),
                "sources": _source_counts(m, origin),
                "values": _value_stats(series[m], offset, VALUE_CAP) if show else None,
            }
    extra = [c for c in part.columns if c not in set(schema.names) and c not in BOOKKEEPING_COLUMNS]
    values = {str(c): _value_stats(part[c].dropna(), offset, VALUE_CAP) for c in extra}
    return {"rows": len(part), "rules": rules, "extra": values}


def _merge_values(lists: list[list[tuple]], limit: int) -> tuple[Any, ...]:
    counts: dict[Any, int] = {}
    first: dict[Any, tuple[int, Any]] = {}
    for items in lists:
        for key, n, pos, value in items:
            counts[key] = counts.get(key, 0) + n
            if key not in first or pos < first[key][0]:
                first[key] = (pos, value)
    ranked = sorted(counts, key=lambda k: (-counts[k], first[k][0]))
    return tuple(json_value(first[k][1]) for k in ranked[: max(limit, 0)])


def _duplicates_in(part: pd.DataFrame, examples: int) -> dict[str, Any]:
    """Repeats among rows that hash alike (one shuffled partition): count, first positions."""
    if part.empty:
        return {"count": 0, "rows": [], "sources": {}}
    part = part.sort_values(["hash", "pos"])
    repeat = part["hash"].duplicated().to_numpy()
    first_of = part.groupby("hash")["pos"].transform("min").to_numpy()
    reps = part[repeat]
    order = np.argsort(reps["pos"].to_numpy(), kind="stable")[:examples]
    rows = [(int(reps["pos"].iloc[i]), int(first_of[repeat][i])) for i in order]
    sources = {}
    if "source" in part.columns:
        sources = {str(k): int(v) for k, v in reps["source"].astype(str).value_counts().items()}
    return {"count": int(repeat.sum()), "rows": rows, "sources": sources}


def duplicate_rows(ddf: dd.DataFrame, data_columns: list[str], examples: int, total: int):
    """The duplicate_rows finding (or None), computed across partitions by row hash."""

    def keys(part: pd.DataFrame, partition_info: dict | None = None) -> pd.DataFrame:
        start = offsets[partition_info["number"]] if partition_info else 0
        out = pd.DataFrame(
            {
                "hash": row_hash(part[data_columns], 0, "duplicates").to_numpy(),
                "pos": np.arange(len(part), dtype=np.int64) + start,
            }
        )
        if SOURCE in part.columns:
            out["source"] = part[SOURCE].astype(str).to_numpy()
        return out

    offsets = _offsets(ddf)
    meta = pd.DataFrame({"hash": pd.Series(dtype="uint64"), "pos": pd.Series(dtype="int64")})
    if SOURCE in ddf.columns:
        meta["source"] = pd.Series(dtype=object)
    hashed = ddf.map_partitions(keys, meta=meta).shuffle(on="hash")
    results = hashed.map_partitions(
        lambda p: pd.Series([_duplicates_in(p, examples)]), meta=(None, object)
    ).compute()
    count = sum(r["count"] for r in results)
    if not count:
        return None
    pairs = sorted(p for r in results for p in r["rows"])[:examples]
    sources: dict[str, int] = {}
    for r in results:
        for k, v in r["sources"].items():
            sources[k] = sources.get(k, 0) + v
    return Finding(
        "duplicate_rows",
        None,
        count,
        total,
        "each row once",
        tuple(pairs),
        tuple(p[0] for p in pairs),
        sources=tuple(sorted(sources.items())),
    )


def _offsets(ddf: dd.DataFrame) -> list[int]:
    lengths = ddf.map_partitions(len).compute().tolist()
    return [int(x) for x in np.concatenate([[0], np.cumsum(lengths)[:-1]])]


def check_dataset(
    ddf: dd.DataFrame,
    schema: Schema,
    *,
    severity: dict[str, str] | None = None,
    max_null_rate: float = 0.5,
    examples: int = 5,
    max_unseen_share: float = 1.0,
) -> tuple[list[Finding], int]:
    """:func:`mlcycle.schema.findings.check` for a Dask frame: the same findings; and the row
    count."""
    import dask

    levels = severity_levels(severity)
    wanted = {kind for kind, level in levels.items() if level != "ignore"}
    offsets = _offsets(ddf)
    parts = ddf.to_delayed()
    checks = dask.compute(
        *[
            dask.delayed(partition_checks)(p, off, schema, wanted, examples)
            for p, off in zip(parts, offsets, strict=True)
        ]
    )
    total = sum(c["rows"] for c in checks)
    columns = [c for c in ddf.columns]
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
            expected = entries[0]["expected"]
            if kind == "null_rate":
                limit, expected = null_limit(spec, max_null_rate)
                if not (total and count / total > limit):
                    continue
            shown = (
                _merge_values([e["values"] for e in entries], examples)
                if entries[0]["values"] is not None
                else ()
            )
            sources: dict[str, int] = {}
            for e in entries:
                for k, v in e["sources"].items():
                    sources[k] = sources.get(k, 0) + v
            first = tuple(sorted(r for e in entries for r in e["first"])[: max(examples, 0)])
            found.append(
                Finding(
                    kind,
                    spec.name,
                    count,
                    total,
                    expected,
                    shown,
                    first,
                    sources=tuple(sorted(sources.items())),
                )
            )
    data_columns = [c for c in columns if c not in BOOKKEEPING_COLUMNS]
    extra = [str(c) for c in data_columns if c not in set(schema.names)]
    if "extra_column" in wanted:
        expected = f"only the columns in the schema ({short_list(schema.names)})"
        for name in extra:
            shown = _merge_values([c["extra"].get(name, []) for c in checks], examples)
            found.append(Finding("extra_column", name, total, total, expected, shown))
    if "duplicate_rows" in wanted and data_columns and total:
        dup = duplicate_rows(ddf, data_columns, examples, total)
        if dup is not None:
            found.append(dup)
    return grade(found, schema, extra, levels, max_unseen_share), total


def preflight_frame(ddf: dd.DataFrame, target: str, seed: int = 0) -> pd.DataFrame:
    """A small frame standing for the data in the settings check: the columns and types, a
    sample of rows chosen by row hash, and every source name and (up to PREFLIGHT_VALUES)
    target value, which the check compares settings with."""
    rows = int(ddf.map_partitions(len).sum().compute())
    share = min(1.0, PREFLIGHT_ROWS / max(rows, 1))

    def sample(part: pd.DataFrame) -> pd.DataFrame:
        if share >= 1.0:
            return part
        keep = unit_interval(row_hash(part, seed, "sample"))
        return part[keep < share]

    frame = ddf.map_partitions(sample, meta=ddf._meta).compute()
    extras = {}
    for col in (SOURCE, target):
        if col in ddf.columns:
            values = ddf[col].dropna().drop_duplicates().head(PREFLIGHT_VALUES, npartitions=-1)
            extras[col] = values.reset_index(drop=True)
    if extras:
        longest = max(len(v) for v in extras.values())
        pad = ddf._meta.reindex(range(longest))
        for col, values in extras.items():
            pad[col] = values.reindex(range(longest)).astype(ddf._meta[col].dtype)
        frame = pd.concat([frame, pad], ignore_index=True)
    return frame


def check_snapshot(
    path: str, schema: Schema, settings: config.ValidateConfig, target: str
) -> Checked:
    """The validate stage's counting on the cluster: a sample standing for the snapshot in the
    settings check, and the findings of :func:`check_dataset`."""
    ddf = read_dataset(path)
    sample = preflight_frame(ddf, target)
    findings, rows = check_dataset(
        ddf,
        schema,
        severity=settings.severity,
        max_null_rate=settings.max_null_rate,
        examples=settings.examples,
        max_unseen_share=settings.max_unseen_share,
    )
    columns = sum(1 for c in ddf.columns if c not in BOOKKEEPING_COLUMNS)
    return Checked(sample, findings, rows, columns)

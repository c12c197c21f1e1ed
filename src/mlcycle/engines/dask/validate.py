"""The validate stage on the Dask engine: the local engine's findings, from per-partition
counts merged on the driver.

Each partition reduces to :func:`mlcycle.schema.findings.partition_counts` (per rule, the
offending rows' count, first row numbers offset by the partition's first row, count per source,
and per offending value its count and first row) and the driver merges them with
:func:`~mlcycle.schema.findings.merge_counts`: the very code the local engine runs on its
snapshot as one partition. Duplicate rows are found across partitions by shuffling a hash of
each row's values, so equal rows meet in one partition; the positions of the first repeats come
back, never the rows.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config
from mlcycle.config import EngineConfig
from mlcycle.datasets import dataset_rows, row_hash, unit_interval
from mlcycle.engines.base import Checked, Say
from mlcycle.engines.dask.cluster import bounded, computed, guarded
from mlcycle.engines.dask.data import read_dataset
from mlcycle.preflight import class_counts
from mlcycle.schema import BOOKKEEPING_COLUMNS, Schema
from mlcycle.schema.findings import (
    SOURCE,
    Finding,
    grade,
    merge_counts,
    partition_counts,
    severity_levels,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

PREFLIGHT_ROWS = 10_000  # rows of the sample the settings are checked against
PREFLIGHT_VALUES = 1000  # distinct target values the settings check sees at most


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
    )
    results = bounded("the duplicate rows (by row hash)", results.compute)
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
    lengths = bounded("the rows per partition", ddf.map_partitions(len).compute).tolist()
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
    checks = computed(
        "the schema's checks of each partition",
        *[
            dask.delayed(partition_counts)(p, off, schema, wanted, examples)
            for p, off in zip(parts, offsets, strict=True)
        ],
    )
    total = sum(c["rows"] for c in checks)
    columns = list(ddf.columns)
    found, extra = merge_counts(list(checks), columns, schema, wanted, max_null_rate, examples)
    data_columns = [c for c in columns if c not in BOOKKEEPING_COLUMNS]
    if "duplicate_rows" in wanted and data_columns and total:
        dup = duplicate_rows(ddf, data_columns, examples, total)
        if dup is not None:
            found.append(dup)
    return grade(found, schema, extra, levels, max_unseen_share), total


def preflight_frame(ddf: dd.DataFrame, target: str, seed: int = 0) -> pd.DataFrame:
    """A small frame standing for the data in the settings check: the columns and types, a
    sample of rows chosen by row hash, and every source name and (up to PREFLIGHT_VALUES)
    target value, which the check compares settings with."""
    rows = int(bounded("the snapshot's rows", ddf.map_partitions(len).sum().compute))
    share = min(1.0, PREFLIGHT_ROWS / max(rows, 1))

    def sample(part: pd.DataFrame) -> pd.DataFrame:
        if share >= 1.0:
            return part
        keep = unit_interval(row_hash(part, seed, "sample"))
        return part[keep < share]

    frame = bounded("a sample of the snapshot", ddf.map_partitions(sample, meta=ddf._meta).compute)
    extras = {}
    for col in (SOURCE, target):
        if col in ddf.columns:
            distinct = ddf[col].dropna().drop_duplicates()
            first = functools.partial(distinct.head, PREFLIGHT_VALUES, npartitions=-1)
            values = bounded(f"the values of {col!r}", first)
            extras[col] = values.reset_index(drop=True)
    if extras:
        longest = max(len(v) for v in extras.values())
        pad = ddf._meta.reindex(range(longest))
        for col, values in extras.items():
            pad[col] = values.reindex(range(longest)).astype(ddf._meta[col].dtype)
        frame = pd.concat([frame, pad], ignore_index=True)
    return frame


def dataset_classes(ddf: dd.DataFrame, target: str) -> dict[tuple[str, str], int]:
    """Rows per source and class of the target, counted partition by partition
    (:func:`mlcycle.preflight.class_counts`) and added up."""
    import dask

    columns = [c for c in (target, SOURCE) if c in ddf.columns]
    parts = ddf[columns].to_delayed()
    total: dict[tuple[str, str], int] = {}
    for counts in computed(
        "the rows per source and class", *[dask.delayed(class_counts)(p, target) for p in parts]
    ):
        for key, n in counts.items():
            total[key] = total.get(key, 0) + n
    return total


def check_snapshot(
    client: Client,
    path: str,
    schema: Schema,
    settings: config.ValidateConfig,
    target: str,
    count_classes: bool,
    cfg: EngineConfig,
    say: Say,
) -> Checked:
    """The validate stage's counting on the cluster: a sample standing for the snapshot in the
    settings check, the findings of :func:`check_dataset`, and with ``count_classes`` the
    rows per source and class (:func:`dataset_classes`). Every blocking call is bounded
    (:func:`~mlcycle.engines.dask.cluster.guarded`)."""
    ddf = read_dataset(path)
    with guarded(client, cfg, dataset_rows(path), say):
        return _check_snapshot(ddf, schema, settings, target, count_classes)


def _check_snapshot(
    ddf: dd.DataFrame,
    schema: Schema,
    settings: config.ValidateConfig,
    target: str,
    count_classes: bool,
) -> Checked:
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
    classes = dataset_classes(ddf, target) if count_classes else {}
    return Checked(sample, findings, rows, columns, classes)

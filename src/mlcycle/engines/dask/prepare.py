"""The prepare stage on the Dask engine: the local engine's steps, partition by partition.

1. Cleaning runs on each partition with the local rules; whether a text column of numbers
   becomes numeric is decided once, from counts over all partitions, so every partition
   agrees. The target is checked from counts and (at most :data:`LABEL_LIMIT`) distinct labels.
2. The split does not depend on partitioning or row order. ``random`` sends a row to test when
   the hash of its model columns (seeded by ``prepare.split.seed``) falls under ``test_size``,
   so the test share is ``test_size`` on average. ``stratified`` is exact per class: the
   ``round(test_size * n_c)`` rows of class c with the smallest hashes go to test, cut at an
   exact order statistic of the class's hashes (equal rows, kept when duplicates are not
   dropped, hash alike and stay together). ``group`` hashes the group's value, so a group stays
   on one side (a share of rows on average). ``time`` cuts at exactly the local engine's
   boundary (an exact order statistic of the time column), so it gives the local split.
   ``by_source`` is exact, as on the local engine. Duplicates go before a non-source split.
3. Training-row removals (exact duplicates, rows repeating a test row's features, conflicting
   labels) need equal rows in one place: the training rows are shuffled by a hash of their
   features (and the test split's feature hashes alike), so each partition holds every row of
   its hashes and the local rules apply to it exactly. Outliers: ``iqr`` quartiles are exact
   order statistics and ``zscore`` uses the exact mean and standard deviation, so both flag
   the local engine's rows; an isolation forest is fitted on a seeded sample of at most
   :data:`FOREST_ROWS` rows (all of them below that) and scores every partition.
4. ``metrics/prepare.json`` has the local engine's keys and ``metrics/data_profile.json`` its
   format (:func:`data_profile_dask`: exact counts, bins and edges; approximate quantiles).

Only counts, distinct labels, histograms and quantile sketches come back to this process; the
rows stay on the workers until they are written as Parquet parts.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.datasets import dataset_rows, row_hash, unit_interval
from mlcycle.engines.base import PreparedSplits, Say
from mlcycle.engines.dask.data import partitions_for, read_dataset, write_dataset
from mlcycle.prepare import (
    CLASSES_HINT,
    MISSING_TOKENS,
    NUMERIC_SHARE,
    CleanReport,
    PrepareError,
    _check_columns,
    _is_text,
    check_target,
    model_columns,
    outlier_columns,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

FEATURES_HASH = "__features_hash"
SPLIT_UNIT = "__split_unit"
FOREST_ROWS = 100_000
LABEL_LIMIT = 10_000  # distinct target labels brought to the driver for the target's checks


# --- cleaning ----------------------------------------------------------------------------------


def _text_columns(meta: pd.DataFrame, target: str) -> list[str]:
    return [c for c in meta.columns if c != SOURCE_COLUMN and (_is_text(meta[c]) or c == target)]


def _number_counts(part: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per text column: cells present after stripping and tokens, and how many are numbers."""
    rows = []
    for col in columns:
        text = part[col].astype("string").str.strip()
        present = text[text.notna() & ~text.isin(MISSING_TOKENS)]
        parsed = int(pd.to_numeric(present, errors="coerce").notna().sum())
        rows.append((col, len(present), parsed))
    return pd.DataFrame(rows, columns=["column", "present", "parsed"])


def _clean_part(
    part: pd.DataFrame, columns: list[str], coerce: set[str], target: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`mlcycle.prepare.clean` on one partition, with the numeric columns decided."""
    counts: dict[str, dict[str, int]] = {
        "whitespace_stripped": {},
        "missing_tokens": {},
        "coerced_to_number": {},
        "not_a_number": {},
    }
    out = part.copy()
    for col in columns:
        text = out[col].astype("string")
        stripped = text.str.strip()
        changed = int((stripped != text).fillna(False).sum())
        if changed:
            counts["whitespace_stripped"][col] = changed
        token = stripped.isin(MISSING_TOKENS) & stripped.notna()
        if token.any():
            counts["missing_tokens"][col] = int(token.sum())
            stripped = stripped.mask(token)
        if col in coerce:
            numbers = pd.to_numeric(stripped, errors="coerce")
            parsed = int(numbers.notna().sum())
            if parsed:
                counts["coerced_to_number"][col] = parsed
            bad = int(stripped.notna().sum()) - parsed
            if bad:
                counts["not_a_number"][col] = bad
            out[col] = numbers.to_numpy(dtype="float64", na_value=np.nan)
        else:
            out[col] = stripped
    keep = out[target].notna()
    out = out.loc[keep]
    counts["target_missing_dropped"] = int((~keep).sum())
    return out, counts


def _label_facts(part: pd.DataFrame, target: str, task: str) -> dict[str, Any]:
    """What the target's checks need from one partition: for regression the values that are
    not numbers (count, a few examples); else its distinct labels (at most LABEL_LIMIT + 1)
    and whether all are numbers."""
    labels = part[target]
    if not tasks.get(task).classification:
        numbers = pd.to_numeric(labels, errors="coerce").astype(np.float64)
        bad = numbers.isna() | ~np.isfinite(numbers)
        examples = sorted({str(v) for v in labels[bad].head(100)})[:5]
        return {"rows": len(labels), "bad": int(bad.sum()), "examples": examples}
    text = labels.astype(str)
    distinct = sorted(text.unique().tolist())[: LABEL_LIMIT + 1]
    numeric = bool(pd.to_numeric(labels, errors="coerce").notna().all())
    return {"labels": distinct, "numeric": numeric}


def _merge_label_facts(*parts: dict[str, Any]) -> dict[str, Any]:
    if "bad" in parts[0]:
        examples = sorted({e for p in parts for e in p["examples"]})[:5]
        return {"rows": sum(p["rows"] for p in parts), "bad": sum(p["bad"] for p in parts),
                "examples": examples}  # fmt: skip
    labels = sorted({label for p in parts for label in p["labels"]})[: LABEL_LIMIT + 1]
    return {"labels": labels, "numeric": all(p["numeric"] for p in parts)}


def check_target_dask(cleaned: dd.DataFrame, objectives: config.Objectives) -> None:
    """:func:`mlcycle.prepare.check_target`'s rules and messages over every partition, from
    per-partition facts: the same errors as the local engine (for more than
    :data:`LABEL_LIMIT` distinct labels, an error for binary and numeric multiclass targets)."""
    import dask

    target, task = objectives.target, objectives.task
    facts = _tree(
        [dask.delayed(_label_facts)(p, target, task) for p in cleaned.to_delayed()],
        _merge_label_facts,
    )
    spec = tasks.get(task)
    if not spec.classification:
        if facts["bad"]:
            raise PrepareError(
                f"target {target!r} is not numeric: {facts['bad']} of {facts['rows']} values "
                f"are not numbers (e.g. {facts['examples']}); regression needs numbers. "
                f"{CLASSES_HINT}"
            )
        return
    labels = facts["labels"]
    if len(labels) <= LABEL_LIMIT:
        check_target(pd.Series(labels, dtype=object), objectives)
        return
    hint = spec.many_labels_hint(facts["numeric"])
    if hint:
        raise PrepareError(
            f"target {target!r} holds more than {LABEL_LIMIT} distinct values "
            f"(e.g. {labels[:20]}); {hint}"
        )


def _labels(part: pd.DataFrame, target: str, task: str) -> pd.DataFrame:
    """The target as the task needs it (checked already): float64 numbers or text labels."""
    if not tasks.get(task).classification:
        values = pd.to_numeric(part[target], errors="coerce").astype(np.float64)
        return part.assign(**{target: values})
    return part.assign(**{target: part[target].astype(str)})


# --- the split ---------------------------------------------------------------------------------


def _split_units(part: pd.DataFrame, key: list[str], seed: int, group: bool) -> pd.Series:
    """Each row's split hash as a number in [0, 1): of its model columns, or of its group."""
    values = part[key]
    if group:
        values = values.astype("string").fillna("<missing>")
    return pd.Series(unit_interval(row_hash(values, seed, "split")), index=part.index)


def _class_units(part: pd.DataFrame, target: str, label: str) -> np.ndarray:
    return part.loc[part[target] == label, SPLIT_UNIT].to_numpy(dtype=np.float64)


def _below_class_cut(part: pd.DataFrame, target: str, cuts: dict[str, float]) -> pd.Series:
    return part[SPLIT_UNIT] <= part[target].map(cuts).astype(np.float64)


def _time_values(part: pd.DataFrame, column: str) -> np.ndarray:
    """Sortable times (as :func:`mlcycle.prepare._time_order`): integers, floats, or
    nanoseconds since the epoch for datetimes and dates given as text."""
    values = part[column]
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(dtype=np.int64)
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=np.float64)
    if not pd.api.types.is_datetime64_any_dtype(values):
        try:
            values = pd.to_datetime(values, utc=True)
        except (ValueError, TypeError) as exc:
            raise PrepareError(
                f"prepare.split.time_column {column!r} holds values that are neither numbers "
                f"nor dates: {exc}"
            ) from exc
    return np.asarray(values.dt.as_unit("ns").array.asi8, dtype=np.int64)


def _from_time(part: pd.DataFrame, column: str, boundary: float) -> pd.Series:
    return pd.Series(_time_values(part, column) >= boundary, index=part.index)


def split_dask(
    cleaned: dd.DataFrame, cfg: config.PrepareConfig, target: str
) -> tuple[dd.Series, dd.Series, dd.DataFrame]:
    """Which rows are test and which train (lazy boolean Series), and the frame they index
    (with the split hash column when the method uses one). See the module's docstring."""
    s = cfg.split
    if s.method == "by_source":
        present = set(cleaned[SOURCE_COLUMN].drop_duplicates().compute().astype(str))
        unknown = present - set(s.train_sources) - set(s.test_sources)
        if unknown:
            raise PrepareError(
                f"sources {sorted(unknown)} are in the snapshot but neither in "
                "prepare.split.train_sources nor test_sources"
            )
        is_test = cleaned[SOURCE_COLUMN].isin(list(s.test_sources))
        return is_test, cleaned[SOURCE_COLUMN].isin(list(s.train_sources)), cleaned
    if s.method == "time":
        missing = int(cleaned[s.time_column].isna().sum().compute())
        if missing:
            raise PrepareError(
                f"prepare.split.time_column {s.time_column!r} is missing in {missing} row(s); "
                "a time split needs a time for every row"
            )

        def boundary_rank(_name: str, n: int) -> list[int]:
            return [n - max(1, math.ceil(n * s.test_size))] if n else []

        stats = order_statistics(
            cleaned, {"time": functools.partial(_time_values, column=s.time_column)},
            boundary_rank,
        )  # fmt: skip
        _, found = stats["time"]
        if not found:
            raise PrepareError("split left an empty side: train=0, test=0")
        boundary = next(iter(found.values()))
        is_test = cleaned.map_partitions(_from_time, s.time_column, boundary, meta=(None, bool))
        return is_test, ~is_test, cleaned
    columns = model_columns(cleaned._meta, cfg)
    if s.method == "group":
        groups = cleaned[s.group_column].nunique(dropna=False).compute()
        if groups < 2:
            raise PrepareError(
                f"prepare.split.group_column {s.group_column!r} has fewer than two groups"
            )
    key = [s.group_column] if s.method == "group" else columns
    units = cleaned.map_partitions(
        _split_units, key, s.seed, s.method == "group", meta=(SPLIT_UNIT, "float64")
    )
    hashed = cleaned.assign(**{SPLIT_UNIT: units}).persist()
    if s.method != "stratified":
        is_test = hashed[SPLIT_UNIT] < s.test_size
        return is_test, ~is_test, hashed
    per_class = hashed[target].value_counts().compute()
    rare = per_class[per_class < 2]
    if len(rare):
        raise PrepareError(
            f"target {target!r}: class(es) {rare.to_dict()} have a single row; a stratified "
            "split needs at least two rows per class. Drop or merge them, or gather more"
        )
    wanted = {
        str(label): min(max(round(s.test_size * int(n)), 1), int(n) - 1)
        for label, n in per_class.items()
    }
    extracts = {
        label: functools.partial(_class_units, target=target, label=label) for label in wanted
    }
    stats = order_statistics(hashed, extracts, lambda label, _n: [wanted[label] - 1])
    cuts = {label: float(next(iter(found.values()))) for label, (_, found) in stats.items()}
    is_test = hashed.map_partitions(_below_class_cut, target, cuts, meta=(None, bool))
    return is_test, ~is_test, hashed


# --- training-row removals --------------------------------------------------------------------


def _removals(
    train: pd.DataFrame, test_hashes: pd.DataFrame, target: str, dedupe: bool, conflicts: bool
) -> pd.DataFrame:
    """The local engine's removals on one partition holding every row of its feature hashes;
    the counts ride along in the frame's attrs."""
    counts = {"duplicates": 0, "matching_test": 0, "conflicting_labels": 0}
    columns = [c for c in train.columns if c != FEATURES_HASH]
    if dedupe:
        dup = train.duplicated(subset=columns, keep="first")
        counts["duplicates"] = int(dup.sum())
        train = train.loc[~dup]
        seen = set(test_hashes[FEATURES_HASH].tolist())
        in_test = train[FEATURES_HASH].isin(seen).to_numpy()
        counts["matching_test"] = int(in_test.sum())
        train = train.loc[~in_test]
    if conflicts:
        labels = train.groupby(FEATURES_HASH)[target].nunique()
        bad = train[FEATURES_HASH].isin(labels.index[labels > 1]).to_numpy()
        counts["conflicting_labels"] = int(bad.sum())
        train = train.loc[~bad]
    out = train.sort_values(FEATURES_HASH, kind="stable").drop(columns=FEATURES_HASH)
    out = out.reset_index(drop=True)
    out.attrs["counts"] = counts
    return out


def _features_hash(part: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    return part.assign(**{FEATURES_HASH: row_hash(part[features], 0, "features").to_numpy()})


def remove_training_rows(
    train: dd.DataFrame,
    test: dd.DataFrame,
    target: str,
    dedupe: bool,
    conflicts: bool,
    npartitions: int,
    client: Client,
) -> tuple[dd.DataFrame, dict[str, int]]:
    """Drop training duplicates, rows repeating a test row's features and conflicting labels
    (as :func:`mlcycle.prepare.drop_duplicates` and ``drop_conflicting_labels``), with both
    splits shuffled by feature hash so equal feature vectors meet in one partition. Returns the
    rest (held on the workers) and the summed counts."""
    import dask
    import dask.dataframe as dd

    features = [c for c in train.columns if c != target]
    tr = train.map_partitions(_features_hash, features).shuffle(
        on=FEATURES_HASH, npartitions=npartitions
    )
    te = (
        test[features]
        .map_partitions(_features_hash, features)[[FEATURES_HASH]]
        .shuffle(on=FEATURES_HASH, npartitions=npartitions)
    )
    pieces = [
        dask.delayed(_removals)(a, b, target, dedupe, conflicts)
        for a, b in zip(tr.to_delayed(), te.to_delayed(), strict=True)
    ]
    futures = client.compute(pieces)
    counts = _sum_counts(client.gather(client.map(_attrs_counts, futures)))
    return dd.from_delayed(futures, meta=train._meta, verify_meta=False), counts


def _attrs_counts(frame: pd.DataFrame) -> dict[str, int]:
    return frame.attrs["counts"]


def _sum_counts(items: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if isinstance(value, dict):
                inner = total.setdefault(key, {})
                for k, v in value.items():
                    inner[k] = inner.get(k, 0) + v
            else:
                total[key] = total.get(key, 0) + value
    return total


# --- outliers ----------------------------------------------------------------------------------


def _float_values(part: pd.DataFrame, column: str) -> np.ndarray:
    values = part[column].astype("float64").to_numpy()
    return values[~np.isnan(values)]


def _flags(part: pd.DataFrame, bounds: dict[str, tuple[float, float]]) -> pd.DataFrame:
    out = pd.DataFrame(index=part.index)
    for col, (low, high) in bounds.items():
        v = part[col].astype("float64")
        out[col] = ((v < low) | (v > high)).fillna(False).astype(bool)
    out["any"] = out.any(axis=1) if bounds else False
    return out


def _forest_sample(part: pd.DataFrame, seed: int, share: float) -> pd.DataFrame:
    return part[unit_interval(row_hash(part, seed, "sample")) < share]


def _forest_flags(part: pd.DataFrame, forest: Any, usable: list[str]) -> pd.Series:
    flagged = forest.predict(part[usable].astype("float64").to_numpy()) == -1
    return pd.Series(flagged, index=part.index)


def remove_outliers_dask(
    train: dd.DataFrame, cfg: config.OutliersConfig, target: str, say: Callable[[str], None]
) -> tuple[dd.DataFrame, dict[str, Any]]:
    """:func:`mlcycle.prepare.remove_outliers` with bounds from aggregates: exact quartiles
    (order statistics) for ``iqr``, exact mean and standard deviation for ``zscore``; an
    isolation forest fitted on a seeded sample of at most :data:`FOREST_ROWS` rows."""
    import dask

    report: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "none":
        report["removed"] = 0
        return train, report
    columns = outlier_columns(train._meta, cfg, target)
    if cfg.method in ("iqr", "zscore"):
        per_column: dict[str, Any] = {}
        limits: dict[str, tuple[float, float, float]] = {}  # low, high, spread
        if cfg.method == "iqr":
            extracts = {c: functools.partial(_float_values, column=c) for c in columns}
            stats = order_statistics(train, extracts, lambda _c, n: quantile_ranks(n, (0.25, 0.75)))
            for col in columns:
                n, found = stats[col]
                if not n:
                    continue
                q1, q3 = linear_quantile(n, 0.25, found), linear_quantile(n, 0.75, found)
                spread = q3 - q1
                limits[col] = (q1 - cfg.iqr_k * spread, q3 + cfg.iqr_k * spread, spread)
        else:
            values = {c: train[c].astype("float64") for c in columns}
            moments = dask.compute(
                {c: (v.count(), v.mean(), v.std(ddof=0)) for c, v in values.items()}
            )[0]
            for col, (n, mean, std) in moments.items():
                if n:
                    mean, std = float(mean), float(std)
                    limits[col] = (mean - cfg.zscore * std, mean + cfg.zscore * std, std)
        reason = "zero IQR" if cfg.method == "iqr" else "zero standard deviation"
        bounds: dict[str, tuple[float, float]] = {}
        for col in columns:
            if col not in limits:
                per_column[col] = {"skipped": "no values"}
            elif limits[col][2] == 0.0:
                per_column[col] = {"skipped": reason}
            else:
                bounds[col] = limits[col][:2]
        meta = pd.DataFrame({**{c: pd.Series(dtype=bool) for c in bounds}, "any": []}).astype(bool)
        flags = train.map_partitions(_flags, bounds, meta=meta)
        counts = flags.sum().compute()
        for col, (low, high) in bounds.items():
            per_column[col] = {
                "removed": int(counts[col]),
                "lower": round(low, 6),
                "upper": round(high, 6),
            }
        report["columns"] = {c: per_column[c] for c in columns}
        report["removed"] = int(counts["any"])
        return train[~flags["any"]], report
    from sklearn.ensemble import IsolationForest

    rows = int(train.map_partitions(len).sum().compute())
    share = min(1.0, FOREST_ROWS / max(rows, 1))
    sample = (
        train[columns]
        .map_partitions(_forest_sample, cfg.seed, share, meta=train[columns]._meta)
        .compute()
    )
    usable = [c for c in columns if sample[c].notna().any()]
    report["columns"] = usable
    say(f"isolation forest fitted on {len(sample)} of {rows} training rows")
    if not usable or len(sample) < 2:
        report["contamination"] = cfg.contamination
        report["removed"] = 0
        return train, report
    forest = IsolationForest(contamination=cfg.contamination, random_state=cfg.seed)
    forest.fit(sample[usable].astype("float64").to_numpy())
    outlier = train.map_partitions(_forest_flags, forest, usable, meta=(None, bool))
    report["contamination"] = cfg.contamination
    report["removed"] = int(outlier.sum().compute())
    return train[~outlier], report


# --- the stage -----------------------------------------------------------------------------------


def _target_summary(ddf: dd.DataFrame, target: str, obj: config.Objectives) -> dict[str, Any]:
    """``target_summary`` of the local stage, from aggregates."""
    import dask

    return tasks.get(obj.task).target_summary(ddf[target], obj.positive_class, dask.compute)


def _rows(frame: dd.DataFrame) -> int:
    return int(frame.map_partitions(len).sum().compute())


def clean_dask(
    ddf: dd.DataFrame, obj: config.Objectives, rows_in: int, client: Client
) -> tuple[dd.DataFrame, CleanReport]:
    """:func:`mlcycle.prepare.clean` over every partition (persisted on the workers), with the
    local engine's report: counts summed over partitions."""
    import dask
    import dask.dataframe as dd

    target = obj.target
    text = _text_columns(ddf._meta, target)
    tallies = ddf.map_partitions(
        _number_counts, text, meta={"column": object, "present": "int64", "parsed": "int64"}
    ).compute()
    tallies = tallies.groupby("column")[["present", "parsed"]].sum()
    coerce = {
        c
        for c in text
        if c != target
        and tallies.loc[c, "present"]
        and tallies.loc[c, "parsed"] / tallies.loc[c, "present"] >= NUMERIC_SHARE
    }
    futures = client.compute(
        [dask.delayed(_clean_part)(p, text, coerce, target) for p in ddf.to_delayed()]
    )
    meta = ddf._meta.copy()
    for col in text:
        meta[col] = meta[col].astype("float64") if col in coerce else meta[col].astype("string")
    frames = client.map(operator.itemgetter(0), futures)
    counts = _sum_counts(client.gather(client.map(operator.itemgetter(1), futures)))
    cleaned = dd.from_delayed(frames, meta=meta, verify_meta=False)
    del futures
    check_target_dask(cleaned, obj)
    label_meta = cleaned._meta.assign(
        **{
            target: cleaned._meta[target].astype(
                str if tasks.get(obj.task).classification else "float64"
            )
        }
    )
    cleaned = cleaned.map_partitions(_labels, target, obj.task, meta=label_meta).persist()
    report = CleanReport(rows_in=rows_in)
    for key in ("whitespace_stripped", "missing_tokens", "coerced_to_number", "not_a_number"):
        setattr(report, key, dict(sorted(counts.get(key, {}).items())))
    report.target_missing_dropped = counts.get("target_missing_dropped", 0)
    missing, rows_out = dask.compute(cleaned.isna().sum(), cleaned.map_partitions(len).sum())
    report.missing_values = {str(c): int(n) for c, n in missing.items() if n and c != SOURCE_COLUMN}
    report.rows_out = int(rows_out)
    return cleaned, report


def prepare_dask(
    params: config.Params,
    client: Client,
    snapshot: str,
    train_path: str,
    test_path: str,
    say: Say,
) -> PreparedSplits:
    """Clean, split, remove training rows and write both splits as Parquet parts; the local
    engine's figures of every step, the target's make-up and the training split's profile."""
    cfg, obj = params.prepare, params.objectives
    spec = tasks.get(obj.task)
    target = obj.target
    ddf = read_dataset(snapshot)
    if target not in ddf.columns:
        raise PrepareError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in ddf.columns if c != SOURCE_COLUMN]}"
        )
    _check_columns(ddf._meta, cfg, target)
    rows_in = dataset_rows(snapshot)
    say(f"snapshot: {rows_in} rows in {ddf.npartitions} partition(s)")

    # 1. cleaning
    cleaned, report_clean = clean_dask(ddf, obj, rows_in, client)
    say(f"cleaned {rows_in} rows; {report_clean.target_missing_dropped} unlabelled")
    report: dict[str, Any] = {"clean": asdict(report_clean)}

    # 2. the split
    s = cfg.split
    split_report: dict[str, Any] = {"method": s.method}
    if s.method != "by_source" and cfg.clean.drop_duplicates:
        columns = model_columns(cleaned._meta, cfg)
        cleaned = cleaned.drop_duplicates(subset=columns, split_out=cleaned.npartitions).persist()
        n = report_clean.rows_out - _rows(cleaned)
        split_report["duplicates_dropped_before_split"] = n
        say(f"dropped {n} duplicate rows before the {s.method} split")
    is_test, is_train, frame = split_dask(cleaned, cfg, target)
    del cleaned  # a hash split holds its own copy on the workers
    drop = [SOURCE_COLUMN, SPLIT_UNIT, *cfg.drop_columns]
    drop = [c for c in drop if c in frame.columns]
    train = frame[is_train].drop(columns=drop)
    test = frame[is_test].drop(columns=drop)
    n_train, n_test = (int(n) for n in client.compute(
        [train.map_partitions(len).sum(), test.map_partitions(len).sum()], sync=True
    ))  # fmt: skip
    if not n_train or not n_test:
        raise PrepareError(f"split left an empty side: train={n_train}, test={n_test}")
    if spec.classification:
        seen = set(train[target].drop_duplicates().compute())
        test_counts = test[target].value_counts().compute()
        only = {str(k): int(v) for k, v in test_counts.items() if k not in seen}
        if only:
            raise PrepareError(
                f"target {target!r}: class(es) {sorted(only)} occur only in the test split "
                f"({only} rows) and never in training, so the model cannot learn them. Gather "
                "training rows of them, drop or merge them, or change prepare.split"
            )
    split_report.update(train_rows=n_train, test_rows=n_test)
    report["split"] = split_report
    say(f"{s.method} split: train {n_train} rows, test {n_test} rows")

    # 3. training-row removals, with equal feature vectors in one partition
    dedupe = cfg.clean.drop_duplicates
    conflicts = cfg.clean.drop_conflicting_labels and spec.classification
    nparts = partitions_for(n_train, params.engine)
    removed: dict[str, Any] = {}
    if dedupe or conflicts:
        train, counts = remove_training_rows(train, test, target, dedupe, conflicts, nparts, client)
        if dedupe:
            removed["duplicates"] = counts["duplicates"]
            removed["matching_test"] = counts["matching_test"]
            say(
                f"train: dropped {counts['duplicates']} duplicates and "
                f"{counts['matching_test']} rows repeating a test row's features"
            )
        if conflicts:
            removed["conflicting_labels"] = counts["conflicting_labels"]
            say(f"train: dropped {counts['conflicting_labels']} rows whose features appear "
                "with both labels")  # fmt: skip
    else:
        train = train.repartition(npartitions=nparts).persist()
    train, outliers = remove_outliers_dask(train, cfg.outliers, target, say)
    removed["outliers"] = outliers["removed"]
    if cfg.outliers.method != "none":
        say(f"train: dropped {outliers['removed']} outliers ({cfg.outliers.method})")
    report["train_removed"] = removed
    report["outliers"] = outliers

    # 4. the splits as Parquet parts, their figures and the training split's profile
    rows_train = write_dataset(train_path, train, say)
    rows_test = write_dataset(
        test_path, test.repartition(npartitions=partitions_for(n_test, params.engine)), say
    )
    written_train, written_test = read_dataset(train_path), read_dataset(test_path)
    return PreparedSplits(
        report=report,
        train_rows_split=n_train,
        train_rows=rows_train,
        train_target=_target_summary(written_train, target, obj),
        test_rows=rows_test,
        test_target=_target_summary(written_test, target, obj),
        profile=data_profile_dask(written_train, params.monitor.bins),
    )


# --- exact order statistics over partitions -------------------------------------------------

ORDER_BINS_LOG2 = 10  # each pass narrows a search to 1/1024 of its key range
COLLECT_ROWS = 50_000  # a search whose range holds no more rows than this fetches them
SIGN = np.uint64(1 << 63)

Extract = Callable[[pd.DataFrame], np.ndarray]


def sortable_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving uint64 keys of float64 or int64 values (no missing values): equal keys
    for equal values, and key order is value order, so a search can halve bits, not floats."""
    if values.dtype.kind == "f":
        bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
        return np.where(bits & SIGN, ~bits, bits | SIGN)
    return np.ascontiguousarray(values, dtype=np.int64).view(np.uint64) ^ SIGN


def value_of_key(key: int, kind: str) -> float | int:
    """The value behind a :func:`sortable_keys` key: ``kind`` "f" (float64) or "i" (int64)."""
    k = np.array([key], dtype=np.uint64)
    if kind == "f":
        bits = np.where(k & SIGN, k ^ SIGN, ~k)
        return float(bits.view(np.float64)[0])
    return int((k ^ SIGN).view(np.int64)[0])


def _search_part(
    part: pd.DataFrame, extracts: dict[str, Extract], asks: list[tuple[str, int, int, int]]
) -> list[Any]:
    """One partition's answers to ``asks``: (extract name, lo, hi, shift) with shift -1 for the
    count, smallest and largest key; -2 for the keys in [lo, hi]; else the histogram of
    (key - lo) >> shift over keys in [lo, hi]."""
    values = {name: fn(part) for name, fn in extracts.items()}
    kinds = {name: v.dtype.kind for name, v in values.items()}
    keys = {name: sortable_keys(v) for name, v in values.items()}
    out: list[Any] = []
    for name, lo, hi, shift in asks:
        k = keys[name]
        if shift == -1:
            low, high = (int(k.min()), int(k.max())) if len(k) else (None, None)
            out.append((len(k), low, high, kinds[name]))
            continue
        inside = k[(k >= np.uint64(lo)) & (k <= np.uint64(hi))]
        if shift == -2:
            out.append(inside)
        else:
            ids = ((inside - np.uint64(lo)) >> np.uint64(shift)).astype(np.int64)
            out.append(np.bincount(ids, minlength=1 << ORDER_BINS_LOG2))
    return out


def _merge_search(*parts: list[Any]) -> list[Any]:
    """Partition answers of :func:`_search_part` added up, ask by ask."""
    merged = []
    for answers in zip(*parts, strict=True):
        first = answers[0]
        if isinstance(first, tuple):
            lows = [a[1] for a in answers if a[1] is not None]
            highs = [a[2] for a in answers if a[2] is not None]
            low, high = (min(lows), max(highs)) if lows else (None, None)
            merged.append((sum(a[0] for a in answers), low, high, first[3]))
        elif first.dtype == np.uint64:  # keys in a range
            merged.append(np.concatenate(answers))
        else:  # histograms
            merged.append(np.sum(answers, axis=0))
    return merged


def _ask(frame: dd.DataFrame, extracts: dict[str, Extract], asks: list[tuple]) -> list[Any]:
    """Run ``asks`` over every partition of ``frame`` on the workers; merged in a tree, so the
    driver receives one answer per ask."""
    import dask

    items = [dask.delayed(_search_part)(p, extracts, asks) for p in frame.to_delayed()]
    while len(items) > 1:
        items = [dask.delayed(_merge_search)(*items[i : i + 8]) for i in range(0, len(items), 8)]
    return dask.compute(items[0])[0]


def order_statistics(
    frame: dd.DataFrame,
    extracts: dict[str, Extract],
    ranks: Callable[[str, int], list[int]],
) -> dict[str, tuple[int, dict[int, float | int]]]:
    """Exact order statistics of values spread over partitions, without gathering them.

    ``extracts`` name a function per value set: a partition -> its values (float64 or int64,
    no missing values). ``ranks(name, n)`` says which 0-based ranks are wanted once the set's
    size ``n`` is known. Returns per name (n, {rank: value}). Each pass over the data sends back
    a 1,024-bin histogram per search over order-preserving 64-bit keys, narrowing each range by
    10 bits; a range of at most :data:`COLLECT_ROWS` rows is fetched and sorted. At most eight
    passes; the driver holds histograms and at most ``COLLECT_ROWS`` keys per search.
    """
    names = list(extracts)
    kinds: dict[str, str] = {}
    first = _ask(frame, extracts, [(n, 0, 0, -1) for n in names])
    result: dict[str, tuple[int, dict[int, float | int]]] = {}
    searches: list[dict[str, Any]] = []  # name, rank, lo, hi, below, count
    for name, (n, lo, hi, kind) in zip(names, first, strict=True):
        result[name] = (n, {})
        kinds[name] = kind
        for rank in ranks(name, n):
            if not 0 <= rank < n:
                raise ValueError(f"rank {rank} of {n} values of {name}")
            searches.append(dict(name=name, rank=rank, lo=lo, hi=hi, below=0, count=n))
    while searches:
        asks = []
        for s in searches:
            if s["lo"] == s["hi"]:
                asks.append(None)
            elif s["count"] <= COLLECT_ROWS:
                asks.append((s["name"], s["lo"], s["hi"], -2))
            else:
                shift = max(0, (s["hi"] - s["lo"]).bit_length() - ORDER_BINS_LOG2)
                asks.append((s["name"], s["lo"], s["hi"], shift))
        wanted = [a for a in asks if a is not None]
        answers = iter(_ask(frame, extracts, wanted) if wanted else [])
        pending = []
        for s, ask in zip(searches, asks, strict=True):
            if ask is None:
                result[s["name"]][1][s["rank"]] = value_of_key(s["lo"], kinds[s["name"]])
                continue
            answer = next(answers)
            if ask[3] == -2:
                key = int(np.sort(answer)[s["rank"] - s["below"]])
                result[s["name"]][1][s["rank"]] = value_of_key(key, kinds[s["name"]])
                continue
            shift = ask[3]
            cum = np.cumsum(answer)
            b = int(np.searchsorted(cum, s["rank"] - s["below"], side="right"))
            s["below"] += int(cum[b - 1]) if b else 0
            s["count"] = int(answer[b])
            s["lo"] = s["lo"] + (b << shift)
            s["hi"] = min(s["hi"], s["lo"] + (1 << shift) - 1)
            pending.append(s)
        searches = pending
    return result


def linear_quantile(n: int, q: float, stats: dict[int, float]) -> float:
    """numpy's (and pandas') "linear" quantile ``q`` of ``n`` values from the order statistics
    :func:`quantile_ranks` asked for: bit for bit the same float."""
    h = (n - 1) * q
    lo = int(np.floor(h))
    hi = min(lo + 1, n - 1)
    return float(np.quantile(np.array([stats[lo], stats[hi]], dtype=np.float64), h - lo))


def quantile_ranks(n: int, qs: Sequence[float]) -> list[int]:
    """The order statistics :func:`linear_quantile` needs for ``qs`` of ``n`` values."""
    out: set[int] = set()
    for q in qs:
        lo = int(np.floor((n - 1) * q))
        out.update({lo, min(lo + 1, n - 1)})
    return sorted(out) if n else []


# --- the training split's profile from aggregates -------------------------------------------

SKETCH_POINTS = 4001  # quantiles kept per partition for the profile's approximate quantiles


def _numbers(part: pd.DataFrame, column: str) -> np.ndarray:
    """A column's finite numbers (as :func:`mlcycle.drift.as_numbers` reads them)."""
    numbers = np.array(pd.to_numeric(part[column], errors="coerce"), dtype=float)
    return numbers[np.isfinite(numbers)]


def _numbers_except(part: pd.DataFrame, column: str, atoms: np.ndarray) -> np.ndarray:
    values = _numbers(part, column)
    return values[~np.isin(values, atoms)]


def _profile_counts(
    part: pd.DataFrame, numeric: list[str], categorical: list[str], bins: int, grid: np.ndarray
) -> dict[str, Any]:
    """One partition's share of the profile: rows; per numeric column its present count, the
    values heavy enough here to be atoms anywhere, and a quantile sketch; per categorical
    column its value counts and missing count."""
    from mlcycle.drift import _texts

    out: dict[str, Any] = {"rows": len(part), "numeric": {}, "categorical": {}}
    for col in numeric:
        values = _numbers(part, col)
        uniq, counts = np.unique(values, return_counts=True)
        # A value holding under 1/(2 bins) of the present values in every partition holds
        # under that share of all of them: only values heavy somewhere can be atoms.
        heavy = uniq[counts >= len(values) / (2 * bins)] if len(values) else uniq
        sketch = np.quantile(values, grid) if len(values) else None
        out["numeric"][col] = (len(values), heavy, [(sketch, len(values))] if len(values) else [])
    for col in categorical:
        texts = _texts(part[col])
        out["categorical"][col] = (texts.value_counts(dropna=True), int(texts.isna().sum()))
    return out


def _merge_profile_counts(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": sum(p["rows"] for p in parts), "numeric": {}, "categorical": {}}
    for col in parts[0]["numeric"]:
        items = [p["numeric"][col] for p in parts]
        out["numeric"][col] = (
            sum(i[0] for i in items),
            np.unique(np.concatenate([i[1] for i in items])),
            [s for i in items for s in i[2]],
        )
    for col in parts[0]["categorical"]:
        items = [p["categorical"][col] for p in parts]
        counts = pd.concat([i[0] for i in items]).groupby(level=0).sum()
        out["categorical"][col] = (counts, sum(i[1] for i in items))
    return out


def _value_counts_of(part: pd.DataFrame, wanted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per column, how often each of ``wanted[column]`` (sorted values) occurs here."""
    out = {}
    for col, values in wanted.items():
        if not len(values):
            out[col] = np.zeros(0, dtype=np.int64)
            continue
        present = _numbers(part, col)
        at = np.searchsorted(values, present)
        hit = (at < len(values)) & (values[np.minimum(at, len(values) - 1)] == present)
        out[col] = np.bincount(at[hit], minlength=len(values))
    return out


def _bin_counts(part: pd.DataFrame, bins: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    from mlcycle.drift import _bin_ids

    return {
        col: np.bincount(_bin_ids(_numbers(part, col), atoms, edges),
                         minlength=len(atoms) + len(edges) + 1)
        for col, (atoms, edges) in bins.items()
    }  # fmt: skip


def _sum_arrays(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.sum([p[k] for p in parts], axis=0) for k in parts[0]}


def _tree(items: list, combine: Callable) -> Any:
    """Combine delayed partition results eight at a time, on the workers; compute the root."""
    import dask

    while len(items) > 1:
        items = [dask.delayed(combine)(*items[i : i + 8]) for i in range(0, len(items), 8)]
    return dask.compute(items[0])[0]


def merge_sketches(
    sketches: list[tuple[np.ndarray, int]], grid: np.ndarray, qs: np.ndarray
) -> np.ndarray:
    """Quantiles ``qs`` of the union of partitions, each summarised by its quantiles at
    ``grid`` and its size: the smallest sketch value whose combined (size-weighted) CDF reaches
    q. Each partition's CDF is known to 1/(len(grid) - 1), so each quantile's rank is off by at
    most that share of all rows; the smallest and largest values are exact."""
    xs = np.unique(np.concatenate([s for s, _ in sketches]))
    total = sum(n for _, n in sketches)
    cdf = np.zeros(len(xs))
    for values, n in sketches:
        at = np.searchsorted(values, xs, side="right") - 1  # the last grid point at or below x
        cdf += n * np.where(at >= 0, grid[np.maximum(at, 0)], 0.0)
    cdf /= total
    cdf[-1] = 1.0
    return xs[np.minimum(np.searchsorted(cdf, qs - 1e-12, side="left"), len(xs) - 1)]


def data_profile_dask(frame: dd.DataFrame, bins: int) -> dict[str, Any]:
    """:func:`mlcycle.drift.data_profile` of a partitioned data set, from aggregates.

    The same document: categorical counts and missing counts are exact (value counts summed
    over partitions); a numeric column's atoms, bin edges and bin counts are exact too (atoms
    from per-partition candidates counted exactly, edges from exact order statistics). Only
    its 1,001 ``quantiles`` are approximate when there is more than one partition: merged from
    4,001 quantiles of each partition (:func:`merge_sketches`), so each is within 1/4,000 of
    the rows of its rank. The driver holds counts and sketches, never the rows.
    """
    import dask

    from mlcycle.drift import QUANTILES

    meta = frame._meta
    numeric = [
        str(c)
        for c in meta.columns
        if pd.api.types.is_numeric_dtype(meta[c]) and not pd.api.types.is_bool_dtype(meta[c])
    ]
    categorical = [str(c) for c in meta.columns if str(c) not in numeric]
    final_q = np.linspace(0, 1, QUANTILES)
    grid = final_q if frame.npartitions == 1 else np.linspace(0, 1, SKETCH_POINTS)
    parts = frame.to_delayed()
    first = _tree(
        [dask.delayed(_profile_counts)(p, numeric, categorical, bins, grid) for p in parts],
        _merge_profile_counts,
    )
    rows = first["rows"]
    # Exact counts of the atom candidates, then the atoms.
    candidates = {c: first["numeric"][c][1] for c in numeric}
    counts = (
        _tree([dask.delayed(_value_counts_of)(p, candidates) for p in parts], _sum_arrays)
        if numeric
        else {}
    )
    atoms = {c: candidates[c][counts[c] >= first["numeric"][c][0] / (2 * bins)] for c in numeric}
    # Edges: exact quantiles of the values that are not atoms (as drift.numeric_bins).
    extracts = {c: functools.partial(_numbers_except, column=c, atoms=atoms[c]) for c in numeric}
    n_bins = {c: max(bins - len(atoms[c]), 1) for c in numeric}
    edge_q = {c: np.linspace(0, 1, n_bins[c] + 1) for c in numeric}
    stats = (
        order_statistics(frame, extracts, lambda c, n: quantile_ranks(n, edge_q[c]))
        if numeric
        else {}
    )
    edges = {}
    for c in numeric:
        n, found = stats[c]
        qs = [linear_quantile(n, q, found) for q in edge_q[c]] if n else []
        edges[c] = np.unique(np.array(qs[1:-1], dtype=float)) if n else np.array([])
    binned = (
        _tree(
            [
                dask.delayed(_bin_counts)(p, {c: (atoms[c], edges[c]) for c in numeric})
                for p in parts
            ],
            _sum_arrays,
        )  # fmt: skip
        if numeric
        else {}
    )
    features: dict[str, Any] = {}
    for col in (str(c) for c in meta.columns):
        if col in numeric:
            present, _, sketches = first["numeric"][col]
            if not present:
                quantiles: list[float] = []
            elif len(sketches) == 1 and grid is final_q:
                quantiles = [float(q) for q in sketches[0][0]]
            else:
                quantiles = merge_sketches(sketches, grid, final_q).tolist()
            features[col] = {
                "kind": "numeric",
                "rows": rows,
                "missing": int(rows - present),
                "atoms": [float(a) for a in atoms[col]],
                "edges": [float(e) for e in edges[col]],
                "counts": [int(c) for c in binned[col]],
                "quantiles": [float(f"{float(q):.6g}") for q in quantiles],
            }
        else:
            value_counts, missing = first["categorical"][col]
            features[col] = {
                "kind": "categorical",
                "rows": rows,
                "missing": int(missing),
                "counts": {
                    str(k): int(v)
                    for k, v in sorted(value_counts.items(), key=lambda kv: str(kv[0]))
                },
            }
    return {"rows": rows, "bins": bins, "features": features}

"""The prepare stage on the Dask engine: the local engine's steps, partition by partition.

1. Cleaning runs on each partition with the local rules; whether a text column of numbers
   becomes numeric is decided once, from counts over all partitions, so every partition
   agrees. The target's classes are checked from its distinct values.
2. The split does not depend on partitioning or row order: ``random`` and ``stratified`` send
   a row to test when the hash of its model columns (seeded by ``prepare.split.seed``) falls
   under ``test_size`` (stratified is then so only on average: with many rows per class the
   shares agree to a fraction of a percent); ``group`` hashes the group's value, so a group
   stays on one side; ``time`` cuts at the ``1 - test_size`` quantile of the time column
   (Dask's approximate quantile); ``by_source`` is exact, as on the local engine.
   Duplicates go before a random split, as locally.
3. Training-row removals (exact duplicates, rows repeating a test row's features, conflicting
   labels) need equal rows in one place: the training rows are shuffled by a hash of their
   features (and the test split's feature hashes alike), so each partition holds every row of
   its hashes and the local rules apply to it exactly. Outliers use Dask aggregates: mean and
   standard deviation exactly, quartiles by Dask's approximate quantiles; an isolation forest
   is fitted on a seeded sample of at most ``FOREST_ROWS`` rows and scores every partition.

Only counts, distinct labels and quantiles come back to this process; the rows stay on the
workers until they are written as Parquet parts.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.engines import (
    partitions_for,
    read_dataset,
    row_hash,
    sample_dataset,
    unit_interval,
    write_dataset,
)
from mlcycle.prepare import (
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
from mlcycle.tasks import REGRESSION

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

FEATURES_HASH = "__features_hash"
TEST_FLAG = "__is_test"
FOREST_ROWS = 100_000


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


def _labels(part: pd.DataFrame, target: str, task: str, objectives: config.Objectives):
    if task == REGRESSION:
        return part.assign(**{target: check_target(part[target], objectives)})
    return part.assign(**{target: part[target].astype(str)})


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


# --- the stage -----------------------------------------------------------------------------------


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


def _target_summary(ddf: dd.DataFrame, target: str, obj: config.Objectives) -> dict[str, Any]:
    from mlcycle.tasks import BINARY

    if obj.task == BINARY:
        rate = (ddf[target] == obj.positive_class).mean().compute()
        return {"positive_rate": round(float(rate), 6)}
    if obj.task == REGRESSION:
        mean, std = (float(x) for x in (ddf[target].mean().compute(), ddf[target].std().compute()))
        return {"target_mean": round(mean, 6), "target_std": round(std, 6)}
    shares = ddf[target].value_counts().compute()
    shares = (shares / shares.sum()).sort_index()
    return {"class_share": {str(k): round(float(v), 6) for k, v in shares.items()}}


def _outliers(train: dd.DataFrame, cfg: config.OutliersConfig, target: str, seed: int):
    """The outlier rule's bounds from aggregates (or a forest fitted on a sample), applied per
    partition; returns the filtered frame and the report (counts filled in later)."""
    report: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "none":
        return train, report, None
    columns = outlier_columns(train._meta, cfg, target)
    if cfg.method in ("iqr", "zscore"):
        bounds: dict[str, tuple[float, float]] = {}
        per_column: dict[str, Any] = {}
        for col in columns:
            values = train[col].astype("float64").dropna()
            if cfg.method == "iqr":
                q = values.quantile([0.25, 0.75]).compute()
                if q.isna().all():
                    per_column[col] = {"skipped": "no values"}
                    continue
                q1, q3 = float(q.iloc[0]), float(q.iloc[1])
                spread, reason = q3 - q1, "zero IQR"
                low, high = q1 - cfg.iqr_k * spread, q3 + cfg.iqr_k * spread
            else:
                mean, std = values.mean().compute(), values.std(ddof=0).compute()
                if pd.isna(mean):
                    per_column[col] = {"skipped": "no values"}
                    continue
                spread, reason = float(std), "zero standard deviation"
                low, high = mean - cfg.zscore * std, mean + cfg.zscore * std
            if spread == 0.0:
                per_column[col] = {"skipped": reason}
                continue
            bounds[col] = (float(low), float(high))
            per_column[col] = {"lower": round(float(low), 6), "upper": round(float(high), 6)}

        def flag(part: pd.DataFrame) -> pd.DataFrame:
            out = pd.DataFrame(index=part.index)
            for col, (low, high) in bounds.items():
                v = part[col].astype("float64")
                out[col] = ((v < low) | (v > high)).fillna(False)
            out["any"] = out.any(axis=1) if bounds else False
            return out

        meta = pd.DataFrame({**{c: pd.Series(dtype=bool) for c in bounds}, "any": []}).astype(bool)
        flags = train.map_partitions(flag, meta=meta)
        counts = flags.sum().compute()
        for col in bounds:
            per_column[col]["removed"] = int(counts[col])
        report["columns"] = per_column
        return train[~flags["any"]], report, int(counts["any"])
    from sklearn.ensemble import IsolationForest

    rows = int(train.map_partitions(len).sum().compute())
    share = min(1.0, FOREST_ROWS / max(rows, 1))
    sample = (
        train[columns]
        .map_partitions(
            lambda p: p[unit_interval(row_hash(p, seed, "sample")) < share],
            meta=train[columns]._meta,
        )
        .compute()
    )
    usable = [c for c in columns if sample[c].notna().any()]
    report["columns"] = usable
    report["contamination"] = cfg.contamination
    report["fitted_on_rows"] = len(sample)
    if not usable or len(sample) < 2:
        return train, report, 0
    forest = IsolationForest(contamination=cfg.contamination, random_state=cfg.seed)
    forest.fit(sample[usable].astype("float64").to_numpy())
    outlier = train.map_partitions(
        lambda p: pd.Series(forest.predict(p[usable].astype("float64").to_numpy()) == -1,
                            index=p.index),
        meta=(None, bool),
    )  # fmt: skip
    return train[~outlier], report, int(outlier.sum().compute())


def main_dask(params: config.Params, client: Client) -> None:
    """Clean, split, remove training rows and write both splits as Parquet parts."""
    import dask
    import dask.dataframe as dd

    from mlcycle.drift import data_profile
    from mlcycle.io import write_json
    from mlcycle.stages import METRICS, SNAPSHOT, TEST, TRAIN, log

    say = lambda msg: log("prepare", msg)  # noqa: E731
    cfg, obj = params.prepare, params.objectives
    target = obj.target
    ddf = read_dataset(SNAPSHOT)
    if target not in ddf.columns:
        raise PrepareError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in ddf.columns if c != SOURCE_COLUMN]}"
        )
    _check_columns(ddf._meta, cfg, target)
    rows_in = int(ddf.map_partitions(len).sum().compute())
    say(f"snapshot: {rows_in} rows in {ddf.npartitions} partition(s)")

    # 1. cleaning, with the numeric columns decided over all partitions
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
    parts = [dask.delayed(_clean_part, nout=2)(p, text, coerce, target) for p in ddf.to_delayed()]
    meta = ddf._meta.copy()
    for col in text:
        meta[col] = meta[col].astype("float64") if col in coerce else meta[col].astype("string")
    cleaned = dd.from_delayed([p[0] for p in parts], meta=meta, verify_meta=False)
    cleaned = cleaned.persist()
    counts = _sum_counts(list(dask.compute(*[p[1] for p in parts])))
    labels = cleaned[target].dropna().drop_duplicates().compute()
    if obj.task != REGRESSION:
        check_target(labels.astype(str), obj)
    label_meta = cleaned._meta.assign(
        **{target: cleaned._meta[target].astype("float64" if obj.task == REGRESSION else str)}
    )
    cleaned = cleaned.map_partitions(_labels, target, obj.task, obj, meta=label_meta).persist()
    report_clean = CleanReport(rows_in=rows_in)
    for key in ("whitespace_stripped", "missing_tokens", "coerced_to_number", "not_a_number"):
        setattr(report_clean, key, dict(sorted(counts.get(key, {}).items())))
    report_clean.target_missing_dropped = counts.get("target_missing_dropped", 0)
    missing = cleaned.isna().sum().compute()
    report_clean.missing_values = {
        str(c): int(n) for c, n in missing.items() if n and c != SOURCE_COLUMN
    }
    report_clean.rows_out = int(cleaned.map_partitions(len).sum().compute())
    say(f"cleaned {rows_in} rows; {report_clean.target_missing_dropped} unlabelled")
    report: dict[str, Any] = {"clean": asdict(report_clean)}

    # 2. the split
    s = cfg.split
    split_report: dict[str, Any] = {"method": s.method}
    columns = model_columns(cleaned._meta, cfg)
    if s.method != "by_source" and cfg.clean.drop_duplicates:
        before = report_clean.rows_out
        cleaned = cleaned.drop_duplicates(subset=columns, split_out=cleaned.npartitions)
        cleaned = cleaned.persist()
        n = before - int(cleaned.map_partitions(len).sum().compute())
        split_report["duplicates_dropped_before_split"] = n
        say(f"dropped {n} duplicate rows before the {s.method} split")
    if s.method == "by_source":
        present = set(cleaned[SOURCE_COLUMN].drop_duplicates().compute().astype(str))
        unknown = present - set(s.train_sources) - set(s.test_sources)
        if unknown:
            raise PrepareError(
                f"sources {sorted(unknown)} are in the snapshot but neither in "
                "prepare.split.train_sources nor test_sources"
            )
        is_test = cleaned[SOURCE_COLUMN].isin(list(s.test_sources))
        is_train = cleaned[SOURCE_COLUMN].isin(list(s.train_sources))
    else:
        if s.method in ("random", "stratified"):
            if s.method == "stratified":
                per_class = cleaned[target].value_counts().compute()
                rare = per_class[per_class < 2]
                if len(rare):
                    raise PrepareError(
                        f"target {target!r}: class(es) {rare.to_dict()} have a single row; a "
                        "stratified split needs at least two rows per class. Drop or merge "
                        "them, or gather more"
                    )
            key = columns
        elif s.method == "group":
            key = [s.group_column]
            groups = cleaned[s.group_column].nunique(dropna=False).compute()
            if groups < 2:
                raise PrepareError(
                    f"prepare.split.group_column {s.group_column!r} has fewer than two groups"
                )
        else:
            key = None
        if key is not None:

            def hashed(part: pd.DataFrame) -> pd.Series:
                values = part[key]
                if s.method == "group":
                    values = values.astype("string").fillna("<missing>")
                u = unit_interval(row_hash(values, s.seed, "split"))
                return pd.Series(u < s.test_size, index=part.index)

            is_test = cleaned.map_partitions(hashed, meta=(None, bool))
        else:  # time
            when = cleaned[s.time_column]
            if int(when.isna().sum().compute()):
                raise PrepareError(
                    f"prepare.split.time_column {s.time_column!r} is missing in some rows; a "
                    "time split needs a time for every row"
                )
            if not (
                pd.api.types.is_numeric_dtype(when.dtype)
                or pd.api.types.is_datetime64_any_dtype(when.dtype)
            ):
                when = dd.to_datetime(when, utc=True)
            if pd.api.types.is_datetime64_any_dtype(when.dtype):
                boundary = pd.Timestamp(
                    int(when.astype("int64").quantile(1 - s.test_size).compute()), tz=when.dtype.tz
                )
            else:
                boundary = when.quantile(1 - s.test_size).compute()
            is_test = when >= boundary
            split_report["time_boundary"] = str(boundary)
        is_train = ~is_test
    drop = [SOURCE_COLUMN, *[c for c in cfg.drop_columns if c in cleaned.columns]]
    train = cleaned[is_train].drop(columns=drop)
    test = cleaned[is_test].drop(columns=drop)
    n_train = int(train.map_partitions(len).sum().compute())
    n_test = int(test.map_partitions(len).sum().compute())
    if not n_train or not n_test:
        raise PrepareError(f"split left an empty side: train={n_train}, test={n_test}")
    if obj.task != REGRESSION:
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
    features = [c for c in train.columns if c != target]
    nparts = max(partitions_for(n_train, params.engine), 1)
    dedupe = cfg.clean.drop_duplicates
    conflicts = cfg.clean.drop_conflicting_labels and obj.task != REGRESSION
    removed: dict[str, Any] = {}
    if dedupe or conflicts:
        tr = train.map_partitions(_features_hash, features).shuffle(
            on=FEATURES_HASH, npartitions=nparts
        )
        te = (
            test[features]
            .map_partitions(_features_hash, features)[[FEATURES_HASH]]
            .shuffle(on=FEATURES_HASH, npartitions=nparts)
        )
        pieces = [
            dask.delayed(_removals)(a, b, target, dedupe, conflicts)
            for a, b in zip(tr.to_delayed(), te.to_delayed(), strict=True)
        ]
        pieces = client.compute(pieces)
        counts = _sum_counts(client.gather(client.map(lambda f: f.attrs["counts"], pieces)))
        train = dd.from_delayed(pieces, meta=train._meta, verify_meta=False)
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
    train, outliers, n_out = _outliers(train, cfg.outliers, target, cfg.outliers.seed)
    outliers["removed"] = n_out or 0
    removed["outliers"] = outliers["removed"]
    if cfg.outliers.method != "none":
        say(f"train: dropped {outliers['removed']} outliers ({cfg.outliers.method})")
    report["train_removed"] = removed
    report["outliers"] = outliers

    rows_train = write_dataset(TRAIN, train, say)
    test = test.repartition(npartitions=partitions_for(n_test, params.engine))
    rows_test = write_dataset(TEST, test, say)
    trained = read_dataset(TRAIN)
    write_json(
        f"{METRICS}/prepare.json",
        {
            **report,
            "train": {
                "rows_split": n_train,
                "rows": rows_train,
                **_target_summary(trained, target, obj),
            },
            "test": {"rows": rows_test, **_target_summary(read_dataset(TEST), target, obj)},
        },
    )
    # The training split's profile from at most a million rows chosen by row hash (all of
    # them below that): its quantiles and shares, not its size, are what a report compares.
    profile = data_profile(sample_dataset(TRAIN, 1_000_000), params.monitor.bins)
    profile["rows"] = rows_train
    write_json(f"{METRICS}/data_profile.json", profile)
    say(f"train {rows_train} rows, test {rows_test} rows")

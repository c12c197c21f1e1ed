"""The prepare stage on the Dask engine: :mod:`mlcycle.prepare`'s rules, partition by
partition. This module holds the plumbing (partitions, shuffles, reductions on the workers,
order statistics) and the one rule of its own, the hash split (2.); every other rule is the
local engine's, written once in the library.

1. Cleaning runs on each partition (:func:`mlcycle.prepare.clean_part`); whether a text
   column of numbers becomes numeric is decided once, from counts over all partitions, so
   every partition agrees. The target is checked from counts and (at most
   :data:`LABEL_LIMIT`) distinct labels.
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
   order statistics (the local engine's, bit for bit) and ``zscore`` uses Dask's mean and
   standard deviation; an isolation forest is fitted on a seeded sample of at most
   :data:`FOREST_ROWS` rows (all of them below that, as on the local engine) and scores every
   partition.
4. ``metrics/prepare.json`` has the local engine's keys and ``metrics/data_profile.json`` its
   format (:func:`data_profile_dask`: :func:`mlcycle.drift.profile`'s steps on every
   partition; exact counts, bins and edges; approximate quantiles).

Only counts, distinct labels, histograms and quantile sketches come back to this process; the
rows stay on the workers until they are written as Parquet parts.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle import prepare as rules
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.datasets import dataset_rows, row_hash, unit_interval
from mlcycle.drift import Extract, data_profile
from mlcycle.engines.base import PreparedSplits, Say
from mlcycle.engines.dask.cluster import bounded, computed, guarded
from mlcycle.engines.dask.data import partitions_for, read_dataset, write_dataset
from mlcycle.prepare import FEATURES_KEY, PrepareError

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

SPLIT_UNIT = "__split_unit"
FOREST_ROWS = 100_000
LABEL_LIMIT = 10_000  # distinct target labels brought to the driver for the target's checks


# --- cleaning ----------------------------------------------------------------------------------


def check_target_dask(cleaned: dd.DataFrame, objectives: config.Objectives) -> None:
    """:func:`mlcycle.prepare.check_target`'s rules and messages over every partition, from
    per-partition facts (at most :data:`LABEL_LIMIT` distinct labels come to the driver; above
    that, an error for binary and numeric multiclass targets)."""
    import dask

    target, task, parts = objectives.target, objectives.task, cleaned.to_delayed()
    facts = _tree(
        "the target's labels",
        [dask.delayed(rules.label_facts)(p[target], task, LABEL_LIMIT) for p in parts],
        functools.partial(rules.merge_label_facts, limit=LABEL_LIMIT),
    )
    rules.check_label_facts(facts, objectives)


def _task_labels(part: pd.DataFrame, target: str, task: str) -> pd.DataFrame:
    return part.assign(**{target: rules.task_labels(part[target], task)})


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


def _from_time(part: pd.DataFrame, column: str, boundary: float) -> pd.Series:
    return pd.Series(rules.time_values(part, column) >= boundary, index=part.index)


def split_dask(
    cleaned: dd.DataFrame, cfg: config.PrepareConfig, target: str
) -> tuple[dd.Series, dd.Series, dd.DataFrame]:
    """Which rows are test and which train (lazy boolean Series), and the frame they index
    (with the split hash column when the method uses one). See the module's docstring."""
    s = cfg.split
    if s.method == "by_source":
        names = bounded("the sources' names", cleaned[SOURCE_COLUMN].drop_duplicates().compute)
        rules.check_sources(set(names.astype(str)), s)
        is_test = cleaned[SOURCE_COLUMN].isin(list(s.test_sources))
        return is_test, cleaned[SOURCE_COLUMN].isin(list(s.train_sources)), cleaned
    if s.method == "time":
        missing = int(bounded(f"the missing times in {s.time_column!r}",
                              cleaned[s.time_column].isna().sum().compute))  # fmt: skip
        if missing:
            raise PrepareError(
                f"prepare.split.time_column {s.time_column!r} is missing in {missing} row(s); "
                "a time split needs a time for every row"
            )

        def boundary_rank(_name: str, n: int) -> list[int]:
            return [rules.time_cut_rank(n, s.test_size)] if n else []

        stats = order_statistics(
            cleaned, {"time": functools.partial(rules.time_values, column=s.time_column)},
            boundary_rank, what="the time split's boundary",
        )  # fmt: skip
        _, found = stats["time"]
        if not found:
            raise PrepareError("split left an empty side: train=0, test=0")
        boundary = next(iter(found.values()))
        is_test = cleaned.map_partitions(_from_time, s.time_column, boundary, meta=(None, bool))
        return is_test, ~is_test, cleaned
    columns = rules.model_columns(cleaned._meta, cfg)
    if s.method == "group":
        groups = bounded(f"the groups of {s.group_column!r}",
                         cleaned[s.group_column].nunique(dropna=False).compute)  # fmt: skip
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
    per_class = bounded("the rows per class", hashed[target].value_counts().compute)
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
    stats = order_statistics(hashed, extracts, lambda label, _n: [wanted[label] - 1],
                             what="the stratified split's cut per class")  # fmt: skip
    cuts = {label: float(next(iter(found.values()))) for label, (_, found) in stats.items()}
    is_test = hashed.map_partitions(_below_class_cut, target, cuts, meta=(None, bool))
    return is_test, ~is_test, hashed


# --- training-row removals --------------------------------------------------------------------


def _removals(
    train: pd.DataFrame, test_keys: pd.DataFrame, target: str, duplicates: bool, conflicts: bool
) -> pd.DataFrame:
    """:func:`mlcycle.prepare.remove_repeats` on one partition holding every row of its
    feature keys, ordered by key; the counts ride along in the frame's attrs."""
    keys = test_keys[FEATURES_KEY]
    train, counts = rules.remove_repeats(train, keys, target, duplicates, conflicts)
    out = train.sort_values(FEATURES_KEY, kind="stable").drop(columns=FEATURES_KEY)
    out = out.reset_index(drop=True)
    out.attrs["counts"] = counts
    return out


def _features_key(part: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    return part.assign(**{FEATURES_KEY: rules.features_key(part, features).to_numpy()})


def remove_training_rows(
    train: dd.DataFrame,
    test: dd.DataFrame,
    target: str,
    duplicates: bool,
    conflicts: bool,
    rows: int,
    engine: config.EngineConfig,
    client: Client,
) -> tuple[dd.DataFrame, dict[str, int]]:
    """Drop training duplicates, rows repeating a test row's features and conflicting labels
    (:func:`mlcycle.prepare.remove_training_repeats`), with both splits shuffled by feature
    hash so equal feature vectors meet in one partition. Returns the
    rest (held on the workers, in partitions for ``rows`` rows) and the summed counts; without
    removals, the training rows in those partitions."""
    import dask
    import dask.dataframe as dd

    npartitions = partitions_for(rows, engine)
    if not (duplicates or conflicts):
        return train.repartition(npartitions=npartitions).persist(), {}

    features = [c for c in train.columns if c != target]
    tr = train.map_partitions(_features_key, features).shuffle(
        on=FEATURES_KEY, npartitions=npartitions
    )
    te = (
        test[features]
        .map_partitions(_features_key, features)[[FEATURES_KEY]]
        .shuffle(on=FEATURES_KEY, npartitions=npartitions)
    )
    pieces = [
        dask.delayed(_removals)(a, b, target, duplicates, conflicts)
        for a, b in zip(tr.to_delayed(), te.to_delayed(), strict=True)
    ]
    futures = client.compute(pieces)
    attached = client.map(operator.attrgetter("attrs"), futures)
    attrs = bounded("removing repeated training rows", functools.partial(client.gather, attached))
    counts = rules.sum_counts([a["counts"] for a in attrs])
    return dd.from_delayed(futures, meta=train._meta, verify_meta=False), counts


# --- outliers ----------------------------------------------------------------------------------


def _float_values(part: pd.DataFrame, column: str) -> np.ndarray:
    values = part[column].astype("float64").to_numpy()
    return values[~np.isnan(values)]


def _forest_sample(part: pd.DataFrame, seed: int, share: float) -> pd.DataFrame:
    return part[unit_interval(row_hash(part, seed, "sample")) < share]


def _outlier_stats(
    train: dd.DataFrame, columns: list[str], method: str
) -> dict[str, tuple[float, float]]:
    """:func:`mlcycle.prepare.outlier_bounds`' statistics from aggregates: exact quartiles
    (order statistics, bit for bit the local engine's) or dask's mean and standard deviation."""
    stats: dict[str, tuple[float, float]] = {}
    if method == "iqr":
        extracts = {c: functools.partial(_float_values, column=c) for c in columns}
        found = order_statistics(train, extracts, lambda _c, n: quantile_ranks(n, (0.25, 0.75)),
                                 what="the outliers' quartiles")  # fmt: skip
        for col, (n, ranks) in found.items():
            if n:
                stats[col] = (linear_quantile(n, 0.25, ranks), linear_quantile(n, 0.75, ranks))
        return stats
    values = {c: train[c].astype("float64") for c in columns}
    moments = {c: (v.count(), v.mean(), v.std(ddof=0)) for c, v in values.items()}
    moments = computed("the outliers' means and standard deviations", moments)
    for col, (n, mean, std) in moments[0].items():
        if n:
            stats[col] = (float(mean), float(std))
    return stats


def remove_outliers_dask(
    train: dd.DataFrame, cfg: config.OutliersConfig, target: str, say: Callable[[str], None]
) -> tuple[dd.DataFrame, dict[str, Any]]:
    """:func:`mlcycle.prepare.remove_outliers`, partition by partition, with bounds from
    aggregates (:func:`_outlier_stats`). The isolation forest is fitted on a seeded sample of
    at most :data:`FOREST_ROWS` rows (all of them below that, as on the local engine), so that
    the rows need not come to one process; above it the forest differs from the local one."""
    report: dict[str, Any] = {"method": cfg.method}
    if cfg.method == "none":
        report["removed"] = 0
        return train, report
    columns = rules.outlier_columns(train._meta, cfg, target)
    if cfg.method in ("iqr", "zscore"):
        stats = _outlier_stats(train, columns, cfg.method)
        bounds, skipped = rules.outlier_bounds(cfg, columns, stats)
        meta = rules.outlier_flags(train._meta, bounds)
        flags = train.map_partitions(rules.outlier_flags, bounds, meta=meta)
        counts = bounded("the outliers per column", flags.sum().compute)
        report["columns"] = rules.outlier_report(columns, bounds, skipped, counts)
        report["removed"] = int(counts["any"])
        return train[~flags["any"]], report
    rows = _rows(train)
    share = min(1.0, FOREST_ROWS / max(rows, 1))
    sample = bounded("the isolation forest's sample", train[columns].map_partitions(
        _forest_sample, cfg.seed, share, meta=train[columns]._meta
    ).compute)  # fmt: skip
    forest, usable = rules.fit_forest(sample, columns, cfg)
    report.update(columns=usable, contamination=cfg.contamination, removed=0)
    say(f"isolation forest fitted on {len(sample)} of {rows} training rows")
    if forest is None:
        return train, report
    outlier = train.map_partitions(rules.forest_flags, forest, usable, meta=(None, bool))
    report["removed"] = int(bounded("the isolation forest's outliers", outlier.sum().compute))
    return train[~outlier], report


# --- the stage -----------------------------------------------------------------------------------


def _rows(frame: dd.DataFrame) -> int:
    return int(bounded("counting the rows", frame.map_partitions(len).sum().compute))


def clean_dask(
    ddf: dd.DataFrame, obj: config.Objectives, rows_in: int, client: Client
) -> tuple[dd.DataFrame, rules.CleanReport]:
    """:func:`mlcycle.prepare.clean` over every partition (persisted on the workers): which
    text columns become numbers is decided once, from counts over all partitions, so every
    partition agrees; the report's counts are summed over partitions."""
    import dask
    import dask.dataframe as dd

    target = obj.target
    text = rules.text_columns(ddf._meta, target)
    tallies = ddf.map_partitions(
        rules.number_counts, text, meta={"column": object, "present": "int64", "parsed": "int64"}
    )
    tallies = bounded("the numbers in the text columns", tallies.compute)
    numeric = rules.numeric_text_columns(tallies, target)
    futures = client.compute(
        [dask.delayed(rules.clean_part)(p, text, numeric, target) for p in ddf.to_delayed()]
    )
    meta, _ = rules.clean_part(ddf._meta, text, numeric, target)
    frames = client.map(operator.itemgetter(0), futures)
    tallied = client.map(operator.itemgetter(1), futures)
    counts = rules.sum_counts(
        bounded("cleaning the snapshot", functools.partial(client.gather, tallied))
    )
    cleaned = dd.from_delayed(frames, meta=meta, verify_meta=False)
    del futures
    check_target_dask(cleaned, obj)
    label_meta = _task_labels(cleaned._meta, target, obj.task)
    cleaned = cleaned.map_partitions(_task_labels, target, obj.task, meta=label_meta).persist()
    missing, rows_out = computed(
        "the cleaned rows and their missing values",
        cleaned.isna().sum(),
        cleaned.map_partitions(len).sum(),
    )
    return cleaned, rules.clean_report(counts, rows_in, int(rows_out), missing)


def _split_sides(
    cleaned: dd.DataFrame, cfg: config.PrepareConfig, obj: config.Objectives, client: Client
) -> tuple[dd.DataFrame, dd.DataFrame, int, int]:
    """:func:`split_dask`'s train and test frames without the bookkeeping and dropped
    columns, and their row counts; as the local split, no side may be empty and (for a
    classification) no class may occur in the test split only."""
    target = obj.target
    is_test, is_train, frame = split_dask(cleaned, cfg, target)
    drop = [c for c in (SOURCE_COLUMN, SPLIT_UNIT, *cfg.drop_columns) if c in frame.columns]
    train = frame[is_train].drop(columns=drop)
    test = frame[is_test].drop(columns=drop)
    n_train, n_test = (int(n) for n in computed(
        "the split's sides", train.map_partitions(len).sum(), test.map_partitions(len).sum()
    ))  # fmt: skip
    if not n_train or not n_test:
        raise PrepareError(f"split left an empty side: train={n_train}, test={n_test}")
    if tasks.get(obj.task).classification:
        seen = set(bounded("the training split's classes", train[target].drop_duplicates().compute))
        test_counts = bounded("the test split's classes", test[target].value_counts().compute)
        rules.refuse_test_only_classes(
            target, {str(k): int(v) for k, v in test_counts.items() if k not in seen}
        )
    return train, test, n_train, n_test


def prepare_dask(
    params: config.Params,
    client: Client,
    snapshot: str,
    train_path: str,
    test_path: str,
    say: Say,
) -> PreparedSplits:
    """:func:`mlcycle.prepare.run_steps` on the workers; both splits written as Parquet parts;
    the local engine's figures of every step, the target's make-up and the training split's
    profile. Every blocking call is bounded (:func:`~mlcycle.engines.dask.cluster.guarded`)."""
    ddf = read_dataset(snapshot)
    rows_in = dataset_rows(snapshot)
    with guarded(client, params.engine, rows_in, say):
        return _prepare(params, client, ddf, rows_in, train_path, test_path, say)


def _prepare(
    params: config.Params,
    client: Client,
    ddf: dd.DataFrame,
    rows_in: int,
    train_path: str,
    test_path: str,
    say: Say,
) -> PreparedSplits:
    cfg, obj = params.prepare, params.objectives
    rules.check_target_column(ddf.columns, obj.target)
    rules.check_split_columns(ddf._meta, cfg, obj.target)
    say(f"snapshot: {rows_in} rows in {ddf.npartitions} partition(s)")
    steps = rules.Steps(
        rows=_rows,
        clean=functools.partial(clean_dask, rows_in=rows_in, client=client),
        dedupe=lambda frame, columns: frame.drop_duplicates(
            subset=columns, split_out=frame.npartitions
        ).persist(),
        split=functools.partial(_split_sides, client=client),
        repeats=functools.partial(remove_training_rows, engine=params.engine, client=client),
        outliers=remove_outliers_dask,
    )
    train, test, report = rules.run_steps(ddf, cfg, obj, steps, say)
    n_test = partitions_for(report["split"]["test_rows"], params.engine)
    rows_train = write_dataset(train_path, train, say)
    rows_test = write_dataset(test_path, test.repartition(npartitions=n_test), say)
    written_train, written_test = read_dataset(train_path), read_dataset(test_path)
    summary = functools.partial(
        tasks.get(obj.task).target_summary,
        positive_class=obj.positive_class,
        compute=functools.partial(computed, "the splits' target make-up"),
    )
    return PreparedSplits(
        report=report,
        train_rows_split=report["split"]["train_rows"],
        train_rows=rows_train,
        train_target=summary(written_train[obj.target]),
        test_rows=rows_test,
        test_target=summary(written_test[obj.target]),
        profile=data_profile_dask(written_train, params.monitor.bins),
    )


# --- exact order statistics over partitions -------------------------------------------------

ORDER_BINS_LOG2 = 10  # each pass narrows a search to 1/1024 of its key range
COLLECT_ROWS = 50_000  # a search whose range holds no more rows than this fetches them
SIGN = np.uint64(1 << 63)


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


def _ask(
    frame: dd.DataFrame, extracts: dict[str, Extract], asks: list[tuple], what: str
) -> list[Any]:
    """Run ``asks`` over every partition of ``frame`` on the workers (a bounded call computing
    ``what``); merged in a tree, so the driver receives one answer per ask."""
    import dask

    items = [dask.delayed(_search_part)(p, extracts, asks) for p in frame.to_delayed()]
    return _tree(what, items, _merge_search)


def order_statistics(
    frame: dd.DataFrame,
    extracts: dict[str, Extract],
    ranks: Callable[[str, int], list[int]],
    what: str,
) -> dict[str, tuple[int, dict[int, float | int]]]:
    """Exact order statistics of values spread over partitions, without gathering them.

    ``extracts`` name a function per value set: a partition -> its values (float64 or int64,
    no missing values). ``ranks(name, n)`` says which 0-based ranks are wanted once the set's
    size ``n`` is known. Returns per name (n, {rank: value}). Each pass over the data sends back
    a 1,024-bin histogram per search over order-preserving 64-bit keys, narrowing each range by
    10 bits; a range of at most :data:`COLLECT_ROWS` rows is fetched and sorted. At most eight
    passes; the driver holds histograms and at most ``COLLECT_ROWS`` keys per search. Each
    pass is a :func:`bounded` call computing ``what``.
    """
    names = list(extracts)
    kinds: dict[str, str] = {}
    first = _ask(frame, extracts, [(n, 0, 0, -1) for n in names], what)
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
        answers = iter(_ask(frame, extracts, wanted, what) if wanted else [])
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


def _tree(what: str, items: list, combine: Callable) -> Any:
    """Combine delayed partition results eight at a time, on the workers; compute the root
    (a :func:`bounded` call computing ``what``)."""
    import dask

    while len(items) > 1:
        items = [dask.delayed(combine)(*items[i : i + 8]) for i in range(0, len(items), 8)]
    return bounded(what, items[0].compute)


def data_profile_dask(frame: dd.DataFrame, bins: int) -> dict[str, Any]:
    """:func:`mlcycle.drift.data_profile` of a partitioned data set: the profile's steps on
    every partition, reduced on the workers, and its edges from exact order statistics. The
    document is the local engine's but for the numeric ``quantiles`` of more than one
    partition (merged sketches, see :func:`mlcycle.drift.profile`). The driver holds counts and
    sketches, never the rows."""
    import dask

    parts = frame.to_delayed()

    def reduce(step: Callable[..., Any], combine: Callable[..., Any], *args: Any) -> Any:
        return _tree("the training split's profile",
                     [dask.delayed(step)(p, *args) for p in parts], combine)  # fmt: skip

    def quantiles(extracts: dict[str, Extract], qs: dict[str, np.ndarray]) -> dict[str, Any]:
        stats = order_statistics(frame, extracts, lambda name, n: quantile_ranks(n, qs[name]),
                                 what="the training split's quantiles")  # fmt: skip
        return {
            name: [linear_quantile(n, q, found) for q in qs[name]] if n else []
            for name, (n, found) in stats.items()
        }

    return data_profile(frame._meta, bins, (reduce, quantiles), frame.npartitions)

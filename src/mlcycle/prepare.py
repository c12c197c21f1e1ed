"""Cleaning, splitting and training-row removal: pure functions from the raw snapshot to the
train and test frames.

The order is fixed, and every step is counted in the report that becomes
``metrics/prepare.json``:

1. :func:`clean` works cell by cell on every row: whitespace, missing-value tokens, numbers
   read as text, and target labels (rows without one are dropped: they cannot be learnt from
   or scored).
2. For the random splits (stratified, group, time) exact duplicates are dropped *before*
   splitting, so no duplicate can land on both sides.
3. :func:`split` splits by source, stratified, by group or by time.
4. Rows are then removed from the *training* split only, so a provider's test split (Adult's
   official one) stays complete and comparable with published figures:
   :func:`remove_training_repeats` (duplicates within train, training rows whose features
   repeat a test row, feature vectors seen with both labels) and :func:`remove_outliers`. The
   test split is never filtered.

Each rule is written once, over a frame that is one partition of the data, with the reduction
that combines partitions' results: :func:`clean_part` and :func:`sum_counts`,
:func:`label_facts` and :func:`merge_label_facts`, :func:`remove_repeats` (on a partition that
holds every row of its feature keys), :func:`outlier_flags` within :func:`outlier_bounds` from
statistics of all rows, :func:`fit_forest` and :func:`forest_flags`. The order of the steps,
the report and the progress lines are :func:`run_steps`, over an engine's :class:`Steps`:
:data:`LOCAL` (:func:`prepare`) applies the rules to the whole frame as the one partition, the
Dask engine (``engines/dask/prepare.py``) partition by partition. Only the random, stratified
and group splits differ between the engines (see :func:`split`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.config import Objectives, OutliersConfig, PrepareConfig, SplitConfig
from mlcycle.constants import SOURCE_COLUMN
from mlcycle.datasets import row_hash
from mlcycle.io import value_text

# scikit-learn is imported in the two functions that use it (the split and the isolation
# forest): the validate stage imports this module's target rules (through preflight), and
# importing scikit-learn costs a process about 1.2 s of CPU (`python -X importtime`).

# Cell values read as "missing" when a source's reader did not already map them.
MISSING_TOKENS = ("", "?", "NA", "N/A", "n/a", "NaN", "nan", "NULL", "null")
# A text column becomes numeric when at least this share of its non-missing values are numbers;
# the rest become missing and are counted.
NUMERIC_SHARE = 0.95


class PrepareError(ValueError):
    """The snapshot cannot be prepared as configured; the message says why."""


@dataclass
class CleanReport:
    """What cell-level cleaning changed, for ``metrics/prepare.json``."""

    rows_in: int = 0
    rows_out: int = 0
    target_missing_dropped: int = 0
    whitespace_stripped: dict[str, int] = field(default_factory=dict)  # cells per column
    missing_tokens: dict[str, int] = field(default_factory=dict)  # cells set to missing
    coerced_to_number: dict[str, int] = field(default_factory=dict)  # text cells now numbers
    not_a_number: dict[str, int] = field(default_factory=dict)  # text cells that became missing
    missing_values: dict[str, int] = field(default_factory=dict)  # after cleaning


@dataclass
class Prepared:
    """The train and test frames and the report of every step that led to them."""

    train: pd.DataFrame
    test: pd.DataFrame
    report: dict[str, Any]


def _is_text(s: pd.Series) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(s)
        or pd.api.types.is_bool_dtype(s)
        or pd.api.types.is_datetime64_any_dtype(s)
    )


# --- cleaning, per partition ------------------------------------------------------------------
# clean() below applies these to the whole frame as one partition; the Dask engine applies
# them partition by partition and adds the counts up (sum_counts).


def label_text(values: pd.Series) -> pd.Series:
    """A column's values as text (pandas' string type, missing stays missing), the one
    spelling of class labels from the source to the service: a whole number as an integer
    (``"1"``, not ``"1.0"``) whatever missing values did to the column's type (pandas reads
    integers with a gap as floats), as the schema's ``values`` and validate spell them
    (:func:`mlcycle.io.value_text`); other numbers as Python writes them (``"0.5"``), text as
    it is, booleans ``"True"``/``"False"`` (as params.yaml's positive_class reads them). A
    column of mixed values (sources of several types unioned) is spelt value by value alike."""
    if values.dtype == object and pd.api.types.infer_dtype(values) not in ("string", "empty"):
        return values.map(_label, na_action="ignore").astype("string")
    if not pd.api.types.is_float_dtype(values):
        return values.astype("string")
    numbers = values.astype("float64")
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(numbers) & (numbers % 1 == 0) & (numbers.abs() < 2**53)
    text = numbers.astype("string")
    text[whole] = numbers[whole].astype("int64").astype("string")
    return text


def _label(value: Any) -> str:
    """One value as :func:`label_text` spells it."""
    if isinstance(value, bool | np.bool_ | str):
        return str(value)
    if isinstance(value, float | np.floating | int | np.integer):
        return value_text(value) or ""
    return str(value)


def text_columns(frame: pd.DataFrame, target: str) -> list[str]:
    """The columns cleaning works on: text columns, and the target whatever its type."""
    return [c for c in frame.columns if c != SOURCE_COLUMN and (_is_text(frame[c]) or c == target)]


def number_counts(part: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Per text column: cells present after stripping and tokens, and how many are numbers."""
    rows = []
    for col in columns:
        text = part[col].astype("string").str.strip()
        present = text[text.notna() & ~text.isin(MISSING_TOKENS)]
        parsed = int(pd.to_numeric(present, errors="coerce").notna().sum())
        rows.append((col, len(present), parsed))
    return pd.DataFrame(rows, columns=["column", "present", "parsed"])


def numeric_text_columns(counts: pd.DataFrame, target: str) -> set[str]:
    """The text columns (not the target) that become numbers: at least :data:`NUMERIC_SHARE`
    of their present cells are numbers, from :func:`number_counts` (of any partitions)."""
    sums = counts.groupby("column", sort=False)[["present", "parsed"]].sum()
    return {
        c
        for c, present, parsed in zip(sums.index, sums["present"], sums["parsed"], strict=True)
        if c != target and present and parsed / present >= NUMERIC_SHARE
    }


def clean_part(
    part: pd.DataFrame, columns: list[str], numeric: set[str], target: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Clean ``columns`` of one partition, the ``numeric`` ones becoming float64, and drop the
    rows without a target; the counts of what changed (see :class:`CleanReport`)."""
    counts: dict[str, Any] = {
        "whitespace_stripped": {},
        "missing_tokens": {},
        "coerced_to_number": {},
        "not_a_number": {},
    }
    out = part.copy()
    for col in columns:
        text = label_text(out[col]) if col == target else out[col].astype("string")
        stripped = text.str.strip()
        changed = int((stripped != text).fillna(False).sum())
        if changed:
            counts["whitespace_stripped"][col] = changed
        token = stripped.isin(MISSING_TOKENS) & stripped.notna()
        if token.any():
            counts["missing_tokens"][col] = int(token.sum())
            stripped = stripped.mask(token)
        if col in numeric:
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
    counts["target_missing_dropped"] = int((~keep).sum())
    return out.loc[keep], counts


def sum_counts(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of several partitions added up, key by key (one level of nested dicts)."""
    total: dict[str, Any] = {}
    for key, value in ((k, v) for item in items for k, v in item.items()):
        if isinstance(value, dict):
            inner = total.setdefault(key, {})
            inner.update({k: inner.get(k, 0) + v for k, v in value.items()})
        else:
            total[key] = total.get(key, 0) + value
    return total


def clean_report(
    counts: dict[str, Any], rows_in: int, rows_out: int, missing: pd.Series
) -> CleanReport:
    """The :class:`CleanReport` of :func:`clean_part`'s summed counts, the row counts and the
    cleaned data's missing cells per column."""
    report = CleanReport(rows_in=rows_in, rows_out=rows_out)
    for key in ("whitespace_stripped", "missing_tokens", "coerced_to_number", "not_a_number"):
        setattr(report, key, dict(sorted(counts.get(key, {}).items())))
    report.target_missing_dropped = counts.get("target_missing_dropped", 0)
    report.missing_values = {str(c): int(n) for c, n in missing.items() if n and c != SOURCE_COLUMN}
    return report


def check_target_column(columns: Any, target: str) -> None:
    """The target must be a column of the data."""
    if target not in columns:
        raise PrepareError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in columns if c != SOURCE_COLUMN]}"
        )


def clean(df: pd.DataFrame, objectives: Objectives) -> tuple[pd.DataFrame, CleanReport]:
    """Clean every cell and normalise the target; drop rows without a target value.

    Text cells are stripped of surrounding whitespace and :data:`MISSING_TOKENS` become
    missing; a text column whose values are (at least :data:`NUMERIC_SHARE`) numbers becomes a
    float column, its non-numbers missing. The sources' readers usually did this already; here
    it is repeated so that any source is safe, and each change is counted per column.

    The target must fit the task (see :func:`check_target`): class labels become text, a
    regression target becomes float64.
    """
    target = objectives.target
    check_target_column(df.columns, target)
    columns = text_columns(df, target)
    numeric = numeric_text_columns(number_counts(df, columns), target)
    out, counts = clean_part(df, columns, numeric, target)
    out = out.assign(**{target: check_target(out[target], objectives)})
    report = clean_report(counts, len(df), len(out), out.isna().sum())
    return out.reset_index(drop=True), report


# A classification target with more distinct numeric values than this is probably a quantity.
MAX_NUMERIC_CLASSES = 50
# What a target that is not numeric but meant as regression should become.
CLASSES_HINT = f"If it names classes, set objectives.task to {' or '.join(tasks.CLASSIFICATION)}"


def label_facts(labels: pd.Series, task: str, limit: int | None = None) -> dict[str, Any]:
    """What the target's checks need from a partition's labels: for regression the values
    that are not numbers (count and the five first examples); else its distinct labels (the
    first ``limit`` of them, sorted, if ``limit``), whether there are more, and whether all
    are numbers. Partitions' facts combine with :func:`merge_label_facts`."""
    if not tasks.get(task).classification:
        numbers = pd.to_numeric(labels, errors="coerce").astype(np.float64)
        bad = numbers.isna() | ~np.isfinite(numbers)
        examples = sorted({str(v) for v in labels[bad]})[:5]
        return {"rows": len(labels), "bad": int(bad.sum()), "examples": examples}
    distinct = sorted(label_text(labels).dropna().astype(str).unique().tolist())
    numeric = bool(pd.to_numeric(labels, errors="coerce").notna().all())
    more = limit is not None and len(distinct) > limit
    return {"labels": distinct[:limit] if more else distinct, "more": more, "numeric": numeric}


def merge_label_facts(*parts: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
    """The :func:`label_facts` of the union of partitions."""
    if "bad" in parts[0]:
        examples = sorted({e for p in parts for e in p["examples"]})[:5]
        return {"rows": sum(p["rows"] for p in parts), "bad": sum(p["bad"] for p in parts),
                "examples": examples}  # fmt: skip
    labels = sorted({label for p in parts for label in p["labels"]})
    more = any(p["more"] for p in parts) or (limit is not None and len(labels) > limit)
    return {"labels": labels[:limit] if more else labels, "more": more,
            "numeric": all(p["numeric"] for p in parts)}  # fmt: skip


def check_label_facts(facts: dict[str, Any], objectives: Objectives) -> None:
    """An error that names the target, what was found and what to change in params.yaml when
    the target's :func:`label_facts` do not fit the task (see :func:`check_target`)."""
    target, task = objectives.target, tasks.get(objectives.task)
    if not task.classification:
        if facts["bad"]:
            raise PrepareError(
                f"target {target!r} is not numeric: {facts['bad']} of {facts['rows']} values "
                f"are not numbers (e.g. {facts['examples']}); regression needs numbers. "
                f"{CLASSES_HINT}"
            )
        return
    labels = facts["labels"]
    if facts["more"]:
        hint = task.many_labels_hint(facts["numeric"])
        if hint:
            raise PrepareError(
                f"target {target!r} holds more than {len(labels)} distinct values "
                f"(e.g. {labels[:20]}); {hint}"
            )
        return
    try:
        task.check_labels(target, labels, objectives.positive_class, facts["numeric"],
                          MAX_NUMERIC_CLASSES)  # fmt: skip
    except ValueError as exc:
        raise PrepareError(str(exc)) from None


def task_labels(labels: pd.Series, task: str) -> pd.Series:
    """The target as the task needs it (checked already): float64 numbers or text labels."""
    if not tasks.get(task).classification:
        return pd.to_numeric(labels, errors="coerce").astype(np.float64)
    return label_text(labels).astype(str)


def check_target(labels: pd.Series, objectives: Objectives) -> pd.Series:
    """The target's values as the task needs them, or an error that names the column, what
    was found and what to change in params.yaml.

    Regression: numbers (float64); text that is not a number is refused. Binary: exactly two
    labels, one of them ``positive_class``. Multiclass: at least two labels; a numeric target
    with very many distinct values is refused as probably a regression target.
    """
    check_label_facts(label_facts(labels, objectives.task), objectives)
    return task_labels(labels, objectives.task)


def refuse_test_only_classes(target: str, counts: dict[str, int]) -> None:
    """Classification: every class of the test split must occur in the training split; a
    model cannot predict a class it never saw, and its test score would be meaningless. The
    error for classes (``counts``: rows per class) that occur in the test split only."""
    if counts:
        raise PrepareError(
            f"target {target!r}: class(es) {sorted(counts)} occur only in the test split "
            f"({counts} rows) and never in training, so the model cannot learn them. Gather "
            "training rows of them, drop or merge them, or change prepare.split"
        )


# --- duplicates and conflicting labels -----------------------------------------------------

FEATURES_KEY = "__features_hash"


def features_key(frame: pd.DataFrame, features: list[str]) -> pd.Series:
    """A 64-bit hash of each row's ``features`` (missing values hash alike): equal feature
    vectors, and only they (to one chance in 2**64), share a key on any engine."""
    return row_hash(frame[features], 0, "features")


def model_columns(df: pd.DataFrame, cfg: PrepareConfig) -> list[str]:
    """The columns the model will see (features and target): all but bookkeeping and drops."""
    return [c for c in df.columns if c != SOURCE_COLUMN and c not in cfg.drop_columns]


def dedupe(df: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """Drop rows whose ``columns`` repeat an earlier row exactly; return the rest and the count."""
    dup = df.duplicated(subset=columns, keep="first")
    return df.loc[~dup], int(dup.sum())


def remove_repeats(
    train: pd.DataFrame, test_keys: pd.Series, target: str, duplicates: bool, conflicts: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Training rows without repeats, from a partition that holds every row of its feature
    keys (the :data:`FEATURES_KEY` column, kept) and the test split's keys of the same range.

    ``duplicates``: exact duplicates go (the first stays), then every row whose features
    repeat a test row, so the test split measures unseen rows. ``conflicts``: every row whose
    feature vector also appears with another label goes (label noise the model cannot fit;
    which label is right is unknown). Returns the rest and the counts."""
    counts = {"duplicates": 0, "matching_test": 0, "conflicting_labels": 0}
    if duplicates:
        train, counts["duplicates"] = dedupe(train, [c for c in train.columns if c != FEATURES_KEY])
        in_test = train[FEATURES_KEY].isin(set(test_keys.tolist())).to_numpy()
        counts["matching_test"] = int(in_test.sum())
        train = train.loc[~in_test]
    if conflicts:
        labels = train.groupby(FEATURES_KEY)[target].nunique()
        bad = train[FEATURES_KEY].isin(labels.index[labels > 1]).to_numpy()
        counts["conflicting_labels"] = int(bad.sum())
        train = train.loc[~bad]
    return train, counts


def remove_training_repeats(
    train: pd.DataFrame, test: pd.DataFrame, target: str, duplicates: bool, conflicts: bool
) -> tuple[pd.DataFrame, dict[str, int]]:
    """:func:`remove_repeats` on whole splits (one partition): afterwards, with
    ``duplicates``, no feature vector is on both sides, so the test split measures unseen
    rows. The test split itself is not changed; asked for nothing, neither is ``train``."""
    if not (duplicates or conflicts):
        return train, {}
    features = [c for c in train.columns if c != target]
    keyed = train.assign(**{FEATURES_KEY: features_key(train, features)})
    out, counts = remove_repeats(keyed, features_key(test, features), target, duplicates, conflicts)
    return out.drop(columns=FEATURES_KEY), counts


# --- outliers -------------------------------------------------------------------------------


def outlier_columns(frame: pd.DataFrame, cfg: OutliersConfig, target: str) -> list[str]:
    """The numeric columns to check: those listed, or every numeric column but the target."""
    if not cfg.columns:
        return [
            str(c)
            for c in frame.columns
            if c != target
            and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])
        ]
    for col in cfg.columns:
        if col not in frame.columns:
            raise PrepareError(
                f"prepare.outliers.columns names {col!r}, which is not a column of the "
                f"training split; columns are {[c for c in frame.columns if c != target]}"
            )
        if not pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col]):
            raise PrepareError(
                f"prepare.outliers.columns names {col!r}, which is not numeric "
                f"(dtype {frame[col].dtype})"
            )
    return list(cfg.columns)


def outlier_bounds(
    cfg: OutliersConfig, columns: list[str], stats: dict[str, tuple[float, float]]
) -> tuple[dict[str, tuple[float, float]], dict[str, Any]]:
    """Each column's (lower, upper) bound from its ``stats``: (first, third quartile) for
    ``iqr``, (mean, standard deviation) for ``zscore``; a column without stats has no values.
    Returns the bounds and the report entries of the columns skipped (no values, or a zero
    IQR or standard deviation)."""
    bounds: dict[str, tuple[float, float]] = {}
    skipped: dict[str, Any] = {}
    for col in columns:
        if col not in stats:
            skipped[col] = {"skipped": "no values"}
            continue
        a, b = stats[col]
        if cfg.method == "iqr":
            spread, low, high = b - a, a - cfg.iqr_k * (b - a), b + cfg.iqr_k * (b - a)
        else:
            spread, low, high = b, a - cfg.zscore * b, a + cfg.zscore * b
        if spread == 0.0:
            reason = "zero IQR" if cfg.method == "iqr" else "zero standard deviation"
            skipped[col] = {"skipped": reason}
        else:
            bounds[col] = (low, high)
    return bounds, skipped


def outlier_flags(part: pd.DataFrame, bounds: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Per bounded column, whether each row's value is outside its bounds (missing values
    never are), and ``any``: whether any of them is."""
    out = pd.DataFrame(index=part.index)
    for col, (low, high) in bounds.items():
        v = part[col].astype("float64")
        out[col] = ((v < low) | (v > high)).fillna(False).astype(bool)
    out["any"] = out.any(axis=1) if bounds else False
    return out


def outlier_report(
    columns: list[str],
    bounds: dict[str, tuple[float, float]],
    skipped: dict[str, Any],
    flagged: pd.Series,
) -> dict[str, Any]:
    """The per-column report: skipped, or rows removed (``flagged``, summed
    :func:`outlier_flags`) and the bounds."""
    report = dict(skipped)
    for col, (low, high) in bounds.items():
        report[col] = {
            "removed": int(flagged[col]),
            "lower": round(low, 6),
            "upper": round(high, 6),
        }
    return {col: report[col] for col in columns}


def fit_forest(rows: pd.DataFrame, columns: list[str], cfg: OutliersConfig) -> tuple[Any, list]:
    """A seeded isolation forest fitted on ``rows`` over the ``columns`` that hold a value
    (None when none does or there are fewer than two rows), and those columns."""
    usable = [c for c in columns if rows[c].notna().any()]
    if not usable or len(rows) < 2:
        return None, usable
    from sklearn.ensemble import IsolationForest  # here: see the imports

    forest = IsolationForest(contamination=cfg.contamination, random_state=cfg.seed)
    return forest.fit(rows[usable].astype("float64").to_numpy()), usable


def forest_flags(part: pd.DataFrame, forest: Any, usable: list[str]) -> pd.Series:
    """Whether ``forest`` finds each row of ``part`` an outlier."""
    flagged = forest.predict(part[usable].astype("float64").to_numpy()) == -1
    return pd.Series(flagged, index=part.index)


def _outlier_stats(
    train: pd.DataFrame, columns: list[str], method: str
) -> dict[str, tuple[float, float]]:
    """:func:`outlier_bounds`' statistics of whole columns: quartiles or mean and std."""
    stats: dict[str, tuple[float, float]] = {}
    for col in columns:
        v = train[col].astype("float64").dropna()
        if not v.empty:
            a, b = v.quantile([0.25, 0.75]) if method == "iqr" else (v.mean(), v.std(ddof=0))
            stats[col] = (float(a), float(b))
    return stats


def outlier_mask(
    train: pd.DataFrame, cfg: OutliersConfig, target: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which training rows are outliers under ``cfg``, and a report of why.

    ``iqr``: a value more than ``iqr_k`` interquartile ranges below the first or above the
    third quartile. ``zscore``: a value more than ``zscore`` standard deviations from the mean.
    Both are per column; a column whose IQR (or standard deviation) is zero is skipped, since
    every value off its mode would otherwise be an outlier (Adult's capital-gain is 0 for 92 %
    of rows). ``isolation_forest``: scikit-learn's IsolationForest over all the columns at
    once, seeded, flagging the ``contamination`` share of rows. Missing values are never
    outliers.
    """
    report: dict[str, Any] = {"method": cfg.method}
    mask = np.zeros(len(train), dtype=bool)
    if cfg.method == "none":
        return mask, report
    columns = outlier_columns(train, cfg, target)
    if cfg.method in ("iqr", "zscore"):
        bounds, skipped = outlier_bounds(cfg, columns, _outlier_stats(train, columns, cfg.method))
        flags = outlier_flags(train, bounds)
        report["columns"] = outlier_report(columns, bounds, skipped, flags.sum())
        return flags["any"].to_numpy(dtype=bool), report
    forest, usable = fit_forest(train, columns, cfg)
    report.update(columns=usable, contamination=cfg.contamination)
    if forest is not None:
        mask = forest_flags(train, forest, usable).to_numpy(dtype=bool)
    return mask, report


def remove_outliers(
    train: pd.DataFrame, cfg: OutliersConfig, target: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Drop the training rows :func:`outlier_mask` flags; the report counts them."""
    mask, report = outlier_mask(train, cfg, target)
    report["removed"] = int(mask.sum())
    return train.loc[~mask], report


# --- split ----------------------------------------------------------------------------------


def check_split_columns(df: pd.DataFrame, cfg: PrepareConfig, target: str) -> None:
    """The columns ``prepare`` names (drops, group and time columns) must be in the data."""
    unknown_drop = sorted(set(cfg.drop_columns) - set(df.columns))
    if unknown_drop:
        raise PrepareError(f"prepare.drop_columns names unknown column(s) {unknown_drop}")
    if target in cfg.drop_columns:
        raise PrepareError(f"prepare.drop_columns must not drop the target {target!r}")
    s = cfg.split
    for key, col in (("group_column", s.group_column), ("time_column", s.time_column)):
        needed = s.method == key.split("_")[0]
        if needed and col not in df.columns:
            raise PrepareError(
                f"prepare.split.{key} {col!r} is not a column of the data; columns are "
                f"{[c for c in df.columns if c != SOURCE_COLUMN]}"
            )


def check_sources(present: set[str], s: SplitConfig) -> None:
    """A ``by_source`` split must place every source of the snapshot on a side."""
    unknown = present - set(s.train_sources) - set(s.test_sources)
    if unknown:
        raise PrepareError(
            f"sources {sorted(unknown)} are in the snapshot but neither in "
            "prepare.split.train_sources nor test_sources"
        )


def time_values(part: pd.DataFrame, column: str) -> np.ndarray:
    """Sortable times of a partition (no missing values): integers, floats, or nanoseconds
    since the epoch for datetimes and dates given as text."""
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


def time_cut_rank(n: int, test_size: float) -> int:
    """The rank (0-based) of the earliest test row's time in a time split of ``n`` rows."""
    return n - max(1, math.ceil(n * test_size))


def group_test_mask(groups: pd.Series, test_size: float, seed: int) -> np.ndarray:
    """Which rows go to test when whole groups are drawn at random (seeded).

    Groups are visited in a seeded random order; each joins the test split if that brings its
    row count closer to ``test_size`` of all rows, so the share is of rows (as for the other
    methods), not of groups, and one huge group cannot swallow the test split. Missing values
    form one group.
    """
    keys = groups.astype("string").fillna("<missing>")
    sizes = keys.value_counts().sort_index()
    if len(sizes) < 2:
        raise PrepareError(f"prepare.split.group_column {groups.name!r} has fewer than two groups")
    target = test_size * len(keys)
    order = np.random.default_rng(seed).permutation(len(sizes))
    chosen, count = [], 0
    for i in order:
        size = int(sizes.iloc[i])
        if abs(count + size - target) < abs(count - target):
            chosen.append(sizes.index[i])
            count += size
    return keys.isin(chosen).to_numpy()


def split(df: pd.DataFrame, cfg: PrepareConfig, target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into train and test, and drop the bookkeeping and excluded columns.

    ``by_source`` keeps a provider's official split (Adult's data/test files). The others
    re-split with ``test_size`` (a share of rows): ``random`` draws rows at random (seeded);
    ``stratified`` does so keeping the class balance (classification); ``group`` draws whole
    groups of ``group_column`` (seeded, see :func:`group_test_mask`), so all rows of a group
    are on one side; ``time`` puts the latest rows by ``time_column`` in the test split, with
    rows of the boundary time all in test, so every training row is older than every test row.
    Rows keep their order within each side.

    ``random``, ``stratified`` and ``group`` draw over the whole frame here (scikit-learn's
    ``train_test_split``, a seeded order of the groups); the Dask engine draws by a seeded
    hash of each row instead, which needs no rows in one place and ignores partitioning.
    Either way of drawing on the other engine would change that engine's splits.
    """
    s = cfg.split
    check_split_columns(df, cfg, target)
    if s.method == "by_source":
        check_sources(set(df[SOURCE_COLUMN].unique()), s)
        train = df[df[SOURCE_COLUMN].isin(s.train_sources)]
        test = df[df[SOURCE_COLUMN].isin(s.test_sources)]
    elif s.method in ("stratified", "random"):
        stratify = df[target] if s.method == "stratified" else None
        if stratify is not None:
            counts = stratify.value_counts()
            rare = counts[counts < 2]
            if len(rare):
                raise PrepareError(
                    f"target {target!r}: class(es) {rare.to_dict()} have a single row; a "
                    "stratified split needs at least two rows per class. Drop or merge them, "
                    "or gather more"
                )
        from sklearn.model_selection import train_test_split  # here: see the imports

        train, test = train_test_split(
            df, test_size=s.test_size, random_state=s.seed, stratify=stratify
        )
        train, test = train.sort_index(), test.sort_index()
    elif s.method == "group":
        is_test = group_test_mask(df[s.group_column], s.test_size, s.seed)
        train, test = df.loc[~is_test], df.loc[is_test]
    elif s.method == "time":
        missing = df[s.time_column].isna()
        if missing.any():
            raise PrepareError(
                f"prepare.split.time_column {s.time_column!r} is missing in {int(missing.sum())} "
                f"row(s) (e.g. rows {df.index[missing][:5].tolist()}); a time split needs a "
                "time for every row"
            )
        when = time_values(df, s.time_column)
        is_test = when >= np.sort(when)[time_cut_rank(len(df), s.test_size)]
        train, test = df.loc[~is_test], df.loc[is_test]
    else:
        raise PrepareError(f"prepare.split.method {s.method!r} is not supported")
    if train.empty or test.empty:
        raise PrepareError(f"split left an empty side: train={len(train)}, test={len(test)}")
    drop = [SOURCE_COLUMN, *[c for c in cfg.drop_columns if c in df.columns]]
    return (
        train.drop(columns=drop).reset_index(drop=True),
        test.drop(columns=drop).reset_index(drop=True),
    )


# --- the whole preparation ------------------------------------------------------------------


@dataclass(frozen=True)
class Steps:
    """How an engine runs each step of :func:`run_steps` on its data: whole pandas frames
    (:data:`LOCAL`), or partitioned ones (the Dask engine's). ``split`` also returns both
    sides' rows; ``repeats`` is given the training rows and removes nothing when asked for
    nothing."""

    rows: Callable[[Any], int]
    clean: Callable[[Any, Objectives], tuple[Any, CleanReport]]
    dedupe: Callable[[Any, list[str]], Any]
    split: Callable[[Any, PrepareConfig, Objectives], tuple[Any, Any, int, int]]
    repeats: Callable[[Any, Any, str, bool, bool, int], tuple[Any, dict[str, int]]]
    outliers: Callable[[Any, OutliersConfig, str, Callable[[str], None]], tuple[Any, dict]]


def run_steps(
    snapshot: Any, cfg: PrepareConfig, objectives: Objectives, steps: Steps, say: Callable
) -> tuple[Any, Any, dict[str, Any]]:
    """Clean, split, and remove duplicates, conflicting labels and outliers from train only,
    each step run by ``steps``; ``say`` receives one line per step. Returns the train and
    test splits and the report of what every step did."""
    target = objectives.target
    cleaned, clean_report = steps.clean(snapshot, objectives)
    say(f"cleaned {clean_report.rows_in} rows; {clean_report.target_missing_dropped} unlabelled")
    report: dict[str, Any] = {"clean": asdict(clean_report)}

    split_report: dict[str, Any] = {"method": cfg.split.method}
    if cfg.split.method != "by_source" and cfg.clean.drop_duplicates:
        check_split_columns(cleaned, cfg, target)
        cleaned = steps.dedupe(cleaned, model_columns(cleaned, cfg))
        n = clean_report.rows_out - steps.rows(cleaned)
        split_report["duplicates_dropped_before_split"] = n
        say(f"dropped {n} duplicate rows before the {cfg.split.method} split")
    train, test, n_train, n_test = steps.split(cleaned, cfg, objectives)
    del cleaned  # a Dask hash split holds its own copy on the workers
    split_report.update(train_rows=n_train, test_rows=n_test)
    report["split"] = split_report
    say(f"{cfg.split.method} split: train {n_train} rows, test {n_test} rows")

    # A regression target varies for the same features by nature: no "conflicting labels".
    duplicates = cfg.clean.drop_duplicates
    conflicts = cfg.clean.drop_conflicting_labels and tasks.get(objectives.task).classification
    train, counts = steps.repeats(train, test, target, duplicates, conflicts, n_train)
    removed: dict[str, Any] = {}
    if duplicates:
        removed.update(duplicates=counts["duplicates"], matching_test=counts["matching_test"])
        say(f"train: dropped {counts['duplicates']} duplicates and {counts['matching_test']} "
            "rows repeating a test row's features")  # fmt: skip
    if conflicts:
        removed["conflicting_labels"] = counts["conflicting_labels"]
        say(f"train: dropped {counts['conflicting_labels']} rows whose features appear with "
            "both labels")  # fmt: skip
    train, outliers = steps.outliers(train, cfg.outliers, target, say)
    removed["outliers"] = outliers["removed"]
    if cfg.outliers.method != "none":
        say(f"train: dropped {outliers['removed']} outliers ({cfg.outliers.method})")
    report["train_removed"] = removed
    report["outliers"] = outliers
    return train, test, report


def _split_checked(
    df: pd.DataFrame, cfg: PrepareConfig, objectives: Objectives
) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    train, test = split(df, cfg, objectives.target)
    if tasks.get(objectives.task).classification:  # a class never seen cannot be predicted
        target = objectives.target
        only_test = test[target][~test[target].isin(set(train[target].unique()))]
        refuse_test_only_classes(target, only_test.value_counts().to_dict())
    return train, test, len(train), len(test)


LOCAL = Steps(
    rows=len,
    clean=clean,
    dedupe=lambda frame, columns: dedupe(frame, columns)[0],
    split=_split_checked,
    repeats=lambda train, test, target, duplicates, conflicts, _rows: remove_training_repeats(
        train, test, target, duplicates, conflicts
    ),
    outliers=lambda train, cfg, target, _say: remove_outliers(train, cfg, target),
)


def prepare(
    snapshot: pd.DataFrame,
    cfg: PrepareConfig,
    objectives: Objectives,
    progress: Callable[[str], None] | None = None,
) -> Prepared:
    """:func:`run_steps` on the whole frame (the local engine). ``progress`` receives one line
    per step."""
    say = progress or (lambda _msg: None)
    train, test, report = run_steps(snapshot, cfg, objectives, LOCAL, say)
    return Prepared(train.reset_index(drop=True), test.reset_index(drop=True), report)

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
   :func:`drop_duplicates` (within train, and training rows whose features repeat a test row),
   :func:`drop_conflicting_labels` (feature vectors seen with both labels) and
   :func:`remove_outliers`. The test split is never filtered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.config import Objectives, OutliersConfig, PrepareConfig
from mlcycle.constants import SOURCE_COLUMN

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


def _clean_text(s: pd.Series, name: str, report: CleanReport, coerce: bool) -> pd.Series:
    """Strip, map missing tokens to missing, and turn a column of numbers-as-text into numbers."""
    text = s.astype("string")
    stripped = text.str.strip()
    changed = int((stripped != text).fillna(False).sum())
    if changed:
        report.whitespace_stripped[name] = changed
    token = stripped.isin(MISSING_TOKENS) & stripped.notna()
    if token.any():
        report.missing_tokens[name] = int(token.sum())
        stripped = stripped.mask(token)
    present = stripped.dropna()
    if coerce and len(present):
        numbers = pd.to_numeric(present, errors="coerce")
        parsed = numbers.notna()
        if parsed.mean() >= NUMERIC_SHARE:
            report.coerced_to_number[name] = int(parsed.sum())
            if not parsed.all():
                report.not_a_number[name] = int((~parsed).sum())
            values = pd.to_numeric(stripped, errors="coerce")
            return pd.Series(
                values.to_numpy(dtype="float64", na_value=np.nan), index=s.index, name=s.name
            )
    return stripped


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
    if target not in df.columns:
        raise PrepareError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in df.columns if c != SOURCE_COLUMN]}"
        )
    report = CleanReport(rows_in=len(df))
    out = df.copy()
    for col in out.columns:
        if col != SOURCE_COLUMN and (_is_text(out[col]) or col == target):
            out[col] = _clean_text(out[col], str(col), report, coerce=col != target)
    labels = out[target]
    keep = labels.notna()
    report.target_missing_dropped = int((~keep).sum())
    out = out.loc[keep].copy()
    out[target] = check_target(labels[keep], objectives)
    report.rows_out = len(out)
    report.missing_values = {
        str(c): int(n) for c, n in out.isna().sum().items() if n and c != SOURCE_COLUMN
    }
    return out.reset_index(drop=True), report


# A classification target with more distinct numeric values than this is probably a quantity.
MAX_NUMERIC_CLASSES = 50
# What a target that is not numeric but meant as regression should become.
CLASSES_HINT = f"If it names classes, set objectives.task to {' or '.join(tasks.CLASSIFICATION)}"


def check_target(labels: pd.Series, objectives: Objectives) -> pd.Series:
    """The target's values as the task needs them, or an error that names the column, what
    was found and what to change in params.yaml.

    Regression: numbers (float64); text that is not a number is refused. Binary: exactly two
    labels, one of them ``positive_class``. Multiclass: at least two labels; a numeric target
    with very many distinct values is refused as probably a regression target.
    """
    target, task = objectives.target, tasks.get(objectives.task)
    if not task.classification:
        numbers = pd.to_numeric(labels, errors="coerce")
        bad = numbers.isna() | ~np.isfinite(numbers.astype(np.float64))
        if bad.any():
            examples = sorted({str(v) for v in labels[bad]})[:5]
            raise PrepareError(
                f"target {target!r} is not numeric: {int(bad.sum())} of {len(labels)} values "
                f"are not numbers (e.g. {examples}); regression needs numbers. {CLASSES_HINT}"
            )
        return numbers.astype(np.float64)
    text = labels.astype(str)
    classes = sorted(text.unique())
    numeric = bool(pd.to_numeric(labels, errors="coerce").notna().all())
    try:
        task.check_labels(target, classes, objectives.positive_class, numeric, MAX_NUMERIC_CLASSES)
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    return text


def check_classes(train: pd.DataFrame, test: pd.DataFrame, objectives: Objectives) -> None:
    """Classification: every class of the test split must occur in the training split; a
    model cannot predict a class it never saw, and its test score would be meaningless."""
    if not tasks.get(objectives.task).classification:
        return
    target = objectives.target
    seen = set(train[target].unique())
    only_test = test[target][~test[target].isin(seen)]
    if len(only_test):
        counts = only_test.value_counts().to_dict()
        raise PrepareError(
            f"target {target!r}: class(es) {sorted(counts)} occur only in the test split "
            f"({counts} rows) and never in training, so the model cannot learn them. Gather "
            "training rows of them, drop or merge them, or change prepare.split"
        )


# --- duplicates and conflicting labels -----------------------------------------------------


def row_keys(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """A 64-bit hash of each row's values in ``columns`` (missing values hash alike)."""
    return pd.util.hash_pandas_object(frame[columns], index=False)


def model_columns(df: pd.DataFrame, cfg: PrepareConfig) -> list[str]:
    """The columns the model will see (features and target): all but bookkeeping and drops."""
    return [c for c in df.columns if c != SOURCE_COLUMN and c not in cfg.drop_columns]


def dedupe(df: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """Drop rows whose ``columns`` repeat an earlier row exactly; return the rest and the count."""
    dup = df.duplicated(subset=columns, keep="first")
    return df.loc[~dup], int(dup.sum())


def drop_duplicates(
    train: pd.DataFrame, test: pd.DataFrame, target: str
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Remove from ``train`` its exact duplicates and every row whose features repeat a test row.

    Afterwards no feature vector is on both sides, so the test split measures unseen rows. The
    test split itself is not changed.
    """
    columns = list(train.columns)
    out, within = dedupe(train, columns)
    features = [c for c in columns if c != target]
    seen_in_test = set(row_keys(test, features).tolist())
    in_test = row_keys(out, features).isin(seen_in_test).to_numpy()
    return out.loc[~in_test], {"within_train": within, "matching_test": int(in_test.sum())}


def drop_conflicting_labels(train: pd.DataFrame, target: str) -> tuple[pd.DataFrame, int]:
    """Remove training rows whose feature vector also appears with the other label.

    Such rows are label noise the model cannot fit; all rows of a conflicting feature vector
    go, since which label is right is unknown.
    """
    features = [c for c in train.columns if c != target]
    keys = row_keys(train, features)
    labels_per_key = train[target].groupby(keys.to_numpy()).nunique()
    conflicting = labels_per_key.index[labels_per_key > 1]
    bad = keys.isin(conflicting).to_numpy()
    return train.loc[~bad], int(bad.sum())


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
        per_column: dict[str, Any] = {}
        for col in columns:
            values = train[col].astype("float64")
            present = values.dropna()
            if present.empty:
                per_column[col] = {"skipped": "no values"}
                continue
            if cfg.method == "iqr":
                q1, q3 = (float(v) for v in present.quantile([0.25, 0.75]))
                spread, low, high = q3 - q1, q1 - cfg.iqr_k * (q3 - q1), q3 + cfg.iqr_k * (q3 - q1)
                reason = "zero IQR"
            else:
                mean, std = float(present.mean()), float(present.std(ddof=0))
                spread = std
                low, high = mean - cfg.zscore * std, mean + cfg.zscore * std
                reason = "zero standard deviation"
            if spread == 0.0:
                per_column[col] = {"skipped": reason}
                continue
            flagged = ((values < low) | (values > high)).fillna(False).to_numpy(dtype=bool)
            mask |= flagged
            per_column[col] = {
                "removed": int(flagged.sum()),
                "lower": round(low, 6),
                "upper": round(high, 6),
            }
        report["columns"] = per_column
    else:  # isolation_forest
        usable = [c for c in columns if train[c].notna().any()]
        report["columns"] = usable
        if usable and len(train) > 1:
            from sklearn.ensemble import IsolationForest  # here: see the imports

            forest = IsolationForest(contamination=cfg.contamination, random_state=cfg.seed)
            X = train[usable].astype("float64").to_numpy()
            mask = forest.fit_predict(X) == -1
        report["contamination"] = cfg.contamination
    return mask, report


def remove_outliers(
    train: pd.DataFrame, cfg: OutliersConfig, target: str
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Drop the training rows :func:`outlier_mask` flags; the report counts them."""
    mask, report = outlier_mask(train, cfg, target)
    report["removed"] = int(mask.sum())
    return train.loc[~mask], report


# --- split ----------------------------------------------------------------------------------


def _check_columns(df: pd.DataFrame, cfg: PrepareConfig, target: str) -> None:
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


def _time_order(values: pd.Series, column: str) -> pd.Series:
    """Sortable times: numbers and datetimes as they are, text parsed as dates."""
    if values.isna().any():
        rows = values.index[values.isna()][:5].tolist()
        raise PrepareError(
            f"prepare.split.time_column {column!r} is missing in {int(values.isna().sum())} "
            f"row(s) (e.g. rows {rows}); a time split needs a time for every row"
        )
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    try:
        return pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        raise PrepareError(
            f"prepare.split.time_column {column!r} holds values that are neither numbers nor "
            f"dates: {exc}"
        ) from exc


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
    """
    s = cfg.split
    _check_columns(df, cfg, target)
    if s.method == "by_source":
        unknown = set(df[SOURCE_COLUMN].unique()) - set(s.train_sources) - set(s.test_sources)
        if unknown:
            raise PrepareError(
                f"sources {sorted(unknown)} are in the snapshot but neither in "
                "prepare.split.train_sources nor test_sources"
            )
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
        when = _time_order(df[s.time_column], s.time_column)
        ordered = when.sort_values(kind="stable")
        n_test = max(1, int(np.ceil(len(df) * s.test_size)))
        boundary = ordered.iloc[len(df) - n_test]
        is_test = (when >= boundary).to_numpy()
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


def prepare(
    snapshot: pd.DataFrame,
    cfg: PrepareConfig,
    objectives: Objectives,
    progress: Callable[[str], None] | None = None,
) -> Prepared:
    """Clean, split, and remove duplicates, conflicting labels and outliers from train only.

    ``progress`` receives one line per step. The report counts what every step did.
    """
    say = progress or (lambda _msg: None)
    target = objectives.target
    cleaned, clean_report = clean(snapshot, objectives)
    say(f"cleaned {clean_report.rows_in} rows; {clean_report.target_missing_dropped} unlabelled")
    report: dict[str, Any] = {"clean": asdict(clean_report)}

    split_report: dict[str, Any] = {"method": cfg.split.method}
    if cfg.split.method != "by_source" and cfg.clean.drop_duplicates:
        _check_columns(cleaned, cfg, target)
        cleaned, n = dedupe(cleaned, model_columns(cleaned, cfg))
        split_report["duplicates_dropped_before_split"] = n
        say(f"dropped {n} duplicate rows before the {cfg.split.method} split")
    train, test = split(cleaned, cfg, target)
    check_classes(train, test, objectives)
    split_report.update(train_rows=len(train), test_rows=len(test))
    report["split"] = split_report
    say(f"{cfg.split.method} split: train {len(train)} rows, test {len(test)} rows")

    removed: dict[str, Any] = {}
    if cfg.clean.drop_duplicates:
        train, counts = drop_duplicates(train, test, target)
        removed["duplicates"] = counts["within_train"]
        removed["matching_test"] = counts["matching_test"]
        say(
            f"train: dropped {counts['within_train']} duplicates and {counts['matching_test']} "
            "rows repeating a test row's features"
        )
    # A regression target varies for the same features by nature: no "conflicting labels".
    if cfg.clean.drop_conflicting_labels and tasks.get(objectives.task).classification:
        train, n = drop_conflicting_labels(train, target)
        removed["conflicting_labels"] = n
        say(f"train: dropped {n} rows whose features appear with both labels")
    train, outliers = remove_outliers(train, cfg.outliers, target)
    removed["outliers"] = outliers["removed"]
    if cfg.outliers.method != "none":
        say(f"train: dropped {outliers['removed']} outliers ({cfg.outliers.method})")
    report["train_removed"] = removed
    report["outliers"] = outliers
    return Prepared(train.reset_index(drop=True), test.reset_index(drop=True), report)

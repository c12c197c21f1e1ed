"""Cleaning and splitting: pure functions from the raw snapshot to train and test frames."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
from sklearn.model_selection import train_test_split

from mlcycle.config import Objectives, PrepareConfig
from mlcycle.sources import SOURCE_COLUMN


class PrepareError(ValueError):
    """The snapshot cannot be prepared as configured; the message says why."""


@dataclass
class CleanReport:
    """What cleaning changed, for ``metrics/prepare.json``."""

    rows_in: int = 0
    rows_out: int = 0
    target_missing_dropped: int = 0
    missing_values: dict[str, int] = field(default_factory=dict)


def clean(df: pd.DataFrame, objectives: Objectives) -> tuple[pd.DataFrame, CleanReport]:
    """Normalise the target labels and drop rows without one.

    Whitespace, missing-value tokens and label spellings were handled when the sources were
    read; the target must have exactly two classes, one of them the objectives' positive class.
    """
    target = objectives.target
    if target not in df.columns:
        raise PrepareError(
            f"objectives.target {target!r} is not a column of the data; columns are "
            f"{[c for c in df.columns if c != SOURCE_COLUMN]}"
        )
    report = CleanReport(rows_in=len(df))
    labels = df[target].astype("string").str.strip()
    keep = labels.notna() & (labels != "")
    report.target_missing_dropped = int((~keep).sum())
    out = df.loc[keep].copy()
    out[target] = labels[keep].astype(str)
    classes = sorted(out[target].unique())
    if objectives.positive_class not in classes:
        raise PrepareError(
            f"objectives.positive_class {objectives.positive_class!r} never occurs in target "
            f"{target!r}; its values are {classes[:20]}"
        )
    if len(classes) != 2:
        raise PrepareError(
            f"target {target!r} must have exactly two classes for binary classification; "
            f"found {len(classes)}: {classes[:20]}"
        )
    report.rows_out = len(out)
    report.missing_values = {
        str(c): int(n) for c, n in out.isna().sum().items() if n and c != SOURCE_COLUMN
    }
    return out.reset_index(drop=True), report


def split(df: pd.DataFrame, cfg: PrepareConfig, target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split into train and test, and drop the bookkeeping and excluded columns.

    ``by_source`` keeps a provider's official split (Adult's data/test files); ``stratified``
    re-splits with a seed, keeping the class balance equal on both sides.
    """
    s = cfg.split
    if s.method == "by_source":
        unknown = set(df[SOURCE_COLUMN].unique()) - set(s.train_sources) - set(s.test_sources)
        if unknown:
            raise PrepareError(
                f"sources {sorted(unknown)} are in the snapshot but neither in "
                "prepare.split.train_sources nor test_sources"
            )
        train = df[df[SOURCE_COLUMN].isin(s.train_sources)]
        test = df[df[SOURCE_COLUMN].isin(s.test_sources)]
    else:
        train, test = train_test_split(
            df, test_size=s.test_size, random_state=s.seed, stratify=df[target]
        )
        train, test = train.sort_index(), test.sort_index()
    if train.empty or test.empty:
        raise PrepareError(f"split left an empty side: train={len(train)}, test={len(test)}")
    drop = [SOURCE_COLUMN, *[c for c in cfg.drop_columns if c in df.columns]]
    unknown_drop = sorted(set(cfg.drop_columns) - set(df.columns))
    if unknown_drop:
        raise PrepareError(f"prepare.drop_columns names unknown column(s) {unknown_drop}")
    if target in cfg.drop_columns:
        raise PrepareError(f"prepare.drop_columns must not drop the target {target!r}")
    return (
        train.drop(columns=drop).reset_index(drop=True),
        test.drop(columns=drop).reset_index(drop=True),
    )

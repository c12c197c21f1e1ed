"""Leak and proxy warnings: feature columns that alone nearly determine the target, or one of its
classes, each with the figures that say so.

A column that tells the answer on its own is most often one recorded with or after the outcome
(a status set when the order was refunded, a code given only to fraud cases, the target again
under another name): the model learns it, scores brilliantly on the test split cut from the same
table, and fails on new rows where the column is not known yet. Nothing downstream says so: the
column is simply the top feature. :func:`leak_warnings` is the one check, run by ``mlcycle init``
on the data it drafts from and by ``validate`` on the snapshot (on Dask, on the sample the
settings check uses); the model card lists the flagged columns that are still features.

The check is a single-feature model, cross-validated: the column's values are put in bins (its
levels, or quantile bins of a number with many values, missing values a bin of their own), and
each row gets the target's mean in its bin over the *other* folds. For classification that
score is judged per class, one against the rest, by ROC AUC (so a class of 3 % of the rows is
judged as well as the majority); for regression by the share of the target's variance it
explains (R²). Out of fold, a level seen in one row scores nothing, so identifiers and rare
levels never pass for a leak. Identifiers and free text are kept out of the features by ``init``
already (:mod:`mlcycle.schema.roles`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlcycle.prepare import NUMERIC_SHARE
from mlcycle.schema import BOOKKEEPING_COLUMNS
from mlcycle.schema.values import parse_numbers, stripped_text

LEAK_AUC = 0.95
"""A class is nearly determined by a column when the column's out-of-fold score ranks a row of
that class above a row of the others at least this often (one-vs-rest ROC AUC). A column equal
to a binary target with 4 % of its values flipped scores 0.95; a value held by 97 % of one
class's rows and 1 % of the others, 0.975. Strong honest features stay well below: on UCI Adult
the best single column (``relationship``) scores 0.78 and ``capital-gain`` 0.59, as a column
that is decisive for a few rows (a large capital gain) is silent for the rest."""

LEAK_R2 = 0.9
"""A regression target is nearly determined by a column whose out-of-fold bin means explain at
least this share of its variance. A measurement of the target with noise of a fifth of its
spread scores 0.94, of a third 0.88; a strong honest feature of a real quantity explains far
less alone (a district's median income, half of its house prices' variance)."""

FOLDS = 5  # cross-validation folds of the single-feature score
BINS = 20
"""Quantile bins of a number with more than :data:`MAX_LEVELS` distinct values: fine enough that
a number equal to the target scores R² 0.99, coarse enough that each bin holds rows."""
MAX_LEVELS = 50  # a number with at most this many distinct values is binned by its values
MIN_ROWS = 100  # fewer rows with a target value and no column is judged (too few to tell)
MIN_CLASS_ROWS = 20  # a class with fewer rows is not judged on its own (its AUC is noise)
MAX_ROWS = 200_000  # larger data is judged on this many rows drawn at random (seeded)
MISSING = "(missing)"


@dataclass(frozen=True)
class Leak:
    """A feature that alone nearly determines the target (``target_class`` None) or one class:
    ``score`` is its out-of-fold ROC AUC for that class, or R² for a regression target, and
    ``why`` the figures in words."""

    column: str
    score: float
    target_class: str | None
    why: str

    @property
    def message(self) -> str:
        """One line: the column, the figures and the remedy."""
        return (
            f"{self.column}: {self.why}. If it is known only with or after the target (a leak), "
            "add it to features.exclude in params.yaml"
        )


def _bins(series: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's bin (codes 0..k-1) and the bins in words: the levels of text or of a number
    with few values, quantile ranges of other numbers; missing values are a bin of their own."""
    numbers, bad = parse_numbers(series)
    present = series.notna()
    numeric = present.sum() > 0 and 1 - bad[present].mean() >= NUMERIC_SHARE
    if numeric and numbers.nunique() > MAX_LEVELS:
        cut = pd.qcut(numbers, BINS, duplicates="drop")
        labels = cut.astype(object).map(lambda iv: f"{iv.left:g}..{iv.right:g}", na_action="ignore")
        values = labels.where(numbers.notna(), MISSING)
    else:
        values = stripped_text(series).where(present, MISSING)
    codes, levels = pd.factorize(values.astype(str), sort=False)
    return codes, [str(level) for level in levels]


def _out_of_fold(codes: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each row's mean of ``y`` (rows x outputs) in its bin over the other folds; a bin not
    seen there gets those folds' overall mean."""
    k = int(codes.max()) + 1
    scores = np.empty_like(y)
    for fold in range(FOLDS):
        held, fit = folds == fold, folds != fold
        count = np.bincount(codes[fit], minlength=k)
        for j in range(y.shape[1]):
            total = np.bincount(codes[fit], weights=y[fit, j], minlength=k)
            prior = y[fit, j].mean()
            mean = np.where(count > 0, total / np.maximum(count, 1), prior)
            scores[held, j] = mean[codes[held]]
    return scores


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``score`` for the rows marked ``positive`` (ties count half): the statistic of
    :func:`mlcycle.metrics.roc_auc_by_ranks`, here without importing scikit-learn and SciPy
    (1.9 s measured) into ``validate`` and ``init``, which never need them otherwise."""
    ranks = pd.Series(score).rank(method="average").to_numpy()
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _telling_bin(codes: np.ndarray, positive: np.ndarray, levels: list[str]) -> str:
    """The bin that most sets the class apart, in words: its share of the class's rows and of
    the others' (e.g. "its value 'x' holds 97 % of its rows and 1 % of the others")."""
    k = len(levels)
    mine = np.bincount(codes[positive], minlength=k) / positive.sum()
    others = np.bincount(codes[~positive], minlength=k) / (~positive).sum()
    best = int(np.argmax(mine - others))
    return (
        f"its value {levels[best]!r} holds {mine[best]:.0%} of that class's rows and "
        f"{others[best]:.1%} of the others'"
    )


def _judge(
    codes: np.ndarray,
    levels: list[str],
    y: np.ndarray,
    classes: list[str] | None,
    name: str,
    folds: np.ndarray,
) -> list[Leak]:
    """The leaks of one column's bins against ``y``: the target's values (regression,
    ``classes`` None, one output) or one indicator per class of ``classes``."""
    scores = _out_of_fold(codes, y, folds)
    if classes is None:
        target = y[:, 0]
        r2 = 1 - float(((target - scores[:, 0]) ** 2).sum() / ((target - target.mean()) ** 2).sum())
        if r2 < LEAK_R2:
            return []
        why = f"alone it explains {r2:.1%} of the target's variance out of fold (R² {r2:.3f})"
        return [Leak(name, round(r2, 4), None, why)]
    found = []
    for j, cls in enumerate(classes):
        positive = y[:, j] == 1
        auc = _auc(scores[:, j], positive)
        if auc >= LEAK_AUC:
            why = (
                f"alone it nearly determines class {cls!r}: out-of-fold ROC AUC {auc:.3f} for "
                f"{cls!r} against the rest; {_telling_bin(codes, positive, levels)}"
            )
            found.append(Leak(name, round(auc, 4), cls, why))
    return found


def _outputs(target: pd.Series, classification: bool) -> tuple[np.ndarray, list[str] | None]:
    """What each column is judged against: the target's numbers (regression), or one indicator
    per class with at least :data:`MIN_CLASS_ROWS` rows (binary: the rarer class alone, whose
    AUC is the other's)."""
    if not classification:
        return parse_numbers(target)[0].to_numpy(dtype=float)[:, None], None
    labels = stripped_text(target).to_numpy()
    counts = pd.Series(labels).value_counts()
    classes = [str(c) for c, n in counts.items() if n >= MIN_CLASS_ROWS]
    if len(counts) == 2:
        classes = classes[1:] if len(classes) == 2 else []
    return np.stack([labels == c for c in classes], axis=1).astype(float), classes


def leak_warnings(
    frame: pd.DataFrame,
    target: str,
    classification: bool,
    excluded: Iterable[str] = (),
    include: Iterable[str] = (),
    seed: int = 0,
) -> list[Leak]:
    """Every leak among the feature columns of ``frame``: all but the target, the ``excluded``
    (features.exclude, prepare.drop_columns, the roles init excludes), bookkeeping and, when
    ``include`` names any, those it does not name. Judged on the rows with a target value and
    at least one feature value (at most :data:`MAX_ROWS` of them); nothing below
    :data:`MIN_ROWS`."""
    include = set(include)
    skip = {target, *excluded, *BOOKKEEPING_COLUMNS}
    columns = [c for c in frame.columns if c not in skip and (not include or c in include)]
    if target not in frame.columns or not columns:
        return []
    rows = frame[frame[target].notna() & frame[columns].notna().any(axis=1)]
    if not classification:  # a regression target's numbers only (validate reports the rest)
        rows = rows[np.isfinite(parse_numbers(rows[target])[0])]
    if len(rows) > MAX_ROWS:
        rows = rows.sample(MAX_ROWS, random_state=seed)
    if len(rows) < MIN_ROWS:
        return []
    rows = rows.reset_index(drop=True)
    y, classes = _outputs(rows[target], classification)
    if (classes is not None and not classes) or (classes is None and np.ptp(y) == 0):
        return []  # no class to judge, or a constant target
    folds = np.random.default_rng(seed).permutation(len(rows)) % FOLDS
    found = []
    for col in columns:
        codes, levels = _bins(rows[col])
        found += _judge(codes, levels, y, classes, str(col), folds)
    return found

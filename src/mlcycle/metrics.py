"""Classification KPIs and the data behind their plots.

The registry :data:`KPI_FUNCTIONS` is what ``objectives.kpis`` and ``objectives.primary_metric``
may name. Every function takes the true labels (0/1), the positive-class probabilities and the
decision threshold, so evaluation, monitoring and later gates compute them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn import metrics as skm

TASKS = ("binary_classification",)

KpiFunction = Callable[[np.ndarray, np.ndarray, float], float]


def _labels(proba: np.ndarray, threshold: float) -> np.ndarray:
    return (proba >= threshold).astype(np.int8)


KPI_FUNCTIONS: dict[str, KpiFunction] = {
    "roc_auc": lambda y, p, t: skm.roc_auc_score(y, p),
    "pr_auc": lambda y, p, t: skm.average_precision_score(y, p),
    "log_loss": lambda y, p, t: skm.log_loss(y, p, labels=[0, 1]),
    "brier": lambda y, p, t: skm.brier_score_loss(y, p),
    "accuracy": lambda y, p, t: skm.accuracy_score(y, _labels(p, t)),
    "balanced_accuracy": lambda y, p, t: skm.balanced_accuracy_score(y, _labels(p, t)),
    "precision": lambda y, p, t: skm.precision_score(y, _labels(p, t), zero_division=0),
    "recall": lambda y, p, t: skm.recall_score(y, _labels(p, t), zero_division=0),
    "f1": lambda y, p, t: skm.f1_score(y, _labels(p, t), zero_division=0),
    "mcc": lambda y, p, t: skm.matthews_corrcoef(y, _labels(p, t)),
}

# Metrics where a smaller value is better; all others are "higher is better".
LOWER_IS_BETTER = frozenset({"log_loss", "brier"})


def compute_kpis(
    y_true: np.ndarray, proba: np.ndarray, threshold: float, names: tuple[str, ...] | list[str]
) -> dict[str, float]:
    """Compute the named KPIs, rounded to 6 digits so the JSON diffs stay readable."""
    y_true = np.asarray(y_true, dtype=np.int8)
    proba = np.asarray(proba, dtype=np.float64)
    return {name: round(float(KPI_FUNCTIONS[name](y_true, proba, threshold)), 6) for name in names}


def meets(name: str, value: float, minimum: float) -> bool:
    """Whether ``value`` of metric ``name`` satisfies the objective bound ``minimum``.

    For lower-is-better metrics (log loss, Brier) the bound is a maximum.
    """
    return value <= minimum if name in LOWER_IS_BETTER else value >= minimum


def _thin(n: int, points: int) -> np.ndarray:
    """Indices of at most ``points`` evenly spread rows out of ``n``, always with both ends."""
    if n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(int))


def roc_points(y_true: np.ndarray, proba: np.ndarray, points: int) -> list[dict[str, float]]:
    """ROC curve as rows {fpr, tpr, threshold}, thinned to ``points`` rows."""
    fpr, tpr, thr = skm.roc_curve(y_true, proba)
    idx = _thin(len(fpr), points)
    thr = np.minimum(thr, 1.0)  # sklearn puts +inf at the first point
    return [
        {
            "fpr": round(float(fpr[i]), 6),
            "tpr": round(float(tpr[i]), 6),
            "threshold": round(float(thr[i]), 6),
        }
        for i in idx
    ]


def pr_points(y_true: np.ndarray, proba: np.ndarray, points: int) -> list[dict[str, float]]:
    """Precision-recall curve as rows {recall, precision}, thinned to ``points`` rows."""
    precision, recall, _ = skm.precision_recall_curve(y_true, proba)
    idx = _thin(len(precision), points)
    return [
        {"recall": round(float(recall[i]), 6), "precision": round(float(precision[i]), 6)}
        for i in idx
    ]


def calibration_points(
    y_true: np.ndarray, proba: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Reliability diagram: mean predicted probability vs observed positive rate per bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append(
                {
                    "bin": b,
                    "mean_predicted": round(float(proba[mask].mean()), 6),
                    "fraction_positive": round(float(y_true[mask].mean()), 6),
                    "count": int(mask.sum()),
                }
            )
    return rows


def confusion(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts of true/false positives/negatives at ``threshold``."""
    pred = _labels(proba, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}

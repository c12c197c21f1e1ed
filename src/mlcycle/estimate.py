"""Performance estimated before labels arrive, from the model's own probabilities.

Confidence-based performance estimation (CBPE, as NannyML calls it): if the probabilities are
calibrated, a record scored ``p`` is positive with probability ``p``, so the *expected*
confusion matrix of a batch follows from its scores alone, and so does every metric built on it.
A drop in the estimate shows a batch the model finds harder (more records near the threshold)
without waiting for labels. It cannot see a change in how the label follows from the inputs
(concept drift): the model's probabilities are what is in question then, and only labels tell.
The estimate is only as good as the calibration: the bundle's profile stores the estimate next
to the realised value on the test split, so the gap is known. Regression has no estimate here
(the model gives no distribution of its error).
"""

from __future__ import annotations

import numpy as np

from mlcycle import tasks
from mlcycle.tasks import BINARY, MULTICLASS, Decision

ESTIMABLE = {
    BINARY: (
        "roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall", "f1",
        "mcc", "log_loss", "brier",
    ),
    MULTICLASS: (
        "accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "mcc", "log_loss",
        "roc_auc_ovr",
    ),
}  # fmt: skip


def _matrix(output: np.ndarray) -> np.ndarray:
    out = np.clip(np.asarray(output, dtype=np.float64), 0.0, 1.0)
    return np.column_stack([1 - out, out]) if out.ndim == 1 else out


def _expected_auc(p: np.ndarray) -> float:
    """Expected ROC AUC when each record is positive with probability ``p``: the ROC curve of
    expected true and false positives as the threshold falls through the sorted scores."""
    pos, neg = p.sum(), (1 - p).sum()
    if pos <= 0 or neg <= 0:
        return float("nan")
    order = np.argsort(-p, kind="stable")
    s = p[order]
    last = np.r_[s[1:] != s[:-1], True]  # ties: one step per distinct score
    tpr = np.r_[0.0, np.cumsum(s)[last] / pos]
    fpr = np.r_[0.0, np.cumsum(1 - s)[last] / neg]
    return float(np.trapezoid(tpr, fpr))


def _expected_ap(p: np.ndarray) -> float:
    """Expected average precision: precision at each distinct score, weighted by the expected
    recall gained there."""
    pos = p.sum()
    if pos <= 0:
        return float("nan")
    order = np.argsort(-p, kind="stable")
    s = p[order]
    last = np.r_[s[1:] != s[:-1], True]
    tp = np.cumsum(s)[last]
    n = (np.arange(1, len(s) + 1))[last]
    recall = np.r_[0.0, tp / pos]
    return float(np.sum(np.diff(recall) * (tp / n)))


def _from_confusion(c: np.ndarray, name: str) -> float:
    """A metric from an expected confusion matrix ``c[true, predicted]``."""
    total = c.sum()
    if total <= 0:
        return float("nan")
    diag = np.diag(c)
    actual, predicted = c.sum(axis=1), c.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(actual > 0, diag / actual, np.nan)
        precision = np.where(predicted > 0, diag / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    if name == "accuracy":
        return float(diag.sum() / total)
    if name == "balanced_accuracy":
        return float(np.nanmean(recall))
    if name == "mcc":
        cov = diag.sum() * total - actual @ predicted
        den = np.sqrt((total**2 - predicted @ predicted) * (total**2 - actual @ actual))
        return float(cov / den) if den > 0 else 0.0
    if name == "precision":
        return float(precision[1])
    if name == "recall":
        return float(recall[1])
    if name == "f1":
        return float(np.nan_to_num(f1[1]))
    if name == "f1_macro":
        return float(np.mean(np.nan_to_num(f1)))
    if name == "f1_weighted":
        return float(np.sum(np.nan_to_num(f1) * actual) / total)
    raise KeyError(name)


def estimate_kpi(
    task: str, name: str, output: np.ndarray, decision: Decision = None
) -> float | None:
    """The expected value of KPI ``name`` on records scored ``output`` (the model's probability
    matrix, or a binary positive-class vector) and labelled by ``decision``, assuming
    calibrated probabilities; None when
    it cannot be estimated (regression, a metric not listed in :data:`ESTIMABLE`, no rows)."""
    if name not in ESTIMABLE.get(task, ()) or len(output) == 0:
        return None
    P = _matrix(output)
    eps = 1e-15
    if name == "log_loss":
        value = float(np.mean(-np.sum(P * np.log(np.clip(P, eps, 1)), axis=1)))
    elif name == "brier":
        value = float(np.mean(P[:, 1] * (1 - P[:, 1])))
    elif name == "roc_auc":
        value = _expected_auc(P[:, 1])
    elif name == "pr_auc":
        value = _expected_ap(P[:, 1])
    elif name == "roc_auc_ovr":
        value = float(np.nanmean([_expected_auc(P[:, k]) for k in range(P.shape[1])]))
    else:
        decided = tasks.get(task).decide(P, decision)
        k = P.shape[1]
        confusion = np.zeros((k, k))
        for j in range(k):  # expected count of each true class among those decided j
            confusion[:, j] = P[decided == j].sum(axis=0)
        value = _from_confusion(confusion, name)
    return round(value, 6) if np.isfinite(value) else None

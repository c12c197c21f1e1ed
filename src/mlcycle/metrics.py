"""KPIs per task and the data behind their plots.

:data:`KPI_FUNCTIONS` maps each task to the metrics it can report (the names
:data:`mlcycle.tasks.KPI_NAMES` lists for validating params.yaml). Every function takes the
true target, the model's output and the :data:`~mlcycle.tasks.Decision` labels are decided by:

- binary: labels 0/1 and the ``(n, 2)`` probability matrix (or the positive-class vector);
  labels are decided at the threshold;
- multiclass: class indices and the ``(n, k)`` probability matrix; the label is the class of
  the largest weighted probability (the most probable class without weights);
- regression: numbers and the predicted numbers.

Evaluation, tuning, the gate and monitoring compute them the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import metrics as skm

from mlcycle import tasks
from mlcycle.tasks import (
    BINARY,
    DEFAULT_THRESHOLD,
    LOWER_IS_BETTER,
    MULTICLASS,
    REGRESSION,
    Decision,
    better,
)

KpiFunction = Callable[[np.ndarray, np.ndarray, Decision], float]


def positive(out: np.ndarray) -> np.ndarray:
    """The positive-class probabilities of a binary output (matrix column 1, or the vector)."""
    out = np.asarray(out, dtype=np.float64)
    return out[:, 1] if out.ndim == 2 else out


def _labels(proba: np.ndarray, threshold: Decision) -> np.ndarray:
    return tasks.TASK[BINARY].decide(positive(proba), threshold)


def _classes(P: np.ndarray, weights: Decision) -> np.ndarray:
    return tasks.TASK[MULTICLASS].decide(P, weights)


def _k(P: np.ndarray) -> list[int]:
    return list(range(P.shape[1]))


def _mape(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean absolute percentage error; undefined (NaN) when a true value is 0."""
    if np.any(y == 0):
        return float("nan")
    return float(np.mean(np.abs((y - pred) / y)))


BINARY_KPIS: dict[str, KpiFunction] = {
    "roc_auc": lambda y, p, t: skm.roc_auc_score(y, positive(p)),
    "pr_auc": lambda y, p, t: skm.average_precision_score(y, positive(p)),
    "log_loss": lambda y, p, t: skm.log_loss(y, positive(p), labels=[0, 1]),
    "brier": lambda y, p, t: skm.brier_score_loss(y, positive(p)),
    "accuracy": lambda y, p, t: skm.accuracy_score(y, _labels(p, t)),
    "balanced_accuracy": lambda y, p, t: skm.balanced_accuracy_score(y, _labels(p, t)),
    "precision": lambda y, p, t: skm.precision_score(y, _labels(p, t), zero_division=0),
    "recall": lambda y, p, t: skm.recall_score(y, _labels(p, t), zero_division=0),
    "f1": lambda y, p, t: skm.f1_score(y, _labels(p, t), zero_division=0),
    "mcc": lambda y, p, t: skm.matthews_corrcoef(y, _labels(p, t)),
}
MULTICLASS_KPIS: dict[str, KpiFunction] = {
    "accuracy": lambda y, P, t: skm.accuracy_score(y, _classes(P, t)),
    "balanced_accuracy": lambda y, P, t: skm.balanced_accuracy_score(y, _classes(P, t)),
    "f1_macro": lambda y, P, t: skm.f1_score(
        y, _classes(P, t), labels=_k(P), average="macro", zero_division=0
    ),
    "f1_weighted": lambda y, P, t: skm.f1_score(
        y, _classes(P, t), labels=_k(P), average="weighted", zero_division=0
    ),
    "log_loss": lambda y, P, t: skm.log_loss(y, P, labels=_k(P)),
    "roc_auc_ovr": lambda y, P, t: skm.roc_auc_score(
        y, P, multi_class="ovr", average="macro", labels=_k(P)
    ),
    "mcc": lambda y, P, t: skm.matthews_corrcoef(y, _classes(P, t)),
}
REGRESSION_KPIS: dict[str, KpiFunction] = {
    "rmse": lambda y, p, t: float(np.sqrt(skm.mean_squared_error(y, p))),
    "mae": lambda y, p, t: skm.mean_absolute_error(y, p),
    "r2": lambda y, p, t: skm.r2_score(y, p),
    "mape": lambda y, p, t: _mape(y, p),
    "median_ae": lambda y, p, t: skm.median_absolute_error(y, p),
    "residual_std": lambda y, p, t: float(np.std(y - p)),
}
KPI_FUNCTIONS: dict[str, dict[str, KpiFunction]] = {
    BINARY: BINARY_KPIS,
    MULTICLASS: MULTICLASS_KPIS,
    REGRESSION: REGRESSION_KPIS,
}


def _as_target(task: str, y: np.ndarray) -> np.ndarray:
    return np.asarray(y, dtype=tasks.get(task).target_dtype())


def kpi(
    task: str, name: str, y_true: np.ndarray, out: np.ndarray, decision: Decision = None
) -> float:
    """One KPI, labels decided by ``decision`` (None: the task's default rule); NaN where it is
    undefined for these rows (one class only, MAPE with a zero)."""
    try:
        value = float(KPI_FUNCTIONS[task][name](y_true, out, decision))
    except ValueError:  # e.g. ROC AUC of a single class
        return float("nan")
    return value


def compute_kpis(
    task: str,
    y_true: np.ndarray,
    out: np.ndarray,
    decision: Decision,
    names: tuple[str, ...] | list[str],
) -> dict[str, float | None]:
    """The named KPIs rounded to 6 digits (readable JSON diffs); None where undefined."""
    y_true = _as_target(task, y_true)
    out = np.asarray(out, dtype=np.float64)
    values = {name: kpi(task, name, y_true, out, decision) for name in names}
    return {k: (round(v, 6) if np.isfinite(v) else None) for k, v in values.items()}


def prediction_frame(
    out: np.ndarray, y: np.ndarray, task: str, classes: tuple[str, ...] | list[str]
) -> pd.DataFrame:
    """Predictions beside the truth, as the out-of-fold and test prediction files store them:
    binary ``probability`` (positive class), multiclass ``probability_<class>`` per class,
    regression ``prediction``; then ``actual``."""
    out = np.asarray(out, dtype=np.float64)
    return pd.DataFrame({**tasks.get(task).output_to_columns(out, classes), "actual": y})


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


def class_curves(
    y_true: np.ndarray, proba: np.ndarray, classes: tuple[str, ...] | list[str], points: int
) -> tuple[list[dict], list[dict]]:
    """ROC and precision-recall rows with a ``class`` field: for a binary model the positive
    class only, for multiclass one curve per class (one-vs-rest). Classes absent from
    ``y_true`` (or always present) have no curve."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    wanted = [1] if len(classes) == 2 else list(range(len(classes)))
    roc, pr = [], []
    for k in wanted:
        hit = (y_true == k).astype(np.int8)
        if hit.min() == hit.max():
            continue
        p = proba[:, k]
        roc += [{"class": str(classes[k]), **r} for r in roc_points(hit, p, points)]
        pr += [{"class": str(classes[k]), **r} for r in pr_points(hit, p, points)]
    return roc, pr


def regression_points(
    y_true: np.ndarray, pred: np.ndarray, max_points: int = 1000, seed: int = 0
) -> list[dict[str, float]]:
    """Rows {actual, predicted, residual} for a seeded sample of at most ``max_points`` rows:
    the data of the predicted-vs-actual and residual plots."""
    y_true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    idx = np.arange(len(y_true))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    return [
        {
            "actual": round(float(y_true[i]), 6),
            "predicted": round(float(pred[i]), 6),
            "residual": round(float(y_true[i] - pred[i]), 6),
        }
        for i in idx
    ]


def residual_summary(y_true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The spread of the residuals (actual - predicted): mean, std and quantiles."""
    res = np.asarray(y_true, dtype=np.float64) - np.asarray(pred, dtype=np.float64)
    q = np.quantile(res, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "mean": round(float(res.mean()), 6),
        "std": round(float(res.std()), 6),
        **{
            f"q{int(k * 100):02d}": round(float(v), 6)
            for k, v in zip((0.05, 0.25, 0.5, 0.75, 0.95), q, strict=True)
        },
    }


def roc_auc_by_ranks(y_true: np.ndarray, proba: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties get average ranks): the same value as
    scikit-learn's ``roc_auc_score``, three times faster, for the bootstrap's many resamples."""
    ranks = rankdata(proba)
    positives = int(y_true.sum())
    negatives = len(y_true) - positives
    return float(
        (ranks[y_true == 1].sum() - positives * (positives + 1) / 2.0) / (positives * negatives)
    )


# Above this many rows a binary ROC AUC interval draws each row's count from Poisson(1) (the
# Poisson bootstrap: the same interval for large samples, without an index per resample) and
# takes POISSON_RESAMPLES resamples; at that size the interval is a few thousandths wide.
POISSON_ROWS = 1_000_000
POISSON_RESAMPLES = 200


class _WeightedAUC:
    """Binary ROC AUC of a bootstrap resample given as row counts: the Mann-Whitney statistic
    with ties at one half, from one sort of the scores made up front. The same value as
    :func:`roc_auc_by_ranks` on the resampled rows, in a few linear passes instead of a sort
    per resample (a test split of millions of rows gets its interval in seconds)."""

    def __init__(self, y_true: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        self.y = np.asarray(y_true)[self.order].astype(np.float64)
        self.group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # equal scores, one group
        self.groups = int(self.group[-1]) + 1

    def __call__(self, counts: np.ndarray, ordered: bool = False) -> float:
        w = (counts if ordered else counts[self.order]).astype(np.float64)
        pos = w * self.y
        neg = w - pos
        if self.groups < len(w):  # tied scores: sum each group of equal scores
            pos = np.bincount(self.group, pos, minlength=self.groups)
            neg = np.bincount(self.group, neg, minlength=self.groups)
        n_pos, n_neg = pos.sum(), neg.sum()
        if not n_pos or not n_neg:  # one class: no ranking metric
            return float("nan")
        below = np.cumsum(neg) - neg
        return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def bootstrap_values(
    task: str,
    y_true: np.ndarray,
    outs: list[np.ndarray],
    decisions: list[Decision],
    name: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Metric ``name`` of each output in ``outs`` (with its own decision) on ``n_boot``
    bootstrap resamples of the rows, every output scored on the same resample: an
    ``(n_boot, len(outs))`` array, NaN where the metric is undefined (a single class).

    A binary ROC AUC of more than POISSON_ROWS rows uses the Poisson bootstrap (at most
    POISSON_RESAMPLES resamples). One output gives :func:`bootstrap_interval`'s resamples;
    two give a paired comparison of two models on the same records."""
    spec = tasks.get(task)
    y_true = _as_target(task, y_true)
    outs = [np.asarray(out, dtype=np.float64) for out in outs]
    binary_auc = name == "roc_auc" and name in spec.kpis  # multiclass has roc_auc_ovr
    rng = np.random.default_rng(seed)
    n = len(y_true)
    aucs = [_WeightedAUC(y_true, positive(out)) for out in outs] if binary_auc and n else None
    poisson = aucs is not None and n > POISSON_ROWS
    if poisson:
        n_boot = min(n_boot, POISSON_RESAMPLES)
    values = np.full((n_boot, len(outs)), np.nan)
    for b in range(n_boot):
        if poisson:  # each row's count drawn on its own, in the first output's score order
            drawn = rng.poisson(1.0, n)
            counts = np.empty_like(drawn)
            counts[aucs[0].order] = drawn  # the same rows' counts for the other outputs
            values[b] = [aucs[0](drawn, ordered=True), *(auc(counts) for auc in aucs[1:])]
            continue
        idx = rng.integers(0, n, n)
        if aucs is not None:  # the same resample, as row counts: no sort per resample
            counts = np.bincount(idx, minlength=n)
            values[b] = [auc(counts) for auc in aucs]
            continue
        y = y_true[idx]
        if spec.classification and y.min() == y.max():  # one class: no ranking metric
            continue
        values[b] = [
            kpi(task, name, y, out[idx], d) for out, d in zip(outs, decisions, strict=True)
        ]
    values[~np.isfinite(values)] = np.nan
    return values


def percentile_interval(values: np.ndarray, level: float = 0.95) -> dict[str, float | None]:
    """The percentile interval at ``level`` of bootstrap ``values`` (NaN ones left out and not
    counted): low, high, level and how many resamples it rests on."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return {"low": None, "high": None, "level": level, "resamples": 0}
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return {
        "low": round(float(low), 6),
        "high": round(float(high), 6),
        "level": level,
        "resamples": len(values),
    }


def bootstrap_interval(
    task: str,
    y_true: np.ndarray,
    out: np.ndarray,
    decision: Decision,
    name: str,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Percentile bootstrap confidence interval of metric ``name`` (rows resampled, seeded).

    Resamples where the metric is undefined (a single class) are skipped and not counted.
    A binary ROC AUC of more than POISSON_ROWS rows uses the Poisson bootstrap.
    """
    values = bootstrap_values(task, y_true, [out], [decision], name, n_boot, seed)
    return percentile_interval(values[:, 0], level)


THRESHOLD_GRID = np.round(np.linspace(0.01, 0.99, 99), 2)
THRESHOLD_FREE = ("roc_auc", "pr_auc", "log_loss", "brier")  # one value at every threshold


def threshold_curve(
    y_true: np.ndarray,
    proba: np.ndarray,
    metric: str | None = None,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
) -> list[dict[str, float]]:
    """Binary only: for each threshold on a 0.01 grid, the metric's value (if given) and the
    mean cost of errors; :func:`threshold_curve_from_counts` of the rows as one partition, a
    threshold-free metric (ROC AUC, log loss...) from the rows."""
    ranking = None
    if metric in THRESHOLD_FREE:
        ranking = {metric: float(BINARY_KPIS[metric](y_true, positive(proba), DEFAULT_THRESHOLD))}
    counts = threshold_counts(y_true, proba)
    return threshold_curve_from_counts(counts, metric, cost_fp, cost_fn, ranking)


def choose_threshold(curve: list[dict[str, float]], metric: str | None = None) -> float:
    """The threshold that maximises ``metric`` (or minimises it, for lower-is-better metrics),
    or, without a metric, minimises the cost. Ties go to the threshold nearest the default."""

    def key(row: dict[str, float]) -> tuple[float, float]:
        if metric is None:
            score = row["cost"]
        else:
            score = row[metric] if metric in LOWER_IS_BETTER else -row[metric]
        return (score, abs(row["threshold"] - DEFAULT_THRESHOLD))

    return float(min(curve, key=key)["threshold"])


# Multiclass decisions: a weight per class on the probabilities, fitted to a label metric on
# the out-of-fold predictions (:func:`fit_class_weights`). Metrics the most probable class
# already serves keep it: accuracy (argmax is its best rule for calibrated probabilities) and
# those that read no labels.
ARGMAX_SERVED = frozenset({"accuracy", "log_loss", "roc_auc_ovr"})
LOG_WEIGHTS = np.round(np.linspace(-3.0, 3.0, 61), 2)  # each class's log-weight is one of these
WEIGHT_PASSES = 4  # coordinate-ascent passes over the classes at most
WEIGHT_PENALTY = 0.002  # the metric a unit of |log-weight| must earn: weights stay near 1
WEIGHT_RESAMPLES = 200  # paired bootstrap resamples of the out-of-fold gain
WEIGHT_CONFIDENCE = 0.95  # the share of them the weights must win to be kept


@dataclass(frozen=True)
class ClassWeights:
    """What :func:`fit_class_weights` found: the weights (None: argmax kept), the metric at
    argmax, at the fitted weights and cross-fitted (each half of the rows decided by weights
    fitted on the other half), and the share of paired bootstrap resamples in which the
    cross-fitted labels did better than argmax."""

    weights: tuple[float, ...] | None
    metric: str
    argmax: float
    weighted: float
    crossfit: float
    wins: float


def _cm_metric(
    metric: str, y: np.ndarray, pred: np.ndarray, k: int, counts: np.ndarray | None = None
) -> float:
    """A label metric of class indices ``pred`` from their confusion matrix (the sums path),
    each row counted ``counts`` times (a bootstrap resample) or once."""
    cm = np.bincount(y * k + pred, weights=counts, minlength=k * k).astype(np.float64)
    s = {"n": np.array([float(cm.sum())]), "cm": cm}
    return kpis_from_sums(MULTICLASS, s, [metric], n_classes=k)[metric]


def _ascend_log_weights(y: np.ndarray, logp: np.ndarray, metric: str) -> np.ndarray:
    """Per-class log-weights maximising ``metric`` of argmax(log-probability + log-weight)
    on the rows, by coordinate ascent (see :func:`fit_class_weights`)."""
    n, k = logp.shape
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    lw = np.zeros(k)
    rows = np.arange(n)
    order = LOG_WEIGHTS[np.argsort(np.abs(LOG_WEIGHTS), kind="stable")]  # ties: nearest 1
    for _ in range(WEIGHT_PASSES):
        moved = False
        for c in range(k):
            others = logp + lw
            others[:, c] = -np.inf
            alt = others.argmax(1)  # each row's label if class c does not win it
            alt_v = others[rows, alt]
            best_v, best = lw[c], -np.inf
            for v in order:
                pred = np.where(logp[:, c] + v > alt_v, c, alt)
                value = sign * _cm_metric(metric, y, pred, k) - WEIGHT_PENALTY * abs(v)
                if value > best + 1e-12:
                    best_v, best = v, value
            moved |= best_v != lw[c]
            lw[c] = best_v
        if not moved:
            break
    return lw


def fit_class_weights(
    y_true: np.ndarray, proba: np.ndarray, metric: str, seed: int = 0
) -> ClassWeights:
    """Multiclass: a weight per class on the probabilities ``proba`` (label = argmax of weight
    times probability) that maximises ``metric`` on the rows, by coordinate ascent over each
    class's log-weight on :data:`LOG_WEIGHTS` (at most :data:`WEIGHT_PASSES` passes; each
    unit of |log-weight| must earn :data:`WEIGHT_PENALTY` of the metric, so a small class's
    weight does not chase a few rows).

    Weights fitted on rows look better on those rows than they are, so the gain is measured
    cross-fitted: the rows are cut in two halves (seeded), each half decided by weights fitted
    on the other. The weights fitted on every row are kept only when those cross-fitted labels
    beat argmax in at least :data:`WEIGHT_CONFIDENCE` of :data:`WEIGHT_RESAMPLES` paired
    (Poisson) bootstrap resamples of the rows (scored from confusion matrices, so that a
    million rows take seconds); otherwise, and for the metrics of :data:`ARGMAX_SERVED`,
    argmax stays."""
    y = _as_target(MULTICLASS, y_true)
    P = np.asarray(proba, dtype=np.float64)
    n, k = P.shape
    if metric in ARGMAX_SERVED or n < 2:
        at_argmax = kpi(MULTICLASS, metric, y, P)
        return ClassWeights(None, metric, at_argmax, at_argmax, at_argmax, 0.0)
    rng = np.random.default_rng(seed)
    logp = np.log(_eps_clip(P))
    argmax = P.argmax(1)
    half = rng.permutation(n) < n // 2
    crossfit = argmax.copy()
    for part in (half, ~half):  # each half decided by the other half's weights
        lw = _ascend_log_weights(y[~part], logp[~part], metric)
        crossfit[part] = (logp[part] + lw).argmax(1)
    weights = tuple(round(float(w), 4) for w in np.exp(_ascend_log_weights(y, logp, metric)))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    gains = np.empty(WEIGHT_RESAMPLES)
    for b in range(WEIGHT_RESAMPLES):
        counts = rng.poisson(1.0, n).astype(np.float64)
        gains[b] = sign * (
            _cm_metric(metric, y, crossfit, k, counts) - _cm_metric(metric, y, argmax, k, counts)
        )
    gains = gains[np.isfinite(gains)]
    wins = float((gains > 0).mean()) if len(gains) else 0.0
    at_argmax = _cm_metric(metric, y, argmax, k)
    weighted = _cm_metric(metric, y, tasks.TASK[MULTICLASS].decide(P, weights), k)
    kept = wins >= WEIGHT_CONFIDENCE and better(metric, weighted, at_argmax)
    return ClassWeights(
        weights if kept else None, metric, at_argmax, weighted,
        _cm_metric(metric, y, crossfit, k), wins,
    )  # fmt: skip


def slice_kpis(
    task: str,
    groups: np.ndarray | list,
    y_true: np.ndarray,
    out: np.ndarray,
    decision: Decision,
    names: tuple[str, ...] | list[str],
    min_rows: int = 30,
    interval_metric: str | None = None,
    n_boot: int = 1000,
) -> dict[str, dict]:
    """KPIs per value of a slicing column, as :func:`slice_entry` reports each slice from its
    rows' sums and the rows themselves.

    With ``interval_metric``, each scored slice also gets that metric's bootstrap interval
    (``interval``), so a reader can tell a real gap from a small slice's noise.
    """
    spec = tasks.get(task)
    y_true = _as_target(task, y_true)
    out = np.asarray(out, dtype=np.float64)
    k = (out.shape[1] if out.ndim == 2 else 2) if spec.classification else 0
    keys = np.array([str(g) for g in np.asarray(groups, dtype=object)], dtype=object)
    result = {}
    for value in sorted(set(keys)):
        mask = keys == value
        y, o = y_true[mask], out[mask]
        s = partial_sums(task, y, o, decision, k)
        result[value] = slice_entry(
            task, s, names, decision, k, min_rows, interval_metric, (y, o), n_boot
        )
    return result


def slice_gaps(slices: dict[str, dict], names: tuple[str, ...] | list[str]) -> dict[str, dict]:
    """Per metric: the best and worst slice and the gap between them.

    For the metric the slices carry an ``interval`` of, ``beyond_noise`` says whether the two
    slices' intervals are disjoint (a conservative test that the gap is real).
    """
    gaps = {}
    for name in names:
        scored = {v: s[name] for v, s in slices.items() if s.get(name) is not None}
        if len(scored) < 2:
            continue
        lower = name in LOWER_IS_BETTER
        best = (min if lower else max)(scored, key=scored.get)
        worst = (max if lower else min)(scored, key=scored.get)
        gaps[name] = {
            "best": best,
            "worst": worst,
            "gap": round(abs(scored[best] - scored[worst]), 6),
        }
        b, w = slices[best].get("interval"), slices[worst].get("interval")
        if b and w and b["metric"] == w["metric"] == name and None not in (b["low"], w["low"]):
            gaps[name]["beyond_noise"] = b["high"] < w["low"] or w["high"] < b["low"]
    return gaps


# --- KPIs from per-partition sums (evaluation, on either engine) -------------------------------
#
# A partition of (truth, output) pairs reduces to a few additive numbers: confusion counts at
# the threshold, log loss and Brier sums, calibration bins, regression moments and, when asked,
# a fine histogram of scores per class. Merged over every partition (the local engine's test
# split is one), they give the same threshold and sum KPIs as the row-level functions above
# (to rounding); ranking KPIs (ROC AUC, PR AUC, median absolute error) need the rows
# themselves, or come approximately from the histogram.

HIST_BINS = 10_000  # score histogram bins on [0, 1]: ties within a bin count one half
RANKING_KPIS = frozenset({"roc_auc", "pr_auc", "roc_auc_ovr", "median_ae"})
_MOMENTS = ("y", "r")  # regression: target and residual, merged as (n, mean, M2)

Sums = dict[str, np.ndarray]


def _eps_clip(p: np.ndarray) -> np.ndarray:
    eps = np.finfo(np.float64).eps  # as scikit-learn's log_loss clips
    return np.clip(p, eps, 1 - eps)


def _moments(v: np.ndarray) -> tuple[float, float]:
    if not len(v):
        return 0.0, 0.0
    mean = float(v.mean())
    return mean, float(((v - mean) ** 2).sum())


def partial_sums(
    task: str,
    y_true: np.ndarray,
    out: np.ndarray,
    decision: Decision,
    n_classes: int,
    hist: bool = False,
) -> Sums:
    """The additive summary of one partition's truth and output (see :func:`merge_sums` and
    :func:`kpis_from_sums`); ``hist`` adds a :data:`HIST_BINS`-bin score histogram per class
    (for approximate ranking KPIs when the rows cannot be gathered)."""
    spec = tasks.get(task)
    y = _as_target(task, y_true)
    out = np.asarray(out, dtype=np.float64)
    s: Sums = {"n": np.array([float(len(y))])}
    edges = np.linspace(0.0, 1.0, 11)
    if not spec.classification:
        res = y - out
        for key, v in (("y", y), ("r", res)):
            mean, m2 = _moments(v)
            s[f"mean_{key}"], s[f"m2_{key}"] = np.array([mean]), np.array([m2])
        s["sse"] = np.array([float((res**2).sum())])
        s["sae"] = np.array([float(np.abs(res).sum())])
        zero = y == 0
        s["zero_y"] = np.array([float(zero.sum())])
        s["sape"] = np.array([float(np.abs(res[~zero] / y[~zero]).sum())])
        return s
    P = spec.probabilities(out)
    pred = spec.decide(out, decision)
    hit, conf = spec.calibration_hits(y, out).astype(np.float64), spec.score(out)
    if "brier" in spec.kpis:  # binary: the squared error of the positive class's probability
        s["brier"] = np.array([float(((conf - y) ** 2).sum())])
    k = n_classes
    s["cm"] = np.bincount(y * k + pred, minlength=k * k).astype(np.float64)
    clipped = _eps_clip(P)
    s["log_loss"] = np.array([float(-np.log(clipped[np.arange(len(y)), y]).sum())])
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, 9)
    s["cal_n"] = np.bincount(which, minlength=10).astype(np.float64)
    s["cal_p"] = np.bincount(which, conf, minlength=10)
    s["cal_y"] = np.bincount(which, hit, minlength=10)
    if hist:
        h = np.zeros((k, 2, HIST_BINS))
        for c in spec.ranked_columns(k):
            b = np.minimum((P[:, c] * HIST_BINS).astype(np.int64), HIST_BINS - 1)
            is_c = y == c
            h[c, 1] = np.bincount(b[is_c], minlength=HIST_BINS)
            h[c, 0] = np.bincount(b[~is_c], minlength=HIST_BINS)
        s["hist"] = h.ravel()
    return s


def merge_sums(a: Sums, b: Sums) -> Sums:
    """Two partitions' summaries as one (sums add; regression moments merge exactly)."""
    out = {k: a[k] + b[k] for k in a if not k.startswith(("mean_", "m2_"))}
    na, nb = float(a["n"][0]), float(b["n"][0])
    n = na + nb
    for key in _MOMENTS:
        if f"mean_{key}" not in a:
            continue
        ma, mb = a[f"mean_{key}"][0], b[f"mean_{key}"][0]
        delta = mb - ma
        mean = ma + delta * nb / n if n else 0.0
        m2 = a[f"m2_{key}"][0] + b[f"m2_{key}"][0] + (delta**2 * na * nb / n if n else 0.0)
        out[f"mean_{key}"], out[f"m2_{key}"] = np.array([mean]), np.array([m2])
    return out


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _mcc(cm: np.ndarray) -> float:
    """Matthews correlation from a confusion matrix, as scikit-learn computes it."""
    t, p = cm.sum(1), cm.sum(0)
    n, correct = cm.sum(), np.trace(cm)
    cov_tp = correct * n - t @ p
    cov_pp, cov_tt = n * n - p @ p, n * n - t @ t
    return 0.0 if cov_pp * cov_tt == 0 else float(cov_tp / np.sqrt(cov_tt * cov_pp))


def hist_auc(h: np.ndarray) -> float:
    """ROC AUC from a score histogram ``h[0]`` (negatives), ``h[1]`` (positives), bins in
    ascending score; pairs within one bin count one half (approximate)."""
    neg, pos = h[0], h[1]
    n_neg, n_pos = neg.sum(), pos.sum()
    if not n_neg or not n_pos:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def hist_average_precision(h: np.ndarray) -> float:
    """Average precision (PR AUC) from a score histogram, each bin one threshold
    (approximate)."""
    neg, pos = h[0][::-1], h[1][::-1]
    if not pos.sum():
        return float("nan")
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    keep = (pos + neg) > 0
    precision = tp[keep] / (tp[keep] + fp[keep])
    recall = tp[keep] / pos.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _hist(s: Sums, k: int) -> np.ndarray | None:
    return s["hist"].reshape(k, 2, HIST_BINS) if "hist" in s else None


def kpis_from_sums(
    task: str,
    s: Sums,
    names: tuple[str, ...] | list[str],
    decision: Decision = None,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    n_classes: int = 2,
) -> dict[str, float]:
    """Unrounded KPIs (NaN where undefined) from merged sums; ranking KPIs from ``pairs``
    (truth, output) when given (exact, by the row-level functions), else from the histogram
    (approximate), else NaN."""
    n = float(s["n"][0])
    values: dict[str, float] = {}
    if not tasks.get(task).classification:
        sst, sse = s["m2_y"][0], s["sse"][0]
        sums_kpis: dict[str, Callable[[], float]] = {
            "rmse": lambda: np.sqrt(sse / n) if n else np.nan,
            "mae": lambda: s["sae"][0] / n if n else np.nan,
            # scikit-learn: undefined for fewer than two rows
            "r2": lambda: (
                np.nan if n < 2 else (1 - sse / sst) if sst else (1.0 if sse == 0 else 0.0)
            ),
            "mape": lambda: np.nan if s["zero_y"][0] or not n else s["sape"][0] / n,
            "residual_std": lambda: np.sqrt(s["m2_r"][0] / n) if n else np.nan,
        }
    else:
        k = n_classes
        cm = s["cm"].reshape(k, k)
        t, p, tp = cm.sum(1), cm.sum(0), np.diag(cm)
        present = t > 0
        f1 = np.array([_div(2 * tp[c], t[c] + p[c]) for c in range(k)])
        # Every classification KPI from the sums, computed when named: precision, recall, f1
        # and brier are binary's (of the positive class), f1_macro and f1_weighted multiclass'.
        sums_kpis = {
            "accuracy": lambda: _div(np.trace(cm), n),
            "balanced_accuracy": lambda: float(np.mean(tp[present] / t[present])) if n else np.nan,
            "mcc": lambda: _mcc(cm),
            "log_loss": lambda: s["log_loss"][0] / n if n else np.nan,
            "precision": lambda: _div(tp[1], p[1]),
            "recall": lambda: _div(tp[1], t[1]),
            "f1": lambda: f1[1],
            "brier": lambda: s["brier"][0] / n if n else np.nan,
            "f1_macro": lambda: float(f1.mean()),
            "f1_weighted": lambda: _div(float((f1 * t).sum()), float(t.sum())),
        }
    h = _hist(s, n_classes)  # None without a histogram (regression has none)
    for name in names:
        if name not in RANKING_KPIS:
            values[name] = float(sums_kpis[name]())
        elif pairs is not None:
            y, o = _as_target(task, pairs[0]), np.asarray(pairs[1], dtype=np.float64)
            values[name] = kpi(task, name, y, o, decision)
        elif h is None:
            values[name] = float("nan")
        elif name == "roc_auc":
            values[name] = hist_auc(h[1])
        elif name == "pr_auc":
            values[name] = hist_average_precision(h[1])
        else:  # roc_auc_ovr: macro over the classes, undefined if one is absent
            aucs = [hist_auc(h[c]) for c in range(n_classes)]
            values[name] = float(np.mean(aucs))
    return values


def target_mean_from_sums(s: Sums, n_classes: int) -> float:
    """The mean of the encoded target (binary: the positive rate) from merged sums."""
    if "mean_y" in s:  # regression keeps the target's moments
        return float(s["mean_y"][0])
    per_class = s["cm"].reshape(n_classes, n_classes).sum(1)
    return float((np.arange(n_classes) * per_class).sum()) / float(s["n"][0])


NO_INTERVAL = {"low": None, "high": None, "level": 0.95, "resamples": 0}


def slice_entry(
    task: str,
    s: Sums,
    names: tuple[str, ...] | list[str],
    decision: Decision,
    n_classes: int,
    min_rows: int,
    interval_metric: str | None = None,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    n_boot: int = 1000,
) -> dict:
    """One slice of a column: its rows and base rate from its sums; when it has at least
    ``min_rows`` rows and (classification) two classes, its KPIs (ranking ones from its rows'
    ``pairs``, else the histogram) and, with ``interval_metric``, that metric's bootstrap
    interval from the pairs (none without them: an interval that cannot be had is null). A
    smaller or one-class slice's metrics would be noise or undefined."""
    spec = tasks.get(task)
    n = int(s["n"][0])
    entry: dict = {"rows": n, **spec.slice_base(target_mean_from_sums(s, n_classes))}
    k = n_classes
    scoreable = not spec.classification or int((s["cm"].reshape(k, k).sum(1) > 0).sum()) > 1
    if n >= min_rows and scoreable:
        entry.update(rounded(kpis_from_sums(task, s, names, decision, pairs, n_classes)))
        if interval_metric:
            interval = NO_INTERVAL
            if pairs is not None:
                interval = bootstrap_interval(task, *pairs, decision, interval_metric, n_boot)
            entry["interval"] = {"metric": interval_metric, **interval}
    return entry


def confusion_from_sums(task: str, s: Sums, classes: tuple[str, ...]) -> dict:
    """evaluate.json's confusion counts and per-class report (precision, recall, F1 and
    support of every class, one-vs-rest) from the summed matrix."""
    k = len(classes)
    cm = s["cm"].reshape(k, k)
    confusion = tasks.get(task).confusion_summary(cm.astype(int).tolist(), classes)
    t, p, tp_ = cm.sum(1), cm.sum(0), np.diag(cm)
    per_class = {}
    for i, c in enumerate(classes):
        precision = tp_[i] / p[i] if p[i] else 0.0
        recall = tp_[i] / t[i] if t[i] else 0.0
        f1 = 2 * tp_[i] / (t[i] + p[i]) if t[i] + p[i] else 0.0
        per_class[str(c)] = {
            "precision": round(float(precision), 6),
            "recall": round(float(recall), 6),
            "f1": round(float(f1), 6),
            "support": int(t[i]),
        }
    return {"confusion": confusion, "per_class": per_class}


def prediction_spread(s: Sums, classes: tuple[str, ...]) -> dict:
    """How a classifier's decided labels spread over the classes, from the summed confusion
    matrix (the same on both engines): the rows predicted as each class and the rows of each
    class, the classes with rows that it never predicts, and whether it predicts one class
    only. A model that never predicts a class it is shown (all the minority rows at a
    threshold that suits accuracy on imbalanced data) is degenerate whatever its ranking
    KPIs say: evaluate.json reports this and the gate stops it (``gate.degenerate``)."""
    k = len(classes)
    cm = s["cm"].reshape(k, k)
    predicted, actual = cm.sum(0).astype(int), cm.sum(1).astype(int)
    return {
        "predicted": {str(c): int(n) for c, n in zip(classes, predicted, strict=True)},
        "actual": {str(c): int(n) for c, n in zip(classes, actual, strict=True)},
        "never_predicted": [
            str(c) for c, p, a in zip(classes, predicted, actual, strict=True) if a and not p
        ],
        "single_class": bool((predicted > 0).sum() == 1 and (actual > 0).sum() > 1),
    }


def rounded(values: dict[str, float]) -> dict[str, float | None]:
    """KPIs as :func:`compute_kpis` reports them: 6 digits, None where undefined."""
    return {k: (round(v, 6) if np.isfinite(v) else None) for k, v in values.items()}


def calibration_from_sums(s: Sums) -> list[dict[str, float]]:
    """Reliability diagram from the merged calibration bins: per bin of the score, the mean
    predicted probability and the observed rate (binary: of the positive class; multiclass: the
    top class's confidence and how often it is right)."""
    return [
        {
            "bin": b,
            "mean_predicted": round(float(s["cal_p"][b] / s["cal_n"][b]), 6),
            "fraction_positive": round(float(s["cal_y"][b] / s["cal_n"][b]), 6),
            "count": int(s["cal_n"][b]),
        }
        for b in range(len(s["cal_n"]))
        if s["cal_n"][b]
    ]


def hist_curves(
    s: Sums, classes: tuple[str, ...] | list[str], points: int
) -> tuple[list[dict], list[dict]]:
    """:func:`class_curves` from the score histograms: one point per non-empty bin (bin edges
    as thresholds), thinned to ``points``."""
    k = len(classes)
    h = _hist(s, k)
    roc: list[dict] = []
    pr: list[dict] = []
    if h is None:
        return roc, pr
    wanted = [1] if k == 2 else list(range(k))
    for c in wanted:
        neg, pos = h[c, 0][::-1], h[c, 1][::-1]
        if not neg.sum() or not pos.sum():
            continue
        keep = (pos + neg) > 0
        tp, fp = np.cumsum(pos)[keep], np.cumsum(neg)[keep]
        thr = (HIST_BINS - np.flatnonzero(keep) - 1) / HIST_BINS
        tpr, fpr = np.r_[0.0, tp / pos.sum()], np.r_[0.0, fp / neg.sum()]
        thr_all = np.r_[1.0, thr]
        for i in _thin(len(tpr), points):
            roc.append(
                {
                    "class": str(classes[c]),
                    "fpr": round(float(fpr[i]), 6),
                    "tpr": round(float(tpr[i]), 6),
                    "threshold": round(float(thr_all[i]), 6),
                }
            )
        precision, recall = tp / (tp + fp), tp / pos.sum()
        for i in _thin(len(precision), points):
            pr.append(
                {
                    "class": str(classes[c]),
                    "recall": round(float(recall[i]), 6),
                    "precision": round(float(precision[i]), 6),
                }
            )
    return roc, pr


def threshold_counts(y_true: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Binary: per threshold of :data:`THRESHOLD_GRID`, the counts (tn, fp, fn, tp) — additive
    over partitions, so a large out-of-fold set gives :func:`threshold_curve` from sums."""
    y = np.asarray(y_true, dtype=np.int64)
    p = positive(proba)
    pos_scores, neg_scores = np.sort(p[y == 1]), np.sort(p[y == 0])
    # rows with p >= t: n - (rows with p < t)
    tp = len(pos_scores) - np.searchsorted(pos_scores, THRESHOLD_GRID, side="left")
    fp = len(neg_scores) - np.searchsorted(neg_scores, THRESHOLD_GRID, side="left")
    fn, tn = len(pos_scores) - tp, len(neg_scores) - fp
    return np.column_stack([tn, fp, fn, tp]).astype(np.float64)


def threshold_curve_from_counts(
    counts: np.ndarray,
    metric: str | None = None,
    cost_fp: float = 1.0,
    cost_fn: float = 1.0,
    ranking: dict[str, float] | None = None,
) -> list[dict[str, float]]:
    """:func:`threshold_curve` from summed :func:`threshold_counts`; a threshold-free metric
    (ROC AUC, log loss...) takes its one value from ``ranking``."""
    rows = []
    for t, (tn, fp, fn, tp) in zip(THRESHOLD_GRID, counts, strict=True):
        n = tn + fp + fn + tp
        row = {"threshold": float(t), "cost": round((cost_fp * fp + cost_fn * fn) / n, 6)}
        if metric:
            cm = np.array([tn, fp, fn, tp])
            s = {"n": np.array([n]), "cm": cm, "log_loss": np.array([0.0])}
            s["brier"] = np.array([0.0])
            if metric in THRESHOLD_FREE:
                value = (ranking or {}).get(metric, float("nan"))
            else:
                value = kpis_from_sums(BINARY, s, [metric])[metric]
            row[metric] = round(float(value), 6)
        rows.append(row)
    return rows

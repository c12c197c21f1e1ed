"""The task types and what each one decides: metrics, their direction, candidates, defaults.

A plain module with no heavy imports, so that the settings (:mod:`mlcycle.config`), the
stages and the service can all read it without pulling in scikit-learn, and a change to the
metric *code* (:mod:`mlcycle.metrics`) re-runs only the stages that compute metrics. A test
keeps :data:`KPI_NAMES` equal to the functions :mod:`mlcycle.metrics` registers.
"""

from __future__ import annotations

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)
CLASSIFICATION = (BINARY, MULTICLASS)

# The KPIs each task can report, and so name in objectives.kpis / primary_metric / minimums.
KPI_NAMES: dict[str, tuple[str, ...]] = {
    BINARY: (
        "roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "balanced_accuracy",
        "precision", "recall", "f1", "mcc",
    ),
    MULTICLASS: (
        "accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "log_loss",
        "roc_auc_ovr", "mcc",
    ),
    REGRESSION: ("rmse", "mae", "r2", "mape", "median_ae", "residual_std"),
}  # fmt: skip
ALL_KPI_NAMES = tuple(dict.fromkeys(n for names in KPI_NAMES.values() for n in names))

# Metrics where a smaller value is better; every other metric is "higher is better". Model
# selection, thresholds, slice gaps, objectives and the champion comparison all read this.
LOWER_IS_BETTER = frozenset(
    {"log_loss", "brier", "rmse", "mae", "mape", "median_ae", "residual_std"}
)

# What `mlcycle init` proposes, and what objectives fall back to when they name none.
DEFAULT_PRIMARY = {BINARY: "roc_auc", MULTICLASS: "f1_macro", REGRESSION: "rmse"}
DEFAULT_KPIS = {
    BINARY: KPI_NAMES[BINARY],
    MULTICLASS: ("f1_macro", "accuracy", "balanced_accuracy", "f1_weighted", "log_loss"),
    REGRESSION: ("rmse", "mae", "r2", "mape", "residual_std"),
}

# Model kinds (adapters in mlcycle.models) and the tasks each can learn.
MODEL_TASKS: dict[str, tuple[str, ...]] = {
    "xgboost": TASKS,
    "logistic_regression": CLASSIFICATION,
    "random_forest": TASKS,
    "ridge": (REGRESSION,),
}
MODEL_KINDS = tuple(MODEL_TASKS)
DEFAULT_CANDIDATES = {
    BINARY: ("xgboost", "logistic_regression", "random_forest"),
    MULTICLASS: ("xgboost", "logistic_regression", "random_forest"),
    REGRESSION: ("xgboost", "ridge", "random_forest"),
}


def is_classification(task: str) -> bool:
    """Whether ``task`` predicts a class (binary or multiclass) rather than a number."""
    return task in CLASSIFICATION


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of ``metric`` is better (log loss, RMSE, ...)."""
    return metric in LOWER_IS_BETTER


def better(metric: str, a: float, b: float) -> bool:
    """Whether value ``a`` of ``metric`` beats ``b``."""
    return a < b if metric in LOWER_IS_BETTER else a > b


def meets(metric: str, value: float, bound: float) -> bool:
    """Whether ``value`` satisfies the objective ``bound``: a maximum for lower-is-better
    metrics, a minimum for the others."""
    return value <= bound if metric in LOWER_IS_BETTER else value >= bound


def task_of_kpi(metric: str) -> tuple[str, ...]:
    """The tasks that can report ``metric``."""
    return tuple(t for t in TASKS if metric in KPI_NAMES[t])

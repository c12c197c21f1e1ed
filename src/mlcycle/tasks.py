"""The task types, each a :class:`Task` object that says what the task decides and measures.

A task *name* (``objectives.task`` in params.yaml, ``task`` in a signature) is one of
:data:`BINARY`, :data:`MULTICLASS` and :data:`REGRESSION`; :func:`get` gives its
:class:`Task`, which owns everything that differs between tasks: the decision rule (scores to
labels by a :data:`Decision`: binary at a threshold, :data:`DEFAULT_THRESHOLD` unless one is
chosen; multiclass by weights on the class probabilities, the most probable class unless
weights are fitted), the score
drift and plots read, the KPIs and their directions, the defaults ``mlcycle init`` and the
objectives fall back to, and the summary of the target the stages print and write. Code above
asks the Task instead of comparing task names.

A plain module with no heavy imports, so that the settings (:mod:`mlcycle.config`), the
stages and the service can all read it without pulling in scikit-learn, pandas or numpy (numpy
alone adds about 0.1 s to importing the settings, measured with ``python -X importtime``): the
methods take arrays and series and use their own methods; the two that need a numpy function
import it inside, where an array has loaded it already. A change to the metric *code*
(:mod:`mlcycle.metrics`) re-runs only the stages that compute metrics. A test keeps
:data:`KPI_NAMES` equal to the functions :mod:`mlcycle.metrics` registers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

BINARY = "binary_classification"
MULTICLASS = "multiclass_classification"
REGRESSION = "regression"

# A binary label is the positive class when its probability reaches the threshold; this one
# unless evaluation chose another on the training split's out-of-fold predictions.
DEFAULT_THRESHOLD = 0.5

# What a classification task decides its labels with (:meth:`Task.decide`), chosen by
# evaluation on the training split's out-of-fold predictions and stored in the bundle: binary,
# the threshold on the positive class's probability; multiclass, a weight per class (in the
# signature's class order; the label is the class whose weighted probability is largest);
# None, the task's default rule (:data:`DEFAULT_THRESHOLD`; the most probable class).
Decision = float | tuple[float, ...] | None


def as_decision(value: Any) -> Decision:
    """A :data:`Decision` from its JSON form (a bundle's metadata, a reference profile): a
    number, a list of weights or null."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return tuple(float(v) for v in value)
    return float(value)


# Metrics where a smaller value is better; every other metric is "higher is better". Model
# selection, thresholds, slice gaps, objectives and the champion comparison all read this.
LOWER_IS_BETTER = frozenset(
    {"log_loss", "brier", "rmse", "mae", "mape", "median_ae", "residual_std"}
)


def _eager(*values: Any) -> tuple[Any, ...]:
    return values


class Task:
    """What one task predicts and how it is decided, measured and summarised.

    ``kpis`` are the KPIs it can report (and so name in objectives.kpis / primary_metric /
    minimums); ``default_kpis``, ``default_primary`` and ``default_candidates`` are what
    ``mlcycle init`` proposes and objectives fall back to. The methods here are the general
    classification case (any number of classes; the most probable one is the label), which
    :class:`MulticlassTask` is; :class:`BinaryTask` and :class:`RegressionTask` override what
    differs. Arrays are numpy's, series pandas' (or Dask's where a method says so).
    """

    classification: ClassVar[bool] = True  # predicts a class, with a probability per class
    has_positive_class: ClassVar[bool] = False  # binary: a negative and a positive class
    thresholded: ClassVar[bool] = False  # binary: the label is decided at a threshold
    one_score: ClassVar[bool] = False  # the output is one number a row (:meth:`score`)
    score_name: ClassVar[str] = "score"  # the drift column of :meth:`score`
    decision_rule: ClassVar[str] = ""  # evaluation's rule, for a task that fits no decision

    def __init__(
        self,
        name: str,
        kpis: tuple[str, ...],
        default_kpis: tuple[str, ...],
        default_primary: str,
        default_candidates: tuple[str, ...],
    ) -> None:
        self.name = name
        self.kpis = kpis
        self.default_kpis = default_kpis
        self.default_primary = default_primary
        self.default_candidates = default_candidates

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    # -- outputs and decisions ----------------------------------------------------------------

    def output_width(self, n_classes: int) -> int:
        """Columns of the model's output: ``n_classes`` probabilities, or 0 for a vector."""
        return int(n_classes)

    def decide(self, output: Any, decision: Decision = None) -> Any:
        """Class indices (int64) from the model's output by the :data:`Decision`, or None when
        the task has no classes. Binary: the positive class where its probability is at least
        the threshold (:data:`DEFAULT_THRESHOLD` when None); multiclass: the class of the
        largest weighted probability (the most probable one when None); ValueError for weights
        that are not one per class (TypeError for a threshold)."""
        if decision is None:
            return output.argmax(axis=1)
        if not isinstance(decision, tuple):
            raise TypeError(f"a multiclass decision is a weight per class, got {decision!r}")
        if len(decision) != output.shape[1]:
            raise ValueError(
                f"a multiclass decision is one weight per class ({output.shape[1]}), got "
                f"{decision!r}"
            )
        return (output * decision).argmax(axis=1)

    def decision_problem(self, decision: Decision, n_classes: int) -> str | None:
        """What is wrong with ``decision`` for a model of ``n_classes`` classes (a bundle's
        metadata), or None: a multiclass decision is a positive weight per class."""
        if decision is None or (
            isinstance(decision, tuple) and len(decision) == n_classes and min(decision) > 0
        ):
            return None
        return f"{decision!r} is not a positive weight for each of the {n_classes} classes"

    def score(self, output: Any) -> Any:
        """The one number per row drift and plots read: the positive class's probability
        (binary), the top class's probability (multiclass) or the predicted value."""
        return output.max(axis=1)

    def target_dtype(self) -> str:
        """The dtype of the encoded target the metrics read."""
        return "int64"

    def probabilities(self, output: Any) -> Any:
        """The ``(n, n_classes)`` probability matrix the metrics read from the output."""
        return output

    def calibration_hits(self, y: Any, output: Any) -> Any:
        """Per row, whether the event :meth:`score` gives the probability of happened: the
        positive class (binary) or the top class being right (multiclass)."""
        return (output.argmax(axis=1) == y).astype("int8")

    def ranked_columns(self, n_classes: int) -> Sequence[int]:
        """The output columns whose scores ranking KPIs (ROC, PR) rank: every class's."""
        return range(n_classes)

    # -- the prediction files (out-of-fold, test) ---------------------------------------------

    def output_columns(self, classes: Sequence[str], prefix: str = "") -> list[str]:
        """The prediction-file columns holding the output: ``probability_<class>`` each."""
        return [f"{prefix}probability_{c}" for c in classes]

    def output_to_columns(self, output: Any, classes: Sequence[str]) -> dict[str, Any]:
        """:meth:`output_columns` and their values, as the prediction files store them."""
        return {f"probability_{c}": output[:, i] for i, c in enumerate(classes)}

    def output_from_columns(self, frame: Any, classes: Sequence[str], prefix: str = "") -> Any:
        """The output (float64) back from a prediction file's :meth:`output_columns`."""
        return frame[self.output_columns(classes, prefix)].to_numpy(float)

    # -- the classes and the target ------------------------------------------------------------

    def signature_classes(
        self,
        classes: Sequence[str],
        negative_class: str | None = None,
        positive_class: str | None = None,
    ) -> tuple[tuple[str, ...], str | None, str | None]:
        """A signature's classes and negative and positive class from what it was given (a
        binary signature may give the two classes alone); ValueError for classes the task
        cannot have."""
        if len(classes) < 2:
            raise ValueError(
                f"a multiclass signature needs at least two classes, got {list(classes)}"
            )
        return tuple(classes), negative_class, positive_class

    def training_classes(
        self, labels: Sequence[str], target: str, positive_class: str | None
    ) -> tuple[str, ...]:
        """The classes learnt from the training split's distinct ``labels`` (in
        :func:`mlcycle.features.class_order`); ValueError naming ``target`` when the task
        cannot learn from them."""
        if len(labels) < 2:
            raise ValueError(
                f"target {target!r} has {len(labels)} class(es) {list(labels)} in the training "
                f"split; {self.name} needs at least two"
            )
        return tuple(labels)

    def check_labels(
        self,
        target: str,
        classes: Sequence[str],
        positive_class: str | None,
        numeric: bool,
        max_numeric_classes: int,
    ) -> None:
        """ValueError naming ``target`` and what to change in params.yaml when its distinct
        labels (sorted text ``classes``; ``numeric``: every label is a number) cannot be
        learnt as this task's classes. A numeric target with more than
        ``max_numeric_classes`` values is probably a quantity."""
        if len(classes) < 2:
            raise ValueError(
                f"target {target!r} has a single class {list(classes)} in the data; {self.name} "
                "needs at least two. Gather rows of the other classes, or choose another "
                "objectives.target"
            )
        if numeric and len(classes) > max_numeric_classes:
            raise ValueError(
                f"target {target!r} holds {len(classes)} distinct numbers; as classes each would "
                "be learnt separately. Set objectives.task: regression if it is a quantity"
            )

    def many_labels_hint(self, numeric: bool) -> str | None:
        """For a target with too many distinct labels to list: what to change in params.yaml,
        or None when this task can take that many."""
        return "set objectives.task: regression if it is a quantity" if numeric else None

    def fold_problem(self, counts: Mapping[str, int], folds: int, where: str) -> str | None:
        """Why rows with ``counts`` per class (counted ``where``, e.g. "training rows per
        class") cannot be cut into ``folds`` stratified cross-validation folds, each holding
        rows of every class; None when they can. Training refuses such folds, and validate says
        so before any work."""
        rare = {str(c): int(n) for c, n in counts.items() if n < folds}
        if not rare:
            return None
        return (
            f"class(es) {rare} ({where}) have fewer rows than train.cv_folds={folds}: merge "
            "them into another class or drop them (value_map on a source maps a class onto "
            "another, or to null, which drops its rows), lower train.cv_folds, or gather more "
            "rows of them"
        )

    # -- the target ---------------------------------------------------------------------------

    def target_summary(
        self,
        target: Any,
        positive_class: str | None = None,
        compute: Callable[..., Sequence[Any]] = _eager,
    ) -> dict[str, Any]:
        """The target's make-up as prepare writes it for one split. ``target`` is a pandas or
        Dask series; ``compute`` turns lazy aggregates into values (``dask.compute``)."""
        (counts,) = compute(target.value_counts())
        shares = (counts / counts.sum()).sort_index()
        return {"class_share": {str(k): round(float(v), 6) for k, v in shares.items()}}

    def predicts(self, target: str, classes: Sequence[str], positive_class: str | None) -> str:
        """What a model of this task predicts, in words (the model card)."""
        return f"the class of {target}, one of {classes}"

    def describe_target(self, y: Any, classes: Sequence[str]) -> str:
        """The encoded target's make-up for a progress log: class counts, or the range."""
        return ", ".join(
            f"{c}: {int(n)}" for c, n in zip(classes, _counts(y, classes), strict=True)
        )

    def slice_base(self, target_mean: float) -> dict[str, float]:
        """What a slice of the test split reports about its target besides its size, from the
        mean of its encoded target (binary: the positive rate)."""
        return {}

    def confusion_summary(self, matrix: list[list[int]], classes: Sequence[str]) -> dict:
        """The confusion matrix (rows actual, columns predicted) as evaluate.json writes it:
        ``{actual: {predicted: count}}``."""
        return {
            str(a): {str(p): int(matrix[i][j]) for j, p in enumerate(classes)}
            for i, a in enumerate(classes)
        }


class BinaryTask(Task):
    """Two classes, negative then positive; the label is decided at a threshold."""

    has_positive_class = True
    thresholded = True
    one_score = True

    def signature_classes(
        self,
        classes: Sequence[str],
        negative_class: str | None = None,
        positive_class: str | None = None,
    ) -> tuple[tuple[str, ...], str | None, str | None]:
        classes = tuple(classes) or (negative_class, positive_class)
        if len(classes) != 2 or None in classes:
            raise ValueError(
                f"a binary signature needs two classes (negative, positive), got {list(classes)}"
            )
        return classes, classes[0], classes[1]

    def training_classes(
        self, labels: Sequence[str], target: str, positive_class: str | None
    ) -> tuple[str, ...]:
        """The other label, then ``positive_class``."""
        if positive_class not in labels or len(labels) != 2:
            raise ValueError(
                f"target {target!r} must have exactly two classes including "
                f"{positive_class!r} for {self.name}; found {list(labels)[:20]}"
            )
        return (next(v for v in labels if v != positive_class), positive_class)

    def check_labels(
        self,
        target: str,
        classes: Sequence[str],
        positive_class: str | None,
        numeric: bool,
        max_numeric_classes: int,
    ) -> None:
        if positive_class not in classes:
            raise ValueError(
                f"objectives.positive_class {positive_class!r} never occurs in target "
                f"{target!r}; its values are {list(classes)[:20]}"
            )
        if len(classes) != 2:
            hint = (
                "; use objectives.task: multiclass_classification"
                if len(classes) > 2
                else "; a model needs examples of both classes"
            )
            raise ValueError(
                f"target {target!r} must have exactly two classes for binary classification; "
                f"found {len(classes)}: {list(classes)[:20]}{hint}"
            )

    def many_labels_hint(self, numeric: bool) -> str | None:
        return "use objectives.task: multiclass_classification"

    def decision_problem(self, decision: Decision, n_classes: int) -> str | None:
        """A binary decision is a threshold between 0 and 1."""
        if decision is None or (isinstance(decision, float) and 0 <= decision <= 1):
            return None
        return f"{decision!r} is not a threshold between 0 and 1"

    def decide(self, output: Any, decision: Decision = None) -> Any:
        t = DEFAULT_THRESHOLD if decision is None else decision
        return (self.score(output) >= t).astype("int64")

    def score(self, output: Any) -> Any:
        """The positive class's probability: column 1 of the matrix, or the vector itself."""
        return output[:, 1] if output.ndim == 2 else output

    def target_summary(
        self,
        target: Any,
        positive_class: str | None = None,
        compute: Callable[..., Sequence[Any]] = _eager,
    ) -> dict[str, Any]:
        (rate,) = compute((target == positive_class).mean())
        return {"positive_rate": round(float(rate), 6)}

    def predicts(self, target: str, classes: Sequence[str], positive_class: str | None) -> str:
        return f"{target} = {positive_class!r}"

    def describe_target(self, y: Any, classes: Sequence[str]) -> str:
        return f"{int(_counts(y, classes)[1])} positive"

    def slice_base(self, target_mean: float) -> dict[str, float]:
        return {"positive_rate": round(float(target_mean), 6)}

    def confusion_summary(self, matrix: list[list[int]], classes: Sequence[str]) -> dict:
        (tn, fp), (fn, tp) = matrix
        return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}

    def probabilities(self, output: Any) -> Any:
        """Both columns from the positive class's probability ``p``: ``1 - p`` and ``p``."""
        import numpy as np  # output is a numpy array: numpy is loaded already

        p = self.score(output)
        return np.column_stack([1 - p, p])

    def calibration_hits(self, y: Any, output: Any) -> Any:
        return y

    def ranked_columns(self, n_classes: int) -> Sequence[int]:
        return [1]

    def output_columns(self, classes: Sequence[str], prefix: str = "") -> list[str]:
        return [f"{prefix}probability"]

    def output_to_columns(self, output: Any, classes: Sequence[str]) -> dict[str, Any]:
        return {"probability": self.score(output)}

    def output_from_columns(self, frame: Any, classes: Sequence[str], prefix: str = "") -> Any:
        return self.probabilities(frame[f"{prefix}probability"].to_numpy(float))


class MulticlassTask(Task):
    """Two or more classes; the label is the class of the largest weighted probability (the
    most probable one unless weights are fitted)."""


class RegressionTask(Task):
    """A number; no classes, no decision."""

    classification = False
    one_score = True
    score_name = "value"
    decision_rule = "none: a regression model predicts a number"

    def output_width(self, n_classes: int) -> int:
        return 0

    def signature_classes(
        self,
        classes: Sequence[str],
        negative_class: str | None = None,
        positive_class: str | None = None,
    ) -> tuple[tuple[str, ...], str | None, str | None]:
        if classes:
            raise ValueError("a regression signature has no classes")
        return (), negative_class, positive_class

    def training_classes(
        self, labels: Sequence[str], target: str, positive_class: str | None
    ) -> tuple[str, ...]:
        return ()

    def many_labels_hint(self, numeric: bool) -> str | None:
        return None

    def fold_problem(self, counts: Mapping[str, int], folds: int, where: str) -> str | None:
        return None  # plain k-fold: no class to spread over the folds

    def decision_problem(self, decision: Decision, n_classes: int) -> str | None:
        return None if decision is None else f"{decision!r}: a regression model decides nothing"

    def decide(self, output: Any, decision: Decision = None) -> None:
        return None

    def score(self, output: Any) -> Any:
        return output.reshape(-1)

    def target_dtype(self) -> str:
        return "float64"

    def target_summary(
        self,
        target: Any,
        positive_class: str | None = None,
        compute: Callable[..., Sequence[Any]] = _eager,
    ) -> dict[str, Any]:
        mean, std = compute(target.mean(), target.std())
        return {"target_mean": round(float(mean), 6), "target_std": round(float(std), 6)}

    def predicts(self, target: str, classes: Sequence[str], positive_class: str | None) -> str:
        return f"the value of {target}"

    def describe_target(self, y: Any, classes: Sequence[str]) -> str:
        return f"target mean {y.mean():.4g}, std {y.std():.4g}"

    def slice_base(self, target_mean: float) -> dict[str, float]:
        return {"target_mean": round(float(target_mean), 6)}

    def output_columns(self, classes: Sequence[str], prefix: str = "") -> list[str]:
        return [f"{prefix}prediction"]

    def output_to_columns(self, output: Any, classes: Sequence[str]) -> dict[str, Any]:
        return {"prediction": output}

    def output_from_columns(self, frame: Any, classes: Sequence[str], prefix: str = "") -> Any:
        return frame[f"{prefix}prediction"].to_numpy(float)


def _counts(y: Any, classes: Sequence[str]) -> Any:
    import numpy as np  # y is a numpy array: numpy is loaded already

    return np.bincount(y.astype(np.int64), minlength=len(classes))


_BINARY_KPIS = (
    "roc_auc", "pr_auc", "log_loss", "brier", "accuracy", "balanced_accuracy",
    "precision", "recall", "f1", "mcc",
)  # fmt: skip
TASK: dict[str, Task] = {
    BINARY: BinaryTask(
        BINARY,
        kpis=_BINARY_KPIS,
        default_kpis=_BINARY_KPIS,
        default_primary="roc_auc",
        default_candidates=("xgboost", "logistic_regression", "random_forest"),
    ),
    MULTICLASS: MulticlassTask(
        MULTICLASS,
        kpis=(
            "accuracy",
            "balanced_accuracy",
            "f1_macro",
            "f1_weighted",
            "log_loss",
            "roc_auc_ovr",
            "mcc",
        ),  # fmt: skip
        default_kpis=("f1_macro", "accuracy", "balanced_accuracy", "f1_weighted", "log_loss"),
        default_primary="f1_macro",
        default_candidates=("xgboost", "logistic_regression", "random_forest"),
    ),
    REGRESSION: RegressionTask(
        REGRESSION,
        kpis=("rmse", "mae", "r2", "mape", "median_ae", "residual_std"),
        default_kpis=("rmse", "mae", "r2", "mape", "residual_std"),
        default_primary="rmse",
        default_candidates=("xgboost", "ridge", "random_forest"),
    ),
}
TASKS = tuple(TASK)
CLASSIFICATION = tuple(name for name, task in TASK.items() if task.classification)


class UnknownTaskError(ValueError):
    """A task name that is none of :data:`TASKS`."""


def get(name: str) -> Task:
    """The :class:`Task` called ``name``, or :class:`UnknownTaskError` naming the known ones."""
    try:
        return TASK[name]
    except (KeyError, TypeError):
        raise UnknownTaskError(f"unknown task {name!r}; known: {list(TASKS)}") from None


# Views by name, for the settings and `mlcycle init`.
KPI_NAMES: dict[str, tuple[str, ...]] = {name: task.kpis for name, task in TASK.items()}
ALL_KPI_NAMES = tuple(dict.fromkeys(n for names in KPI_NAMES.values() for n in names))
DEFAULT_PRIMARY = {name: task.default_primary for name, task in TASK.items()}
DEFAULT_KPIS = {name: task.default_kpis for name, task in TASK.items()}
DEFAULT_CANDIDATES = {name: task.default_candidates for name, task in TASK.items()}

# Model kinds (adapters in mlcycle.models) and the tasks each can learn.
MODEL_TASKS: dict[str, tuple[str, ...]] = {
    "xgboost": TASKS,
    "logistic_regression": CLASSIFICATION,
    "random_forest": TASKS,
    "ridge": (REGRESSION,),
}
MODEL_KINDS = tuple(MODEL_TASKS)


def kinds_for(task: str) -> list[str]:
    """The model kinds that can learn ``task``, in :data:`MODEL_KINDS` order."""
    return [kind for kind in MODEL_KINDS if task in MODEL_TASKS[kind]]


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

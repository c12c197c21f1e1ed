"""What evaluation measures on the test split, for either engine: the KPIs to report, the
decision threshold, the plots of the task and the :class:`Evaluation` the evaluate stage
writes. The local engine measures rows in memory with :func:`measure`; the Dask engine fills
the same :class:`Evaluation` from partition sums."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.features import Signature
from mlcycle.metrics import (
    KPI_FUNCTIONS,
    bootstrap_interval,
    calibration_points,
    choose_threshold,
    class_curves,
    compute_kpis,
    confusion_matrix,
    per_class_report,
    regression_points,
    residual_summary,
    slice_kpis,
    threshold_curve,
)


def decision_threshold(
    obj: config.Objectives, oof_path: str
) -> tuple[float | None, str, list[dict]]:
    """Binary: the threshold chosen on the training split's out-of-fold predictions at
    ``oof_path`` (never the test split), its rule and the curve behind it. Other tasks have
    none."""
    task = tasks.get(obj.task)
    if not task.thresholded:
        return None, task.decision_rule, []
    oof = pd.read_parquet(oof_path)
    curve = threshold_curve(
        oof["actual"].to_numpy(),
        oof["probability"].to_numpy(),
        obj.threshold_metric,
        obj.cost_fp,
        obj.cost_fn,
    )
    rule = (
        f"maximises out-of-fold {obj.threshold_metric}"
        if obj.threshold_metric
        else f"minimises out-of-fold cost ({obj.cost_fp} per FP, {obj.cost_fn} per FN)"
    )
    return choose_threshold(curve, obj.threshold_metric), rule, curve


def task_plots(
    y: np.ndarray, out: np.ndarray, signature: Signature, threshold: float | None, points: int
) -> dict[str, list]:
    """Plot data for every plot dvc.yaml draws; a plot that does not fit the task gets an
    empty list, so `dvc plots show` draws it empty instead of failing."""
    plots: dict[str, list] = dict.fromkeys(
        ("roc", "precision_recall", "calibration", "predicted_actual"), []
    )
    task = tasks.get(signature.task)
    if not task.classification:
        plots["predicted_actual"] = regression_points(y, out)
        return plots
    out = np.asarray(out, dtype=np.float64)
    plots["roc"], plots["precision_recall"] = class_curves(y, out, signature.classes, points)
    # Binary: the positive class's probability against its rate; multiclass: the confidence
    # of the top class against how often it is right.
    plots["calibration"] = calibration_points(task.calibration_hits(y, out), task.score(out))
    return plots


@dataclass
class Evaluation:
    """What either engine measured on the test split, ready to be written: KPIs (rounded),
    the primary metric's interval, slices, the baseline, the task's details (confusion,
    per-class report, residuals), plot data and the rows of confusion.csv. ``notes`` are
    extra evaluate.json keys saying what was approximated (the Dask engine on a test split
    too large to gather; empty otherwise)."""

    threshold: float | None
    rule: str
    curve: list[dict]
    kpis: dict[str, float | None]
    interval: dict
    slices: dict[str, dict]
    baseline: tuple[str, dict[str, float | None]] | None
    task_detail: dict
    plots: dict[str, list]
    confusion_rows: str
    rows: int
    unseen: dict[str, int]
    notes: dict = field(default_factory=dict)


def kpi_names(obj: config.Objectives) -> tuple[str, ...]:
    """The KPIs evaluate.json reports: the objectives' first, then every one of the task."""
    return tuple(dict.fromkeys((*obj.kpis, *KPI_FUNCTIONS[obj.task])))


def check_slices(obj: config.Objectives, columns: list[str]) -> None:
    """A ValueError naming slice columns the test split does not have."""
    unknown = [col for col in obj.slices if col not in columns]
    if unknown:
        raise ValueError(
            f"objectives.slices names column(s) {unknown} that the test split does not have; "
            f"columns are {list(columns)}"
        )


def confusion_csv_rows(y: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> str:
    """The rows of plots/confusion.csv: each test row's actual and predicted class, by name."""
    return "".join(f"{classes[a]},{classes[p]}\n" for a, p in zip(y, labels, strict=True))


def measure(
    params: config.Params,
    signature: Signature,
    test: pd.DataFrame,
    y: np.ndarray,
    out: np.ndarray,
    base_out: tuple[str, np.ndarray] | None,
    unseen: dict[str, int],
    oof_path: str,
) -> Evaluation:
    """Every figure of the evaluation from the rows in memory (the local engine): ``test``
    needs only the slice columns, ``base_out`` is the baseline's kind and output, the
    threshold comes from the out-of-fold predictions at ``oof_path``."""
    obj, cfg = params.objectives, params.evaluate
    task = obj.task
    threshold, rule, curve = decision_threshold(obj, oof_path)
    names = kpi_names(obj)
    check_slices(obj, list(test.columns))
    kpis = compute_kpis(task, y, out, threshold, names)
    interval = bootstrap_interval(task, y, out, threshold, obj.primary_metric, seed=0)
    slices = {
        col: slice_kpis(
            task,
            test[col].fillna("<missing>").to_numpy(),
            y,
            out,
            threshold,
            names,
            min_rows=obj.slice_min_rows,
            interval_metric=obj.primary_metric,
        )
        for col in obj.slices
    }
    baseline = None
    if base_out is not None:
        baseline = (base_out[0], compute_kpis(task, y, base_out[1], threshold, obj.kpis))
    task_detail: dict = {}
    spec = tasks.get(task)
    if not spec.classification:
        task_detail["residuals"] = residual_summary(y, out)
        confusion_rows = ""
    else:
        labels = spec.decide(out, threshold)
        matrix = confusion_matrix(y, labels, len(signature.classes))
        task_detail["confusion"] = spec.confusion_summary(matrix, signature.classes)
        task_detail["per_class"] = per_class_report(y, labels, signature.classes)
        confusion_rows = confusion_csv_rows(y, labels, signature.classes)
    return Evaluation(
        threshold=threshold,
        rule=rule,
        curve=curve,
        kpis=kpis,
        interval=interval,
        slices=slices,
        baseline=baseline,
        task_detail=task_detail,
        plots=task_plots(y, out, signature, threshold, cfg.curve_points),
        confusion_rows=confusion_rows,
        rows=len(test),
        unseen=unseen,
    )

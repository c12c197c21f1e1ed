"""Stage `evaluate`: score the test split and report the objectives' KPIs and plots.

The test split is read here and nowhere else in the pipeline. The untuned baseline the train
stage fitted beside the chosen model (``train.baseline``) is scored on the same rows, so
``metrics/evaluate.json`` shows what tuning and model selection bought.
Inputs: data/prepared/test.parquet, models/train/, metrics/train.json (the winner's CV score);
params `objectives`, `evaluate`.
The task (``objectives.task``) decides the KPIs, the threshold (binary only) and the plots:
ROC / precision-recall per class, calibration and the confusion matrix for classification;
predicted vs actual and residuals for regression.
Outputs: metrics/evaluate.json, metrics/summary.json (the headline `dvc metrics show` lists);
metrics/plots/ (plot data); data/evaluate/test_predictions.parquet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.engines import dask_client
from mlcycle.engines.evaluate import main_dask
from mlcycle.explain import shap_summary
from mlcycle.features import Signature, encode_target, to_model_frame, unseen_categories
from mlcycle.io import read_json, write_json, write_parquet, write_text
from mlcycle.metrics import (
    KPI_FUNCTIONS,
    bootstrap_interval,
    calibration_points,
    choose_threshold,
    class_curves,
    compute_kpis,
    confusion_matrix,
    per_class_report,
    prediction_frame,
    regression_points,
    residual_summary,
    slice_gaps,
    slice_kpis,
    threshold_curve,
)
from mlcycle.models import Model, load_model_dir
from mlcycle.stages import (
    BASELINE_DIR,
    METRICS,
    MODEL_DIR,
    OOF,
    PLOTS,
    PREDICTIONS,
    SIGNATURE_FILE,
    TEST,
    log,
    run,
)
from mlcycle.summary import SUMMARY, headline
from mlcycle.tasks import lower_is_better, meets


def decision_threshold(obj: config.Objectives) -> tuple[float | None, str, list[dict]]:
    """Binary: the threshold chosen on the training split's out-of-fold predictions (never the
    test split), its rule and the curve behind it. Other tasks have none."""
    task = tasks.get(obj.task)
    if not task.thresholded:
        return None, task.decision_rule, []
    oof = pd.read_parquet(OOF)
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


def main() -> None:
    params = config.load()
    task = params.objectives.task
    signature = Signature.from_dict(read_json(SIGNATURE_FILE))
    if signature.task != task:
        raise ValueError(
            f"models/train holds a {signature.task} model but objectives.task is {task}; "
            "re-run the train stage (dvc repro)"
        )
    if params.engine.is_dask:
        with dask_client(params.engine, lambda msg: log("evaluate", msg)) as client:
            main_dask(params, signature, client)
        return
    model, _ = load_model_dir(MODEL_DIR)
    test = pd.read_parquet(TEST)
    y = encode_target(test[params.objectives.target], signature)
    X = to_model_frame(test, signature)
    out = model.output(X)
    base_out = None
    if Path(BASELINE_DIR).is_dir():
        base_model, _ = load_model_dir(BASELINE_DIR)
        base_out = (base_model.kind, base_model.output(X))
    unseen = {k: len(v) for k, v in unseen_categories(test, signature).items()}
    write_parquet(PREDICTIONS, prediction_frame(out, y, task, signature.classes))
    report(params, signature, model, test, y, out, X, base_out, unseen)


def report(
    params: config.Params,
    signature: Signature,
    model: Model,
    test: pd.DataFrame,
    y: np.ndarray,
    out: np.ndarray,
    X: pd.DataFrame,
    base_out: tuple[str, np.ndarray] | None,
    unseen: dict[str, int],
) -> None:
    """Every metric, plot and summary of the evaluation from the rows: ``test`` needs only
    the slice columns, ``X`` is what the SHAP summary samples, ``base_out`` the baseline's
    kind and output."""
    obj, cfg = params.objectives, params.evaluate
    task = obj.task
    threshold, rule, curve = decision_threshold(obj)
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
        names_of = signature.classes
        confusion_rows = "".join(
            f"{names_of[a]},{names_of[p]}\n" for a, p in zip(y, labels, strict=True)
        )
    evaluation = Evaluation(
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
    write_report(params, signature, model, X, evaluation)


def write_report(
    params: config.Params, signature: Signature, model: Model, X: pd.DataFrame, ev: Evaluation
) -> None:
    """Write every file of the evaluation (either engine): metrics/evaluate.json, summary,
    threshold, slices, plot data, SHAP summary of ``X``, importance and confusion.csv."""
    obj = params.objectives
    task = obj.task
    names = kpi_names(obj)
    write_json(f"{PLOTS}/threshold.json", ev.curve)
    write_json(f"{METRICS}/threshold.json", {"threshold": ev.threshold, "rule": ev.rule})
    gaps = {col: slice_gaps(v, names) for col, v in ev.slices.items()}
    write_json(f"{METRICS}/slices.json", {"slices": ev.slices, "gaps": gaps})
    write_json(
        f"{PLOTS}/slices.json",
        [
            {
                "slice": f"{col}={value}",
                "metric": obj.primary_metric,
                "value": m[obj.primary_metric],
                "low": m["interval"]["low"],
                "high": m["interval"]["high"],
                "rows": m["rows"],
            }
            for col, values in ev.slices.items()
            for value, m in values.items()
            if m.get(obj.primary_metric) is not None and m["interval"]["low"] is not None
        ],
    )
    importance, points, by_class = shap_summary(model, X, signature.classes)
    if not importance:
        log("evaluate", f"no SHAP summary for a {model.kind} model (tree boosters only)")
    write_json(f"{PLOTS}/shap_importance.json", importance)
    write_json(f"{PLOTS}/shap_summary.json", points)
    kpis = ev.kpis
    primary = kpis[obj.primary_metric]
    met = primary is not None and meets(obj.primary_metric, primary, obj.minimum)
    baseline = {}
    if ev.baseline is not None:
        base_kind, base_kpis = ev.baseline
        base_primary = base_kpis[obj.primary_metric]
        improvement = None
        if primary is not None and base_primary is not None:
            diff = primary - base_primary
            improvement = round(-diff if lower_is_better(obj.primary_metric) else diff, 6)
        # How much better the chosen model is on the primary metric (> 0: better).
        baseline = {"baseline": {"model": base_kind, **base_kpis, "improvement": improvement}}
    task_detail = dict(ev.task_detail)
    if by_class and tasks.get(task).classification:
        task_detail["shap_by_class"] = by_class
    write_json(
        f"{METRICS}/evaluate.json",
        {
            **kpis,
            "task": task,
            "model": model.kind,
            **baseline,
            "threshold": ev.threshold,
            "rows": ev.rows,
            "confidence_interval": {"metric": obj.primary_metric, **ev.interval},
            "slice_gaps": gaps,
            **task_detail,
            "objective": {
                "metric": obj.primary_metric,
                "minimum": obj.minimum,
                "value": primary,
                "met": met,
            },
            "unseen_categories": ev.unseen,
            **ev.notes,
        },
    )
    # The headline `dvc metrics show` lists (the only file dvc.yaml declares as metrics).
    write_json(
        SUMMARY,
        headline(
            read_json(f"{METRICS}/evaluate.json"), read_json(f"{METRICS}/train.json"), obj.minimums
        ),
    )
    for name, rows in ev.plots.items():
        write_json(f"{PLOTS}/{name}.json", rows)
    write_json(f"{PLOTS}/importance.json", model.importance(signature.columns))
    write_text(f"{PLOTS}/confusion.csv", "actual,predicted\n" + ev.confusion_rows)

    verdict = "meets" if met else "does NOT meet"
    bound = "maximum" if lower_is_better(obj.primary_metric) else "minimum"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in kpis.items() if v is not None)
    log(
        "evaluate",
        f"{model.kind} {obj.primary_metric} {verdict} the objective ({bound} {obj.minimum}): "
        f"{figures}",
    )
    if baseline:
        b = baseline["baseline"]
        log(
            "evaluate",
            f"untuned baseline ({b['model']}): {obj.primary_metric} {b[obj.primary_metric]}; "
            f"improvement {b['improvement']}",
        )


if __name__ == "__main__":
    run("evaluate", main)

"""Stage `evaluate`: score the test split and report the objectives' KPIs and plots.

The test split is read here and nowhere else in the pipeline. The untuned baseline the train
stage fitted beside the chosen model (``train.baseline``) is scored on the same rows, so
``metrics/evaluate.json`` shows what tuning and model selection bought.
Inputs: data/prepared/test.parquet, models/train/, metrics/train.json (the winner's CV score);
params `objectives`, `evaluate`.
The task (``objectives.task``) decides the KPIs, the decision (binary: a threshold; multiclass:
weights per class; both fitted on the out-of-fold predictions of models/train/) and the plots:
ROC / precision-recall per class, calibration and the confusion matrix for classification;
predicted vs actual and residuals for regression.
Outputs: metrics/evaluate.json, metrics/summary.json (the headline `dvc metrics show` lists);
metrics/plots/ (plot data); data/evaluate/test_predictions.parquet.
"""

from __future__ import annotations

from typing import Any

from mlcycle import config, tasks
from mlcycle.engines import Engine, open_engine
from mlcycle.engines.evaluate import Evaluated, EvaluatePaths, evaluate
from mlcycle.evaluation import Evaluation, kpi_names
from mlcycle.explain import shap_summary
from mlcycle.features import Signature
from mlcycle.gate import spread_finding
from mlcycle.io import read_json, write_json, write_text
from mlcycle.metrics import slice_gaps
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

PATHS = EvaluatePaths(
    test=TEST, model_dir=MODEL_DIR, baseline_dir=BASELINE_DIR, oof=OOF, predictions=PREDICTIONS
)


def main() -> None:
    params = config.load()
    signature = read_signature(params.objectives.task)
    with open_engine(params.engine, lambda msg: log("evaluate", msg)) as engine:
        execute(params, signature, engine)


def read_signature(task: str) -> Signature:
    """The trained model's signature, which must be of the objectives' task."""
    signature = Signature.from_dict(read_json(SIGNATURE_FILE))
    if signature.task != task:
        raise ValueError(
            f"models/train holds a {signature.task} model but objectives.task is {task}; "
            "re-run the train stage (dvc repro)"
        )
    return signature


def execute(params: config.Params, signature: Signature, engine: Engine) -> None:
    """Score the test split (the engine writes the predictions) and write every figure."""
    write_report(params, signature, evaluate(engine, params, signature, PATHS))


def write_report(params: config.Params, signature: Signature, evaluated: Evaluated) -> None:
    """Write every file of the evaluation (either engine): metrics/evaluate.json, summary,
    the decision (metrics/threshold.json), slices, plot data, SHAP summary, importance and
    confusion.csv."""
    ev, model, X = evaluated.evaluation, evaluated.model, evaluated.X
    obj = params.objectives
    task = obj.task
    write_json(f"{PLOTS}/threshold.json", ev.curve)
    write_json(f"{METRICS}/threshold.json", {"decision": ev.decision, "rule": ev.rule})
    gaps = write_slices(ev, obj)
    importance, points, by_class = shap_summary(model, X, signature.classes)
    if not importance:
        log("evaluate", f"no SHAP summary for a {model.kind} model (tree boosters only)")
    write_json(f"{PLOTS}/shap_importance.json", importance)
    write_json(f"{PLOTS}/shap_summary.json", points)
    kpis = ev.kpis
    primary = kpis[obj.primary_metric]
    met = primary is not None and meets(obj.primary_metric, primary, obj.minimum)
    baseline = baseline_entry(ev, obj.primary_metric, primary)
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
            "decision": ev.decision,
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
    log_verdict(obj, model.kind, kpis, met, baseline)
    spread = task_detail.get("prediction_spread")
    if spread and spread["never_predicted"]:
        log("evaluate", f"WARNING {spread_finding(spread)}; the gate fails it (gate.degenerate)")


def write_slices(ev: Evaluation, obj: config.Objectives) -> dict[str, Any]:
    """metrics/slices.json (every slice's KPIs and the gaps between a column's slices) and the
    slices' plot data (the primary metric with its interval); the gaps."""
    names = kpi_names(obj)
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
    return gaps


def baseline_entry(ev: Evaluation, metric: str, primary: float | None) -> dict[str, Any]:
    """evaluate.json's ``baseline`` entry: the untuned baseline's KPIs and how much better the
    chosen model is on ``metric`` (> 0: better); empty without a baseline."""
    if ev.baseline is None:
        return {}
    base_kind, base_kpis = ev.baseline
    base_primary = base_kpis[metric]
    improvement = None
    if primary is not None and base_primary is not None:
        diff = primary - base_primary
        improvement = round(-diff if lower_is_better(metric) else diff, 6)
    return {"baseline": {"model": base_kind, **base_kpis, "improvement": improvement}}


def log_verdict(
    obj: config.Objectives, kind: str, kpis: dict[str, Any], met: bool, baseline: dict
) -> None:
    """The evaluation's verdict on the objective, with every KPI, and the baseline's."""
    verdict = "meets" if met else "does NOT meet"
    bound = "maximum" if lower_is_better(obj.primary_metric) else "minimum"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in kpis.items() if v is not None)
    log(
        "evaluate",
        f"{kind} {obj.primary_metric} {verdict} the objective ({bound} {obj.minimum}): {figures}",
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

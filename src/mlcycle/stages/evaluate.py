"""Stage `evaluate`: score the test split and report the objectives' KPIs and plots.

The test split is read here and nowhere else in the pipeline. The untuned baseline the train
stage fitted beside the chosen model (``train.baseline``) is scored on the same rows, so
``metrics/evaluate.json`` shows what tuning and model selection bought.
Inputs: data/prepared/test.parquet, models/train/; params `objectives`, `evaluate`.
Outputs: metrics/evaluate.json; metrics/plots/ (ROC, PR, confusion, calibration, importance);
data/evaluate/test_predictions.parquet.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcycle import config
from mlcycle.explain import shap_summary
from mlcycle.features import Signature, encode_target, to_model_frame, unseen_categories
from mlcycle.io import read_json, write_json, write_parquet, write_text
from mlcycle.metrics import (
    KPI_FUNCTIONS,
    LOWER_IS_BETTER,
    bootstrap_interval,
    calibration_points,
    choose_threshold,
    compute_kpis,
    confusion,
    meets,
    pr_points,
    roc_points,
    slice_gaps,
    slice_kpis,
    threshold_curve,
)
from mlcycle.models import load_model_dir
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


def main() -> None:
    params = config.load()
    obj, cfg = params.objectives, params.evaluate
    signature = Signature.from_dict(read_json(SIGNATURE_FILE))
    model, _ = load_model_dir(MODEL_DIR)
    test = pd.read_parquet(TEST)
    y = encode_target(test[obj.target], signature)
    X = to_model_frame(test, signature)
    proba = model.predict_proba(X)

    # The decision threshold comes from the training split's out-of-fold predictions, never
    # from the test split: maximise a metric, or minimise the cost of errors.
    oof = pd.read_parquet(OOF)
    curve = threshold_curve(
        oof["actual"].to_numpy(),
        oof["probability"].to_numpy(),
        obj.threshold_metric,
        obj.cost_fp,
        obj.cost_fn,
    )
    threshold = choose_threshold(curve, obj.threshold_metric)
    rule = (
        f"maximises out-of-fold {obj.threshold_metric}"
        if obj.threshold_metric
        else f"minimises out-of-fold cost ({obj.cost_fp} per FP, {obj.cost_fn} per FN)"
    )
    write_json(f"{PLOTS}/threshold.json", curve)
    write_json(f"{METRICS}/threshold.json", {"threshold": threshold, "rule": rule})

    names = tuple(dict.fromkeys((*obj.kpis, *KPI_FUNCTIONS)))
    unknown = [col for col in obj.slices if col not in test.columns]
    if unknown:
        raise ValueError(
            f"objectives.slices names column(s) {unknown} that the test split does not have; "
            f"columns are {list(test.columns)}"
        )
    kpis = compute_kpis(y, proba, threshold, names)
    interval = bootstrap_interval(y, proba, threshold, obj.primary_metric, seed=0)
    slices = {
        col: slice_kpis(
            test[col].fillna("<missing>").to_numpy(),
            y,
            proba,
            threshold,
            names,
            min_rows=obj.slice_min_rows,
            interval_metric=obj.primary_metric,
        )
        for col in obj.slices
    }
    gaps = {col: slice_gaps(v, names) for col, v in slices.items()}
    write_json(f"{METRICS}/slices.json", {"slices": slices, "gaps": gaps})
    write_json(
        f"{PLOTS}/slices.json",
        [
            {
                "slice": f"{col}={value}",
                obj.primary_metric: m[obj.primary_metric],
                "low": m["interval"]["low"],
                "high": m["interval"]["high"],
                "rows": m["rows"],
            }
            for col, values in slices.items()
            for value, m in values.items()
            if obj.primary_metric in m
        ],
    )
    importance, points = [], []
    if model.kind == "xgboost":
        importance, points = shap_summary(model.estimator, X)
    else:
        log("evaluate", f"no SHAP summary for a {model.kind} model (XGBoost only)")
    write_json(f"{PLOTS}/shap_importance.json", importance)
    write_json(f"{PLOTS}/shap_summary.json", points)
    primary = kpis[obj.primary_metric]
    met = meets(obj.primary_metric, primary, obj.minimum)
    baseline = {}
    if Path(BASELINE_DIR).is_dir():
        base_model, _ = load_model_dir(BASELINE_DIR)
        base_kpis = compute_kpis(y, base_model.predict_proba(X), threshold, obj.kpis)
        baseline = {
            "baseline": {
                "model": base_model.kind,
                **base_kpis,
                # How much better the chosen model is on the primary metric (> 0: better).
                "improvement": round(
                    (base_kpis[obj.primary_metric] - primary)
                    if obj.primary_metric in LOWER_IS_BETTER
                    else (primary - base_kpis[obj.primary_metric]),
                    6,
                ),
            }
        }
    write_json(
        f"{METRICS}/evaluate.json",
        {
            **kpis,
            "model": model.kind,
            **baseline,
            "threshold": threshold,
            "rows": len(test),
            "confidence_interval": {"metric": obj.primary_metric, **interval},
            "slice_gaps": gaps,
            "confusion": confusion(y, proba, threshold),
            "objective": {
                "metric": obj.primary_metric,
                "minimum": obj.minimum,
                "value": primary,
                "met": met,
            },
            "unseen_categories": {k: len(v) for k, v in unseen_categories(test, signature).items()},
        },
    )
    write_json(f"{PLOTS}/roc.json", roc_points(y, proba, cfg.curve_points))
    write_json(f"{PLOTS}/precision_recall.json", pr_points(y, proba, cfg.curve_points))
    write_json(f"{PLOTS}/calibration.json", calibration_points(y, proba))
    write_json(f"{PLOTS}/importance.json", model.importance(signature.columns))
    labels = {1: signature.positive_class, 0: signature.negative_class}
    predicted = (proba >= threshold).astype(int)
    rows = "".join(f"{labels[a]},{labels[p]}\n" for a, p in zip(y, predicted, strict=True))
    write_text(f"{PLOTS}/confusion.csv", "actual,predicted\n" + rows)
    write_parquet(PREDICTIONS, pd.DataFrame({"probability": proba, "actual": y}))

    verdict = "meets" if met else "does NOT meet"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in kpis.items())
    log(
        "evaluate",
        f"{model.kind} {obj.primary_metric} {verdict} the objective ({obj.minimum}): {figures}",
    )
    if baseline:
        b = baseline["baseline"]
        log(
            "evaluate",
            f"untuned baseline ({b['model']}): {obj.primary_metric} {b[obj.primary_metric]:.4f}, "
            f"accuracy {b.get('accuracy', float('nan')):.4f}; improvement {b['improvement']:+.4f}",
        )


if __name__ == "__main__":
    run("evaluate", main)

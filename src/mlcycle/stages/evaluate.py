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
from mlcycle.features import Signature, encode_target, to_model_frame, unseen_categories
from mlcycle.io import read_json, write_json, write_parquet, write_text
from mlcycle.metrics import (
    LOWER_IS_BETTER,
    calibration_points,
    compute_kpis,
    confusion,
    meets,
    pr_points,
    roc_points,
)
from mlcycle.models import load_model_dir
from mlcycle.stages import (
    BASELINE_DIR,
    METRICS,
    MODEL_DIR,
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

    kpis = compute_kpis(y, proba, cfg.threshold, obj.kpis)
    primary = kpis[obj.primary_metric]
    met = meets(obj.primary_metric, primary, obj.minimum)
    baseline = {}
    if Path(BASELINE_DIR).is_dir():
        base_model, _ = load_model_dir(BASELINE_DIR)
        base_kpis = compute_kpis(y, base_model.predict_proba(X), cfg.threshold, obj.kpis)
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
            "threshold": cfg.threshold,
            "rows": len(test),
            "confusion": confusion(y, proba, cfg.threshold),
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
    predicted = (proba >= cfg.threshold).astype(int)
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

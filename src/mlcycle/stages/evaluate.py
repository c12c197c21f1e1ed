"""Stage `evaluate`: score the test split and report the objectives' KPIs and plots.

The test split is read here and nowhere else in the pipeline.
Inputs: data/prepared/test.parquet, models/train/; params `objectives`, `evaluate`.
Outputs: metrics/evaluate.json; metrics/plots/ (ROC, PR, confusion, calibration, importance);
data/evaluate/test_predictions.parquet.
"""

from __future__ import annotations

import pandas as pd
import xgboost as xgb

from mlcycle import config
from mlcycle.features import Signature, encode_target, to_model_frame, unseen_categories
from mlcycle.io import read_json, write_json, write_parquet, write_text
from mlcycle.metrics import (
    calibration_points,
    compute_kpis,
    confusion,
    meets,
    pr_points,
    roc_points,
)
from mlcycle.models import feature_importance, predict_proba
from mlcycle.stages import METRICS, MODEL_FILE, PLOTS, PREDICTIONS, SIGNATURE_FILE, TEST, log, run


def main() -> None:
    params = config.load()
    obj, cfg = params.objectives, params.evaluate
    signature = Signature.from_dict(read_json(SIGNATURE_FILE))
    booster = xgb.Booster(model_file=MODEL_FILE)
    test = pd.read_parquet(TEST)
    y = encode_target(test[obj.target], signature)
    proba = predict_proba(booster, to_model_frame(test, signature))

    kpis = compute_kpis(y, proba, cfg.threshold, obj.kpis)
    primary = kpis[obj.primary_metric]
    met = meets(obj.primary_metric, primary, obj.minimum)
    write_json(
        f"{METRICS}/evaluate.json",
        {
            **kpis,
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
    write_json(f"{PLOTS}/importance.json", feature_importance(booster, signature.columns))
    labels = {1: signature.positive_class, 0: signature.negative_class}
    predicted = (proba >= cfg.threshold).astype(int)
    rows = "".join(f"{labels[a]},{labels[p]}\n" for a, p in zip(y, predicted, strict=True))
    write_text(f"{PLOTS}/confusion.csv", "actual,predicted\n" + rows)
    write_parquet(PREDICTIONS, pd.DataFrame({"probability": proba, "actual": y}))

    verdict = "meets" if met else "does NOT meet"
    figures = ", ".join(f"{k} {v:.4f}" for k, v in kpis.items())
    log("evaluate", f"{obj.primary_metric} {verdict} the objective ({obj.minimum}): {figures}")


if __name__ == "__main__":
    run("evaluate", main)

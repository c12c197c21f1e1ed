"""Stage `train`: engineer and select features, fit the XGBoost classifier on the training
split, log its learning curve.

Feature selection (``features.selection``) is fitted here, on the training split only; the
chosen features, the derived steps and the raw inputs they need go into the signature, which
evaluation, batch prediction and the service apply with the same code.
Inputs: data/prepared/train.parquet; params `train`, `features`, `objectives.target`,
`objectives.positive_class`.
Outputs: models/train/{model.ubj,signature.json}; metrics/train/ (dvclive metrics and curves).
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd
from dvclive import Live

from mlcycle import config
from mlcycle.features import encode_target, infer_signature, to_model_frame
from mlcycle.io import write_bytes, write_json
from mlcycle.models import fit
from mlcycle.stages import METRICS, MODEL_FILE, SIGNATURE_FILE, TRAIN, log, run


def main() -> None:
    params = config.load()
    obj, cfg = params.objectives, params.train
    train = pd.read_parquet(TRAIN)
    signature = infer_signature(
        train,
        obj.target,
        obj.positive_class,
        params.features,
        seed=cfg.seed,
        progress=lambda msg: log("train", msg),
    )
    X = to_model_frame(train, signature)
    y = encode_target(train[obj.target], signature)
    rounds = cfg.xgb.get("n_estimators")
    derived = [s.name for s in signature.derived if s.name in signature.columns]
    log(
        "train",
        f"{len(X)} rows, {X.shape[1]} features ({len(derived)} derived: {derived}) from "
        f"{len(signature.inputs)} raw inputs; up to {rounds} rounds",
    )

    with Live(dir=f"{METRICS}/train", dvcyaml=False, save_dvc_exp=False, report=None) as live:

        def on_round(i: int, values: dict[str, dict[str, float]]) -> None:
            for split_name, by_metric in values.items():
                for metric, value in by_metric.items():
                    live.log_metric(f"{split_name}/{metric}", round(value, 6))
            live.next_step()
            if (i + 1) % 100 == 0:
                v = values.get("valid", {})
                log("train", f"round {i + 1}: valid logloss {v.get('logloss', float('nan')):.4f}")

        result = fit(X, y, cfg, on_round=on_round)
        live.summary["best_rounds"] = result.best_rounds
        live.summary["features"] = len(signature.features)

    write_bytes(MODEL_FILE, bytes(result.booster.save_raw(raw_format="ubj")))
    write_json(
        SIGNATURE_FILE,
        {**signature.to_dict(), "train_config": asdict(cfg), "best_rounds": result.best_rounds},
    )
    log("train", f"refitted on all {len(X)} rows with {result.best_rounds} rounds -> {MODEL_FILE}")


if __name__ == "__main__":
    run("train", main)

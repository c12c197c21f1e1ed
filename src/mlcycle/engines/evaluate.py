"""The evaluate stage's step: score the test split (writing the predictions) and measure every
figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcycle import config
from mlcycle.engines.base import Engine, Evaluated, EvaluatePaths
from mlcycle.engines.dask import evaluate as on_dask
from mlcycle.evaluation import measure
from mlcycle.features import Signature, encode_target, to_model_frame, unseen_categories
from mlcycle.io import write_parquet
from mlcycle.metrics import prediction_frame
from mlcycle.models import load_model_dir

__all__ = ["EvaluatePaths", "Evaluated", "evaluate"]


def evaluate(
    engine: Engine, params: config.Params, signature: Signature, paths: EvaluatePaths
) -> Evaluated:
    """Score the test split with the chosen model (and the baseline when there is one), write
    the predictions and measure every figure."""
    if engine.client is not None:
        return on_dask.evaluate_dask(params, signature, engine.client, paths, engine.say)
    task = params.objectives.task
    model, _ = load_model_dir(paths.model_dir)
    test = pd.read_parquet(paths.test)
    y = encode_target(test[params.objectives.target], signature)
    X = to_model_frame(test, signature)
    out = model.output(X)
    base_out = None
    if Path(paths.baseline_dir).is_dir():
        base_model, _ = load_model_dir(paths.baseline_dir)
        base_out = (base_model.kind, base_model.output(X))
    unseen = {k: len(v) for k, v in unseen_categories(test, signature).items()}
    write_parquet(paths.predictions, prediction_frame(out, y, task, signature.classes))
    evaluation = measure(params, signature, test, y, out, base_out, unseen, paths.oof)
    return Evaluated(evaluation, model, X)

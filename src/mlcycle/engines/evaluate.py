"""The evaluate stage's step: score the test split (writing the predictions) and measure every
figure. The local engine is the one-partition case of :mod:`mlcycle.engines.dask.evaluate`:
the whole test split is scored, summarized and measured by the same functions of
:mod:`mlcycle.evaluation`, with every row at hand."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlcycle import config
from mlcycle.engines.base import Engine, Evaluated, EvaluatePaths
from mlcycle.engines.dask import evaluate as on_dask
from mlcycle.evaluation import (
    BASE,
    check_slices,
    decision,
    measure,
    predictions,
    score_frame,
    summarize,
)
from mlcycle.features import Signature, to_model_frame, unseen_categories
from mlcycle.io import write_parquet
from mlcycle.models import load_model_dir

__all__ = ["EvaluatePaths", "Evaluated", "evaluate"]


def evaluate(
    engine: Engine, params: config.Params, signature: Signature, paths: EvaluatePaths
) -> Evaluated:
    """Score the test split with the chosen model (and the baseline when there is one), write
    the predictions and measure every figure."""
    if engine.client is not None:
        return on_dask.evaluate_dask(params, signature, engine.client, paths, engine.say)
    obj = params.objectives
    test = pd.read_parquet(paths.test)
    check_slices(obj, list(test.columns))
    models = [("", load_model_dir(paths.model_dir)[0])]
    if Path(paths.baseline_dir).is_dir():
        models.append((BASE, load_model_dir(paths.baseline_dir)[0]))
    scored = score_frame(test, models, signature, list(obj.slices))
    write_parquet(paths.predictions, predictions(scored))
    chosen = decision(obj, signature, paths.oof)
    # One partition: every row in the summary's sample (confusion.csv lists them all).
    summary = summarize(scored, signature, chosen[0], list(obj.slices), base=len(models) > 1)
    base_kind = models[1][1].kind if len(models) > 1 else None
    unseen = {k: len(v) for k, v in unseen_categories(test, signature).items()}
    evaluation = measure(params, signature, summary, scored, chosen, base_kind, unseen)
    return Evaluated(evaluation, models[0][1], to_model_frame(test, signature))

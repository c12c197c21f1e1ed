"""The train stage's step: tune every candidate on the training split, refit the winner."""

from __future__ import annotations

import pandas as pd

from mlcycle import config, tasks
from mlcycle.engines.base import Engine, Trained
from mlcycle.engines.dask import train as on_dask
from mlcycle.features import encode_target, infer_signature, to_model_frame
from mlcycle.metrics import prediction_frame
from mlcycle.models import fit
from mlcycle.tuning import fit_options, model_params, tune

__all__ = ["Trained", "train"]

PROGRESS_ROUNDS = 100  # the final fit reports every this many boosting rounds


def train(engine: Engine, params: config.Params, path: str) -> Trained:
    """Tune every candidate on the training split at ``path``; refit the winner (and the
    untuned baseline when it differs)."""
    if engine.client is not None:
        return on_dask.train_dask(params, engine.client, path, engine.say)
    obj, cfg = params.objectives, params.train
    say = engine.say
    frame = pd.read_parquet(path)
    signature = infer_signature(
        frame,
        obj.target,
        obj.positive_class,
        params.features,
        seed=cfg.seed,
        progress=say,
        task=obj.task,
    )
    X = to_model_frame(frame, signature)
    y = encode_target(frame[obj.target], signature)
    derived = [s.name for s in signature.derived if s.name in signature.columns]
    described = tasks.get(signature.task).describe_target(y, signature.classes)
    say(
        f"{obj.task}: {len(X)} rows ({described}), {X.shape[1]} features "
        f"({len(derived)} derived: {derived}) from {len(signature.inputs)} raw inputs; "
        f"candidates {list(cfg.candidates)}, selected by cv {obj.primary_metric}"
    )

    result = tune(
        X, y, cfg, obj.primary_metric, progress=say, task=obj.task, classes=signature.classes
    )
    win = result.winner
    n_classes = len(signature.classes)
    say(f"winner: {win.name} (trial {win.best_trial}), ranking {result.ranking}")

    def on_round(i: int) -> None:
        if (i + 1) % PROGRESS_ROUNDS == 0:
            say(f"final fit: round {i + 1}/{win.cv.final_rounds}")

    final = fit(
        win.name,
        X,
        y,
        model_params(win.params),
        obj.task,
        n_classes,
        rounds=win.cv.final_rounds,
        on_round=on_round,
        **fit_options(cfg, params=win.params),
    )
    oof = prediction_frame(win.cv.oof, y, obj.task, signature.classes)
    baseline = result.refit_baseline(
        final,
        lambda base: fit(
            base.name, X, y, model_params(base.params), obj.task, n_classes,
            rounds=base.cv.final_rounds, **fit_options(cfg, params=base.params),
        ),
    )  # fmt: skip
    return Trained(signature, result, final, baseline, oof, len(X))

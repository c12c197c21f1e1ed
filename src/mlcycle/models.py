"""Fit and apply the XGBoost classifier.

The number of boosting rounds is chosen by early stopping on a seeded, stratified slice of the
training split; the final model is then refitted on the whole training split with that many
rounds. The test split is never seen here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import train_test_split

from mlcycle.config import TrainConfig

EVAL_METRICS = ("logloss", "auc")


@dataclass
class FitResult:
    """The fitted booster and what the fit learned along the way."""

    booster: xgb.Booster
    best_rounds: int
    curves: dict[str, dict[str, list[float]]]  # {"train"|"valid": {metric: [value per round]}}
    params: dict


def booster_params(cfg: TrainConfig) -> dict:
    """XGBoost's native parameters from the train config (without the round counts)."""
    params = {
        "objective": "binary:logistic",
        "eval_metric": list(EVAL_METRICS),
        "tree_method": "hist",
        "seed": cfg.seed,
        "nthread": cfg.nthread,
    }
    for key, value in cfg.xgb.items():
        if key not in ("n_estimators", "early_stopping_rounds"):
            params["eta" if key == "learning_rate" else key] = value
    return params


def dmatrix(X: pd.DataFrame, y: np.ndarray | None = None, nthread: int = 0) -> xgb.DMatrix:
    """A DMatrix with XGBoost's native categorical support on."""
    return xgb.DMatrix(X, label=y, enable_categorical=True, nthread=nthread)


def fit(
    X: pd.DataFrame,
    y: np.ndarray,
    cfg: TrainConfig,
    on_round: Callable[[int, dict[str, dict[str, float]]], None] | None = None,
) -> FitResult:
    """Fit a binary classifier on the training split.

    ``on_round(i, {"train": {...}, "valid": {...}})`` is called after each round of the
    round-selection fit, so callers can log a learning curve or show progress.
    """
    params = booster_params(cfg)
    n_rounds = int(cfg.xgb.get("n_estimators", 100))
    early = cfg.xgb.get("early_stopping_rounds")
    X_fit, X_val, y_fit, y_val = train_test_split(
        X, y, test_size=cfg.validation_fraction, random_state=cfg.seed, stratify=y
    )
    d_fit, d_val = dmatrix(X_fit, y_fit, cfg.nthread), dmatrix(X_val, y_val, cfg.nthread)
    curves: dict = {}
    callbacks = [_RoundCallback(on_round)] if on_round else []
    selector = xgb.train(
        params,
        d_fit,
        num_boost_round=n_rounds,
        evals=[(d_fit, "train"), (d_val, "valid")],
        evals_result=curves,
        early_stopping_rounds=early,
        verbose_eval=False,
        callbacks=callbacks,
    )
    best_rounds = (selector.best_iteration + 1) if early else n_rounds
    final = xgb.train(params, dmatrix(X, y, cfg.nthread), num_boost_round=best_rounds)
    curves = {
        name: {m: [float(v) for v in vals] for m, vals in d.items()} for name, d in curves.items()
    }
    return FitResult(booster=final, best_rounds=best_rounds, curves=curves, params=params)


class _RoundCallback(xgb.callback.TrainingCallback):
    def __init__(self, fn: Callable[[int, dict[str, dict[str, float]]], None]) -> None:
        super().__init__()
        self.fn = fn

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        latest = {name: {m: float(v[-1]) for m, v in d.items()} for name, d in evals_log.items()}
        self.fn(epoch, latest)
        return False


def predict_proba(booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities for model-ready features ``X`` (see features.to_model_frame)."""
    return booster.predict(dmatrix(X)).astype(np.float64)


def feature_importance(booster: xgb.Booster, columns: list[str]) -> list[dict]:
    """Total gain per feature (0 for features the trees never split on), largest first."""
    gain = booster.get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    rows = [{"feature": c, "gain": round(gain.get(c, 0.0) / total, 6)} for c in columns]
    return sorted(rows, key=lambda r: (-r["gain"], r["feature"]))

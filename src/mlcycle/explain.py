"""Explanations: SHAP values from XGBoost's own ``pred_contribs`` (no extra dependency).

For a tree model XGBoost computes exact TreeSHAP contributions: one value per feature and row,
plus a bias column, summing to the model's margin (log-odds) for that row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xgboost as xgb


def shap_values(booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
    """SHAP contributions, shape (rows, features); the bias column is dropped."""
    contribs = booster.predict(xgb.DMatrix(X, enable_categorical=True), pred_contribs=True)
    return np.asarray(contribs, dtype=np.float64)[:, :-1]


def shap_summary(
    booster: xgb.Booster, X: pd.DataFrame, max_rows: int = 300, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Global importance (mean |SHAP| per feature, largest first) and the points of a summary
    ("beeswarm") plot: for a seeded sample of rows, each feature's SHAP value and its value's
    rank within the feature (0 = lowest, 1 = highest; categories by code), so the plot shows
    whether high values push predictions up or down."""
    if len(X) > max_rows:
        X = X.sample(max_rows, random_state=seed).sort_index()
    values = shap_values(booster, X)
    importance = sorted(
        (
            {"feature": col, "mean_abs_shap": round(float(np.abs(values[:, i]).mean()), 6)}
            for i, col in enumerate(X.columns)
        ),
        key=lambda r: (-r["mean_abs_shap"], r["feature"]),
    )
    points = []
    for i, col in enumerate(X.columns):
        raw = (
            X[col].cat.codes.astype(float).where(X[col].notna())
            if isinstance(X[col].dtype, pd.CategoricalDtype)
            else X[col].astype(float)
        )
        rank = raw.rank(pct=True)
        for shap, r in zip(values[:, i], rank.to_numpy(), strict=True):
            points.append(
                {
                    "feature": col,
                    "shap": round(float(shap), 5),
                    "value_rank": None if np.isnan(r) else round(float(r), 3),
                }
            )
    return importance, points

"""Explanations: SHAP values from the model's own exact contributions (XGBoost's
``pred_contribs``, TreeSHAP), through :meth:`mlcycle.models.Model.contributions`.

A binary or regression model gives one value per feature and row (toward the log-odds or the
predicted value); a multiclass model one per class, feature and row (toward each class's
margin).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlcycle.models import Model


def shap_summary(
    model: Model,
    X: pd.DataFrame,
    classes: tuple[str, ...] = (),
    max_rows: int = 300,
    seed: int = 0,
) -> tuple[list[dict], list[dict], dict[str, dict[str, float]]]:
    """Global importance (mean |SHAP| per feature, largest first), the points of a summary
    ("beeswarm") plot, and for multiclass the mean |SHAP| per class and feature.

    The points are, for a seeded sample of rows, each feature's SHAP value and its value's rank
    within the feature (0 = lowest, 1 = highest; categories by code), so the plot shows whether
    high values push predictions up or down. For multiclass a row's point is its contribution
    toward the class the model predicts for it, and the importance sums the classes.
    A kind without exact contributions gives three empty results.
    """
    if len(X) > max_rows:
        X = X.sample(max_rows, random_state=seed).sort_index()
    values = model.contributions(X)
    if values is None:
        return [], [], {}
    by_class: dict[str, dict[str, float]] = {}
    if values.ndim == 3:  # (rows, classes, features)
        per_class = np.abs(values).mean(axis=0)
        by_class = {
            str(c): {col: round(float(per_class[k, i]), 6) for i, col in enumerate(X.columns)}
            for k, c in enumerate(classes)
        }
        top = np.argmax(model.predict_proba(X), axis=1)
        overall = per_class.sum(axis=0)
        values = values[np.arange(len(X)), top, :]
    else:
        overall = np.abs(values).mean(axis=0)
    importance = sorted(
        (
            {"feature": col, "mean_abs_shap": round(float(overall[i]), 6)}
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
    return importance, points, by_class

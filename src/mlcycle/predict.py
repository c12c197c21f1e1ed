"""Scoring records with a loaded bundle: shared by `mlcycle predict` and the web service."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mlcycle.bundle import Bundle
from mlcycle.features import to_model_frame

PROBABILITY = "probability"
PREDICTION = "prediction"


def score(bundle: Bundle, records: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Positive-class probabilities and predicted labels (at the bundle's threshold).

    ``records`` need the signature's raw inputs; derived features are computed from them by
    :func:`mlcycle.features.to_model_frame`, exactly as in training and evaluation.
    """
    proba = bundle.model.predict_proba(to_model_frame(records, bundle.signature))
    sig = bundle.signature
    labels = np.where(proba >= bundle.threshold, sig.positive_class, sig.negative_class)
    return proba, labels.tolist()


def score_frame(
    bundle: Bundle,
    records: pd.DataFrame,
    chunk_rows: int = 100_000,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """``records`` with a probability and a prediction column added, scored in chunks."""
    probas, labels = [], []
    for start in range(0, len(records), chunk_rows):
        chunk = records.iloc[start : start + chunk_rows]
        p, lab = score(bundle, chunk)
        probas.append(p)
        labels.extend(lab)
        if progress:
            progress(min(start + chunk_rows, len(records)), len(records))
    out = records.copy()
    out[PROBABILITY] = np.concatenate(probas) if probas else np.array([], dtype=float)
    out[PREDICTION] = labels
    return out

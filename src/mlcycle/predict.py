"""Scoring records with a loaded bundle: shared by `mlcycle predict`, the web service and the
gate, so all three turn raw records into predictions the same way.

What a prediction is follows the bundle's task: a classification model gives a probability
for every class (in the signature's class order) and a label decided by the bundle's decision
(binary: the positive class when its probability reaches the threshold; multiclass: the class
of the largest weighted probability, the most probable one without weights); a regression
model gives a number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.bundle import Bundle
from mlcycle.features import Signature, to_model_frame
from mlcycle.tasks import Decision

PROBABILITY = "probability"  # binary: the positive class's probability
PREDICTION = "prediction"  # the label, or the predicted value
PROBABILITY_PREFIX = "probability_"  # classification: one column per class


@dataclass(frozen=True)
class Scores:
    """The model's output for some records, and the labels decided from it.

    ``output`` is the ``(n, n_classes)`` probability matrix or the ``(n,)`` values;
    ``labels`` the predicted class names (None for regression).
    """

    output: np.ndarray
    labels: list[str] | None

    @property
    def predictions(self) -> list:
        """What each record is predicted to be: its label, or its value."""
        return self.labels if self.labels is not None else self.output.tolist()


def decide(output: np.ndarray, signature: Signature, decision: Decision) -> list[str] | None:
    """Labels from a classification output by the task's rule and the bundle's ``decision``
    (:meth:`mlcycle.tasks.Task.decide`); None for regression."""
    decided = tasks.get(signature.task).decide(output, decision)
    if decided is None:
        return None
    return np.asarray(signature.classes, dtype=object)[decided].tolist()


def score(bundle: Bundle, records: pd.DataFrame) -> Scores:
    """Score ``records`` (they need the signature's raw inputs; derived features are computed
    by :func:`mlcycle.features.to_model_frame`, exactly as in training and evaluation)."""
    output = bundle.model.output(to_model_frame(records, bundle.signature))
    return Scores(output, decide(output, bundle.signature, bundle.decision))


def output_columns(scores: Scores, signature: Signature) -> dict[str, np.ndarray | list]:
    """The columns batch prediction adds: ``probability_<class>`` per class and, for binary,
    ``probability`` (the positive class's); then ``prediction`` (label or value)."""
    cols: dict[str, np.ndarray | list] = {}
    for i, c in enumerate(signature.classes):  # regression has none
        cols[f"{PROBABILITY_PREFIX}{c}"] = scores.output[:, i]
    if tasks.get(signature.task).thresholded:
        cols[PROBABILITY] = tasks.get(signature.task).score(scores.output)
    cols[PREDICTION] = scores.predictions
    return cols


def score_frame(
    bundle: Bundle,
    records: pd.DataFrame,
    chunk_rows: int = 100_000,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """``records`` with the prediction columns of :func:`output_columns` added, scored in
    chunks."""
    parts: list[dict] = []
    for start in range(0, len(records), chunk_rows):
        chunk = records.iloc[start : start + chunk_rows]
        parts.append(output_columns(score(bundle, chunk), bundle.signature))
        if progress:
            progress(min(start + chunk_rows, len(records)), len(records))
    out = records.copy()
    if not parts:
        empty = Scores(
            np.zeros((0, len(bundle.signature.classes)) if bundle.signature.classes else 0), None
        )
        parts.append(output_columns(empty, bundle.signature))
    for name in parts[0]:
        values = [p[name] for p in parts]
        out[name] = np.concatenate(values) if isinstance(values[0], np.ndarray) else sum(values, [])
    return out

"""One model interface for every kind of model and every task (the adapters import it;
:mod:`mlcycle.models` registers them and re-exports it).

A model *kind* (``train.candidates``) is an adapter: a subclass of :class:`Model` in
:mod:`mlcycle.adapters`, registered under its name. Code above the adapters (tuning,
evaluation, batch prediction, the service, the gate) only calls this interface, scikit-learn's
convention:

- :meth:`Model.output` is what the task predicts: for classification the ``(n, n_classes)``
  probability matrix, columns in the signature's fixed class order (binary: column 1 is the
  positive class); for regression the vector of predicted values;
- :meth:`Model.fit` fits a kind on a model frame (:func:`mlcycle.features.to_model_frame`) and
  the encoded target (:func:`mlcycle.features.encode_target`);
- :meth:`Model.to_bytes` / :func:`mlcycle.models.load_model` store and load it safely;
- :meth:`Model.importance` and :meth:`Model.contributions` explain it.

An adapter also declares what it supports, so that code above it asks rather than testing
its kind: :attr:`Model.early_stopping` (boosting rounds chosen on an inner slice),
:attr:`Model.distributed` (boosted across a Dask cluster), its parameters' defaults and
settings section (:meth:`Model.fixed_params`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.encoder import matrix_to_frame
from mlcycle.tasks import Task

if TYPE_CHECKING:
    from dask.dataframe import DataFrame as DaskFrame
    from distributed import Client

    from mlcycle.features import Signature


class ModelError(ValueError):
    """A model file cannot be loaded safely, or model settings are invalid."""


Progress = Callable[[int], None]


class UntrustedTypesError(ModelError):
    """A model file holds types outside those its kind trusts; it was not loaded."""

    def __init__(self, types: list[str], trusted: Sequence[str]) -> None:
        self.types = types
        super().__init__(
            f"it holds untrusted type(s) {types}; refusing to load it (trusted beyond "
            f"the format's defaults: {list(trusted)})"
        )


@dataclass
class FitResult:
    """A fitted model, the rounds it was boosted (boosting kinds) and its curves.

    ``curves`` is ``{"train" or "valid": {"loss": [value per round], ...}}``; ``loss`` is the
    metric early stopping watches (log loss for classification, RMSE for regression).
    """

    model: Model
    rounds: int | None = None
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)


class Model:
    """A fitted model of one kind for one task; subclasses are the adapters.

    ``n_classes`` is the number of classes (0 for regression). Subclasses set ``kind``,
    declare what they support and implement the methods that raise
    :class:`NotImplementedError` here; the file a kind is stored in is declared with its
    registration (:data:`mlcycle.models.KINDS`).
    """

    kind: ClassVar[str] = ""
    # What the kind supports (see the module's docstring).
    early_stopping: ClassVar[bool] = False  # fit_early_stopped: rounds chosen on a slice
    distributed: ClassVar[bool] = False  # fit_distributed / predict_distributed on Dask
    default_params: ClassVar[Mapping[str, Any]] = {}  # used where params.yaml sets none
    params_section: ClassVar[str | None] = None  # a train key also holding its params

    def __init__(self, estimator: Any, task: str, n_classes: int = 0) -> None:
        try:
            spec = tasks.get(task)
        except tasks.UnknownTaskError as exc:
            raise ModelError(str(exc)) from None
        if self.kind not in tasks.kinds_for(task):
            raise ModelError(f"a {self.kind} model cannot learn {task}")
        self.estimator = estimator
        self.task = task
        self.task_type: Task = spec
        self.n_classes = spec.output_width(n_classes)

    # -- predicting ---------------------------------------------------------------------------

    def output(self, X: pd.DataFrame) -> np.ndarray:
        """The task's prediction, float64: ``(n, n_classes)`` probabilities or ``(n,)`` values."""
        return self.predict_proba(X) if self.task_type.classification else self.predict(X)

    def set_threads(self, n: int) -> None:
        """Use ``n`` threads to predict. A service with one worker process per core wants 1:
        a thread pool per tiny request costs more than the prediction. Default: nothing."""

    def output_encoded(self, matrix: np.ndarray, signature: Signature) -> np.ndarray:
        """:meth:`output` for a matrix from :class:`mlcycle.encoder.Encoder` (the fast scoring
        path): the same values, bit for bit, as ``output(to_model_frame(records, signature))``.

        This default rebuilds the model frame (float64 numbers, pandas categoricals) and calls
        :meth:`output`, so every kind answers; a kind with a faster way overrides it.
        """
        return self.output(matrix_to_frame(matrix, signature))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)``, rows summing to 1."""
        raise NotImplementedError

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Regression: predicted values. Classification: the most probable class's index."""
        if self.task_type.classification:
            return np.argmax(self.predict_proba(X), axis=1)
        raise NotImplementedError

    @property
    def booster(self) -> Any:
        """The XGBoost booster inside the model; :class:`ModelError` for a kind without one."""
        raise ModelError(f"a {self.kind} model has no XGBoost booster")

    # -- fitting, storing ---------------------------------------------------------------------

    @classmethod
    def fixed_params(
        cls, models: Mapping[str, Mapping[str, Any]], sections: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Any]:
        """The kind's untuned parameters: its :attr:`default_params`, under
        ``train.models.<kind>`` (``models``), under its own train section when it has one
        (:attr:`params_section`, looked up in ``sections``: ``{"xgb": train.xgb}``)."""
        own = sections.get(cls.params_section, {}) if cls.params_section else {}
        return {**cls.default_params, **models.get(cls.kind, {}), **own}

    @classmethod
    def fit(
        cls,
        X: pd.DataFrame,
        y: np.ndarray,
        params: Mapping[str, Any],
        task: str,
        n_classes: int = 0,
        *,
        seed: int,
        threads: int,
        device: str,
        class_weight: str,
        rounds: int | None = None,
        on_round: Progress | None = None,
    ) -> FitResult:
        """Fit on all of ``X``/``y`` with ``params`` (the kind's own parameter names), seeded
        by ``seed``, with ``threads`` threads (0: all cores) on ``device``; ``class_weight``
        ``balanced`` weights the classes by their rarity. A boosting kind boosts exactly
        ``rounds`` rounds (cross-validation early-stops through :meth:`fit_early_stopped`);
        kinds without rounds ignore ``rounds`` and ``on_round``.
        """
        raise NotImplementedError

    @classmethod
    def fit_early_stopped(
        cls,
        X: pd.DataFrame,
        y: np.ndarray,
        params: Mapping[str, Any],
        task: str,
        n_classes: int,
        fit_idx: np.ndarray,
        inner_idx: np.ndarray,
        *,
        seed: int,
        threads: int,
        device: str,
        class_weight: str,
        on_round: Progress | None = None,
    ) -> FitResult:
        """Boost on the rows ``fit_idx`` (positions) of ``X``/``y``, early-stopped on the inner
        slice ``inner_idx``; ``rounds`` of the result is the best round count (kinds with
        :attr:`early_stopping` only)."""
        raise NotImplementedError(f"a {cls.kind} model does not early-stop")

    @classmethod
    def fit_distributed(
        cls,
        client: Client,
        frame: DaskFrame,
        params: Mapping[str, Any],
        task: str,
        n_classes: int,
        rounds: int,
        *,
        seed: int,
        device: str,
        class_weight: str,
        valid: DaskFrame | None = None,
        early: int | None = None,
        peer_timeout: int | None = None,
    ) -> FitResult:
        """Fit across the cluster on ``frame`` (model columns, target ``__y``; columns starting
        ``__`` are not features): early-stopped on ``valid`` when given, else exactly
        ``rounds`` rounds (kinds with :attr:`distributed` only). ``peer_timeout``: seconds a
        worker waits for its peers before the fit fails (a lost worker), None: the library's."""
        raise NotImplementedError(f"a {cls.kind} model does not train on a cluster")

    def predict_distributed(self, client: Client, X: DaskFrame) -> Any:
        """The model's raw prediction for the Dask frame ``X``, lazily (a Dask collection);
        :meth:`output_from_raw` turns its computed values into :meth:`output`'s form."""
        raise NotImplementedError(f"a {self.kind} model does not predict on a cluster")

    def output_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """:meth:`output` from the computed :meth:`predict_distributed` values."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The model file's content; the same model always gives the same bytes."""
        raise NotImplementedError

    @classmethod
    def from_bytes(cls, data: bytes, task: str) -> Model:
        """Load a model file's content; refuse anything that is not a model of this kind."""
        raise NotImplementedError

    # -- explaining ---------------------------------------------------------------------------

    def importance(self, columns: list[str]) -> list[dict]:
        """Each feature's share of the model's total importance, largest first."""
        raw = self.raw_importance(columns)
        total = sum(raw.values()) or 1.0
        rows = [{"feature": c, "gain": round(raw[c] / total, 6)} for c in columns]
        return sorted(rows, key=lambda r: (-r["gain"], r["feature"]))

    def raw_importance(self, columns: list[str]) -> dict[str, float]:
        """Unnormalised importance per feature (the kind's own measure)."""
        raise NotImplementedError

    def contributions(self, X: pd.DataFrame) -> np.ndarray | None:
        """SHAP values without the bias term: ``(n, features)``, or ``(n, n_classes,
        features)`` for multiclass; None for a kind that cannot compute them exactly."""
        return None

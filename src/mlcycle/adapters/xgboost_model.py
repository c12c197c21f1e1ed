"""The ``xgboost`` kind: a booster with native categorical and missing-value support, for every
task, stored in XGBoost's own UBJSON format (no code runs on load).

Objectives per task: ``binary:logistic``, ``multi:softprob`` (one probability per class) and
``reg:squarederror``. Early stopping watches log loss for classification (AUC on a small
validation slice moves in steps and once stopped a fold after 32 of ~600 rounds) and RMSE for
regression.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb
from xgboost.collective import Config as CollConfig

from mlcycle.adapters.base import FitResult, Model, ModelError
from mlcycle.features import SchemaError
from mlcycle.tasks import BINARY, MULTICLASS, REGRESSION

if TYPE_CHECKING:
    from dask.dataframe import DataFrame as DaskFrame
    from distributed import Client

    from mlcycle.features import Signature

# Keys of train.xgb that steer the boosting loop rather than the booster itself.
ROUND_KEYS = ("n_estimators", "early_stopping_rounds")


def _binary_output(p: np.ndarray, n_classes: int) -> np.ndarray:
    return np.column_stack([1.0 - p, p])


def _softprob_output(p: np.ndarray, n_classes: int) -> np.ndarray:
    # softprob is float32; renormalised in float64 each row sums to 1 to double precision.
    p = p.reshape(-1, n_classes)
    return p / p.sum(axis=1, keepdims=True)


def _value_output(p: np.ndarray, n_classes: int) -> np.ndarray:
    return p


@dataclass(frozen=True)
class Learning:
    """How XGBoost learns one task: the objective; the metrics watched on the inner
    validation slice during cross-validation (the last one drives early stopping) and the
    final fit's training curve (one metric: a second one, such as AUC, would sort every row
    each round); the booster's predictions (float64) as :meth:`Model.output` gives them;
    whether the booster needs ``num_class``; and how ``class_weight: balanced`` weighs the
    classes (``scale_pos_weight`` on the positives, or a weight per row)."""

    objective: str
    eval_metrics: tuple[str, ...]
    curve_metrics: tuple[str, ...]
    output: Callable[[np.ndarray, int], np.ndarray]
    num_class: bool = False
    balance_by: str | None = None


LEARNING = {
    BINARY: Learning(
        "binary:logistic", ("auc", "logloss"), ("logloss",), _binary_output,
        balance_by="scale_pos_weight",
    ),
    MULTICLASS: Learning(
        "multi:softprob", ("mlogloss",), ("mlogloss",), _softprob_output,
        num_class=True, balance_by="row_weights",
    ),
    REGRESSION: Learning("reg:squarederror", ("rmse",), ("rmse",), _value_output),
}  # fmt: skip
OBJECTIVES = {task: learning.objective for task, learning in LEARNING.items()}
EVAL_METRICS = {task: learning.eval_metrics for task, learning in LEARNING.items()}
CURVE_METRICS = {task: learning.curve_metrics for task, learning in LEARNING.items()}


def dmatrix(
    X: pd.DataFrame, y: np.ndarray | None = None, nthread: int = 0, weight: np.ndarray | None = None
) -> xgb.DMatrix:
    """A DMatrix with XGBoost's native categorical support on."""
    return xgb.DMatrix(X, label=y, weight=weight, enable_categorical=True, nthread=nthread)


def negatives_per_positive(y: np.ndarray) -> float:
    """Negatives / positives in binary labels ``y``: the weight ``class_weight: balanced``
    gives each positive example."""
    positives = int(np.sum(y))
    return (len(y) - positives) / max(positives, 1)


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-row weights n / (k * rows of its class), scikit-learn's ``balanced`` rule."""
    counts = np.bincount(y.astype(np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    per_class = np.zeros(n_classes)
    per_class[present] = len(y) / (present.sum() * counts[present])
    return per_class[y.astype(np.int64)]


def booster_params(
    params: Mapping[str, Any],
    y: np.ndarray,
    task: str,
    n_classes: int = 0,
    *,
    seed: int,
    threads: int,
    device: str,
    class_weight: str,
) -> dict:
    """XGBoost's native parameters: the candidate's ``params`` (train.xgb names) plus the
    task's objective and metrics, seed, device and threads, without the round counts. With
    ``class_weight: balanced`` a binary task weights the positive class by
    negatives/positives unless ``params`` sets ``scale_pos_weight`` itself."""
    out: dict[str, Any] = {
        "objective": OBJECTIVES[task],
        "eval_metric": list(EVAL_METRICS[task]),
        "tree_method": "hist",
        "seed": seed,
        "nthread": threads,
        "device": device,
    }
    if LEARNING[task].num_class:
        out["num_class"] = n_classes
    if class_weight == "balanced" and LEARNING[task].balance_by == "scale_pos_weight":
        out["scale_pos_weight"] = negatives_per_positive(y)
    for key, value in params.items():
        if key not in ROUND_KEYS:
            out["eta" if key == "learning_rate" else key] = value
    return out


class _RoundCallback(xgb.callback.TrainingCallback):
    def __init__(self, fn: Callable[[int], None]) -> None:
        super().__init__()
        self.fn = fn

    def after_iteration(self, model, epoch: int, evals_log) -> bool:
        self.fn(epoch)
        return False


def _row_weights(y: np.ndarray, task: str, n_classes: int, class_weight: str) -> np.ndarray | None:
    """Per-row weights for ``class_weight: balanced`` where the task weighs rows (multiclass)."""
    if class_weight == "balanced" and LEARNING[task].balance_by == "row_weights":
        return balanced_weights(y, n_classes)
    return None


def _curves(log: dict, task: str) -> dict[str, dict[str, list[float]]]:
    """XGBoost's evaluation log with the early-stopping metric also named ``loss``."""
    loss = EVAL_METRICS[task][-1]
    out = {}
    for name, by_metric in log.items():
        d = {m: [float(v) for v in vals] for m, vals in by_metric.items()}
        if loss in d:
            d["loss"] = d[loss]
        elif len(d) == 1:
            d["loss"] = next(iter(d.values()))
        out[name] = d
    return out


class XGBoostModel(Model):
    """An XGBoost booster behind the common interface."""

    kind = "xgboost"
    early_stopping = True
    distributed = True
    params_section = "xgb"

    @property
    def booster(self) -> xgb.Booster:
        return self.estimator

    def output_from_raw(self, raw: np.ndarray) -> np.ndarray:
        """The booster's float32 predictions as :meth:`output`: binary, the two columns from
        the positive class's probability; multiclass, the softprob rows renormalised in
        float64 (each sums to 1 to double precision); regression, the values."""
        p = np.asarray(raw, dtype=np.float64)
        return LEARNING[self.task].output(p, self.n_classes)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not self.task_type.classification:
            raise ModelError("a regression model has no class probabilities")
        return self.output_from_raw(self.estimator.predict(dmatrix(X)))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.task_type.classification:
            return np.argmax(self.predict_proba(X), axis=1)
        return self.output_from_raw(self.estimator.predict(dmatrix(X)))

    def predict_distributed(self, client: Client, X: DaskFrame) -> Any:
        """``xgboost.dask.predict`` of the booster on ``X`` (lazy)."""
        from xgboost import dask as dxgb  # loads Dask: only the Dask engine gets here

        return dxgb.predict(client, self.estimator, X)

    def set_threads(self, n: int) -> None:
        """XGBoost's prediction threads (``nthread``)."""
        self.estimator.set_param({"nthread": n})

    def output_encoded(self, matrix: np.ndarray, signature: Signature) -> np.ndarray:
        """:meth:`output` of an encoded matrix through ``Booster.inplace_predict``: no pandas,
        no DMatrix, bit for bit the values of :meth:`output`.

        The matrix is cast to float32 here, the cast XGBoost applies to every input, and checked
        first: a value that is infinite or beyond float32 is a
        :class:`~mlcycle.features.SchemaError` naming the column and row (a DMatrix refuses it
        with an XGBoostError; inplace prediction would silently accept it). Categorical columns
        hold codes in the training order, NaN for missing: with numpy input XGBoost takes them
        as they are (it re-codes only dataframes), so the booster's stored categories are
        checked against ``signature`` once per signature.
        """
        self.check_encoding(signature)
        with np.errstate(over="ignore"):  # too large for float32: inf, refused below
            values = np.ascontiguousarray(matrix, dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != len(signature.features):
            raise SchemaError(
                f"expected an encoded matrix of shape (n, {len(signature.features)}) for the "
                f"columns {signature.columns}, got shape {values.shape}"
            )
        n = len(values)
        if n == 0:
            width = self.task_type.output_width(self.n_classes)
            return np.zeros((0, width) if width else 0)
        infinite = np.isinf(values)
        if infinite.any():
            row, col = (int(i) for i in np.argwhere(infinite)[0])
            raise SchemaError(
                f"column {signature.columns[col]!r}, row {row}: {float(matrix[row, col])!r} is "
                f"infinite or too large for XGBoost ({int(infinite.sum())} such value(s))"
            )
        # iteration_range (0, 0): every tree of the booster, as predict() in output() uses (fit
        # already cut an early-stopped booster at its best round).
        return self.output_from_raw(self.estimator.inplace_predict(values, iteration_range=(0, 0)))

    def stored_categories(self) -> dict[str, tuple[str, ...]]:
        """Per categorical feature, the categories the booster was trained with, in code order
        (XGBoost 3.1+ stores them; an older model file gives an empty mapping)."""
        try:
            stored = self.estimator.get_categories(export_to_arrow=True).to_arrow()
        except (xgb.core.XGBoostError, ImportError, AttributeError):
            return {}
        return {
            str(name): tuple(str(v) for v in values.to_pylist())
            for name, values in (stored or [])
            if values is not None
        }

    def check_encoding(self, signature: Signature) -> None:
        """Refuse (:class:`ModelError`) a signature whose features, kinds or category order
        differ from the booster's: encoded codes would silently mean other categories.
        Checked once per signature object."""
        if getattr(self, "_encoding_checked", None) is signature:
            return
        names = self.estimator.feature_names
        if names is not None and list(names) != signature.columns:
            raise ModelError(
                f"the booster's features {list(names)} are not the signature's {signature.columns}"
            )
        types = self.estimator.feature_types
        if types is not None and len(types) != len(signature.features):
            raise ModelError(
                f"the booster has {len(types)} features, the signature {len(signature.features)}"
            )
        if types is not None:
            for feat, ftype in zip(signature.features, types, strict=True):
                if (ftype == "c") != (feat.kind == "categorical"):
                    raise ModelError(
                        f"feature {feat.name!r} is {feat.kind} in the signature but of type "
                        f"{ftype!r} in the booster"
                    )
        stored = self.stored_categories()
        for feat in signature.features:
            if feat.name in stored and stored[feat.name] != tuple(feat.categories):
                raise ModelError(
                    f"feature {feat.name!r}: the booster was trained with the categories "
                    f"{list(stored[feat.name])}, the signature lists {list(feat.categories)}"
                )
        self._encoding_checked = signature

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
        on_round: Callable[[int], None] | None = None,
    ) -> FitResult:
        opts = {"seed": seed, "threads": threads, "device": device, "class_weight": class_weight}
        native = booster_params(params, y, task, n_classes, **opts)
        weight = _row_weights(y, task, n_classes, class_weight)
        callbacks = [_RoundCallback(on_round)] if on_round else None
        n = int(rounds if rounds is not None else params.get("n_estimators", 100))
        d_train = dmatrix(X, y, threads, weight)
        log = {}
        booster = xgb.train(
            {**native, "eval_metric": list(CURVE_METRICS[task])},
            d_train,
            num_boost_round=n,
            evals=[(d_train, "train")],
            evals_result=log,
            verbose_eval=False,
            callbacks=callbacks,
        )
        return FitResult(cls(booster, task, n_classes), n, _curves(log, task))

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
        on_round: Callable[[int], None] | None = None,
    ) -> FitResult:
        """Boost on the rows ``fit_idx`` of ``X``/``y``, early-stopped on the inner slice
        ``inner_idx`` (positions): the cross-validation fit of :meth:`fit`, which draws the
        slice by seed; the Dask engine passes one chosen by row hash. The result's ``rounds``
        is the best round count and the booster is cut there."""
        native = booster_params(
            params, y, task, n_classes,
            seed=seed, threads=threads, device=device, class_weight=class_weight,
        )  # fmt: skip
        weight = _row_weights(y, task, n_classes, class_weight)
        callbacks = [_RoundCallback(on_round)] if on_round else None
        w = (lambda idx: None) if weight is None else (lambda idx: weight[idx])
        d_fit = dmatrix(X.iloc[fit_idx], y[fit_idx], threads, w(fit_idx))
        d_valid = dmatrix(X.iloc[inner_idx], y[inner_idx], threads, w(inner_idx))
        n_rounds = int(params.get("n_estimators", 100))
        early = params.get("early_stopping_rounds")
        log: dict = {}
        booster = xgb.train(
            native,
            d_fit,
            num_boost_round=n_rounds,
            evals=[(d_valid, "valid")],
            evals_result=log,
            early_stopping_rounds=early,
            verbose_eval=False,
            callbacks=callbacks,
        )
        best = booster.best_iteration + 1 if early else n_rounds
        return FitResult(cls(booster[:best], task, n_classes), best, _curves(log, task))

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
        """A booster trained across the cluster by ``xgboost.dask`` on ``frame`` (model
        columns + ``__y``): early-stopped on ``valid`` when given (the result's rounds are the
        best count), else exactly ``rounds`` rounds with the training curve, as :meth:`fit`
        records it. ``class_weight: balanced`` weighs a binary task's positives by the
        negatives/positives of all the rows."""
        from xgboost import dask as dxgb  # loads Dask: only the Dask engine gets here

        features = [c for c in frame.columns if not c.startswith("__")]
        native = booster_params(
            params, np.array([0.0, 1.0]), task, n_classes,
            seed=seed, threads=0, device=device, class_weight=class_weight,
        )  # fmt: skip
        if "scale_pos_weight" in native and "scale_pos_weight" not in params:
            pos, n = (float(v) for v in client.compute([frame["__y"].sum(), frame["__y"].count()],
                                                       sync=True))  # fmt: skip
            native["scale_pos_weight"] = (n - pos) / max(pos, 1.0)
        # Each worker boosts with its own thread count (0: the worker's nthreads), not
        # train.nthread: that is one process's share of a machine, and more threads than a
        # worker's cores stall every round's synchronisation across the workers.
        native["nthread"] = 0
        dtrain = dxgb.DaskDMatrix(client, frame[features], frame["__y"], enable_categorical=True)
        if valid is not None:
            dvalid = dxgb.DaskDMatrix(
                client, valid[features], valid["__y"], enable_categorical=True
            )
            evals = [(dvalid, "valid")]
        else:
            native["eval_metric"] = list(CURVE_METRICS[task])
            evals = [(dtrain, "train")]
        # A lost worker leaves its peers waiting in a collective: they give up after
        # peer_timeout, so the fit fails (and can be retried) instead of hanging.
        coll = CollConfig(timeout=peer_timeout, tracker_timeout=peer_timeout)
        out = dxgb.train(
            client, native, dtrain, num_boost_round=rounds, evals=evals,
            early_stopping_rounds=early if valid is not None else None, verbose_eval=False,
            coll_cfg=coll,
        )  # fmt: skip
        booster = out["booster"]
        best = booster.best_iteration + 1 if (valid is not None and early) else rounds
        if best < booster.num_boosted_rounds():
            booster = booster[:best]
        booster.set_param({"nthread": 0})
        return FitResult(cls(booster, task, n_classes), best, _curves(out.get("history", {}), task))

    def to_bytes(self) -> bytes:
        return bytes(self.estimator.save_raw(raw_format="ubj"))

    @classmethod
    def from_bytes(cls, data: bytes, task: str) -> XGBoostModel:
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
            learner = json.loads(booster.save_config())["learner"]
        except (xgb.core.XGBoostError, ValueError, KeyError) as exc:
            raise ModelError(f"not a valid XGBoost model: {exc}") from exc
        objective = learner.get("objective", {}).get("name")
        if objective != OBJECTIVES[task]:
            raise ModelError(
                f"the booster's objective is {objective!r}, not {OBJECTIVES[task]!r} as a "
                f"{task} model needs"
            )
        n_classes = {BINARY: 2, REGRESSION: 0}.get(
            task, int(learner.get("learner_model_param", {}).get("num_class", 0))
        )
        booster.set_param({"nthread": 0})
        return cls(booster, task, n_classes)

    def raw_importance(self, columns: list[str]) -> dict[str, float]:
        """Total gain of each feature's splits."""
        gain = self.estimator.get_score(importance_type="total_gain")
        return {c: float(gain.get(c, 0.0)) for c in columns}

    def contributions(self, X: pd.DataFrame) -> np.ndarray:
        """Exact TreeSHAP values from XGBoost's ``pred_contribs``, bias column dropped."""
        values = np.asarray(self.estimator.predict(dmatrix(X), pred_contribs=True), np.float64)
        return values[..., :-1]

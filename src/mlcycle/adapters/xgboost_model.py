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
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import train_test_split

from mlcycle.config import TrainConfig
from mlcycle.models import FitResult, Model, ModelError, register
from mlcycle.tasks import BINARY, MULTICLASS, REGRESSION, is_classification

if TYPE_CHECKING:
    from mlcycle.features import Signature

# Per task: the objective, the metrics watched on the inner validation slice during
# cross-validation (the last one drives early stopping) and the final fit's training curve
# (one metric: a second one, such as AUC, would sort every row each round).
OBJECTIVES = {
    BINARY: "binary:logistic",
    MULTICLASS: "multi:softprob",
    REGRESSION: "reg:squarederror",
}
EVAL_METRICS = {BINARY: ("auc", "logloss"), MULTICLASS: ("mlogloss",), REGRESSION: ("rmse",)}
CURVE_METRICS = {BINARY: ("logloss",), MULTICLASS: ("mlogloss",), REGRESSION: ("rmse",)}
# Keys of train.xgb that steer the boosting loop rather than the booster itself.
ROUND_KEYS = ("n_estimators", "early_stopping_rounds")


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
    params: Mapping[str, Any], cfg: TrainConfig, y: np.ndarray, task: str, n_classes: int = 0
) -> dict:
    """XGBoost's native parameters: the candidate's ``params`` (train.xgb names) plus the
    task's objective and metrics, seed, device and threads from ``cfg``, without the round
    counts. With ``class_weight: balanced`` a binary task weights the positive class by
    negatives/positives unless ``params`` sets ``scale_pos_weight`` itself."""
    out: dict[str, Any] = {
        "objective": OBJECTIVES[task],
        "eval_metric": list(EVAL_METRICS[task]),
        "tree_method": "hist",
        "seed": cfg.seed,
        "nthread": cfg.nthread,
        "device": cfg.device,
    }
    if task == MULTICLASS:
        out["num_class"] = n_classes
    if cfg.class_weight == "balanced" and task == BINARY:
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


@register
class XGBoostModel(Model):
    """An XGBoost booster behind the common interface."""

    kind = "xgboost"
    file_name = "model.ubj"

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not is_classification(self.task):
            raise ModelError("a regression model has no class probabilities")
        p = self.estimator.predict(dmatrix(X)).astype(np.float64)
        if self.task == BINARY:
            return np.column_stack([1.0 - p, p])
        # softprob is float32; renormalised in float64 each row sums to 1 to double precision.
        p = p.reshape(len(X), self.n_classes)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if is_classification(self.task):
            return np.argmax(self.predict_proba(X), axis=1)
        return self.estimator.predict(dmatrix(X)).astype(np.float64)

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
        from mlcycle.features import SchemaError  # loaded late: stages' deps stay as they are

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
            return np.zeros((0, self.n_classes) if is_classification(self.task) else 0)
        infinite = np.isinf(values)
        if infinite.any():
            row, col = (int(i) for i in np.argwhere(infinite)[0])
            raise SchemaError(
                f"column {signature.columns[col]!r}, row {row}: {float(matrix[row, col])!r} is "
                f"infinite or too large for XGBoost ({int(infinite.sum())} such value(s))"
            )
        # iteration_range (0, 0): every tree of the booster, as predict() in output() uses (fit
        # already cut an early-stopped booster at its best round).
        p = self.estimator.inplace_predict(values, iteration_range=(0, 0)).astype(np.float64)
        if self.task == BINARY:
            return np.column_stack([1.0 - p, p])
        if self.task == MULTICLASS:
            p = p.reshape(n, self.n_classes)
            return p / p.sum(axis=1, keepdims=True)
        return p

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
        cfg: TrainConfig,
        task: str,
        n_classes: int = 0,
        rounds: int | None = None,
        early_stopping_seed: int | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> FitResult:
        native = booster_params(params, cfg, y, task, n_classes)
        weight = (
            balanced_weights(y, n_classes)
            if cfg.class_weight == "balanced" and task == MULTICLASS
            else None
        )
        callbacks = [_RoundCallback(on_round)] if on_round else None
        if early_stopping_seed is not None:
            positions = np.arange(len(y))
            try:
                fit_idx, inner_idx = train_test_split(
                    positions,
                    test_size=cfg.validation_fraction,
                    random_state=early_stopping_seed,
                    stratify=y if is_classification(task) else None,
                )
            except ValueError:  # a class too rare to stratify the inner slice
                fit_idx, inner_idx = train_test_split(
                    positions, test_size=cfg.validation_fraction, random_state=early_stopping_seed
                )
            return fit_early_stopped(
                X, y, params, cfg, task, n_classes, fit_idx, inner_idx, on_round
            )
        n = int(rounds if rounds is not None else params.get("n_estimators", 100))
        d_train = dmatrix(X, y, cfg.nthread, weight)
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


def fit_early_stopped(
    X: pd.DataFrame,
    y: np.ndarray,
    params: Mapping[str, Any],
    cfg: TrainConfig,
    task: str,
    n_classes: int,
    fit_idx: np.ndarray,
    inner_idx: np.ndarray,
    on_round: Callable[[int], None] | None = None,
) -> FitResult:
    """Boost on the rows ``fit_idx`` of ``X``/``y``, early-stopped on the inner slice
    ``inner_idx`` (positions): the cross-validation fit of :meth:`XGBoostModel.fit`, which
    draws the slice by seed; the Dask engine passes one chosen by row hash. The result's
    ``rounds`` is the best round count and the booster is cut there."""
    native = booster_params(params, cfg, y, task, n_classes)
    weight = (
        balanced_weights(y, n_classes)
        if cfg.class_weight == "balanced" and task == MULTICLASS
        else None
    )
    callbacks = [_RoundCallback(on_round)] if on_round else None
    w = (lambda idx: None) if weight is None else (lambda idx: weight[idx])
    d_fit = dmatrix(X.iloc[fit_idx], y[fit_idx], cfg.nthread, w(fit_idx))
    d_valid = dmatrix(X.iloc[inner_idx], y[inner_idx], cfg.nthread, w(inner_idx))
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
    return FitResult(XGBoostModel(booster[:best], task, n_classes), best, _curves(log, task))

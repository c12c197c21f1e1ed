"""The scikit-learn kinds: a Pipeline of preprocessing and one estimator, stored with skops
(never pickle) and checked against :data:`mlcycle.models.TRUSTED_TYPES` before loading.

- ``logistic_regression`` (classification): median imputation and scaling of numbers, one-hot
  categories, then a logistic regression.
- ``ridge`` (regression): the same preprocessing, then a ridge regression.
- ``random_forest`` (every task): median imputation of numbers, ordinal category codes, then a
  random forest classifier or regressor.

A category missing from the data or never seen in training is all-zero in the one-hot
encoding and code -1 in the ordinal one, so each kind handles it without failing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlcycle import tasks
from mlcycle.models import (
    TRUSTED_TYPES,
    FitResult,
    Model,
    ModelError,
    canonical_skops,
    check_skops_types,
    register,
)


def _n_jobs(nthread: int) -> int:
    return nthread if nthread > 0 else -1


def _output_features(prep: ColumnTransformer) -> list[str]:
    """For each column a fitted ColumnTransformer outputs, the input feature it came from."""
    names: list[str] = []
    for _name, transformer, cols in prep.transformers_:
        if transformer == "drop" or not len(cols):
            continue
        last = transformer[-1] if isinstance(transformer, Pipeline) else transformer
        if isinstance(last, OneHotEncoder):
            for col, cats in zip(cols, last.categories_, strict=True):
                names.extend([col] * len(cats))
        else:
            names.extend(cols)
    return names


class SklearnModel(Model):
    """A scikit-learn Pipeline behind the common interface; subclasses name the estimator."""

    file_name = "model.skops"
    scaled: ClassVar[bool] = True  # numbers scaled and categories one-hot (else ordinal codes)
    parallel: ClassVar[bool] = False  # takes n_jobs

    @classmethod
    def estimator_class(cls, task: str) -> type:
        """The estimator this kind fits for ``task``."""
        raise NotImplementedError

    @classmethod
    def pipeline(
        cls,
        params: Mapping[str, Any],
        X: pd.DataFrame,
        task: str,
        *,
        seed: int,
        threads: int,
        class_weight: str,
    ) -> Pipeline:
        """An unfitted Pipeline, its preprocessing built from the columns of ``X`` (float64
        numbers; pandas categoricals, whose categories are the training categories)."""
        numeric = [c for c in X.columns if not isinstance(X[c].dtype, pd.CategoricalDtype)]
        categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
        categories = [list(X[c].cat.categories) for c in categorical]
        merged = {**cls.default_params, **params}
        estimator_cls = cls.estimator_class(task)
        known = set(estimator_cls().get_params())
        unknown = sorted(set(merged) - known)
        if unknown:
            raise ModelError(
                f"train.models.{cls.kind} / train.search.{cls.kind}: unknown parameter(s) "
                f"{unknown} for {estimator_cls.__name__}"
            )
        extra: dict[str, Any] = {"random_state": seed} if "random_state" in known else {}
        if class_weight == "balanced" and tasks.get(task).classification:
            extra["class_weight"] = "balanced"
        if cls.scaled:
            num: Any = Pipeline(
                [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
            )
            cat: Any = OneHotEncoder(categories=categories, handle_unknown="ignore")
        else:
            num = SimpleImputer(strategy="median")
            cat = OrdinalEncoder(
                categories=categories,
                handle_unknown="use_encoded_value",
                unknown_value=-1,
                encoded_missing_value=-1,
            )
        if cls.parallel:
            extra["n_jobs"] = _n_jobs(threads)
        prep = ColumnTransformer([("num", num, numeric), ("cat", cat, categorical)])
        return Pipeline([("prep", prep), ("model", estimator_cls(**{**merged, **extra}))])

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
        validation_fraction: float,
        rounds: int | None = None,
        early_stopping_seed: int | None = None,
        on_round: Callable[[int], None] | None = None,
    ) -> FitResult:
        pipeline = cls.pipeline(
            params, X, task, seed=seed, threads=threads, class_weight=class_weight
        )
        pipeline.fit(X, y)
        if cls.parallel:
            # Trees are grown in parallel, but predicting in parallel adds the trees' votes in
            # whatever order the threads finish, which changes the last bits of a probability.
            pipeline[-1].set_params(n_jobs=1)
        return FitResult(cls(pipeline, task, n_classes))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not self.task_type.classification:
            raise ModelError("a regression model has no class probabilities")
        proba = np.asarray(self.estimator.predict_proba(X), dtype=np.float64)
        seen = np.asarray(self.estimator[-1].classes_, dtype=np.int64)
        if len(seen) == self.n_classes and (seen == np.arange(self.n_classes)).all():
            return proba
        # Fitted on rows lacking some classes (a small cross-validation fold): those get 0.
        out = np.zeros((len(X), self.n_classes))
        out[:, seen] = proba
        return out

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.task_type.classification:
            return np.argmax(self.predict_proba(X), axis=1)
        return np.asarray(self.estimator.predict(X), dtype=np.float64)

    def to_bytes(self) -> bytes:
        return canonical_skops(sio.dumps(self.estimator))

    @classmethod
    def from_bytes(cls, data: bytes, task: str) -> SklearnModel:
        check_skops_types(data)
        try:
            estimator = sio.loads(data, trusted=list(TRUSTED_TYPES))
        except Exception as exc:  # skops raises many types for a malformed file
            raise ModelError(f"not a valid skops model: {type(exc).__name__}: {exc}") from exc
        expected = cls.estimator_class(task)
        if not (isinstance(estimator, Pipeline) and isinstance(estimator[-1], expected)):
            raise ModelError(
                f"the skops file holds {type(estimator).__name__}, not a Pipeline ending in "
                f"{expected.__name__} as a {cls.kind} model for {task} should"
            )
        classes = getattr(estimator[-1], "classes_", ())  # regressors have none
        n_classes = tasks.get(task).output_width(len(classes))
        return cls(estimator, task, n_classes)

    def _per_column(self) -> np.ndarray:
        last = self.estimator[-1]
        if hasattr(last, "coef_"):
            coef = np.abs(np.atleast_2d(last.coef_))
            return coef.sum(axis=0)
        return np.asarray(last.feature_importances_)

    def raw_importance(self, columns: list[str]) -> dict[str, float]:
        """Random forest: impurity decrease. Linear models: absolute coefficients on the scaled
        / one-hot columns, summed per feature and class (a rough guide)."""
        raw = dict.fromkeys(columns, 0.0)
        for name, value in zip(
            _output_features(self.estimator[0]), self._per_column(), strict=True
        ):
            raw[name] += float(value)
        return raw


@register
class LogisticRegressionModel(SklearnModel):
    kind = "logistic_regression"
    default_params = {"C": 1.0, "max_iter": 1000}

    @classmethod
    def estimator_class(cls, task: str) -> type:
        return LogisticRegression


@register
class RidgeModel(SklearnModel):
    kind = "ridge"
    default_params = {"alpha": 1.0}

    @classmethod
    def estimator_class(cls, task: str) -> type:
        return Ridge


@register
class RandomForestModel(SklearnModel):
    kind = "random_forest"
    default_params = {"n_estimators": 200, "min_samples_leaf": 5, "max_features": "sqrt"}
    scaled = False
    parallel = True

    @classmethod
    def estimator_class(cls, task: str) -> type:
        return RandomForestClassifier if tasks.get(task).classification else RandomForestRegressor

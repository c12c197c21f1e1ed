"""The scikit-learn kinds: a Pipeline of preprocessing and one estimator, stored with skops
(never pickle) and checked against :data:`TRUSTED_TYPES` before loading.

- ``logistic_regression`` (classification): median imputation and scaling of numbers, one-hot
  categories, then a logistic regression.
- ``ridge`` (regression): the same preprocessing, then a ridge regression.
- ``random_forest`` (every task): median imputation of numbers, ordinal category codes, then a
  random forest classifier or regressor.

A category missing from the data or never seen in training is all-zero in the one-hot
encoding and code -1 in the ordinal one, so each kind handles it without failing.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlcycle import tasks
from mlcycle.adapters.base import FitResult, Model, ModelError, UntrustedTypesError


def _skops() -> Any:
    """skops.io, imported when a skops file is read or written: importing it lists every
    scikit-learn estimator (about 0.8 s), which every stage process that only imports the
    model registry (train, evaluate, gate, package on an XGBoost model) would pay."""
    import skops.io

    return skops.io


# Types a skops file of ours may hold beyond those skops trusts out of the box (scikit-learn
# estimators, numpy arrays, Python primitives). Anything else is refused before loading.
TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


# --- skops files (the scikit-learn adapters' format) --------------------------------------------


def check_skops_types(data: bytes) -> None:
    """Refuse a skops file holding a type outside :data:`TRUSTED_TYPES`, naming the types.

    :func:`skops.io.get_untrusted_types` only parses the file's JSON schema; nothing in the
    file is imported or run.
    """
    try:
        found = _skops().get_untrusted_types(data=data)
    except Exception as exc:  # a truncated zip, bad JSON, an unknown protocol ...
        raise ModelError(f"not a valid skops file: {type(exc).__name__}: {exc}") from exc
    refused = sorted(set(found) - set(TRUSTED_TYPES))
    if refused:
        raise UntrustedTypesError(refused, TRUSTED_TYPES)


def canonical_skops(data: bytes) -> bytes:
    """Rewrite a skops file so the same model always gives the same bytes.

    skops names array files and memo ids after memory addresses, uses random names for bytes
    and stamps the zip entries with the current time. Here ids and file names are renumbered
    in the order the schema first uses them and every entry gets a fixed timestamp; loading
    gives the same object.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        schema = json.loads(src.read("schema.json"))
        ids: dict[int, int] = {}
        files: dict[str, str] = {}

        def walk(node: Any) -> Any:
            if isinstance(node, list):
                return [walk(v) for v in node]
            if not isinstance(node, dict):
                return node
            out = {}
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    value = ids.setdefault(value, len(ids) + 1)
                elif key == "file" and isinstance(value, str) and "__loader__" in node:
                    suffix = Path(value).suffix
                    value = files.setdefault(value, f"{len(files) + 1}{suffix}")
                else:
                    value = walk(value)
                out[key] = value
            return out

        schema = walk(schema)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as dst:
            for old, new in files.items():
                _write_entry(dst, new, src.read(old))
            _write_entry(dst, "schema.json", json.dumps(schema, indent=2).encode())
    return buffer.getvalue()


def _write_entry(dst: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    dst.writestr(info, data, compresslevel=6)


# --- the scikit-learn kinds --------------------------------------------------------------------


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
        rounds: int | None = None,
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
        return canonical_skops(_skops().dumps(self.estimator))

    @classmethod
    def from_bytes(cls, data: bytes, task: str) -> SklearnModel:
        check_skops_types(data)
        try:
            estimator = _skops().loads(data, trusted=list(TRUSTED_TYPES))
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


class LogisticRegressionModel(SklearnModel):
    kind = "logistic_regression"
    default_params = {"C": 1.0, "max_iter": 1000}

    @classmethod
    def estimator_class(cls, task: str) -> type:
        return LogisticRegression


class RidgeModel(SklearnModel):
    kind = "ridge"
    default_params = {"alpha": 1.0}

    @classmethod
    def estimator_class(cls, task: str) -> type:
        return Ridge


class RandomForestModel(SklearnModel):
    kind = "random_forest"
    default_params = {"n_estimators": 200, "min_samples_leaf": 5, "max_features": "sqrt"}
    scaled = False
    parallel = True

    @classmethod
    def estimator_class(cls, task: str) -> type:
        return RandomForestClassifier if tasks.get(task).classification else RandomForestRegressor

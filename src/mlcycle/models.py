"""The candidate models behind one small interface: fit, predict, save and load.

Three kinds, chosen by ``train.candidates``:

- ``xgboost``: a booster with native categorical and missing-value support, fitted on the frame
  from :func:`mlcycle.features.to_model_frame`; stored in XGBoost's own UBJSON format.
- ``logistic_regression``: a scikit-learn Pipeline (median imputation and scaling of numbers,
  one-hot encoding of categories) ending in a logistic regression.
- ``random_forest``: a Pipeline (median imputation of numbers, ordinal codes for categories)
  ending in a random forest.

Both scikit-learn kinds are stored with skops, never with pickle. Loading a skops file first
lists the types it would build (:func:`skops.io.get_untrusted_types`, which reads the file's
schema and runs none of its code) and refuses any type that is not in :data:`TRUSTED_TYPES`.
A category missing from the data or never seen in training is all-zero in the one-hot encoding
and code -1 in the ordinal one, so each kind handles it without failing.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
import xgboost as xgb
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlcycle.config import CANDIDATES, TrainConfig
from mlcycle.io import read_json, write_bytes, write_json

XGB_FILE = "model.ubj"
SKOPS_FILE = "model.skops"
MODEL_INFO = "model.json"  # beside the model file: its kind, parameters and rounds
MODEL_FILES = {"xgboost": XGB_FILE, "logistic_regression": SKOPS_FILE, "random_forest": SKOPS_FILE}
# The last one drives early stopping: log loss, because AUC on a small validation slice moves
# in steps and once stopped a fold after 32 of ~600 rounds (CV ROC AUC 0.9138 for that fold).
EVAL_METRICS = ("auc", "logloss")
# The final fit's learning curve on the training data: log loss only, the curve dvc.yaml plots.
# AUC there would sort every row each round and double the fit's time.
CURVE_METRICS = ("logloss",)
# Types a skops file of ours may hold beyond those skops trusts out of the box (scikit-learn
# estimators, numpy arrays, Python primitives). Anything else is refused before loading.
TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")
# Parameters each scikit-learn kind takes when params.yaml does not set them.
SKLEARN_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"C": 1.0, "max_iter": 1000},
    "random_forest": {"n_estimators": 200, "min_samples_leaf": 5, "max_features": "sqrt"},
}
SKLEARN_ESTIMATORS = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
}
# Keys of train.xgb that steer the boosting loop rather than the booster itself.
ROUND_KEYS = ("n_estimators", "early_stopping_rounds")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ModelError(ValueError):
    """A model file cannot be loaded safely, or model settings are invalid."""


class UntrustedTypesError(ModelError):
    """A skops file holds types outside :data:`TRUSTED_TYPES`; it was not loaded."""

    def __init__(self, types: list[str]) -> None:
        self.types = types
        super().__init__(
            f"it holds untrusted type(s) {types}; refusing to load it (trusted beyond "
            f"skops' defaults: {list(TRUSTED_TYPES)})"
        )


# --- the common interface -------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A fitted model of one ``kind``: an XGBoost booster or a scikit-learn Pipeline.

    Every kind takes the frame of :func:`mlcycle.features.to_model_frame` as input, so
    evaluation, batch prediction and the service call it the same way.
    """

    kind: str
    estimator: Any

    def __post_init__(self) -> None:
        if self.kind not in MODEL_FILES:
            raise ModelError(f"unknown model kind {self.kind!r}; known: {list(MODEL_FILES)}")

    @property
    def file_name(self) -> str:
        """The file name the model is stored under: model.ubj or model.skops."""
        return MODEL_FILES[self.kind]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Positive-class probabilities (float64, one per row of ``X``)."""
        if self.kind == "xgboost":
            return self.estimator.predict(dmatrix(X)).astype(np.float64)
        return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=np.float64)

    def to_bytes(self) -> bytes:
        """The model file's content; the same model always gives the same bytes."""
        if self.kind == "xgboost":
            return bytes(self.estimator.save_raw(raw_format="ubj"))
        return canonical_skops(sio.dumps(self.estimator))

    @classmethod
    def from_bytes(cls, kind: str, data: bytes) -> Model:
        """Load a model of ``kind`` from its file content.

        A skops file is checked against :data:`TRUSTED_TYPES` before anything in it is built;
        an untrusted type raises :class:`ModelError` naming it.
        """
        if kind == "xgboost":
            booster = xgb.Booster()
            try:
                booster.load_model(bytearray(data))
            except xgb.core.XGBoostError as exc:
                raise ModelError(f"not a valid XGBoost model: {exc}") from exc
            booster.set_param({"nthread": 0})
            return cls(kind, booster)
        if kind not in MODEL_FILES:
            raise ModelError(f"unknown model kind {kind!r}; known: {list(MODEL_FILES)}")
        check_skops_types(data)
        try:
            estimator = sio.loads(data, trusted=list(TRUSTED_TYPES))
        except Exception as exc:  # skops raises many types for a malformed file
            raise ModelError(f"not a valid skops model: {type(exc).__name__}: {exc}") from exc
        expected = SKLEARN_ESTIMATORS[kind]
        if not (isinstance(estimator, Pipeline) and isinstance(estimator[-1], expected)):
            raise ModelError(
                f"the skops file holds {type(estimator).__name__}, not a Pipeline ending in "
                f"{expected.__name__} as a {kind} model should"
            )
        return cls(kind, estimator)

    def importance(self, columns: list[str]) -> list[dict]:
        """Each feature's share of the model's total importance, largest first.

        XGBoost: total gain. Random forest: impurity decrease. Logistic regression: absolute
        coefficients on the scaled / one-hot columns, summed per feature (a rough guide).
        """
        if self.kind == "xgboost":
            gain = self.estimator.get_score(importance_type="total_gain")
            raw = {c: gain.get(c, 0.0) for c in columns}
        else:
            per_column = (
                np.abs(self.estimator[-1].coef_[0])
                if self.kind == "logistic_regression"
                else self.estimator[-1].feature_importances_
            )
            raw = dict.fromkeys(columns, 0.0)
            for name, value in zip(_output_features(self.estimator[0]), per_column, strict=True):
                raw[name] += float(value)
        total = sum(raw.values()) or 1.0
        rows = [{"feature": c, "gain": round(raw[c] / total, 6)} for c in columns]
        return sorted(rows, key=lambda r: (-r["gain"], r["feature"]))


def save_model_dir(directory: str | Path, model: Model, info: Mapping[str, Any]) -> Path:
    """Write ``model`` (model.ubj or model.skops) and ``info`` plus its kind (model.json) into
    ``directory``, each atomically; a model file of the other format is removed."""
    directory = Path(directory)
    write_bytes(directory / model.file_name, model.to_bytes())
    write_json(directory / MODEL_INFO, {**info, "kind": model.kind, "file": model.file_name})
    for name in {XGB_FILE, SKOPS_FILE} - {model.file_name}:
        (directory / name).unlink(missing_ok=True)
    return directory / model.file_name


def load_model_dir(directory: str | Path) -> tuple[Model, dict[str, Any]]:
    """Load what :func:`save_model_dir` wrote: the model and its info (with ``kind``)."""
    directory = Path(directory)
    info = read_json(directory / MODEL_INFO)
    kind = info.get("kind")
    if kind not in MODEL_FILES:
        raise ModelError(f"{directory / MODEL_INFO}: unknown model kind {kind!r}")
    path = directory / MODEL_FILES[kind]
    try:
        return Model.from_bytes(kind, path.read_bytes()), info
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


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


# --- XGBoost --------------------------------------------------------------------------------


def dmatrix(X: pd.DataFrame, y: np.ndarray | None = None, nthread: int = 0) -> xgb.DMatrix:
    """A DMatrix with XGBoost's native categorical support on."""
    return xgb.DMatrix(X, label=y, enable_categorical=True, nthread=nthread)


def negatives_per_positive(y: np.ndarray) -> float:
    """Negatives / positives in the labels ``y``: the weight ``class_weight: balanced`` gives
    each positive example."""
    positives = int(np.sum(y))
    return (len(y) - positives) / max(positives, 1)


def booster_params(params: Mapping[str, Any], cfg: TrainConfig, y: np.ndarray) -> dict:
    """XGBoost's native parameters: the candidate's ``params`` (train.xgb names) plus the
    objective, metrics, seed, device and threads from ``cfg``, without the round counts.

    With ``class_weight: balanced`` the positive class is weighted by negatives/positives of
    ``y`` unless ``params`` sets ``scale_pos_weight`` itself.
    """
    out: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": list(EVAL_METRICS),
        "tree_method": "hist",
        "seed": cfg.seed,
        "nthread": cfg.nthread,
        "device": cfg.device,
    }
    if cfg.class_weight == "balanced":
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


def _curves(log: dict) -> dict[str, dict[str, list[float]]]:
    return {name: {m: [float(v) for v in vals] for m, vals in d.items()} for name, d in log.items()}


def fit_xgboost_early_stopping(
    X_fit: pd.DataFrame,
    y_fit: np.ndarray,
    X_valid: pd.DataFrame,
    y_valid: np.ndarray,
    params: Mapping[str, Any],
    cfg: TrainConfig,
) -> tuple[xgb.Booster, int, dict[str, list[float]]]:
    """Boost on ``X_fit`` up to ``n_estimators`` rounds, stopping when the last metric of
    :data:`EVAL_METRICS` on ``X_valid`` has not improved for ``early_stopping_rounds``.

    Returns the booster cut to its best round, that number of rounds, and the validation
    curves ({metric: [value per round]}).
    """
    native = booster_params(params, cfg, y_fit)
    n_rounds = int(params.get("n_estimators", 100))
    early = params.get("early_stopping_rounds")
    d_fit = dmatrix(X_fit, y_fit, cfg.nthread)
    d_valid = dmatrix(X_valid, y_valid, cfg.nthread)
    log: dict = {}
    booster = xgb.train(
        native,
        d_fit,
        num_boost_round=n_rounds,
        evals=[(d_valid, "valid")],
        evals_result=log,
        early_stopping_rounds=early,
        verbose_eval=False,
    )
    rounds = booster.best_iteration + 1 if early else n_rounds
    return booster[:rounds], rounds, _curves(log)["valid"]


# --- scikit-learn ---------------------------------------------------------------------------


def _n_jobs(nthread: int) -> int:
    return nthread if nthread > 0 else -1


def sklearn_pipeline(
    kind: str, params: Mapping[str, Any], X: pd.DataFrame, cfg: TrainConfig
) -> Pipeline:
    """An unfitted Pipeline for ``kind``, its preprocessing built from the columns of ``X``
    (float64 numbers; pandas categoricals, whose categories are the training categories)."""
    if kind not in SKLEARN_ESTIMATORS:
        raise ModelError(f"{kind!r} is not a scikit-learn candidate")
    numeric = [c for c in X.columns if not isinstance(X[c].dtype, pd.CategoricalDtype)]
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    categories = [list(X[c].cat.categories) for c in categorical]
    merged = {**SKLEARN_DEFAULTS[kind], **params}
    estimator_cls = SKLEARN_ESTIMATORS[kind]
    unknown = sorted(set(merged) - set(estimator_cls().get_params()))
    if unknown:
        raise ModelError(
            f"train.models.{kind} / train.search.{kind}: unknown parameter(s) {unknown} for "
            f"{estimator_cls.__name__}"
        )
    extra: dict[str, Any] = {"random_state": cfg.seed}
    if cfg.class_weight == "balanced":
        extra["class_weight"] = "balanced"
    if kind == "logistic_regression":
        num = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        cat = OneHotEncoder(categories=categories, handle_unknown="ignore")
    else:
        num = SimpleImputer(strategy="median")
        cat = OrdinalEncoder(
            categories=categories,
            handle_unknown="use_encoded_value",
            unknown_value=-1,
            encoded_missing_value=-1,
        )
        extra["n_jobs"] = _n_jobs(cfg.nthread)
    prep = ColumnTransformer([("num", num, numeric), ("cat", cat, categorical)])
    return Pipeline([("prep", prep), ("model", estimator_cls(**{**merged, **extra}))])


# --- fitting the final model ----------------------------------------------------------------


@dataclass
class FitResult:
    """A fitted model, the rounds it was boosted (XGBoost) and its training curves."""

    model: Model
    rounds: int | None = None
    # {"train": {metric: [value per round]}}, XGBoost only
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def fit(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    params: Mapping[str, Any],
    cfg: TrainConfig,
    rounds: int | None = None,
    on_round: Callable[[int], None] | None = None,
) -> FitResult:
    """Fit a ``kind`` model with ``params`` on all of ``X``/``y``: the final refit.

    XGBoost boosts exactly ``rounds`` rounds (chosen beforehand by cross-validation) and records
    :data:`CURVE_METRICS` on the training data per round; ``on_round(i)`` is called after each.
    """
    if kind not in CANDIDATES:
        raise ModelError(f"unknown candidate {kind!r}; known: {list(CANDIDATES)}")
    if kind == "xgboost":
        n = int(rounds if rounds is not None else params.get("n_estimators", 100))
        d_train = dmatrix(X, y, cfg.nthread)
        log: dict = {}
        booster = xgb.train(
            {**booster_params(params, cfg, y), "eval_metric": list(CURVE_METRICS)},
            d_train,
            num_boost_round=n,
            evals=[(d_train, "train")],
            evals_result=log,
            verbose_eval=False,
            callbacks=[_RoundCallback(on_round)] if on_round else None,
        )
        return FitResult(Model(kind, booster), n, _curves(log))
    pipeline = sklearn_pipeline(kind, params, X, cfg)
    pipeline.fit(X, y)
    if kind == "random_forest":
        # Trees are grown in parallel, but predicting in parallel adds the trees' votes in
        # whatever order the threads finish, which changes the last bits of a probability.
        pipeline[-1].set_params(n_jobs=1)
    return FitResult(Model(kind, pipeline))


# --- skops files ----------------------------------------------------------------------------


def check_skops_types(data: bytes) -> None:
    """Refuse a skops file holding a type outside :data:`TRUSTED_TYPES`, naming the types.

    :func:`skops.io.get_untrusted_types` only parses the file's JSON schema; nothing in the
    file is imported or run.
    """
    try:
        found = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a truncated zip, bad JSON, an unknown protocol ...
        raise ModelError(f"not a valid skops file: {type(exc).__name__}: {exc}") from exc
    refused = sorted(set(found) - set(TRUSTED_TYPES))
    if refused:
        raise UntrustedTypesError(refused)


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

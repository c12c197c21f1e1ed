"""One model interface for every kind of model and every task.

A model *kind* (``train.candidates``) is an adapter: a subclass of :class:`Model` in
:mod:`mlcycle.adapters`, registered under its name. Code above the adapters (tuning,
evaluation, batch prediction, the service, the gate) only calls this interface, scikit-learn's
convention:

- :meth:`Model.output` is what the task predicts: for classification the ``(n, n_classes)``
  probability matrix, columns in the signature's fixed class order (binary: column 1 is the
  positive class); for regression the vector of predicted values;
- :meth:`Model.fit` fits a kind on a model frame (:func:`mlcycle.features.to_model_frame`) and
  the encoded target (:func:`mlcycle.features.encode_target`);
- :meth:`Model.to_bytes` / :func:`load_model` store and load it safely;
- :meth:`Model.importance` and :meth:`Model.contributions` explain it.

An adapter also declares what it supports, so that code above it asks rather than testing
its kind: :attr:`Model.early_stopping` (boosting rounds chosen on an inner slice),
:attr:`Model.distributed` (boosted across a Dask cluster), its parameters' defaults and
settings section (:meth:`Model.fixed_params`).

A new kind is one new adapter file plus its entry in :data:`mlcycle.tasks.MODEL_TASKS`.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import skops.io as sio

from mlcycle import tasks
from mlcycle.io import read_json, write_bytes, write_json
from mlcycle.tasks import BINARY, MODEL_TASKS, Task

if TYPE_CHECKING:
    from dask.dataframe import DataFrame as DaskFrame
    from distributed import Client

    from mlcycle.features import Signature

MODEL_INFO = "model.json"  # beside the model file: its kind, task, parameters and rounds
# Types a skops file of ours may hold beyond those skops trusts out of the box (scikit-learn
# estimators, numpy arrays, Python primitives). Anything else is refused before loading.
TRUSTED_TYPES = ("numpy.dtype", "sklearn.tree._tree.Tree")
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


Progress = Callable[[int], None]


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

    ``n_classes`` is the number of classes (0 for regression). Subclasses set ``kind`` and
    ``file_name``, declare what they support and implement the methods that raise
    :class:`NotImplementedError` here.
    """

    kind: ClassVar[str] = ""
    file_name: ClassVar[str] = ""
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
        from mlcycle.encoder import matrix_to_frame  # the encoder imports features: load late

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
        validation_fraction: float,
        rounds: int | None = None,
        early_stopping_seed: int | None = None,
        on_round: Progress | None = None,
    ) -> FitResult:
        """Fit on all of ``X``/``y`` with ``params`` (the kind's own parameter names), seeded
        by ``seed``, with ``threads`` threads (0: all cores) on ``device``; ``class_weight``
        ``balanced`` weights the classes by their rarity.

        ``early_stopping_seed`` (cross-validation) lets a kind with :attr:`early_stopping`
        hold out a seeded slice (``validation_fraction`` of ``X``) and stop when it stops
        improving; the result's ``rounds`` is then the best round count. Without it a boosting
        kind boosts exactly ``rounds`` rounds. Kinds without rounds ignore all three.
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
    ) -> FitResult:
        """Fit across the cluster on ``frame`` (model columns, target ``__y``; columns starting
        ``__`` are not features): early-stopped on ``valid`` when given, else exactly
        ``rounds`` rounds (kinds with :attr:`distributed` only)."""
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


# --- the registry of kinds --------------------------------------------------------------------

ADAPTERS: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make an adapter available under its ``kind``."""
    if cls.kind not in MODEL_TASKS:
        raise ModelError(f"adapter kind {cls.kind!r} is not in mlcycle.tasks.MODEL_TASKS")
    ADAPTERS[cls.kind] = cls
    return cls


def adapter(kind: str) -> type[Model]:
    """The adapter class of ``kind``, or :class:`ModelError` naming the known kinds."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise ModelError(f"unknown model kind {kind!r}; known: {sorted(ADAPTERS)}") from None


def model_files() -> dict[str, str]:
    """Model kind -> the file name its model is stored under."""
    return {kind: cls.file_name for kind, cls in ADAPTERS.items()}


def fit(
    kind: str,
    X: pd.DataFrame,
    y: np.ndarray,
    params: Mapping[str, Any],
    task: str = BINARY,
    n_classes: int = 2,
    **options: Any,
) -> FitResult:
    """Fit a ``kind`` model for ``task`` (see :meth:`Model.fit` for the keyword ``options``);
    ``n_classes`` is ignored for regression."""
    cls = adapter(kind)
    if kind not in tasks.kinds_for(task):
        raise ModelError(
            f"a {kind} model cannot learn {task}; candidates for {task}: {tasks.kinds_for(task)}"
        )
    return cls.fit(X, y, params, task, n_classes, **options)


def load_model(kind: str, data: bytes, task: str = BINARY) -> Model:
    """Load a model file of ``kind`` for ``task`` (checked: see each adapter's from_bytes)."""
    return adapter(kind).from_bytes(data, task)


def save_model_dir(directory: str | Path, model: Model, info: Mapping[str, Any]) -> Path:
    """Write ``model`` and ``info`` plus its kind and task (model.json) into ``directory``,
    each atomically; model files of other kinds are removed."""
    directory = Path(directory)
    write_bytes(directory / model.file_name, model.to_bytes())
    write_json(
        directory / MODEL_INFO,
        {**info, "kind": model.kind, "task": model.task, "file": model.file_name},
    )
    for name in set(model_files().values()) - {model.file_name}:
        (directory / name).unlink(missing_ok=True)
    return directory / model.file_name


def load_model_dir(directory: str | Path) -> tuple[Model, dict[str, Any]]:
    """Load what :func:`save_model_dir` wrote: the model and its info (with ``kind``)."""
    directory = Path(directory)
    info = read_json(directory / MODEL_INFO)
    kind = info.get("kind")
    if kind not in ADAPTERS:
        raise ModelError(f"{directory / MODEL_INFO}: unknown model kind {kind!r}")
    path = directory / ADAPTERS[kind].file_name
    try:
        return load_model(kind, path.read_bytes(), info.get("task", BINARY)), info
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc


# --- skops files (the scikit-learn adapters' format) --------------------------------------------


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


# The adapters register themselves on import; they import this module's base class.
from mlcycle.adapters import sklearn_models, xgboost_model  # noqa: E402, F401

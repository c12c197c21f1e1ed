"""The model kinds: the registry of adapters (:mod:`mlcycle.adapters`, one subclass of
:class:`Model` per kind, the interface declared in :mod:`mlcycle.adapters.base`), fitting a kind
by name and the model folders (the model file beside ``model.json``).

A new kind is one new adapter file, registered below, plus its entry in
:data:`mlcycle.tasks.MODEL_TASKS`. The interface's names are importable from here.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.adapters.base import FitResult, Model, ModelError, Progress, UntrustedTypesError
from mlcycle.io import read_json, write_bytes, write_json
from mlcycle.tasks import BINARY, MODEL_TASKS

__all__ = [
    "KINDS",
    "MODEL_INFO",
    "FitResult",
    "Kind",
    "Model",
    "ModelError",
    "Progress",
    "UntrustedTypesError",
    "adapter",
    "fit",
    "load_model",
    "load_model_dir",
    "model_files",
    "register",
    "save_model_dir",
]

MODEL_INFO = "model.json"  # beside the model file: its kind, task, parameters and rounds


# --- the registry of kinds --------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A model kind: where its adapter is, and the file its models are stored in."""

    adapter: str  # "module:Class", imported on first use
    file_name: str


# The adapters are imported when a kind is first used: XGBoost and scikit-learn take about a
# second to import, and packaging, verifying or listing a bundle needs neither.
KINDS: dict[str, Kind] = {}


def register(kind: str, adapter_path: str, file_name: str) -> None:
    """Make the adapter at ``adapter_path`` ("module:Class") available under ``kind``, its
    models stored in ``file_name``."""
    if kind not in MODEL_TASKS:
        raise ModelError(f"adapter kind {kind!r} is not in mlcycle.tasks.MODEL_TASKS")
    KINDS[kind] = Kind(adapter_path, file_name)
    adapter.cache_clear()


@functools.cache
def adapter(kind: str) -> type[Model]:
    """The adapter class of ``kind`` (imported now if it was not yet), or
    :class:`ModelError` naming the known kinds."""
    try:
        module, name = KINDS[kind].adapter.split(":")
    except KeyError:
        raise ModelError(f"unknown model kind {kind!r}; known: {sorted(KINDS)}") from None
    cls = getattr(importlib.import_module(module), name)
    if cls.kind != kind:
        raise ModelError(f"{KINDS[kind].adapter} is the adapter of {cls.kind!r}, not {kind!r}")
    return cls


register(
    "logistic_regression", "mlcycle.adapters.sklearn_models:LogisticRegressionModel", "model.skops"
)
register("ridge", "mlcycle.adapters.sklearn_models:RidgeModel", "model.skops")
register("random_forest", "mlcycle.adapters.sklearn_models:RandomForestModel", "model.skops")
register("xgboost", "mlcycle.adapters.xgboost_model:XGBoostModel", "model.ubj")


def model_files() -> dict[str, str]:
    """Model kind -> the file name its model is stored under."""
    return {kind: k.file_name for kind, k in KINDS.items()}


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
    file_name = KINDS[model.kind].file_name
    write_bytes(directory / file_name, model.to_bytes())
    write_json(
        directory / MODEL_INFO, {**info, "kind": model.kind, "task": model.task, "file": file_name}
    )
    for name in set(model_files().values()) - {file_name}:
        (directory / name).unlink(missing_ok=True)
    return directory / file_name


def load_model_dir(directory: str | Path) -> tuple[Model, dict[str, Any]]:
    """Load what :func:`save_model_dir` wrote: the model and its info (with ``kind``)."""
    directory = Path(directory)
    info = read_json(directory / MODEL_INFO)
    kind = info.get("kind")
    if kind not in KINDS:
        raise ModelError(f"{directory / MODEL_INFO}: unknown model kind {kind!r}")
    path = directory / KINDS[kind].file_name
    try:
        return load_model(kind, path.read_bytes(), info.get("task", BINARY)), info
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from exc

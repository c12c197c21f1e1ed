"""The model kinds: the registry of adapters (:mod:`mlcycle.adapters`, one subclass of
:class:`Model` per kind, the interface declared in :mod:`mlcycle.adapters.base`), fitting a kind
by name and the model folders (the model file beside ``model.json``).

A new kind is one new adapter file, registered below, plus its entry in
:data:`mlcycle.tasks.MODEL_TASKS`. The interface's names are importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.adapters.base import FitResult, Model, ModelError, Progress
from mlcycle.adapters.sklearn_models import (
    TRUSTED_TYPES,
    LogisticRegressionModel,
    RandomForestModel,
    RidgeModel,
    UntrustedTypesError,
    canonical_skops,
    check_skops_types,
)
from mlcycle.adapters.xgboost_model import XGBoostModel
from mlcycle.io import read_json, write_bytes, write_json
from mlcycle.tasks import BINARY, MODEL_TASKS

__all__ = [
    "ADAPTERS",
    "MODEL_INFO",
    "TRUSTED_TYPES",
    "FitResult",
    "Model",
    "ModelError",
    "Progress",
    "UntrustedTypesError",
    "adapter",
    "canonical_skops",
    "check_skops_types",
    "fit",
    "load_model",
    "load_model_dir",
    "model_files",
    "register",
    "save_model_dir",
]

MODEL_INFO = "model.json"  # beside the model file: its kind, task, parameters and rounds


# --- the registry of kinds --------------------------------------------------------------------

ADAPTERS: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    """Make an adapter available under its ``kind``."""
    if cls.kind not in MODEL_TASKS:
        raise ModelError(f"adapter kind {cls.kind!r} is not in mlcycle.tasks.MODEL_TASKS")
    ADAPTERS[cls.kind] = cls
    return cls


for _cls in (LogisticRegressionModel, RidgeModel, RandomForestModel, XGBoostModel):
    register(_cls)


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

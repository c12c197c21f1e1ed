"""`mlcycle init`: set the project up for a user's own data file.

Reads the file exactly as the `gather` stage will, infers the task from the target (or takes
the one given), refuses a target the pipeline could not learn (naming the column and what to
change), and drafts a commented ``params.yaml`` and a draft ``schema.yaml`` for it. Settings
that do not depend on the data (validation, gate, evaluation, monitoring, train's general
knobs) are kept from the current ``params.yaml``, so a user's choices survive.

Everything is decided first (:func:`plan`, which writes nothing) and written after
(:func:`write`): an existing ``params.yaml`` or ``schema.yaml`` is replaced only with ``force``,
and nothing else is ever changed or removed. A data file outside ``data/external/`` is copied
there (gather's dvc.yaml deps track that folder), never moved.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.config import ConfigError, Source
from mlcycle.io import atomic_path, write_text, yaml_scalar
from mlcycle.prepare import MAX_NUMERIC_CLASSES, MISSING_TOKENS, label_text
from mlcycle.schema.infer import draft_text
from mlcycle.schema.leaks import leak_warnings
from mlcycle.schema.roles import Role, column_roles
from mlcycle.sources import (
    GLOB_CHARS,
    SOURCE_COLUMN,
    read_content,
    read_source,
    sniff_delimiter,
    union,
)
from mlcycle.tasks import (
    BINARY,
    DEFAULT_CANDIDATES,
    DEFAULT_KPIS,
    DEFAULT_PRIMARY,
    MULTICLASS,
    REGRESSION,
    TASKS,
    lower_is_better,
)

DATA_DIR = Path("data/external")
# A numeric target whose values are all integers, with at most this many distinct ones, is
# taken as classes; any other numeric target as a quantity (regression).
MAX_INTEGER_CLASSES = 20
# More classes than this is not a classification problem init should set up.
MAX_CLASSES = 100
# Pairs of labels (case-insensitive; 0.0 and 1.0 count as 0 and 1): the second is the positive.
POSITIVE_PAIRS = (
    ("0", "1"),
    ("false", "true"),
    ("no", "yes"),
    ("n", "y"),
    ("negative", "positive"),
)
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl",
           ".json": "jsonl", ".ndjson": "jsonl"}  # fmt: skip

# The sections that do not depend on the data, as shipped. A current params.yaml's sections
# replace these (see `carried_settings`).
DEFAULT_GATE: dict[str, Any] = {
    "tolerance": 0.002,
    "fail_on_reject": True,
    "compare_champion": True,
}
DEFAULT_VALIDATE: dict[str, Any] = {
    "schema": "schema.yaml",
    "max_null_rate": 0.5,
    "examples": 5,
    "severity": {
        "missing_column": "error",
        "extra_column": "warning",
        "type": "error",
        "null_rate": "error",
        "unseen_category": "warning",
        "out_of_range": "error",
        "duplicate_rows": "warning",
        "target_values": "error",
    },
}
DEFAULT_EVALUATE: dict[str, Any] = {"curve_points": 200}
DEFAULT_MONITOR: dict[str, Any] = {
    "alpha": 0.01,
    "min_effect": 0.02,
    "psi_threshold": 0.025,
    "missing_threshold": 0.05,
    "min_labels": 200,
    "bins": 10,
}
DEFAULT_ROLLOUT: dict[str, Any] = {
    "min_labels": 200,
    "max_labels": 5000,
    "metric": None,
    "margin": 0.0,
    "max_loss": 0.01,
    "level": 0.95,
    "release_as": "prod",
    "canary_share": 10,
}
DEFAULT_TRAIN: dict[str, Any] = {
    "baseline": "xgboost",
    "seed": 42,
    "cv_folds": 4,
    "validation_fraction": 0.1,
    "class_weight": "none",
    "device": "cpu",
    "nthread": 2,
    "parallel_folds": 2,
    "tuning": {
        "trials": 30,
        "trials_by_candidate": {"logistic_regression": 10, "random_forest": 2},
        "timeout": None,
        "pruner": "median",
        "patience": 10,
        "select": "one_se",
    },
    "xgb": {
        "n_estimators": 2000,
        "early_stopping_rounds": 50,
        "learning_rate": 0.05,
        "max_depth": 6,
        "min_child_weight": 1,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "reg_lambda": 1.0,
        "max_cat_to_onehot": 1,
    },
    "models": {
        "logistic_regression": {"C": 1.0, "max_iter": 1000},
        "random_forest": {"n_estimators": 150, "min_samples_leaf": 5, "max_features": "sqrt"},
    },
}
# What regression adds: ridge's fixed params.
RIDGE_MODEL: dict[str, Any] = {"alpha": 1.0}
# prepare's clean and outliers, as shipped (they are not carried over: outlier columns name
# the old data's columns).
TEST_SIZE = 0.2  # the share of rows init's split keeps for testing
DEFAULT_CLEAN: dict[str, Any] = {"drop_duplicates": True, "drop_conflicting_labels": True}
DEFAULT_OUTLIERS: dict[str, Any] = {
    "method": "none",
    "columns": [],
    "iqr_k": 3.0,
    "zscore": 4.0,
    "contamination": 0.01,
    "seed": 42,
}
DEFAULT_ENGINE: dict[str, Any] = {
    "kind": "local",
    "scheduler": None,
    "connect_timeout": 30,
    "task_timeout": None,
    "retries": 2,
    "workers": 2,
    "threads_per_worker": 1,
    "memory_limit": "auto",
    "dashboard": ":8787",
    "partition_rows": 1_000_000,
    "sklearn_max_rows": 1_000_000,
    "trial_max_rows": 2_000_000,
}
# Sections taken whole from the current params.yaml; train's general knobs are taken too.
CARRIED_SECTIONS = {
    "gate": DEFAULT_GATE,
    "validate": DEFAULT_VALIDATE,
    "evaluate": DEFAULT_EVALUATE,
    "monitor": DEFAULT_MONITOR,
    "rollout": DEFAULT_ROLLOUT,
    "engine": DEFAULT_ENGINE,
}
SECTION_ORDER = (
    "objectives", "gate", "data", "validate", "prepare", "features", "train", "evaluate",
    "monitor", "rollout", "package", "engine",
)  # fmt: skip
WIDTH = 100  # line width of the written params.yaml
COMMENT_COLUMN = 30  # where trailing comments start, as in the shipped params.yaml


class InitError(ValueError):
    """The data or the options do not allow a project to be set up; the message says why."""


@dataclass(frozen=True)
class Plan:
    """Everything init will write, decided before anything is written.

    ``params`` is the settings document (validated by :mod:`mlcycle.config`), ``params_text``
    its commented YAML, ``schema_text`` the draft schema, ``data_path`` the data file's path
    relative to the project root (where it is or will be copied), ``copied_from`` the user's
    file if it must be copied there. ``messages`` explain the choices made (task, positive
    class, minimum) and how to change them.
    """

    params: dict[str, Any]
    params_text: str
    schema_text: str
    schema_path: str
    task: str
    positive_class: str | None
    data_path: str
    copied_from: Path | None
    messages: tuple[str, ...] = field(default=())


# --- the data file -----------------------------------------------------------------------------


def source_format(path: Path) -> str:
    """The source format of a data file, from its name (``.gz`` allowed)."""
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise InitError(
        f"{path}: unknown file type; use .csv, .parquet or .jsonl (optionally .gz), which the "
        "gather stage reads"
    )


def file_stem(path: Path) -> str:
    """The file's name without ``.gz`` and its format's suffix: ``sales.2024`` for
    ``sales.2024.csv.gz``."""
    name = path.name.removesuffix(".gz").removesuffix(".GZ")
    lower = name.lower()
    for suffix in FORMATS:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def source_name(path: Path) -> str:
    """The source's name in params.yaml: the file stem in lowercase letters, digits and ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", file_stem(path).lower()).strip("_") or "data"


def package_name(path: Path, name: str | None = None) -> str:
    """The model's registry name, in lowercase letters, digits and dashes: ``name`` if given,
    else the file stem followed by ``-model``. (dvc.yaml names the model artifact by it.)"""
    text = name if name else f"{file_stem(path)}-model"
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def csv_delimiter(path: Path) -> str:
    """The delimiter of a CSV file with a header line: ',' unless its lines split evenly on
    another one (';', a tab, '|')."""
    source = Source(name=source_name(path), path=str(path.resolve()))
    try:
        content = read_content(source, root=Path("/"))
    except ValueError:
        return ","  # read_data names the problem
    return sniff_delimiter(source, content) or ","


def read_data(path: Path, root: Path, delimiter: str = ",") -> pd.DataFrame:
    """The frame the `gather` stage will produce from this one file: the same reader, the
    same types and missing values (a CSV with a header line), plus its bookkeeping column."""
    source = Source(
        name=source_name(path),
        kind="file",
        path=str(path.resolve()),
        format=source_format(path),
        header=True,
        delimiter=delimiter,
    )
    try:
        return union([read_source(source, root)])
    except ValueError as exc:  # SourceError, a parser's error, undecodable text
        raise InitError(f"{path}: cannot be read as {source.format}: {exc}") from exc


# --- the target and the task -------------------------------------------------------------------


def target_labels(values: pd.Series) -> pd.Series:
    """The target as the prepare stage sees it (``prepare.clean``): each value as text
    (:func:`mlcycle.prepare.label_text`), stripped, missing tokens dropped. A 0/1 column gives
    ``"1"``, integer or float (as missing values make it), a boolean one ``"True"``."""
    text = label_text(values).str.strip()
    return text[text.notna() & ~text.isin(MISSING_TOKENS)].astype(object)


def _numbers(values: pd.Series) -> pd.Series | None:
    """The target's present values as float numbers, or None if any is not a number."""
    if pd.api.types.is_bool_dtype(values):
        return None
    labels = target_labels(values)
    numbers = pd.to_numeric(labels, errors="coerce")
    return None if labels.empty or numbers.isna().any() else numbers.astype("float64")


def infer_task(values: pd.Series) -> str:
    """The task a target suggests: text or booleans with 2 distinct values, or a numeric
    target of whole numbers with 2 distinct values, give binary classification; with more
    (at most :data:`MAX_INTEGER_CLASSES` for numbers) multiclass; other numbers regression."""
    numbers = _numbers(values)
    if numbers is not None:
        finite = numbers[np.isfinite(numbers)]
        whole = len(finite) == len(numbers) and bool((finite % 1 == 0).all())
        if not (whole and finite.nunique() <= MAX_INTEGER_CLASSES):
            return REGRESSION
    return BINARY if target_labels(values).nunique() <= 2 else MULTICLASS


def _pair_key(label: str) -> str:
    """A label as compared with :data:`POSITIVE_PAIRS`: lowercase; 0.0 and 1.0 as 0 and 1."""
    text = label.strip().lower()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number in (0.0, 1.0) else text


def positive_class(labels: pd.Series) -> tuple[str, str]:
    """The positive class of a two-class target (labels as :func:`target_labels` gives them)
    and why it was chosen: the positive-looking label of a known pair (1, true, yes, y,
    positive; case-insensitive), else the rarer label (a tie: the later in sorted order)."""
    counts = labels.value_counts()
    classes = sorted(counts.index)
    keys = {_pair_key(c): c for c in classes}
    for negative, positive in POSITIVE_PAIRS:
        if set(keys) == {negative, positive}:
            return keys[positive], f"the positive one of the pair {keys[negative]}/{keys[positive]}"
    chosen = min(reversed(classes), key=lambda c: counts[c])
    if counts.nunique() == 1:
        return chosen, "the classes are equally frequent: the later in sorted order"
    return chosen, f"the rarer class: {counts[chosen]} of {counts.sum()} rows"


BALANCED_SHARE = 0.4  # positive shares from this to 1 - this: accuracy's threshold serves both


def threshold_objective(labels: pd.Series, positive: str) -> tuple[str, str]:
    """The metric a binary threshold maximises on out-of-fold predictions, chosen by the share
    of ``positive`` among ``labels``, and why: accuracy near balance; on imbalanced data one
    that a model predicting the majority class for every row cannot win (accuracy would score
    it the majority's share): F1 of the positive class when positives are rare (0 for such a
    model), balanced accuracy when they are the majority (0.5 for it; F1 would favour it)."""
    share = float((labels == positive).mean())
    figure = f"positives are {share:.1%} of the rows"
    if BALANCED_SHARE <= share <= 1 - BALANCED_SHARE:
        return "accuracy", f"{figure}, near balance"
    if share < BALANCED_SHARE:
        return "f1", (
            f"{figure}: accuracy would give {1 - share:.1%} to a model predicting no row "
            "positive, f1 gives it 0"
        )
    return "balanced_accuracy", (
        f"{figure}: accuracy and f1 would favour a model predicting every row positive, "
        "balanced accuracy gives it 0.5"
    )


def check_task(values: pd.Series, target: str, task: str) -> None:
    """Refuse a task this target cannot be learnt as, naming the column and what to change."""
    labels = target_labels(values)
    if labels.empty:
        raise InitError(f"target {target!r} has no values: every row is missing; choose another")
    spec = tasks.get(task)
    if not spec.classification:
        numbers = pd.to_numeric(labels, errors="coerce")
        bad = numbers.isna() | ~np.isfinite(numbers.astype("float64"))
        if bad.any():
            examples = sorted(set(labels[bad]))[:5]
            raise InitError(
                f"target {target!r} is not numeric (e.g. {examples}); regression needs numbers. "
                f"Use --task {' or '.join(tasks.CLASSIFICATION)} if it names classes, or choose "
                "another --target"
            )
        return
    counts = labels.value_counts()
    if len(counts) < 2:
        raise InitError(
            f"target {target!r} has a single class {list(counts.index)}; classification needs "
            "at least two. Gather rows of the other classes, or choose another --target"
        )
    if spec.has_positive_class and len(counts) != 2:  # a negative and a positive class
        raise InitError(
            f"target {target!r} has {len(counts)} classes; binary_classification needs exactly "
            "two. Use --task multiclass_classification"
        )
    if len(counts) > MAX_CLASSES:
        raise InitError(
            f"target {target!r} has {len(counts)} distinct values: too many to learn as classes "
            f"(at most {MAX_CLASSES}). Use --task regression if it is a quantity, or choose "
            "another --target"
        )
    if _numbers(values) is not None and len(counts) > MAX_NUMERIC_CLASSES:
        raise InitError(
            f"target {target!r} holds {len(counts)} distinct numbers, more than the "
            f"{MAX_NUMERIC_CLASSES} the prepare stage accepts as classes. Use --task regression "
            "if it is a quantity, or choose another --target"
        )
    rare = counts[counts < 2]
    if len(rare):
        raise InitError(
            f"target {target!r}: class(es) {sorted(rare.index)} have a single row; the "
            "stratified split and cross-validation need at least two rows per class. Drop or "
            "merge those rows, or gather more"
        )


def _random_guess_auc(labels: pd.Series) -> tuple[float, str]:
    return 0.5, "ROC AUC of a random guess"


def _majority_f1(labels: pd.Series) -> tuple[float, str]:
    from sklearn.metrics import f1_score

    majority = _majority(labels)
    guess = np.full(len(labels), majority, dtype=object)
    value = float(f1_score(labels.to_numpy(dtype=object), guess, average="macro", zero_division=0))
    return value, f"macro F1 of always predicting the most frequent class {majority!r}"


def _mean_rmse(labels: pd.Series) -> tuple[float, str]:
    value = float(np.std(pd.to_numeric(labels).to_numpy(dtype="float64")))
    return value, "RMSE of predicting the mean: the target's standard deviation"


# Per task, the no-skill value of its default primary metric on the target's labels, and what
# that is in words.
NO_SKILL = {BINARY: _random_guess_auc, MULTICLASS: _majority_f1, REGRESSION: _mean_rmse}


def no_skill(values: pd.Series, task: str) -> float:
    """The primary metric (:data:`mlcycle.tasks.DEFAULT_PRIMARY`) of a model that knows
    nothing, on this data: ROC AUC 0.5 (binary); the macro F1 of always predicting the most
    frequent class (multiclass); the RMSE of predicting the mean, i.e. the target's population
    standard deviation (regression). Six significant digits."""
    value, _what = NO_SKILL[task](target_labels(values))
    return float(f"{value:.6g}")


def _majority(labels: pd.Series) -> str:
    """The most frequent label (a tie: the first in sorted order)."""
    counts = labels.value_counts()
    return sorted(counts[counts == counts.max()].index)[0]


# --- params.yaml -------------------------------------------------------------------------------


def carried_settings(root: Path) -> dict[str, Any]:
    """The current params.yaml as plain data (read as DVC reads it), or {} if it is absent or
    does not parse: its data-independent sections are kept."""
    try:
        raw = config.load_yaml((root / config.PARAMS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, config.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else {} (a hand-edited file may hold anything)."""
    return value if isinstance(value, dict) else {}


def _section(current: dict[str, Any], name: str, default: dict[str, Any]) -> dict[str, Any]:
    """A section of the current params.yaml, or ``default`` if it has none; a copy."""
    value = current.get(name)
    return copy.deepcopy(value if isinstance(value, dict) and value else default)


# --- the search space --------------------------------------------------------------------------


@dataclass(frozen=True)
class DataShape:
    """The figures of a training split that its default search ranges follow
    (:func:`search_space`)."""

    task: str
    rows: int  # training rows
    features: int  # model input columns
    categorical: int = 0  # of which hold categories, not numbers
    classes: int = 0  # classification: the number of classes
    rarest: int = 0  # classification: the rarest class's training rows

    def text(self) -> str:
        """The figures in words, for the comment above the ranges in params.yaml."""
        words = f"{self.rows:,} training rows, {self.features} features ({self.categorical} " \
            "categorical)"  # fmt: skip
        if self.classes:
            words += f", {self.classes} classes (the rarest {self.rarest:,} rows)"
        return words


def data_shape(
    features: pd.DataFrame, labels: pd.Series, task: str, share: float = 1.0
) -> DataShape:
    """The :class:`DataShape` of a table's model inputs ``features`` and present target
    ``labels``, rows counted at ``share``: the training split's part of them (init reads the
    whole file, of which its split keeps 1 - test_size for training)."""
    categorical = sum(
        1
        for c in features.columns
        if pd.api.types.is_bool_dtype(features[c]) or not pd.api.types.is_numeric_dtype(features[c])
    )
    rows = max(1, round(len(labels) * share))
    if not tasks.get(task).classification:
        return DataShape(task, rows, features.shape[1], categorical)
    counts = labels.value_counts()
    rarest = max(1, round(int(counts.min()) * share))
    return DataShape(task, rows, features.shape[1], categorical, len(counts), rarest)


def _sig(value: float) -> float:
    """``value`` to three significant digits: a range a person reads."""
    return float(f"{value:.3g}")


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def search_space(shape: DataShape) -> dict[str, dict[str, dict[str, Any]]]:
    """Default search ranges, per model kind that can learn ``shape.task``, from the training
    split's figures (as FLAML scales its spaces with the data; see docs/training.md):

    XGBoost (trial 0 stays ``train.xgb``; early stopping picks the rounds, up to its
    ``n_estimators``):

    - ``max_depth`` up to log2(rows / 20), so each of the 2^depth leaves can hold about 20
      rows (3 to 10), from five below it (at least 2);
    - ``learning_rate`` from 0.01 x sqrt(rows x trees per round / 10,000) (0.01 to 0.1; one
      tree per class per round for multiclass) up to 0.3, XGBoost's default: the rounds early
      stopping needs grow as the rate falls, and each costs in proportion to that product;
    - ``min_child_weight`` (a leaf's hessian sum, log scale) from 0.5 up to the rarest class's
      rows / 500 (regression: all rows; 2 to 32), so a leaf of the rarest class stays possible;
    - ``subsample`` from 0.5 on 10,000 rows or more, else from 0.7, up to 1: sampling rows
      regularises a large table and starves trees on a small one;
    - ``colsample_bytree`` from 3 / features (0.1 to 0.75), so a tree sees about three features
      or more, up to 1; not searched under four features;
    - ``reg_lambda`` 0.01 to 10 (log scale); ``max_cat_to_onehot`` [1, 64] only when some
      features are categorical. ``gamma`` is not searched: it is in the loss's units (a
      regression target's squared units), so no range fits every table.

    Random forest: ``min_samples_leaf`` 1 to rows / 1,000 (5 to 50); ``max_features`` sqrt,
    0.5 or all with 10 features or fewer, else sqrt, 0.3 or 0.5. Logistic regression's ``C``
    (0.01 to 10) and ridge's ``alpha`` (0.001 to 100), on standardised inputs, are not derived.
    """
    rows, width = shape.rows, shape.features
    per_round = shape.classes if shape.classes > 2 else 1  # multiclass: a tree per class
    depth = int(_clip(math.floor(math.log2(max(rows, 1) / 20)), 3, 10)) if rows > 20 else 3
    leaf_rows = shape.rarest if tasks.get(shape.task).classification else rows
    xgb: dict[str, dict[str, Any]] = {
        "learning_rate": {
            "low": _sig(_clip(0.01 * math.sqrt(rows * per_round / 10_000), 0.01, 0.1)),
            "high": 0.3,
            "log": True,
        },
        "max_depth": {"low": max(2, depth - 5), "high": depth},
        "min_child_weight": {"low": 0.5, "high": _sig(_clip(leaf_rows / 500, 2, 32)), "log": True},
        "subsample": {"low": 0.5 if rows >= 10_000 else 0.7, "high": 1.0},
        "colsample_bytree": {"low": round(_clip(3 / max(width, 1), 0.1, 0.75), 2), "high": 1.0},
        "reg_lambda": {"low": 0.01, "high": 10.0, "log": True},
        "max_cat_to_onehot": {"choices": [1, 64]},
    }
    if width < 4:
        del xgb["colsample_bytree"]
    if not shape.categorical:
        del xgb["max_cat_to_onehot"]
    spaces: dict[str, dict[str, dict[str, Any]]] = {
        "xgboost": xgb,
        "logistic_regression": {"C": {"low": 0.01, "high": 10.0, "log": True}},
        "random_forest": {
            "min_samples_leaf": {"low": 1, "high": int(_clip(rows // 1000, 5, 50))},
            "max_features": {"choices": ["sqrt", 0.5, 1.0] if width <= 10 else ["sqrt", 0.3, 0.5]},
        },
        "ridge": {"alpha": {"low": 0.001, "high": 100.0, "log": True}},
    }
    return {kind: spaces[kind] for kind in tasks.kinds_for(shape.task)}


def train_section(current: dict[str, Any], task: str, shape: DataShape) -> dict[str, Any]:
    """train for ``task``: the task's default candidates; the general knobs (seed, folds,
    tuning, xgb, ...) of the current params.yaml or the shipped ones; only the ``models``
    entries of kinds that fit the task, those of candidates the current file lacks as shipped
    (ridge's for regression: alpha 1.0); the search ranges derived from ``shape``
    (:func:`search_space`), never the current file's, which fit the data they were written for."""
    train = _section(current, "train", DEFAULT_TRAIN)
    fits = set(tasks.kinds_for(task))
    out: dict[str, Any] = {"candidates": list(DEFAULT_CANDIDATES[task])}
    out.update((k, v) for k, v in train.items() if k != "candidates")
    if out.get("baseline") is not None and out["baseline"] not in fits:
        out["baseline"] = "xgboost"
    models = {k: v for k, v in _mapping(out.get("models")).items() if k in fits}
    shipped = {**DEFAULT_TRAIN["models"], "ridge": RIDGE_MODEL}
    for kind in DEFAULT_CANDIDATES[task]:  # a kind the current file lacks: as shipped
        if kind not in models and kind in shipped:
            models[kind] = copy.deepcopy(shipped[kind])
    out["models"] = models
    out["search"] = search_space(shape)
    if isinstance(out.get("tuning"), dict):
        by = _mapping(out["tuning"].get("trials_by_candidate"))
        out["tuning"]["trials_by_candidate"] = {k: v for k, v in by.items() if k in fits}
    return out


def draft_params(
    data_path: str,
    fmt: str,
    target: str,
    task: str,
    values: pd.Series,
    name: str,
    exclude: list[str],
    shape: DataShape,
    current: dict[str, Any],
) -> dict[str, Any]:
    """The settings document for this data, sections in the shipped order: ``exclude`` are the
    columns kept out of the features (:func:`mlcycle.schema.roles.column_roles`), ``shape``
    the training split's figures the search ranges follow (:func:`search_space`). ``current``
    (the current params.yaml, or {}) supplies the sections that do not depend on the data."""
    objectives: dict[str, Any] = {
        "task": task,
        "target": target,
        # null, not absent, for the other tasks: dvc.yaml's stages list the key as a param.
        "positive_class": (
            positive_class(target_labels(values))[0] if tasks.get(task).has_positive_class else None
        ),
        "primary_metric": DEFAULT_PRIMARY[task],
        "minimum": no_skill(values, task),
        "kpis": list(DEFAULT_KPIS[task]),
        "minimums": {},
    }
    if tasks.get(task).thresholded:
        labels = target_labels(values)
        metric = threshold_objective(labels, positive_class(labels)[0])[0]
        objectives["threshold"] = {"maximize": metric, "cost_fp": 1.0, "cost_fn": 1.0}
    objectives.update(slices=[], slice_min_rows=100)
    source = {"name": source_name(Path(data_path)), "kind": "file", "path": data_path}
    source.update(format=fmt, header=True)
    params = {
        "objectives": objectives,
        "data": {"columns": None, "sources": [source]},
        "prepare": {
            "drop_columns": [],
            "clean": copy.deepcopy(DEFAULT_CLEAN),
            "outliers": copy.deepcopy(DEFAULT_OUTLIERS),
            "split": {
                "method": "stratified" if tasks.get(task).classification else "random",
                "test_size": TEST_SIZE,
                "seed": 42,
                "group_column": None,
                "time_column": None,
            },
        },
        "features": {
            "derived": [],
            "include": [],
            "exclude": list(exclude),
            "selection": {"method": "none", "k": 0},
        },
        "train": train_section(current, task, shape),
        "package": {"name": name},
    }
    for section, default in CARRIED_SECTIONS.items():
        params[section] = _section(current, section, default)
    return {section: params[section] for section in SECTION_ORDER}


def _comment(description: str) -> str:
    """A key's description as a trailing comment: its first sentence, without the full stop,
    lowercase unless its first word is a name (XGBoost, LocalCluster)."""
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z`])", description, maxsplit=1)[0].removesuffix(".")
    word = first.split(" ", 1)[0]
    return first[:1].lower() + first[1:] if word[1:] == word[1:].lower() else first


# Trailing comments, by key path (list items share their list's path): the descriptions of the
# settings (mlcycle.config), which the params reference and the JSON Schema show too.
COMMENTS = {path: _comment(text) for path, text in config.descriptions().items()}

SCHEMA_LINE = "# yaml-language-server: $schema=params.schema.json"
HEADER = (
    "Every knob of the pipeline, grouped by the stage that reads it; written by `mlcycle init` "
    "for {data}. `dvc repro` runs the pipeline; `dvc exp run -S train.cv_folds=5` varies one "
    "setting for an experiment. Every problem in this file is reported at once, with its key "
    "path, before any work."
)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{yaml_scalar(str(k), flow=True)}: {_flow(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return yaml_scalar(value, flow=True)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list | tuple):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _commented(line: str, comment: str | None) -> list[str]:
    """``line`` with a trailing comment at :data:`COMMENT_COLUMN`, wrapped to :data:`WIDTH`."""
    if not comment:
        return [line]
    column = max(COMMENT_COLUMN, len(line) + 2)
    if column + 2 + min(len(comment), 40) > WIDTH:  # no room beside a long line: above it
        indent = len(line) - len(line.lstrip())
        parts = textwrap.wrap(comment, WIDTH - indent - 2)
        return [" " * indent + "# " + part for part in parts] + [line]
    parts = textwrap.wrap(comment, WIDTH - column - 2)
    lines = [line.ljust(column) + "# " + parts[0]]
    return lines + [" " * column + "# " + part for part in parts[1:]]


def _render(key: str, value: Any, path: str, indent: int, notes: dict[str, str]) -> list[str]:
    """The lines of ``key: value`` at ``indent``: scalars and small collections in flow style
    (as the shipped params.yaml writes them), others as blocks; comments from ``notes``."""
    head = " " * indent + f"{yaml_scalar(str(key), flow=True)}:"
    note = notes.get(path)
    children_noted = any(p.startswith((path + ".", path + "[")) for p in notes)
    container = isinstance(value, dict | list | tuple)
    if not container or not value:
        return _commented(f"{head} {_flow(value)}", note)
    items_are_dicts = isinstance(value, list | tuple) and any(isinstance(v, dict) for v in value)
    if not children_noted and not items_are_dicts and _depth(value) <= 2:
        line = f"{head} {_flow(value)}"
        if len(line) <= WIDTH:
            return _commented(line, note)
        if _depth(value) == 1 and isinstance(value, list | tuple):  # a long list: wrapped
            items = [_flow(v) for v in value]
            wrapped = textwrap.wrap(
                ", ".join(items), WIDTH - indent - 4, break_long_words=False, break_on_hyphens=False
            )
            lines = [f"{head} [{wrapped[0]}"] + [" " * (indent + 4) + w for w in wrapped[1:]]
            lines[-1] += "]"
            return lines[:-1] + _commented(lines[-1], note)
    lines = _commented(head, note)
    if isinstance(value, dict):
        for k, v in value.items():
            lines += _render(str(k), v, f"{path}.{k}", indent + 2, notes)
        return lines
    for i, item in enumerate(value):
        if isinstance(item, dict):
            block = [
                line
                for k, v in item.items()
                for line in _render(str(k), v, f"{path}.{k}", indent + 4, notes)
            ]
            block[0] = " " * (indent + 2) + "- " + block[0][indent + 4 :]
            lines += block
        else:  # a list item's note is keyed by its position: features.exclude[0]
            item_line = " " * (indent + 2) + "- " + _flow(item)
            lines += _commented(item_line, notes.get(f"{path}[{i}]"))
    return lines


def params_text(params: dict[str, Any], notes: dict[str, str], data: str) -> str:
    """The settings document as commented YAML: the JSON Schema line for editors,
    :data:`HEADER`, then one block per section. ``notes`` are trailing comments by key path
    (see :data:`COMMENTS`)."""
    header = textwrap.wrap(HEADER.format(data=data), WIDTH - 2, break_on_hyphens=False)
    lines = [SCHEMA_LINE, *(f"# {line}" for line in header)]
    for section, value in params.items():
        lines += ["", *_render(section, value, section, 0, notes)]
    return "\n".join(lines) + "\n"


def _notes(
    params: dict[str, Any],
    positive_why: str,
    minimum_why: str,
    copied: bool,
    roles: list[Role],
    shape: DataShape,
) -> dict:
    """:data:`COMMENTS` plus the comments that depend on this data: one per excluded column
    (its role and the figures that decided it), and the figures the search ranges follow."""
    objectives = params["objectives"]
    task, metric = objectives["task"], objectives["primary_metric"]
    notes = dict(COMMENTS)
    notes["objectives.positive_class"] = (
        f"the label counted as positive ({positive_why}); change it here"
        if tasks.get(task).has_positive_class
        else f"{BINARY} only: null for this task"
    )
    if lower_is_better(metric):
        notes["objectives.primary_metric"] += f"; {metric}: lower is better"
    notes["objectives.minimum"] = minimum_why
    where = "copied here by `mlcycle init`; " if copied else ""
    notes["data.sources.path"] = f"{where}gather's dvc.yaml deps track data/external/"
    if not tasks.get(task).classification:
        notes["prepare.split.method"] = "random | group | time | by_source (not stratified)"
    for i, role in enumerate(roles):
        notes[f"features.exclude[{i}]"] = f"{role.what} (found by `mlcycle init`): {role.why}"
    if roles:
        notes["features.exclude"] += "; delete a line to make that column a feature again"
    notes["train.search"] += (
        f"; derived by `mlcycle init` from the training split's figures: {shape.text()}; see "
        "docs/training.md (Search spaces from the data), and edit them freely"
    )
    return notes


# --- the plan and the writing ------------------------------------------------------------------


def _minimum_note(task: str, metric: str, labels: pd.Series) -> str:
    """What the written minimum is, and which way to move it."""
    _value, what = NO_SKILL[task](labels)
    if lower_is_better(metric):
        return (
            f"a maximum, as {metric} is lower-is-better: the no-skill baseline, the {what}, on "
            "this data. Lower it to your real bar"
        )
    return f"the no-skill baseline, the {what}, on this data. Raise it to your real bar"


def _describe(values: pd.Series) -> str:
    """What the target holds, in the terms :func:`infer_task` decides by."""
    labels = target_labels(values)
    numbers = _numbers(values)
    if numbers is None:
        kind = "boolean" if pd.api.types.is_bool_dtype(values) else "text"
    else:
        whole = bool(np.isfinite(numbers).all() and (numbers % 1 == 0).all())
        kind = "whole-number" if whole else "numeric, not all whole,"
    return f"holds {labels.nunique()} distinct {kind} values"


def plan(
    root: Path,
    data: Path,
    target: str,
    task: str | None = None,
    name: str | None = None,
) -> Plan:
    """Read ``data`` as gather will and decide everything init writes, for the project at
    ``root``; raises :class:`InitError` naming what is wrong. Writes nothing."""
    root = Path(root).resolve()
    data = Path(data)
    _check_data_file(data)
    fmt = source_format(data)
    data_path, copied_from = _placement(root, data)
    delimiter = csv_delimiter(data) if fmt == "csv" else ","
    frame = read_data(data, root, delimiter)
    columns = [str(c) for c in frame.columns if c != SOURCE_COLUMN]
    if target not in columns:
        raise InitError(f"target {target!r} is not a column of {data.name}; columns are {columns}")
    if task is not None and task not in TASKS:  # the user's --task: refused by name
        raise InitError(f"--task {task!r}; use one of {list(TASKS)}")
    values = frame[target]
    inferred = task is None
    task = task or infer_task(values)
    check_task(values, target, task)

    roles = column_roles(frame, target)
    exclude, labels = [r.column for r in roles], target_labels(values)
    inputs = frame.drop(columns=[target, SOURCE_COLUMN, *exclude])
    shape = data_shape(inputs, labels, task, 1 - TEST_SIZE)
    args = (data_path, fmt, target, task, values, package_name(data, name), exclude, shape)
    params, messages = _valid_params(args, carried_settings(root), data.name)
    if delimiter != ",":
        params["data"]["sources"][0]["delimiter"] = delimiter
        messages.append(f"the file's fields are separated by {delimiter!r}: delimiter set")
    objectives = params["objectives"]
    how = f"inferred: {target!r} {_describe(values)}" if inferred else "given with --task"
    messages.append(f"task: {task} ({how}); init --task ... --force changes it")
    notes = _explained(params, task, labels, roles, shape, copied_from is not None, messages)
    classification = tasks.get(task).classification
    messages += [
        f"possible leak: {k.message}" for k in leak_warnings(frame, target, classification, exclude)
    ]
    text = params_text(params, notes, data_path)
    if config.load_yaml(text) != params:  # the renderer must say exactly what was validated
        raise InitError("internal error: the written params.yaml would not read back as drafted")

    _, schema_text = draft_text(
        frame,
        target,
        data_path,
        target_values=tasks.get(task).classification,
        drafted_by="`mlcycle init`",
        max_null_rate=config.section(params, "validate").max_null_rate,
        roles=roles,
    )
    return Plan(
        params=params,
        params_text=text,
        schema_text=schema_text,
        schema_path=str(params["validate"].get("schema") or "schema.yaml"),
        task=task,
        positive_class=objectives["positive_class"],
        data_path=data_path,
        copied_from=copied_from,
        messages=tuple(messages),
    )


def _explained(
    params: dict,
    task: str,
    labels: pd.Series,
    roles: list[Role],
    shape: DataShape,
    copied: bool,
    messages: list[str],
) -> dict[str, str]:
    """The comments params.yaml gets on what init chose from the data (positive class,
    minimum, excluded columns, the search ranges, the threshold's metric); the same, said,
    appended to ``messages``."""
    objectives = params["objectives"]
    has_positive = tasks.get(task).has_positive_class
    positive_why = positive_class(labels)[1] if has_positive else ""
    if has_positive:
        messages.append(
            f"positive class: {objectives['positive_class']!r} ({positive_why}); change it with "
            "objectives.positive_class in params.yaml"
        )
    minimum_why = _minimum_note(task, objectives["primary_metric"], labels)
    messages.append(f"objectives.minimum: {objectives['minimum']}, {minimum_why}")
    messages += [role.message for role in roles]
    if roles:
        messages.append(
            "features.exclude in params.yaml lists them, each with its reason; delete a line "
            "there to make that column a feature again"
        )
    notes = _notes(params, positive_why, minimum_why, copied, roles, shape)
    messages.append(f"search ranges: derived from {shape.text()}; edit train.search to change them")
    if tasks.get(task).thresholded:
        metric, why = threshold_objective(labels, objectives["positive_class"])
        notes["objectives.threshold.maximize"] = f"{metric}: {why}; null: minimise the cost"
        messages.append(
            f"decision threshold: maximises out-of-fold {metric} ({why}); change it with "
            "objectives.threshold.maximize in params.yaml"
        )
    return notes


def _check_data_file(data: Path) -> None:
    if not data.exists():
        raise InitError(f"{data}: no such file")
    if not data.is_file():
        raise InitError(f"{data}: not a file")
    if any(c in data.name for c in GLOB_CHARS):
        raise InitError(
            f"{data}: its name holds one of {list(GLOB_CHARS)}, which a source path reads as a "
            "pattern; rename the file"
        )


def _placement(root: Path, data: Path) -> tuple[str, Path | None]:
    """The data's path in the project, and where it is copied from if it is outside
    data/external/."""
    resolved = data.resolve()
    if resolved.is_relative_to((root / DATA_DIR).resolve()):
        return resolved.relative_to(root).as_posix(), None
    return (DATA_DIR / data.name).as_posix(), resolved


def _valid_params(
    args: tuple, current: dict[str, Any], file_name: str
) -> tuple[dict[str, Any], list[str]]:
    """The drafted params, carrying over the ``current`` settings if they validate for this
    data (else the shipped defaults, with a message saying so)."""
    messages: list[str] = []
    params = draft_params(*args, current)
    try:
        config.parse_params(params)
    except ConfigError as exc:  # the current params.yaml's settings cannot be carried over
        params = draft_params(*args, {})
        messages.append(
            f"the current params.yaml's gate/validate/train/evaluate/monitor settings do not "
            f"validate for this data ({exc}); the shipped defaults are used instead"
        )
        try:
            config.parse_params(params)
        except ConfigError as bug:
            raise InitError(f"the params drafted for {file_name} do not validate: {bug}") from bug
    return params, messages


def write(root: Path, p: Plan, force: bool = False) -> list[str]:
    """Carry out a plan at ``root``; returns what was done, one line each.

    Refuses, changing nothing, to replace an existing params.yaml or schema.yaml without
    ``force``, or a different file already at the data's destination. Copies the data into
    data/external/ if needed (never moves or deletes it); every file is written atomically.
    """
    root = Path(root)
    outputs = {config.PARAMS_FILE: p.params_text, p.schema_path: p.schema_text}
    existing = [rel for rel in outputs if (root / rel).exists()]
    if existing and not force:
        them = "them" if len(existing) > 1 else "it"
        raise InitError(
            f"{' and '.join(existing)} already {'exist' if len(existing) > 1 else 'exists'}; "
            f"pass --force to replace {them} (git keeps the old version). Nothing was changed"
        )
    dest = root / p.data_path
    copy_needed = p.copied_from is not None and not (
        dest.exists() and dest.read_bytes() == p.copied_from.read_bytes()
    )
    if copy_needed and dest.exists():
        raise InitError(
            f"{p.data_path} exists with other content; rename your file (nothing was changed)"
        )
    done = []
    try:
        if copy_needed:
            with atomic_path(dest) as tmp:
                shutil.copy2(p.copied_from, tmp)
            done.append(
                f"copied {p.copied_from} to {p.data_path} (the gather stage tracks data/external/; "
                "your file stays where it is)"
            )
        for rel, text in outputs.items():
            path = root / rel
            mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
            write_text(path, text)
            os.chmod(path, mode)  # as it was; a temporary file is private (0600)
            done.append(f"wrote {rel}" + (" (a draft: review it)" if rel == p.schema_path else ""))
    except OSError as exc:
        raise InitError(f"cannot write into {root}: {exc}") from exc
    return done

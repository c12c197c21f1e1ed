"""The model's signature, and the one function that turns raw records into model input.

The signature says which raw *inputs* a caller must send (with their kinds and categories),
which *derived* features are computed from them (``features.derived`` in params.yaml), and which
model *features*, in order, the booster was trained on (after include/exclude lists and
automatic selection). Training, evaluation, batch prediction and the web service all call
:func:`to_model_frame` with the signature stored beside the model, so they cannot disagree about
column order, types, category codes or how a derived feature is computed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.config import DERIVED_OPS, FeaturesConfig
from mlcycle.tasks import BINARY


class SchemaError(ValueError):
    """Records do not fit the model signature; the message names the column and row."""


class FeatureError(ValueError):
    """The ``features`` settings do not fit the training data; the message names the setting."""


@dataclass(frozen=True)
class Feature:
    """One column: numeric, or categorical with its known categories."""

    name: str
    kind: str  # "numeric" | "categorical"
    categories: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        """Plain JSON form."""
        return {"name": self.name, "kind": self.kind, "categories": list(self.categories)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Feature:
        """Read :meth:`to_dict`'s form."""
        return cls(d["name"], d["kind"], tuple(d.get("categories", ())))


@dataclass(frozen=True)
class Derived:
    """A numeric feature computed from numeric columns (inputs or earlier derived features).

    ``op`` is one of ``sum``, ``difference``, ``product``, ``ratio`` (of ``columns``, left to
    right) or ``log1p``, ``sqrt``, ``bin`` (of one column; ``bin`` gives the index of the bin
    between ``edges``: 0 below the first edge, ``len(edges)`` from the last one up). A result
    that is not finite (a ratio by zero, the square root of a negative number) is missing.
    """

    name: str
    op: str
    columns: tuple[str, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in DERIVED_OPS:
            raise FeatureError(
                f"derived feature {self.name!r}: unknown op {self.op!r}; use one of "
                f"{list(DERIVED_OPS)}"
            )
        single = DERIVED_OPS[self.op] == "column"
        if (single and len(self.columns) != 1) or (not single and len(self.columns) < 2):
            raise FeatureError(
                f"derived feature {self.name!r}: op {self.op!r} takes "
                f"{'one column' if single else 'two or more columns'}, got {list(self.columns)}"
            )
        if self.op == "bin" and (not self.edges or list(self.edges) != sorted(self.edges)):
            raise FeatureError(f"derived feature {self.name!r}: bin needs increasing edges")

    def to_dict(self) -> dict:
        """The step as params.yaml writes it."""
        d: dict[str, Any] = {"name": self.name, "op": self.op}
        if DERIVED_OPS[self.op] == "column":
            d["column"] = self.columns[0]
        else:
            d["columns"] = list(self.columns)
        if self.op == "bin":
            d["edges"] = list(self.edges)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Derived:
        """Read a step written as in params.yaml (``column`` or ``columns``)."""
        columns = d["columns"] if "columns" in d else [d["column"]]
        return cls(
            name=str(d["name"]),
            op=str(d["op"]),
            columns=tuple(str(c) for c in columns),
            edges=tuple(float(e) for e in d.get("edges", ())),
        )


def derive(step: Derived, values: Mapping[str, np.ndarray]) -> np.ndarray:
    """Compute one derived feature from float64 arrays of its columns.

    Element by element, so one record and a batch get bit-identical values.
    """
    cols = [np.asarray(values[c], dtype=np.float64) for c in step.columns]
    with np.errstate(all="ignore"):
        if step.op in ("sum", "difference", "product", "ratio"):
            out = cols[0]
            for col in cols[1:]:
                if step.op == "sum":
                    out = out + col
                elif step.op == "difference":
                    out = out - col
                elif step.op == "product":
                    out = out * col
                else:
                    out = out / col
        elif step.op == "log1p":
            out = np.log1p(cols[0])
        elif step.op == "sqrt":
            out = np.sqrt(cols[0])
        else:  # bin
            x = cols[0]
            edges = np.asarray(step.edges, dtype=np.float64)
            out = np.searchsorted(edges, x, side="right").astype(np.float64)
            out[np.isnan(x)] = np.nan
    return np.where(np.isfinite(out), out, np.nan)


@dataclass(frozen=True)
class Signature:
    """What a caller sends (``inputs``), how model features are derived from it (``derived``),
    what the model expects (``features``, in order) and what it predicts: the ``task`` and,
    for classification, the ``classes`` in the fixed order of the model's probability columns.

    A binary signature's classes are ``(negative_class, positive_class)``: column 1 of the
    probability matrix is the positive class. A multiclass signature's classes are sorted
    (numerically when every label is a number). A regression signature has no classes.
    ``unused_inputs`` are columns of the training data the model does not need; the service
    accepts and ignores them. A signature built without ``inputs`` takes its ``features`` as
    inputs (a model without derived features).
    """

    features: tuple[Feature, ...]
    target: str
    positive_class: str | None = None
    negative_class: str | None = None
    inputs: tuple[Feature, ...] = ()
    derived: tuple[Derived, ...] = ()
    unused_inputs: tuple[str, ...] = ()
    selection: dict[str, Any] = field(default_factory=dict)
    task: str = BINARY
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        try:
            classes, negative, positive = tasks.get(self.task).signature_classes(
                self.classes, self.negative_class, self.positive_class
            )
        except ValueError as exc:  # an unknown task, or classes it cannot have
            raise FeatureError(str(exc)) from None
        object.__setattr__(self, "negative_class", negative)
        object.__setattr__(self, "positive_class", positive)
        object.__setattr__(self, "classes", tuple(str(c) for c in classes))
        if not self.inputs:
            object.__setattr__(self, "inputs", self.features)
        kinds = {f.name: f.kind for f in self.inputs}
        for step in self.derived:
            if step.name in kinds:
                raise FeatureError(f"derived feature {step.name!r} is already a column")
            for col in step.columns:
                if col not in kinds:
                    raise FeatureError(
                        f"derived feature {step.name!r} uses {col!r}, which is neither an input "
                        f"column nor an earlier derived feature"
                    )
                if kinds[col] != "numeric":
                    raise FeatureError(
                        f"derived feature {step.name!r} uses {col!r}, which is not numeric"
                    )
            kinds[step.name] = "numeric"
        for feat in self.features:
            if feat.name not in kinds:
                raise FeatureError(f"model feature {feat.name!r} is neither an input nor derived")

    @property
    def columns(self) -> list[str]:
        """The model's feature names, in order."""
        return [f.name for f in self.features]

    @property
    def input_columns(self) -> list[str]:
        """The raw input columns a caller must send, in order."""
        return [f.name for f in self.inputs]

    def to_dict(self) -> dict:
        """Plain JSON form, as written to ``signature.json``."""
        return {
            "inputs": [f.to_dict() for f in self.inputs],
            "unused_inputs": list(self.unused_inputs),
            "derived": [s.to_dict() for s in self.derived],
            "features": [f.to_dict() for f in self.features],
            "selection": self.selection,
            "target": self.target,
            "task": self.task,
            "classes": list(self.classes),
            **(
                {"positive_class": self.positive_class, "negative_class": self.negative_class}
                if tasks.get(self.task).has_positive_class
                else {}
            ),
        }

    def contract_changes(self, new: Signature) -> list[str]:
        """What a client of this signature would find different in ``new``: inputs added,
        removed or of another kind, another task, other classes (or another class order: the
        order of the probabilities). Empty when ``new`` takes the same requests and answers
        in the same shape, which is what a hot reload needs.

        The categories of a categorical input, the derived and model features and the
        selection are the model's own: a retrained model learning a new category is the same
        contract (a category a model does not know is treated as missing, by either).
        """
        old_kinds = {f.name: f.kind for f in self.inputs}
        new_kinds = {f.name: f.kind for f in new.inputs}
        changes = [f"new input {n!r} ({k})" for n, k in new_kinds.items() if n not in old_kinds]
        changes += [f"input {n!r} is gone" for n in old_kinds if n not in new_kinds]
        changes += [
            f"input {n!r} is {new_kinds[n]}, was {k}"
            for n, k in old_kinds.items()
            if n in new_kinds and new_kinds[n] != k
        ]
        now = {"task": new.task, "classes": list(new.classes)}
        was = {"task": self.task, "classes": list(self.classes)}
        return changes + [
            f"{key} {now[key]}, was {was[key]}" for key in now if now[key] != was[key]
        ]

    @property
    def is_classification(self) -> bool:
        """Whether the model predicts a class (with a probability per class)."""
        return tasks.get(self.task).classification

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Signature:
        """Read :meth:`to_dict`'s form. Older bundles have no ``task`` (binary, with
        ``positive_class`` and ``negative_class``) and may have no ``inputs`` (the features
        are the inputs)."""
        return cls(
            features=tuple(Feature.from_dict(f) for f in d["features"]),
            target=d["target"],
            inputs=tuple(Feature.from_dict(f) for f in d.get("inputs", ())),
            derived=tuple(Derived.from_dict(s) for s in d.get("derived", ())),
            unused_inputs=tuple(d.get("unused_inputs", ())),
            selection=dict(d.get("selection", {})),
            task=d.get("task", BINARY),
            classes=tuple(d.get("classes") or ()),
            negative_class=d.get("negative_class"),
            positive_class=d.get("positive_class"),
        )


# --- records -> model input -----------------------------------------------------------------


def _typed_input(col: pd.Series, feat: Feature) -> np.ndarray | pd.Categorical:
    """A raw input column as the model sees it: float64, or the training categories."""
    if feat.kind == "numeric":
        if pd.api.types.is_bool_dtype(col):
            raise SchemaError(f"column {feat.name!r}: expected a number, got booleans")
        values = pd.to_numeric(col, errors="coerce")
        bad = values.isna() & col.notna()
        if bad.any():
            row = bad[bad].index[0]
            raise SchemaError(
                f"column {feat.name!r}, row {row}: expected a number, got {col[bad].iloc[0]!r}"
                f" ({int(bad.sum())} such row(s))"
            )
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    text = col.astype("string").str.strip()
    known = text.where(text.isin(feat.categories))  # unseen -> missing
    return pd.Categorical(known, categories=list(feat.categories))


def to_model_frame(records: pd.DataFrame, signature: Signature) -> pd.DataFrame:
    """Validate the raw inputs in ``records``, compute the derived features, then select, order
    and type the model's features.

    Numeric inputs become float64; a value that is not a number is an error naming the column,
    the row and the value. Categorical inputs get the training categories, in training order; a
    category never seen in training becomes missing, which XGBoost handles natively. Columns of
    ``records`` the signature does not name are ignored.
    """
    missing = [c for c in signature.input_columns if c not in records.columns]
    if missing:
        raise SchemaError(
            f"missing column(s) {missing}; the model needs the raw inputs {signature.input_columns}"
        )
    typed = {f.name: _typed_input(records[f.name], f) for f in signature.inputs}
    numbers = {f.name: typed[f.name] for f in signature.inputs if f.kind == "numeric"}
    for step in signature.derived:
        numbers[step.name] = derive(step, numbers)
    out = {
        f.name: typed[f.name] if f.name in typed else numbers[f.name] for f in signature.features
    }
    return pd.DataFrame(out, index=records.index)


def unseen_categories(records: pd.DataFrame, signature: Signature) -> dict[str, list[str]]:
    """Per categorical input, the values in ``records`` that training never saw."""
    found = {}
    for feat in signature.inputs:
        if feat.kind == "categorical" and feat.name in records.columns:
            values = set(records[feat.name].dropna().astype(str).str.strip()) - set(feat.categories)
            if values:
                found[feat.name] = sorted(values)
    return found


def encode_target(labels: pd.Series, signature: Signature) -> np.ndarray:
    """The target as the model learns it: for classification the index of each label in
    ``signature.classes`` (int; binary: 1 is the positive class), for regression float64.

    A label outside the classes, a missing label or (regression) a value that is not a number
    is an error naming the target, the value and how many rows hold such values.
    """
    if not signature.is_classification:
        values = pd.to_numeric(labels, errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            raise SchemaError(
                f"target {signature.target!r}: {labels[bad].iloc[0]!r} is not a finite number "
                f"({int(bad.sum())} row(s)); a regression target must be numeric"
            )
        return values.to_numpy(dtype=np.float64)
    text = labels.astype("string").str.strip()
    index = {c: i for i, c in enumerate(signature.classes)}
    bad = ~text.isin(list(index)) | text.isna()
    if bad.any():
        raise SchemaError(
            f"target {signature.target!r}: unexpected value {text[bad].iloc[0]!r} in "
            f"{int(bad.sum())} row(s); the model knows the classes {list(signature.classes)}"
        )
    dtype = np.int8 if len(index) <= 127 else np.int32
    return text.map(index).to_numpy(dtype=dtype)


def class_order(labels: list[str]) -> list[str]:
    """Class labels in the model's fixed order: numerically if every label is a number (so
    "2" comes before "10"), else as text."""
    try:
        return sorted(labels, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(labels)


# --- building the signature from the training split -----------------------------------------


def infer_inputs(train: pd.DataFrame, target: str) -> tuple[Feature, ...]:
    """Every non-target column of the training split: numeric columns stay numeric, the rest
    become categorical with their sorted training categories."""
    inputs = []
    for col in train.columns:
        if col == target:
            continue
        s = train[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            cats = tuple(sorted(str(v) for v in s.dropna().unique()))
            inputs.append(Feature(str(col), "categorical", cats))
        else:
            inputs.append(Feature(str(col), "numeric"))
    return tuple(inputs)


def mutual_info_scores(
    X: pd.DataFrame, y: np.ndarray, seed: int, task: str = BINARY
) -> dict[str, float]:
    """Mutual information of each model-ready column of ``X`` with the target ``y`` (seeded):
    class labels for classification, numbers for regression.

    Categorical columns are scored as discrete (a missing value is a category of its own);
    missing numbers are filled with the column's median for scoring only.
    """
    arrays, discrete = [], []
    for name in X.columns:
        col = X[name]
        if isinstance(col.dtype, pd.CategoricalDtype):
            arrays.append(col.cat.codes.to_numpy(dtype=np.float64))
            discrete.append(True)
        else:
            values = col.to_numpy(dtype=np.float64)
            fill = np.nanmedian(values) if np.isfinite(values).any() else 0.0
            arrays.append(np.where(np.isnan(values), fill, values))
            discrete.append(False)
    matrix = np.column_stack(arrays)
    # Imported here: sklearn.feature_selection costs about 0.5 s at import (it loads
    # scipy.stats), which every stage importing the signature would pay for a rare setting.
    from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

    score = mutual_info_classif if tasks.get(task).classification else mutual_info_regression
    scores = score(matrix, y, discrete_features=np.array(discrete), random_state=seed)
    return {str(name): float(s) for name, s in zip(X.columns, scores, strict=True)}


def select_top_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` best-scoring names (ties broken by their order), in their original order."""
    names = list(scores)
    ranked = sorted(range(len(names)), key=lambda i: (-scores[names[i]], i))
    keep = set(ranked[:k])
    return [n for i, n in enumerate(names) if i in keep]


def _needed_steps(steps: tuple[Derived, ...], wanted: set[str]) -> tuple[Derived, ...]:
    """The derived steps needed to compute ``wanted`` (including steps they build on)."""
    needed = set(wanted)
    keep = []
    for step in reversed(steps):
        if step.name in needed:
            keep.append(step)
            needed.update(step.columns)
    return tuple(reversed(keep))


def infer_signature(
    train: pd.DataFrame,
    target: str,
    positive_class: str | None,
    features: FeaturesConfig | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    task: str = BINARY,
) -> Signature:
    """Build the signature from the training split, the task and the ``features`` settings.

    The classes are the training split's labels (binary: the other label, then
    ``positive_class``; multiclass: :func:`class_order`); a regression target needs numbers.

    Inputs are the training columns (see :func:`infer_inputs`). Candidates are the inputs that
    ``include`` (if set) keeps and ``exclude`` does not drop, plus every derived feature;
    derived features may read any input. With ``selection_method: mutual_info`` the
    ``selection_k`` candidates with the highest mutual information with the target *in this
    training data* are kept. Only the inputs the kept features need are required from callers.
    """
    cfg = features or FeaturesConfig()
    say = progress or (lambda _msg: None)
    if target not in train.columns:
        raise SchemaError(f"target column {target!r} is not in the training data")
    spec = tasks.get(task)
    labels = []
    if spec.classification:
        labels = class_order([str(v) for v in train[target].dropna().astype(str).unique()])
    try:
        classes = spec.training_classes(labels, target, positive_class)
    except ValueError as exc:
        raise SchemaError(str(exc)) from None
    inputs = infer_inputs(train, target)
    names = [f.name for f in inputs]
    for key, listed in (("include", cfg.include), ("exclude", cfg.exclude)):
        unknown = [c for c in listed if c not in names]
        if unknown:
            raise FeatureError(
                f"features.{key} names {unknown}, which are not input columns; inputs are {names}"
            )
    steps = tuple(Derived.from_dict(d) for d in cfg.derived)
    kept_inputs = [
        f
        for f in inputs
        if (not cfg.include or f.name in cfg.include) and f.name not in cfg.exclude
    ]
    candidates = (*kept_inputs, *(Feature(s.name, "numeric") for s in steps))
    full = Signature(candidates, target, inputs=inputs, derived=steps, task=task, classes=classes)
    selection: dict[str, Any] = {
        "method": cfg.selection_method,
        "include": list(cfg.include),
        "exclude": list(cfg.exclude),
    }
    chosen = [f.name for f in candidates]
    if cfg.selection_method == "mutual_info":
        if cfg.selection_k < 1:
            raise FeatureError("features.selection.k must be at least 1 with method mutual_info")
        say(f"scoring {len(candidates)} candidate features by mutual information")
        X = to_model_frame(train, full)
        y = encode_target(train[target], full)
        scores = mutual_info_scores(X, y, seed, task)
        chosen = select_top_k(scores, cfg.selection_k)
        selection.update(k=cfg.selection_k, scores={n: round(s, 6) for n, s in scores.items()})
        dropped = [f.name for f in candidates if f.name not in chosen]
        say(f"mutual_info kept {len(chosen)} of {len(candidates)}; dropped {dropped}")
    model_features = tuple(f for f in candidates if f.name in chosen)
    needed_steps = _needed_steps(steps, set(chosen))
    needed_inputs = set(chosen) | {c for s in needed_steps for c in s.columns}
    required = tuple(f for f in inputs if f.name in needed_inputs)
    return Signature(
        features=model_features,
        target=target,
        task=task,
        classes=classes,
        inputs=required,
        derived=needed_steps,
        unused_inputs=tuple(n for n in names if n not in needed_inputs),
        selection=selection,
    )

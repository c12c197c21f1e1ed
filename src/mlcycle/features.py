"""The model's input signature, and the one function that turns raw records into model input.

Training, evaluation, batch prediction and the web service all call :func:`to_model_frame` with
the signature stored in the model bundle, so they cannot disagree about column order, types or
category codes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


class SchemaError(ValueError):
    """Records do not fit the model signature; the message names the column and row."""


@dataclass(frozen=True)
class Feature:
    """One model input column: numeric, or categorical with its known categories."""

    name: str
    kind: str  # "numeric" | "categorical"
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Signature:
    """What the model expects (features in order) and what it predicts (target classes)."""

    features: tuple[Feature, ...]
    target: str
    positive_class: str
    negative_class: str

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in f.items()}
            for f in d["features"]
        ]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Signature:
        return cls(
            features=tuple(
                Feature(f["name"], f["kind"], tuple(f.get("categories", ()))) for f in d["features"]
            ),
            target=d["target"],
            positive_class=d["positive_class"],
            negative_class=d["negative_class"],
        )


def infer_signature(train: pd.DataFrame, target: str, positive_class: str) -> Signature:
    """Derive the signature from the training split: numeric columns stay numeric, the rest
    become categorical with their sorted training categories."""
    if target not in train.columns:
        raise SchemaError(f"target column {target!r} is not in the training data")
    labels = sorted(str(v) for v in train[target].dropna().unique())
    if positive_class not in labels or len(labels) != 2:
        raise SchemaError(
            f"target {target!r} must have exactly two classes including {positive_class!r}; "
            f"found {labels}"
        )
    negative = next(lbl for lbl in labels if lbl != positive_class)
    features = []
    for col in train.columns:
        if col == target:
            continue
        s = train[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            cats = tuple(sorted(str(v) for v in s.dropna().unique()))
            features.append(Feature(str(col), "categorical", cats))
        else:
            features.append(Feature(str(col), "numeric"))
    return Signature(tuple(features), target, positive_class, negative)


def to_model_frame(records: pd.DataFrame, signature: Signature) -> pd.DataFrame:
    """Select, order and type the signature's columns from ``records``.

    Numeric columns become float64; a value that is not a number is an error naming the column,
    the row and the value. Categorical columns get the training categories, in training order;
    a category never seen in training becomes missing, which XGBoost handles natively.
    """
    missing = [c for c in signature.columns if c not in records.columns]
    if missing:
        raise SchemaError(f"missing column(s) {missing}; the model expects {signature.columns}")
    out = {}
    for feat in signature.features:
        col = records[feat.name]
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
            out[feat.name] = values.astype("float64")
        else:
            text = col.astype("string").str.strip()
            known = text.where(text.isin(feat.categories))  # unseen -> missing
            out[feat.name] = pd.Categorical(known, categories=list(feat.categories))
    return pd.DataFrame(out, index=records.index)


def unseen_categories(records: pd.DataFrame, signature: Signature) -> dict[str, list[str]]:
    """Per categorical column, the values in ``records`` that training never saw."""
    found = {}
    for feat in signature.features:
        if feat.kind == "categorical" and feat.name in records.columns:
            values = set(records[feat.name].dropna().astype(str).str.strip()) - set(feat.categories)
            if values:
                found[feat.name] = sorted(values)
    return found


def encode_target(labels: pd.Series, signature: Signature) -> np.ndarray:
    """Map target labels to 1 (positive class) and 0 (negative class); others are an error."""
    text = labels.astype("string").str.strip()
    known = {signature.positive_class, signature.negative_class}
    bad = ~text.isin(known) | text.isna()
    if bad.any():
        raise SchemaError(
            f"target {signature.target!r}: unexpected value {text[bad].iloc[0]!r} in "
            f"{int(bad.sum())} row(s); expected one of {sorted(known)}"
        )
    return (text == signature.positive_class).to_numpy(dtype=np.int8)

"""Drafting a schema from a snapshot: each column's type, nullability, range or categories as
observed, and the target's values; ``mlcycle schema infer`` and ``mlcycle init`` write the draft
(:func:`draft_text`) for a person to review.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.schema import (
    BOOKKEEPING_COLUMNS,
    NUMERIC_TYPES,
    TEXT_TYPES,
    ColumnSpec,
    Schema,
    SchemaError,
    dump_schema,
)
from mlcycle.schema.roles import IDENTIFIER, Role, column_roles
from mlcycle.schema.values import ISO_DATE, parse_numbers, stripped_text

# A text column with at most this many distinct values is drafted as a category.
MAX_CATEGORIES = 100
NULL_RATE_MARGIN = 0.1
"""A column whose share of missing values in the draft comes within this margin of the
project's limit (validate.max_null_rate, 50 % by default) gets a limit of its own: the share
seen plus this margin, rounded up to a whole per cent (at most 100 %). A later batch of the
same source varies by chance: for 100 rows and a share of 50 % one standard deviation is
5 points, so 10 points is two of them. A column under the limit keeps the project's."""
# Comment lines at the top of a drafted schema.yaml: what each key means.
DRAFT_HEADER = """\
# The data schema: what each column of the snapshot (data/raw/snapshot.parquet) may hold.
# The `validate` stage checks every snapshot against it before `prepare`; how serious each kind
# of finding is (error stops `dvc repro`, warning is reported) is set in params.yaml under
# validate.severity. Keep this file in git and review changes to it like code.
#
#   target           the column to predict; must equal objectives.target in params.yaml
#   columns          one block per column, in the order of the data
#     type           integer | float | category | string | boolean | datetime
#                    (category and string both hold text; a category lists its values)
#     nullable       false: any missing value is a null_rate finding
#     max_null_rate  highest share of missing values allowed, 0 to 1 (when nullable);
#                    if absent, validate.max_null_rate in params.yaml
#     categories     allowed values of a text column; others are unseen_category findings
#     min, max       allowed range of a numeric column, inclusive; others are out_of_range
#     values         the target's allowed values; others are target_values findings
#
# Drafted by `mlcycle schema infer` from {snapshot}: types, ranges, categories and
# nullability are what that snapshot held (a column with many missing values gets a limit
# above the share seen; an identifier no range), so that snapshot passes. Widen a range or add
# a category where the world is wider than the sample; tighten where you know better.
"""


def infer_type(series: pd.Series, max_categories: int = MAX_CATEGORIES) -> str:
    """The type a column's observed values suggest (see :data:`mlcycle.schema.TYPES`).

    Whole numbers give ``integer``, even when stored as floats (a missing value makes pandas
    store integers as floats) or as text; text with few distinct values gives ``category``.
    """
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    distinct = pd.Series(series.dropna().unique())
    if distinct.empty:
        return "string"
    numbers, bad = parse_numbers(distinct)
    if not bad.any():
        finite = numbers[np.isfinite(numbers)]
        return "integer" if (finite % 1 == 0).all() else "float"
    text = stripped_text(distinct)
    if text.str.lower().isin(["true", "false"]).all():
        return "boolean"
    if text.str.match(ISO_DATE).all():
        return "datetime"
    return "category" if text.nunique() <= max_categories else "string"


def _number_value(value: float, type_: str) -> int | float:
    return int(value) if type_ == "integer" else float(value)


def infer_column(
    series: pd.Series,
    name: str,
    is_target: bool,
    max_categories: int = MAX_CATEGORIES,
    target_values: bool = True,
    max_null_rate: float = 0.5,
    identifier: bool = False,
) -> ColumnSpec:
    """Draft one column's spec from its observed values: type, nullable, range or categories.

    With ``target_values=False`` (a regression target) the target gets its type and
    nullability only: a new value outside the observed range is not an error, and whole
    numbers are drafted as ``float``, so a new fractional value is not one either. An
    ``identifier`` gets no range (a later batch's new ids are larger). A column whose share of
    missing values is within :data:`NULL_RATE_MARGIN` of ``max_null_rate`` (the project's
    limit) gets its own limit (:func:`null_rate_limit`), so the data it was drafted from passes.
    """
    type_ = infer_type(series, max_categories)
    spec: dict[str, Any] = {"name": name, "type": type_, "nullable": bool(series.isna().any())}
    spec["max_null_rate"] = null_rate_limit(series, max_null_rate)
    if is_target and not target_values:
        spec["type"] = "float" if type_ == "integer" else type_
        return ColumnSpec(**spec)
    distinct = pd.Series(series.dropna().unique())
    numbers = (
        parse_numbers(distinct)[0].dropna() if type_ in NUMERIC_TYPES else pd.Series(dtype=float)
    )
    numbers = numbers[np.isfinite(numbers)]
    if not numbers.empty and not identifier:
        spec["min"] = _number_value(numbers.min(), type_)
        spec["max"] = _number_value(numbers.max(), type_)
    labels = sorted(set(stripped_text(distinct))) if type_ in TEXT_TYPES else []
    if is_target:
        if type_ == "boolean":
            spec["values"] = ("false", "true")
        elif type_ == "integer" and len(numbers) <= max_categories:
            # Spelt as validate reads them, and as prepare.label_text makes class labels:
            # a whole number as an integer ("1", not "1.0", whatever nulls did to the type).
            spec["values"] = tuple(
                sorted(set(stripped_text(distinct)), key=lambda v: (float(v), v))
            )
        elif type_ == "category":
            spec["values"] = tuple(labels)
        if "values" in spec:
            spec.pop("min", None)
            spec.pop("max", None)
    elif type_ == "category":
        spec["categories"] = tuple(labels)
    return ColumnSpec(**spec)


def null_rate_limit(series: pd.Series, max_null_rate: float) -> float | None:
    """A column's own limit on missing values, or None where the project's ``max_null_rate``
    leaves :data:`NULL_RATE_MARGIN` above the share seen (see there)."""
    if series.empty:
        return None
    seen = float(series.isna().mean())
    if not seen or seen + NULL_RATE_MARGIN <= max_null_rate:
        return None
    return min(1.0, math.ceil(round((seen + NULL_RATE_MARGIN) * 100, 6)) / 100)


def infer_schema(
    frame: pd.DataFrame,
    target: str,
    ignore: Iterable[str] = BOOKKEEPING_COLUMNS,
    max_categories: int = MAX_CATEGORIES,
    target_values: bool = True,
    max_null_rate: float = 0.5,
    identifiers: Iterable[str] = (),
) -> Schema:
    """Draft a schema from a snapshot: observed ranges, sorted categories, observed nullability.

    ``target`` gets its observed values as the allowed ``values`` (not with
    ``target_values=False``, for a regression target); ``ignore`` columns
    (bookkeeping) are left out; ``identifiers`` get no range; columns with many missing values
    their own limit, above the share seen (``max_null_rate``: the project's). The draft is a
    starting point for a person to review; the data it was drafted from passes it.
    """
    if target not in frame.columns:
        raise SchemaError(f"target {target!r} is not a column of the data: {list(frame.columns)}")
    skip, ids = set(ignore), set(identifiers)
    columns = tuple(
        infer_column(
            frame[c], str(c), c == target, max_categories, target_values, max_null_rate, c in ids
        )
        for c in frame.columns
        if c not in skip
    )
    return Schema(target=target, columns=columns)


def observed_notes(
    frame: pd.DataFrame, schema: Schema, roles: Iterable[Role] = ()
) -> dict[str, dict[str, str]]:
    """Trailing comments for a draft: where min/max come from, how many nulls were seen and
    the margin a column's own null limit leaves, and why a column (``roles``) has no range."""
    notes: dict[str, dict[str, str]] = {}
    total = len(frame)
    why = {r.column: r for r in roles}
    for spec in schema.columns:
        if spec.name not in frame.columns:
            continue
        note: dict[str, str] = {}
        nulls = int(frame[spec.name].isna().sum())
        if nulls:
            note["nullable"] = f"{nulls} of {total} rows null ({nulls / total:.2%}) in the draft"
        if spec.max_null_rate is not None:
            note["max_null_rate"] = (
                f"{nulls / total:.2%} seen + a margin of {NULL_RATE_MARGIN:.0%}, rounded up; "
                "above validate.max_null_rate"
            )
        if spec.min is not None:
            note["min"] = "observed minimum (no margin: widen it if later data may go lower)"
        if spec.max is not None:
            note["max"] = "observed maximum (no margin: widen it if later data may go higher)"
        role = why.get(spec.name)
        if role is not None and role.kind == IDENTIFIER:
            note["type"] = "an identifier: no range (later rows bring new values)"
        if note:
            notes[spec.name] = note
    return notes


def draft_text(
    frame: pd.DataFrame,
    target: str,
    snapshot: str,
    *,
    target_values: bool = True,
    drafted_by: str = "`mlcycle schema infer`",
    max_null_rate: float = 0.5,
    roles: Iterable[Role] | None = None,
) -> tuple[Schema, str]:
    """The draft of ``frame``'s schema and its schema.yaml text: :data:`DRAFT_HEADER` (naming
    ``snapshot`` and the command ``drafted_by``), then the columns with comments on what was
    observed. Bookkeeping columns are left out; identifiers among the column ``roles``
    (:func:`mlcycle.schema.roles.column_roles` unless given) get no range; see
    :func:`infer_schema` for ``target_values`` and ``max_null_rate``."""
    if target not in frame.columns:
        raise SchemaError(f"target {target!r} is not a column of the data: {list(frame.columns)}")
    roles = column_roles(frame, target) if roles is None else list(roles)
    ids = [r.column for r in roles if r.kind == IDENTIFIER]
    draft = infer_schema(frame, target, ignore=BOOKKEEPING_COLUMNS, target_values=target_values,
                         max_null_rate=max_null_rate, identifiers=ids)  # fmt: skip
    header = DRAFT_HEADER.format(snapshot=snapshot).replace("`mlcycle schema infer`", drafted_by)
    return draft, dump_schema(draft, header, observed_notes(frame, draft, roles))

"""A column's values read as the schema's types: numbers parsed from text, booleans from words,
dates from ISO text, and values as plain JSON for reports. Shared by drafting a schema
(:mod:`mlcycle.schema.infer`) and checking data against one (:mod:`mlcycle.schema.findings`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.io import value_text
from mlcycle.schema import NUMERIC_TYPES, TEXT_TYPES

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
# Text read as a date: ISO 8601 dates, with a time and a zone or not.
ISO_DATE = re.compile(
    r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
)


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: numpy scalars unwrapped, non-finite numbers and dates as text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _is_text_dtype(series: pd.Series) -> bool:
    return not (
        pd.api.types.is_numeric_dtype(series)
        or pd.api.types.is_bool_dtype(series)
        or pd.api.types.is_datetime64_any_dtype(series)
    )


def stripped_text(series: pd.Series) -> pd.Series:
    """Non-null values of a column as stripped text (others as :func:`mlcycle.io.value_text`)."""
    if pd.api.types.is_string_dtype(series) and series.dtype != object:
        return series.str.strip()
    return series.map(lambda v: v.strip() if isinstance(v, str) else value_text(v)).astype(object)


def parse_numbers(series: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse a column as numbers: ``(numbers, bad)``.

    ``numbers`` is float (NaN where missing or unparsable); ``bad`` marks values present but not
    numbers, such as text in a numeric column (a source with junk makes the snapshot hold text).
    """
    present = series.notna()
    if pd.api.types.is_bool_dtype(series):
        return pd.Series(np.nan, index=series.index), present
    if pd.api.types.is_numeric_dtype(series):
        return series.astype("float64"), pd.Series(False, index=series.index)
    if pd.api.types.is_datetime64_any_dtype(series):
        return pd.Series(np.nan, index=series.index), present
    text = stripped_text(series[present])
    parsed = pd.to_numeric(text, errors="coerce").astype("float64")
    numbers = pd.Series(np.nan, index=series.index)
    numbers[present] = parsed
    return numbers, present & numbers.isna()


@dataclass(frozen=True)
class ColumnValues:
    """A column's values read as its schema type, as arrays of one value per row: which are
    ``present``, which are present but ``bad`` (not of the type), the ``numbers`` of a numeric
    type (float64, NaN where missing or bad) and the ``labels`` compared with categories or
    target values (stripped text; booleans as ``true``/``false``; None where missing or bad)
    when they were asked for."""

    present: np.ndarray
    bad: np.ndarray
    numbers: np.ndarray | None = None
    labels: np.ndarray | None = None


def _whole(numbers: np.ndarray, bad: np.ndarray, type_: str) -> tuple[np.ndarray, np.ndarray]:
    """An integer column's numbers with a fraction marked bad (and made missing)."""
    if type_ != "integer":
        return numbers, bad
    with np.errstate(invalid="ignore"):
        fraction = ~np.isnan(numbers) & (numbers % 1 != 0)
    if not fraction.any():
        return numbers, bad
    return np.where(fraction, np.nan, numbers), bad | fraction


def read_series(series: pd.Series, type_: str, labels: bool = False) -> ColumnValues:
    """A column of a frame read as ``type_`` (see :class:`ColumnValues`); ``labels``: compute
    the text compared with categories or values."""
    present = series.notna().to_numpy(dtype=bool)
    numbers = None
    if type_ in NUMERIC_TYPES:
        parsed, bad_rows = parse_numbers(series)
        numbers, bad = _whole(parsed.to_numpy(dtype=np.float64), bad_rows.to_numpy(bool), type_)
    elif type_ == "boolean" and not pd.api.types.is_bool_dtype(series):
        words = stripped_text(series[present]).str.lower()
        bad = np.zeros(len(series), dtype=bool)
        bad[present] = ~words.isin(TRUE_WORDS + FALSE_WORDS).to_numpy(dtype=bool)
    elif type_ == "datetime" and not pd.api.types.is_datetime64_any_dtype(series):
        bad = present.copy()
        if _is_text_dtype(series):
            text = stripped_text(series[present])
            uniques = pd.unique(text)
            parsed = pd.to_datetime(pd.Series(uniques), errors="coerce", format="mixed")
            unparsable = set(uniques[parsed.isna().to_numpy()])
            bad[present] = text.isin(unparsable).to_numpy(dtype=bool)
    else:  # text holds anything
        bad = np.zeros(len(series), dtype=bool)
    found = None
    if labels:
        ok = present & ~bad
        found = np.full(len(series), None, dtype=object)
        text = stripped_text(series[ok])
        if type_ == "boolean":  # "Yes", "1", True all read as "true"
            text = text.str.lower().isin(TRUE_WORDS).map({True: "true", False: "false"})
        found[ok] = text.to_numpy(dtype=object)
    return ColumnValues(present, bad, numbers, found)


_PLAIN_NUMBERS = frozenset({float, int, type(None)})
_PLAIN_TEXT = frozenset({str, type(None)})


def read_items(items: Sequence[Any], type_: str, labels: bool = False) -> ColumnValues:
    """A column of JSON records' values (numbers, text, None) read as ``type_``, as
    :func:`read_series` reads it: plain numbers and text without pandas (a request's few
    records), anything else by :func:`read_series` itself."""
    kinds = set(map(type, items))
    if type_ in NUMERIC_TYPES and kinds <= _PLAIN_NUMBERS:
        try:
            numbers = np.array(items, dtype=np.float64)  # None -> NaN
        except OverflowError:  # an integer beyond float64: pandas decides
            return read_series(pd.Series(list(items), dtype=object), type_, labels)
        present = ~np.isnan(numbers)
        numbers, bad = _whole(numbers, np.zeros(len(items), dtype=bool), type_)
        found = None
        if labels:
            found = np.array([value_text(v) for v in items], dtype=object)
            found[~present | bad] = None
        return ColumnValues(present, bad, numbers, found)
    if type_ in TEXT_TYPES and kinds <= _PLAIN_TEXT:
        present = np.array([v is not None for v in items], dtype=bool)
        found = None
        if labels:
            found = np.array([None if v is None else v.strip() for v in items], dtype=object)
        return ColumnValues(present, np.zeros(len(items), dtype=bool), None, found)
    return read_series(pd.Series(list(items), dtype=object), type_, labels)

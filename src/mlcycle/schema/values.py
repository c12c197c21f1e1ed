"""A column's values read as the schema's types: numbers parsed from text, booleans from words,
dates from ISO text, and values as plain JSON for reports. Shared by drafting a schema
(:mod:`mlcycle.schema.infer`) and checking data against one (:mod:`mlcycle.schema.findings`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.io import value_text
from mlcycle.schema import NUMERIC_TYPES

TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")


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


def bad_type(series: pd.Series, type_: str) -> tuple[pd.Series, pd.Series | None]:
    """Rows whose value does not fit ``type_``, and the parsed numbers for numeric types."""
    present = series.notna()
    if type_ in NUMERIC_TYPES:
        numbers, bad = parse_numbers(series)
        if type_ == "integer":
            fraction = numbers.notna() & (numbers % 1 != 0)
            bad = bad | fraction
            numbers = numbers.mask(fraction)
        return bad, numbers
    if type_ == "boolean":
        if pd.api.types.is_bool_dtype(series):
            return pd.Series(False, index=series.index), None
        words = stripped_text(series[present]).str.lower()
        ok = words.isin(TRUE_WORDS + FALSE_WORDS)
        bad = pd.Series(False, index=series.index)
        bad[present] = ~ok.to_numpy(dtype=bool)
        return bad, None
    if type_ == "datetime":
        if pd.api.types.is_datetime64_any_dtype(series):
            return pd.Series(False, index=series.index), None
        bad = pd.Series(False, index=series.index)
        if _is_text_dtype(series):
            text = stripped_text(series[present])
            uniques = pd.unique(text)
            parsed = pd.to_datetime(pd.Series(uniques), errors="coerce", format="mixed")
            unparsable = set(uniques[parsed.isna().to_numpy()])
            bad[present] = text.isin(unparsable).to_numpy(dtype=bool)
        else:
            bad = present
        return bad, None
    return pd.Series(False, index=series.index), None  # text holds anything

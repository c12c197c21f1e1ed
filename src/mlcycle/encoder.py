"""The fast scoring path: raw records straight to the model's input matrix, without pandas.

:func:`mlcycle.features.to_model_frame` builds a typed pandas frame, which costs milliseconds
per call; for one record in a web request that is most of the time spent. An :class:`Encoder`
is compiled once from the model's :class:`~mlcycle.features.Signature` (category -> code
dictionaries, the derived steps, the column plan) and then turns a list of JSON records, a
column mapping or a DataFrame into a float64 matrix in ``signature.columns`` order:

- numeric inputs are float64; None, NaN and missing keys are NaN;
- categorical inputs hold the category's code in the training order (``Feature.categories``),
  the code a pandas categorical of :func:`~mlcycle.features.to_model_frame` has; an unseen or
  missing category is NaN (never -1: XGBoost sends an invalid code down a different branch
  than a missing value);
- derived features are computed by :func:`mlcycle.features.derive` on the float64 inputs.

The matrix is bit for bit the values of ``to_model_frame`` (see :func:`matrix_from_frame`), so
``model.output_encoded(matrix, signature)`` gives the very same predictions as
``model.output(to_model_frame(records, signature))``. Values that need pandas' own parsing
(numbers sent as strings, integers sent for a category, pandas extension types) are handed to
the same code ``to_model_frame`` runs, so they convert exactly as there and bad ones raise the
same :class:`~mlcycle.features.SchemaError` naming the column, the row and the value. One
deliberate difference: a boolean sent for a number is refused wherever it is, not only when
the whole column is boolean (pandas reads ``[True, 1]`` as ``[1, 1]``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# The very conversion to_model_frame applies; the slow path calls it so both cannot disagree.
from mlcycle.features import Derived, Feature, SchemaError, Signature, _typed_input, derive

Records = Sequence[Mapping[str, Any]] | Mapping[str, Any] | pd.DataFrame

_NONE = type(None)
# Element types converted without pandas; any other type goes through to_model_frame's code.
_NUMBER_TYPES = frozenset({float, int, np.float64, np.float32, np.int64, np.int32, _NONE})
_TEXT_TYPES = frozenset({str, np.str_, _NONE, float, np.float64})  # floats: only NaN (missing)
_BOOL_TYPES = (bool, np.bool_)
_FEW = 16  # up to this many records, a plain request is encoded row by row (_encode_plain)


@dataclass(frozen=True)
class Encoded:
    """An encoded batch: the model's input ``matrix`` (float64, ``(n, len(columns))``) and,
    per categorical input, the sorted values training never saw (they are missing in the
    matrix), as :func:`mlcycle.features.unseen_categories` reports them."""

    matrix: np.ndarray
    unseen: dict[str, list[str]]


@dataclass(frozen=True)
class _Input:
    name: str
    categorical: bool
    codes: dict[str, float]  # categorical: stripped category -> code
    categories: frozenset[str]
    feature: Feature


class Encoder:
    """Raw records -> model input matrix for one signature; build it with :meth:`compile`.

    Immutable after compiling, so one encoder can serve many threads.
    """

    def __init__(self, signature: Signature) -> None:
        self.signature = signature
        self.columns: list[str] = signature.columns
        inputs = []
        for feat in signature.inputs:
            cats = tuple(feat.categories)
            # A category with edge whitespace can never match a stripped value: leave it out, so
            # an exact hit on the raw value is also a hit on the stripped value.
            codes = {c: float(i) for i, c in enumerate(cats) if c == c.strip()}
            inputs.append(
                _Input(feat.name, feat.kind == "categorical", codes, frozenset(cats), feat)
            )
        self._inputs: tuple[_Input, ...] = tuple(inputs)
        self._names = tuple(inp.name for inp in inputs)
        self._getter = operator.itemgetter(*self._names)
        self._derived: tuple[Derived, ...] = tuple(signature.derived)
        # for _encode_plain: where each input and derived feature sits in the matrix
        position = {name: j for j, name in enumerate(self.columns)}
        # (an input may feed only derived features: no column of its own)
        self._input_columns = [position[name] for name in self._names if name in position]
        self._input_used = [j for j, name in enumerate(self._names) if name in position]
        self._numeric_at = tuple(
            (j, inp.name) for j, inp in enumerate(inputs) if not inp.categorical
        )
        self._derived_at = tuple((position[d.name], d.name) for d in self._derived)

    @classmethod
    def compile(cls, signature: Signature) -> Encoder:
        """The encoder of ``signature`` (dictionaries and column plan built once)."""
        return cls(signature)

    # -- public -----------------------------------------------------------------------------

    def encode(self, records: Records) -> np.ndarray:
        """The model's input matrix for ``records`` (see :meth:`encode_with_unseen`)."""
        return self.encode_with_unseen(records).matrix

    def encode_with_unseen(self, records: Records) -> Encoded:
        """Encode ``records`` and report unseen categories.

        ``records`` is a list of JSON records (dicts; a missing key is a missing value), a
        mapping of column name -> sequence or 1-D array, or a pandas DataFrame; columns the
        signature does not name are ignored. Raises :class:`~mlcycle.features.SchemaError`
        naming the column, the row and the value for a value that is not a number where one is
        expected, and naming the columns a mapping or DataFrame lacks.
        """
        if type(records) is list and 0 < len(records) <= _FEW:
            plain = self._encode_plain(records)
            if plain is not None:
                return plain
        columns, n, index = self._columns(records)
        numbers: dict[str, np.ndarray] = {}
        codes: dict[str, np.ndarray] = {}
        unseen: dict[str, list[str]] = {}
        for inp in self._inputs:
            values = columns(inp.name)
            if inp.categorical:
                codes[inp.name], found = self._categorical(inp, values, n, index)
                if found:
                    unseen[inp.name] = sorted(found)
            else:
                numbers[inp.name] = self._numeric(inp, values, n, index)
        for step in self._derived:
            numbers[step.name] = derive(step, numbers)
        matrix = np.empty((n, len(self.columns)), dtype=np.float64)
        for j, name in enumerate(self.columns):
            matrix[:, j] = codes[name] if name in codes else numbers[name]
        return Encoded(matrix, unseen)

    def _encode_plain(self, records: list) -> Encoded | None:
        """The few records of a typical request, when every value is plain (numbers as int,
        float or None; categories as known text or None): one pass in Python and one array,
        instead of numpy calls per column. None when anything needs the general path (a
        missing key, text for a number, an unseen or padded category, ...), which then
        decides; the values are the same either way (the same float64 conversions)."""
        nan = math.nan
        rows = []
        try:
            for record in records:
                if type(record) is not dict:
                    return None
                row = []
                for inp in self._inputs:
                    v = record[inp.name]
                    t = type(v)
                    if v is None:
                        row.append(nan)
                    elif inp.categorical:
                        code = inp.codes.get(v) if t is str else None
                        if code is None:
                            return None
                        row.append(code)
                    elif t is float or t is int:
                        row.append(v)
                    else:
                        return None
                rows.append(row)
            base = np.array(rows, dtype=np.float64)
        except (KeyError, OverflowError):  # a missing key; an integer beyond float64
            return None
        numbers = {name: base[:, j] for j, name in self._numeric_at}
        for step in self._derived:
            numbers[step.name] = derive(step, numbers)
        matrix = np.empty((len(rows), len(self.columns)), dtype=np.float64)
        matrix[:, self._input_columns] = base[:, self._input_used]
        for j, name in self._derived_at:
            matrix[:, j] = numbers[name]
        return Encoded(matrix, {})

    def to_frame(self, matrix: np.ndarray) -> pd.DataFrame:
        """The model frame of an encoded ``matrix`` (see :func:`matrix_to_frame`)."""
        return matrix_to_frame(matrix, self.signature)

    # -- reading the records ----------------------------------------------------------------

    def _columns(self, records: Records) -> tuple[Any, int, Any]:
        """A function name -> column values, the row count, and the row labels (None: 0..n-1)."""
        if isinstance(records, pd.DataFrame):
            self._require(list(records.columns))
            return (lambda name: records[name]), len(records), records.index
        if isinstance(records, Mapping):
            self._require(list(records))
            n = None
            for inp in self._inputs:
                values = records[inp.name]
                if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
                    raise SchemaError(
                        f"column {inp.name!r}: expected a sequence of values (a column), got "
                        f"{type(values).__name__}; send one record as a list of one record"
                    )
                if isinstance(values, np.ndarray) and values.ndim != 1:
                    raise SchemaError(
                        f"column {inp.name!r}: expected a 1-D array, got shape {values.shape}"
                    )
                if n is None:
                    n = len(values)
                elif len(values) != n:
                    raise SchemaError(
                        f"column {inp.name!r} has {len(values)} values, but "
                        f"{self._inputs[0].name!r} has {n}; columns must have equal lengths"
                    )
            return (lambda name: records[name]), n or 0, None
        if isinstance(records, str | bytes) or not isinstance(records, Sequence):
            raise SchemaError(
                f"expected a list of records, a mapping of columns or a DataFrame, got "
                f"{type(records).__name__}"
            )
        bad = None
        if not set(map(type, records)) <= {dict}:
            bad = next((i for i, r in enumerate(records) if not isinstance(r, Mapping)), None)
        if bad is not None:
            raise SchemaError(
                f"row {bad}: expected a record (an object of column: value), got "
                f"{type(records[bad]).__name__}"
            )
        try:  # every key present (the usual request): one C-level pass, then transpose
            rows = list(map(self._getter, records))
        except KeyError:  # a missing key is a missing value, as in the service's frame
            nan = math.nan
            return (lambda name: [r.get(name, nan) for r in records]), len(records), None
        if len(self._inputs) == 1:
            rows = [(v,) for v in rows]
        columns = map(list, zip(*rows, strict=True))
        by_name = dict(zip(self._names, columns, strict=True)) if rows else {}
        return (lambda name: by_name.get(name, [])), len(records), None

    def _require(self, present: list) -> None:
        names = set(present)
        missing = [c for c in self.signature.input_columns if c not in names]
        if missing:
            raise SchemaError(
                f"missing column(s) {missing}; the model needs the raw inputs "
                f"{self.signature.input_columns}"
            )

    # -- converting one column --------------------------------------------------------------

    def _numeric(self, inp: _Input, values: Any, n: int, index: Any) -> np.ndarray:
        """float64 values of a numeric input, exactly as to_model_frame converts them."""
        if type(values) is list:  # JSON records: the hot path
            items = values
        elif isinstance(values, pd.Series):
            dtype = values.dtype
            if pd.api.types.is_bool_dtype(dtype):
                _refuse_bool(inp.name, values.tolist(), index)
            if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
                return values.to_numpy(dtype=np.float64)
            if not _is_object(dtype):  # text, nullable and other extension types: pandas'
                return _typed_input(values, inp.feature)
            items = values.tolist()
        elif isinstance(values, np.ndarray):
            if values.dtype.kind == "b":
                _refuse_bool(inp.name, values.tolist(), index)
            if values.dtype.kind in "iuf":
                return values.astype(np.float64)
            if not _is_object(values.dtype):
                return _typed_input(pd.Series(values, index=index), inp.feature)
            items = values.tolist()
        else:
            items = list(values)
        types = set(map(type, items))
        if types <= _NUMBER_TYPES:
            try:
                return np.array(items, dtype=np.float64).reshape(n)  # None -> NaN
            except OverflowError:  # an integer beyond float64: let pandas decide
                pass
        if any(issubclass(t, _BOOL_TYPES) for t in types):
            _refuse_bool(inp.name, items, index)
        series = values if isinstance(values, pd.Series) else pd.Series(values, index=index)
        return _typed_input(series, inp.feature)

    def _categorical(
        self, inp: _Input, values: Any, n: int, index: Any
    ) -> tuple[np.ndarray, set[str]]:
        """Codes (NaN: missing or unseen) of a categorical input and its unseen values."""
        if type(values) is list:  # JSON records: the hot path
            items = values
        elif isinstance(values, pd.Series):
            dtype = values.dtype
            fast = _is_object(dtype) or isinstance(dtype, pd.StringDtype)
            items = values.tolist() if fast else None
        elif isinstance(values, np.ndarray):
            items = values.tolist() if values.dtype.kind in "OU" else None
        else:
            items = list(values)
        if items is not None:
            types = set(map(type, items))
            if types <= _TEXT_TYPES and (found := _lookup(inp.codes, items)) is not None:
                return found
        # Numbers, booleans, bytes, pandas categoricals ...: pandas' own text conversion.
        series = values if isinstance(values, pd.Series) else pd.Series(values, index=index)
        typed = _typed_input(series, inp.feature)
        codes = typed.codes.astype(np.float64)
        codes[codes < 0] = np.nan
        seen = set(series.dropna().astype(str).str.strip())
        return codes, {v for v in seen if v not in inp.categories}


def compile_encoder(signature: Signature) -> Encoder:
    """The :class:`Encoder` of ``signature``; compile once, encode many times."""
    return Encoder.compile(signature)


def _lookup(codes: dict[str, float], items: list) -> tuple[np.ndarray, set[str]] | None:
    """Codes of text values (None, NaN: missing) and the unseen ones; a value is stripped only
    if it misses as it is. None if a value is a number: pandas turns it into text its way."""
    found = list(map(codes.get, items))
    out = np.array(found, dtype=np.float64)  # a miss (None) -> NaN
    if len(found) <= 16:  # a request's few records: cheaper than numpy's call overhead
        misses = [i for i, code in enumerate(found) if code is None]
    else:
        misses = np.flatnonzero(np.isnan(out)).tolist()
    unseen: set[str] = set()
    for i in misses:
        v = items[i]
        if isinstance(v, str):
            text = v.strip()
            code = codes.get(text)
            if code is None:
                unseen.add(text)
            else:
                out[i] = code
        elif v is not None and v == v:  # a float that is not NaN
            return None
    return out, unseen


def _is_object(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.kind == "O"


def _refuse_bool(name: str, items: list, index: Any) -> None:
    rows = [i for i, v in enumerate(items) if isinstance(v, _BOOL_TYPES)]
    row = rows[0] if index is None else index[rows[0]]
    raise SchemaError(
        f"column {name!r}, row {row}: expected a number, got {bool(items[rows[0]])!r} "
        f"({len(rows)} such row(s))"
    )


# --- between the matrix and the model frame ---------------------------------------------------


def matrix_from_frame(frame: pd.DataFrame, signature: Signature) -> np.ndarray:
    """The encoded matrix of a model frame from :func:`mlcycle.features.to_model_frame`:
    numbers as float64, categories as their codes with NaN for missing."""
    out = np.empty((len(frame), len(signature.features)), dtype=np.float64)
    for j, feat in enumerate(signature.features):
        col = frame[feat.name]
        if feat.kind == "categorical":
            codes = col.cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            out[:, j] = codes
        else:
            out[:, j] = col.to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def matrix_to_frame(
    matrix: np.ndarray, signature: Signature, index: pd.Index | None = None
) -> pd.DataFrame:
    """The model frame :func:`mlcycle.features.to_model_frame` would have given for an encoded
    ``matrix``: float64 numbers, pandas categoricals with the training categories. It lets
    every model kind score an encoded matrix through its ordinary :meth:`output`."""
    matrix = np.asarray(matrix, dtype=np.float64)
    k = len(signature.features)
    if matrix.ndim != 2 or matrix.shape[1] != k:
        raise SchemaError(
            f"expected an encoded matrix of shape (n, {k}) for the columns {signature.columns}, "
            f"got shape {matrix.shape}"
        )
    out: dict[str, Any] = {}
    for j, feat in enumerate(signature.features):
        col = matrix[:, j]
        if feat.kind != "categorical":
            out[feat.name] = col.copy()
            continue
        known = ~np.isnan(col)
        if not np.all((col[known] >= 0) & (col[known] < len(feat.categories))) or not np.all(
            col[known] == np.floor(col[known])
        ):
            raise SchemaError(
                f"column {feat.name!r}: category codes must be whole numbers from 0 to "
                f"{len(feat.categories) - 1} (or NaN for missing)"
            )
        codes = np.where(known, col, -1).astype(np.int64)
        out[feat.name] = pd.Categorical.from_codes(codes, categories=list(feat.categories))
    return pd.DataFrame(out, index=index if index is not None else pd.RangeIndex(len(matrix)))

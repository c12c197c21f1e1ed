"""Column roles: which columns of a table look like identifiers, free text, constants or dates,
each with the figures that say so.

A model learns nothing that carries over from such a column: an identifier (a row number, a
UUID, an order code) is different on every new row, and one that grows with time puts every
later batch out of the range the schema drew from the sample; free text as a category has
about as many levels as rows (slow to train, and nearly every new value unseen); a constant
column holds no information; a date as a category never recurs. ``mlcycle init`` excludes the
columns :func:`column_roles` finds from the features (said in its output and in params.yaml,
where the user can take the exclusion back), and ``validate`` warns about features that look
like identifiers or free text (:func:`feature_warnings`), for columns added after ``init``.

The rules look at the values only, never at the task, and hold for any table: a column is
called an identifier or free text only with at least :data:`MIN_ROWS` values, since in a
small sample many columns are unique by chance; a number with a fraction is never an
identifier (a unique measurement is a measurement).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlcycle.prepare import NUMERIC_SHARE
from mlcycle.schema import BOOKKEEPING_COLUMNS
from mlcycle.schema.values import ISO_DATE, parse_numbers, stripped_text

MIN_ROWS = 50
"""Fewer present values than this and no column is called an identifier or free text: in a
small sample most columns of many possible values are unique by chance (50 draws from 5,000
equally likely values are all distinct four times in five). Above it such a column can still
be unique by chance (a text column of 200 rows drawn from 5,000 levels, one time in four); as a
category it would teach a model next to nothing either: each of its levels is seen about once."""

ID_DISTINCT_SHARE = 0.99
"""An identifier has (nearly) one value per row: at least this share of its present values
distinct. Not 1.0, so a few repeated rows (a duplicated record, a re-sent order) do not hide
one."""

ID_SPAN_FACTOR = 1.5
"""Whole numbers that are (nearly) distinct are a sequence, so an identifier, when their range
(max - min + 1) is at most this many times their count: 1..N with up to a third of the numbers
missing (deleted rows, a sample of a table). A measurement is never that dense and distinct:
N distinct whole numbers from a range of 1.5 N values by chance is a permutation in all but
name. Distinct whole numbers spread wider (a quantity in cents, a timestamp) are kept, unless
the column's name says identifier (:data:`ID_NAME`)."""

ID_NAME = re.compile(r"(^|[_\W])(id|ID|Id|uuid|UUID|guid|GUID)$|[a-z0-9](ID|Id)$|^(id|ID|Id)[_\W]")
"""A name that says identifier: ``id``, ``customer_id``, ``CustomerID``, ``userId``,
``order-uuid``, ``ID_code`` (not ``paid`` nor ``valid``)."""

UUID = re.compile(
    r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
)

FREE_TEXT_MIN_DISTINCT = 100
"""Free text has more distinct values than a category would list (the draft schema types a
text column with more than 100 distinct values ``string``, not ``category``)."""

FREE_TEXT_DISTINCT_SHARE = 0.2
"""... and most values occur once or a few times: at least this share of its present values
distinct. A job title with 500 levels in 50,000 rows (1 %) is a category with many levels,
not free text."""

FREE_TEXT_WORDS = 3
FREE_TEXT_CHARS = 30
"""... and its values are sentences or long: a median of at least 3 words or 30 characters.
Zip codes, product codes and names are short: many levels, but not free text."""

TEXT_SAMPLE = 2000  # distinct values whose words and lengths are measured (the first ones)

IDENTIFIER, FREE_TEXT, CONSTANT, DATE = "identifier", "free text", "constant", "date"
WARNED = (IDENTIFIER, FREE_TEXT)  # the roles validate warns about in a feature


@dataclass(frozen=True)
class Role:
    """A column that should not be a model feature: its ``kind`` (:data:`IDENTIFIER`,
    :data:`FREE_TEXT`, :data:`CONSTANT` or :data:`DATE`) and ``why``, the figures that
    decided it (e.g. "58,788 distinct of 58,788 rows, whole numbers 1..58,788 in sequence")."""

    column: str
    kind: str
    why: str

    @property
    def what(self) -> str:
        """The role in words: "an identifier", "free text", "a constant", "a date"."""
        return _article(self.kind)

    @property
    def message(self) -> str:
        """One line: the column, the figures and the decision."""
        return f"{self.column}: {self.why} -> excluded as {self.what}"


def _article(kind: str) -> str:
    return {IDENTIFIER: "an identifier", FREE_TEXT: "free text"}.get(kind, f"a {kind}")


def _quoted(values: Iterable[object], limit: int = 2) -> str:
    return ", ".join(repr(str(v)[:40]) for v in list(values)[:limit])


def _is_date(present: pd.Series) -> bool:
    """Dates: a datetime column, or text that is all ISO dates (as the draft types it)."""
    if pd.api.types.is_datetime64_any_dtype(present):
        return True
    if pd.api.types.is_numeric_dtype(present) or pd.api.types.is_bool_dtype(present):
        return False
    return bool(stripped_text(pd.Series(present.unique())).str.match(ISO_DATE).all())


def column_role(series: pd.Series, name: str) -> Role | None:
    """The role of one column (not the target) from its values, or None for an ordinary
    feature. Checked in order: constant (one value and no missing one, or no value at all);
    date; numbers (an identifier if whole, distinct and in sequence or so named); text of
    distinct single words (an identifier: codes, UUIDs); free text; other distinct text (an
    identifier). See the module's constants for the thresholds."""
    present = series.dropna()
    n, rows = len(present), len(series)
    if n == 0:
        return Role(name, CONSTANT, f"every one of {rows:,} rows is missing")
    distinct = int(present.nunique())
    if distinct == 1 and n == rows:
        return Role(name, CONSTANT, f"all {rows:,} rows hold {_quoted(present.iloc[:1])}")
    if distinct > 1 and _is_date(present):
        return Role(
            name,
            DATE,
            f"{distinct:,} distinct dates ({present.min()} .. {present.max()}); a date as a "
            "feature never recurs (prepare.split.time_column can split by it)",
        )
    if n < MIN_ROWS:
        return None
    share = distinct / n
    counted = f"{distinct:,} distinct of {n:,}" + (" present" if n < rows else "") + " rows"
    if pd.api.types.is_bool_dtype(present):
        return None
    numbers, bad = parse_numbers(present)
    if 1 - bad.mean() >= NUMERIC_SHARE:  # numbers (as prepare reads a few typos among them)
        numbers = numbers[~bad]
        whole = bool(np.isfinite(numbers).all() and (numbers % 1 == 0).all())
        if not whole or share < ID_DISTINCT_SHARE:
            return None  # a fraction: a measurement, however distinct
        low, high = int(numbers.min()), int(numbers.max())
        if high - low + 1 <= ID_SPAN_FACTOR * distinct:
            return Role(name, IDENTIFIER, f"{counted}, whole numbers {low:,}..{high:,} in sequence")
        if ID_NAME.search(name):
            return Role(name, IDENTIFIER, f"{counted}, whole numbers, and its name says identifier")
        return None
    text = stripped_text(pd.Series(present.unique()[:TEXT_SAMPLE]))
    words = text.str.split().str.len()
    unique = share >= ID_DISTINCT_SHARE
    if unique and (words <= 1).all():  # codes, hashes, UUIDs, e-mail addresses
        kind = "UUID-like strings" if text.str.match(UUID).all() else "single-word codes"
        return Role(name, IDENTIFIER, f"{counted}, {kind} such as {_quoted(text)}")
    if distinct > FREE_TEXT_MIN_DISTINCT and share >= FREE_TEXT_DISTINCT_SHARE:
        median_words, median_chars = float(words.median()), float(text.str.len().median())
        if median_words >= FREE_TEXT_WORDS or median_chars >= FREE_TEXT_CHARS:
            return Role(
                name,
                FREE_TEXT,
                f"{counted}, a median of {median_words:g} words and {median_chars:g} characters",
            )
    if not unique:
        return None
    return Role(name, IDENTIFIER, f"{counted}, short texts such as {_quoted(text)}")


def column_roles(
    frame: pd.DataFrame, target: str, ignore: Iterable[str] = BOOKKEEPING_COLUMNS
) -> list[Role]:
    """The roles of every column but the target and ``ignore`` (bookkeeping), in order."""
    skip = {target, *ignore}
    found = (column_role(frame[c], str(c)) for c in frame.columns if c not in skip)
    return [role for role in found if role is not None]


def feature_warnings(
    frame: pd.DataFrame,
    target: str,
    excluded: Iterable[str],
    include: Iterable[str] = (),
) -> list[str]:
    """One line per feature column that looks like an identifier or free text: the columns
    of ``frame`` but the target, the ``excluded`` ones (features.exclude,
    prepare.drop_columns) and, when ``include`` names any, those it does not name."""
    include = set(include)
    skip = {target, *excluded, *BOOKKEEPING_COLUMNS}
    lines = []
    for col in frame.columns:
        if col in skip or (include and col not in include):
            continue
        role = column_role(frame[col], str(col))
        if role is not None and role.kind in WARNED:
            lines.append(
                f"{col}: {role.why}; it looks like {role.what} and is a feature. "
                "Add it to features.exclude in params.yaml unless it carries meaning"
            )
    return lines

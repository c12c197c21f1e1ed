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

The rules look at the values and hold for any table: a column is called an identifier or free
text only with at least :data:`MIN_ROWS` values, since in a small sample many columns are unique
by chance; a number with a fraction is never an identifier (a unique measurement is a
measurement). Distinct whole numbers are an identifier when they are a sequence, when they are
in order in the file (a row number with gaps, a counter), when the name says so, or, given the
target, when it depends on them too little for a feature (:func:`unrelated`): R's row names of
a sample, say, are distinct, unordered and spread wide, as a measurement in whole units (income
in dollars) can be on small data; the measurement tells something about the target, the row
names do not.
"""

from __future__ import annotations

import math
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
name. Distinct whole numbers spread wider (a quantity in cents) are kept, unless they are in
order in the file, the column's name says identifier (:data:`ID_NAME`) or the target bears
(next to) no relation to them (:data:`ID_MAX_RELATION`)."""

ID_MAX_RELATION = 0.1
"""Distinct whole numbers (neither a sequence, nor in order, nor so named) are an identifier
when the target depends on them too little to be worth a feature: their rank correlation with
a numeric target and Cramér's V (bias-corrected) of their bins against the target's (its
classes, or quantile bins of a numeric target) both below this. A measurement in whole units
that is unique by chance (income in dollars on a small table) and carries signal is well above
it; R's row names of a sample, unordered ids spread wide, are near 0 (and one that carries
none is no loss: the line in features.exclude says why, and can be deleted)."""

RELATION_MIN_ROWS = 200
"""Fewer rows with a target than this and no column is called an identifier for its lack of
relation to the target: the rank correlation of an unrelated column scatters by about
1 / sqrt(rows) (0.07 at 200 rows), too close to :data:`ID_MAX_RELATION` to tell from a weak
signal."""

RELATION_BINS = 10
"""At most this many quantile bins of the column (and of a numeric target) in that test, fewer
on small tables so the cells expect 5 rows or more."""

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


def _bins(values: pd.Series, k: int) -> np.ndarray:
    """``k`` quantile bins of ``values`` by rank (equal values share a bin)."""
    ranks = values.rank(method="average").to_numpy()
    return np.minimum(((ranks - 0.5) * k / len(values)).astype(np.int64), k - 1)


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two codings of the same rows, bias-corrected (Bergsma 2013): about 0 for
    independent ones whatever the number of rows, 1 when one determines the other."""
    table = pd.crosstab(a, b).to_numpy(dtype=np.float64)
    n, (r, c) = table.sum(), table.shape
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    phi2 = max(
        0.0, float(((table - expected) ** 2 / expected).sum()) / n - (r - 1) * (c - 1) / (n - 1)
    )
    r_, c_ = r - (r - 1) ** 2 / (n - 1), c - (c - 1) ** 2 / (n - 1)
    return math.sqrt(phi2 / min(r_ - 1, c_ - 1)) if min(r_, c_) > 1 else 0.0


def unrelated(numbers: pd.Series, target: pd.Series) -> str:
    """The figures that say the ``target`` (its values row by row with ``numbers``) depends on
    ``numbers`` too little to be worth a feature (:data:`ID_MAX_RELATION`), or "" when it does
    more (or too few rows have a target to tell)."""
    both = pd.DataFrame({"x": numbers.to_numpy(), "t": target.to_numpy()}).dropna()
    n = len(both)
    k = min(RELATION_BINS, int(math.sqrt(n / 5)))
    levels = both["t"].nunique()
    if n < RELATION_MIN_ROWS or levels < 2:
        return ""
    numeric = pd.api.types.is_numeric_dtype(both["t"]) and levels > RELATION_BINS
    t = _bins(both["t"], k) if numeric else pd.factorize(both["t"], sort=True)[0]
    v = cramers_v(_bins(both["x"], k), t)
    said = f"Cramér's V {v:.3f} of {k} bins against its {k} quantile bins" if numeric else \
        f"Cramér's V {v:.3f} of {k} bins against its {levels} classes"  # fmt: skip
    if numeric:
        rho = float(both["x"].rank().corr(both["t"].rank()))
        said = f"rank correlation {rho:+.3f}, {said}"
        v = max(v, abs(rho))
    if v >= ID_MAX_RELATION:
        return ""
    return (f"too little relation to the target {target.name!r} for a feature: {said} "
            f"(under {ID_MAX_RELATION})")  # fmt: skip


def column_role(series: pd.Series, name: str, target: pd.Series | None = None) -> Role | None:
    """The role of one column (not the target) from its values, or None for an ordinary
    feature. Checked in order: constant (one value and no missing one, or no value at all);
    date; numbers (an identifier if whole, distinct and a sequence, in order in the file,
    so named, or unrelated to the ``target`` when given: :func:`unrelated`); text of distinct
    single words (an identifier: codes, UUIDs); free text; other distinct text (an
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
        steps = np.diff(numbers.to_numpy())
        if (steps >= 0).all() or (steps <= 0).all():
            way = "increasing" if (steps >= 0).all() else "decreasing"
            return Role(name, IDENTIFIER, f"{counted}, whole numbers {low:,}..{high:,} "
                        f"{way} in file order (a row number or a counter)")  # fmt: skip
        if ID_NAME.search(name):
            return Role(name, IDENTIFIER, f"{counted}, whole numbers, and its name says identifier")
        rows_of = series.notna().to_numpy().nonzero()[0][~bad.to_numpy()]  # numbers' rows
        found = "" if target is None else unrelated(numbers, target.iloc[rows_of])
        if found:
            return Role(name, IDENTIFIER, f"{counted}, whole numbers {low:,}..{high:,} in no "
                        f"order, and {found}")  # fmt: skip
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
    y = frame[target] if target in frame.columns else None
    found = (column_role(frame[c], str(c), y) for c in frame.columns if c not in skip)
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
    y = frame[target] if target in frame.columns else None
    lines = []
    for col in frame.columns:
        if col in skip or (include and col not in include):
            continue
        role = column_role(frame[col], str(col), y)
        if role is not None and role.kind in WARNED:
            lines.append(
                f"{col}: {role.why}; it looks like {role.what} and is a feature. "
                "Add it to features.exclude in params.yaml unless it carries meaning"
            )
    return lines

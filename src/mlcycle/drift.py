"""Drift between the data a model was trained on and new records, through a reference profile.

The reference is summarised once, at ``package`` time, into a profile stored in the bundle
(:func:`build_profile`): per raw input its row and missing counts and, for a numeric input, its
PSI bins and counts and 1,001 quantiles; for a categorical one, its category counts; the same for
the model's predictions on the test split and for the target. Monitoring compares a batch with
the profile (:func:`compare_column`), so it needs neither the training file nor the DVC cache.

A column is judged the same way at every batch size, by a statistical test and a minimum
effect (``MonitorConfig``): it drifts when its test (Kolmogorov-Smirnov for numbers, chi-square
for categories, rare reference categories pooled so every expected count is >= 5) gives
``p < alpha / m``, where ``m`` is the number of columns tested (Bonferroni: on clean data the
whole batch raises a false alarm with probability at most ``alpha``), *and* its effect, the
largest change in the share of rows of one range of values, is at least ``min_effect``. For a
number the effect is the KS distance (the largest gap between the two CDFs), for a category the
total variation distance (half the sum of the share changes). On a small batch the test is the
stricter of the two; on a huge one it finds every difference, and the effect keeps a trivial one
from being an alarm. Both are continuous in the batch size: no rule switches at some size. The
PSI of each column is reported beside them.

PSI bins give a heavy single value (the zeros of a zero-inflated column) a bin of its own. A
move of the missing share, and text arriving in a numeric input, are alarms of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlcycle import tasks
from mlcycle.config import MonitorConfig
from mlcycle.features import Signature
from mlcycle.tasks import Decision, as_decision

# scipy.stats is imported in the three tests that use it (KS, chi-square, two proportions): the
# prepare stage imports this module for the profile only, and importing scipy.stats costs a
# process about 0.5 s of CPU (`python -X importtime -c "import mlcycle.stages.prepare"`).

EPS = 1e-4
QUANTILES = 1001  # quantiles of a numeric reference kept for the KS test (ECDF within 0.1 %)
MIN_EXPECTED = 5.0  # chi-square: reference categories expected fewer times are pooled
PROFILE_VERSION = 1
MISSING_BIN = "(missing)"
OTHER_BIN = "(other)"
NEW_BIN = "(new)"


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict for one column (a raw input, the predictions or the target)."""

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float
    psi: float
    drifted: bool
    reference_missing_rate: float
    current_missing_rate: float
    # why it drifted: "distribution" (the test and the effect), "missing" (the missing share
    # moved), "type" (values that are not numbers in a numeric input)
    reasons: tuple[str, ...] = ()
    not_numbers_rate: float = 0.0
    effect: float = 0.0  # the largest change in the share of rows of a range (KS or TV distance)
    psi_noise: float = 0.0  # PSI a clean batch of this size shows by chance (subtracted)
    rows: int = 0
    histogram: dict | None = None  # bins, reference and current shares (for plots)


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    """Population stability index between two distributions over the same bins."""
    ref = np.clip(ref_share, EPS, None)
    cur = np.clip(cur_share, EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _bin_ids(values: np.ndarray, atoms: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value: its atom's index if it is one, else ``len(atoms)`` plus its
    quantile interval."""
    ids = len(atoms) + np.searchsorted(edges, values, side="right")
    if len(atoms):
        at = np.searchsorted(atoms, values)
        hit = (at < len(atoms)) & (atoms[np.minimum(at, len(atoms) - 1)] == values)
        ids[hit] = at[hit]
    return ids


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _interval(lo: float, hi: float) -> str:
    if np.isfinite(lo) and np.isfinite(hi):
        return f"[{_fmt(lo)}, {_fmt(hi)})"
    if np.isfinite(hi):
        return f"< {_fmt(hi)}"
    return f">= {_fmt(lo)}" if np.isfinite(lo) else "all"


def _bin_labels(atoms: Sequence[float], edges: Sequence[float]) -> list[str]:
    """Readable names of the bins of :func:`_bin_ids`: ``= v`` for an atom, intervals after."""
    bounds = [-np.inf, *edges, np.inf]
    intervals = [_interval(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return [f"= {_fmt(a)}" for a in atoms] + intervals


# --- the reference profile ---------------------------------------------------------------------


def as_numbers(values: pd.Series) -> tuple[np.ndarray, int]:
    """A column's values as floats (NaN where missing or not a number), and how many present
    values were not numbers (text in a numeric input)."""
    present = values.notna().to_numpy()
    numbers = np.array(pd.to_numeric(values, errors="coerce"), dtype=float)
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers, int((present & np.isnan(numbers)).sum())


def _texts(values: pd.Series) -> pd.Series:
    return values.astype("string")


# --- profiles: per-partition counts and their reductions --------------------------------------
# A profile is built by :func:`profile` from per-partition steps and reductions; the local
# engine runs them on the whole frame as its one partition (:func:`data_profile`), the Dask
# engine on each partition, reducing the results on its workers.

SKETCH_POINTS = 4001  # quantiles kept per partition when there are several (merge_sketches)
Extract = Callable[[pd.DataFrame], np.ndarray]
# reduce(step, combine, *args): ``step(partition, *args)`` of every partition, combined.
Reduce = Callable[..., Any]
# quantiles({name: extract}, {name: qs}): per name the "linear" quantiles qs of its values.
Quantiles = Callable[[dict[str, Extract], dict[str, np.ndarray]], dict[str, Any]]


def finite_numbers(part: pd.DataFrame, column: str) -> np.ndarray:
    """A column's finite numbers, sorted (as :func:`as_numbers` reads them)."""
    numbers = np.array(pd.to_numeric(part[column], errors="coerce"), dtype=float)
    return np.sort(numbers[np.isfinite(numbers)])


def numbers_except(part: pd.DataFrame, column: str, atoms: np.ndarray) -> np.ndarray:
    """:func:`finite_numbers` that are not ``atoms``."""
    values = finite_numbers(part, column)
    return values[~np.isin(values, atoms)]


def profile_counts(
    part: pd.DataFrame, numeric: list[str], categorical: list[str], bins: int, grid: np.ndarray
) -> dict[str, Any]:
    """One partition's share of the profile: rows; per numeric column its present count, the
    values heavy enough here to be atoms anywhere, and a quantile sketch at ``grid``; per
    categorical column its value counts and missing count."""
    out: dict[str, Any] = {"rows": len(part), "numeric": {}, "categorical": {}}
    for col in numeric:
        values = finite_numbers(part, col)
        uniq, counts = np.unique(values, return_counts=True)
        # A value holding under 1/(2 bins) of the present values in every partition holds
        # under that share of all of them: only values heavy somewhere can be atoms.
        heavy = uniq[counts >= len(values) / (2 * bins)] if len(values) else uniq
        sketch = [(np.quantile(values, grid), len(values))] if len(values) else []
        out["numeric"][col] = (len(values), heavy, sketch)
    for col in categorical:
        texts = _texts(part[col])
        out["categorical"][col] = (texts.value_counts(dropna=True), int(texts.isna().sum()))
    return out


def merge_profile_counts(*parts: dict[str, Any]) -> dict[str, Any]:
    """The :func:`profile_counts` of the union of partitions (candidates and sketches kept)."""
    out: dict[str, Any] = {"rows": sum(p["rows"] for p in parts), "numeric": {}, "categorical": {}}
    for col in parts[0]["numeric"]:
        items = [p["numeric"][col] for p in parts]
        out["numeric"][col] = (
            sum(i[0] for i in items),
            np.unique(np.concatenate([i[1] for i in items])),
            [s for i in items for s in i[2]],
        )
    for col in parts[0]["categorical"]:
        items = [p["categorical"][col] for p in parts]
        counts = pd.concat([i[0] for i in items]).groupby(level=0).sum()
        out["categorical"][col] = (counts, sum(i[1] for i in items))
    return out


def value_counts_of(part: pd.DataFrame, wanted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per column, how often each of ``wanted[column]`` (sorted values) occurs here."""
    out = {}
    for col, values in wanted.items():
        if not len(values):
            out[col] = np.zeros(0, dtype=np.int64)
            continue
        present = finite_numbers(part, col)
        at = np.searchsorted(values, present)
        hit = (at < len(values)) & (values[np.minimum(at, len(values) - 1)] == present)
        out[col] = np.bincount(at[hit], minlength=len(values))
    return out


def bin_counts(part: pd.DataFrame, bins: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Per column, the count of its values in each bin of its (atoms, edges)."""
    return {
        col: np.bincount(_bin_ids(finite_numbers(part, col), atoms, edges),
                         minlength=len(atoms) + len(edges) + 1)
        for col, (atoms, edges) in bins.items()
    }  # fmt: skip


def sum_arrays(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Partitions' arrays added up, key by key."""
    return {k: np.sum([p[k] for p in parts], axis=0) for k in parts[0]}


def merge_sketches(
    sketches: list[tuple[np.ndarray, int]], grid: np.ndarray, qs: np.ndarray
) -> np.ndarray:
    """Quantiles ``qs`` of the union of partitions, each summarised by its quantiles at
    ``grid`` and its size: the smallest sketch value whose combined (size-weighted) CDF reaches
    q. Each partition's CDF is known to 1/(len(grid) - 1), so each quantile's rank is off by at
    most that share of all rows; the smallest and largest values are exact."""
    xs = np.unique(np.concatenate([s for s, _ in sketches]))
    total = sum(n for _, n in sketches)
    cdf = np.zeros(len(xs))
    for values, n in sketches:
        at = np.searchsorted(values, xs, side="right") - 1  # the last grid point at or below x
        cdf += n * np.where(at >= 0, grid[np.maximum(at, 0)], 0.0)
    cdf /= total
    cdf[-1] = 1.0
    return xs[np.minimum(np.searchsorted(cdf, qs - 1e-12, side="left"), len(xs) - 1)]


def profile(
    meta: pd.DataFrame,
    numeric: list[str],
    bins: int,
    reduce: Reduce,
    quantiles: Quantiles,
    partitions: int = 1,
) -> dict[str, Any]:
    """The profile of a data set of ``partitions`` partitions with ``meta``'s columns: every
    column's summary (see :func:`column_profile`), ``numeric`` ones as numbers.

    A numeric column's PSI bins are learnt from its values: values that hold at least half a
    bin's share on their own (the zero of a zero-inflated column, a default value) are bins of
    their own ("atoms"); the rest is cut at its quantiles. Quantile edges alone collapse on
    such a column: capital-gain is 92 % zeros, and every positive value fell into the zero's
    bin, so a rise from 8 % to 54 % non-zero gave PSI 0.

    Counts, missing counts, atoms, bin edges and bin counts are exact (atoms from candidates
    counted exactly, edges from exact quantiles). The 1,001 ``quantiles`` of a numeric column
    are exact for one partition; for several they are merged from :data:`SKETCH_POINTS`
    quantiles of each (:func:`merge_sketches`), each within 1/4,000 of the rows of its rank.
    """
    columns = [str(c) for c in meta.columns]
    categorical = [c for c in columns if c not in numeric]
    final_q = np.linspace(0, 1, QUANTILES)
    grid = final_q if partitions == 1 else np.linspace(0, 1, SKETCH_POINTS)
    first = reduce(profile_counts, merge_profile_counts, numeric, categorical, bins, grid)
    rows, atoms, edges, binned = first["rows"], {}, {}, {}
    if numeric:
        candidates = {c: first["numeric"][c][1] for c in numeric}
        counts = reduce(value_counts_of, sum_arrays, candidates)
        atoms = {
            c: candidates[c][counts[c] >= first["numeric"][c][0] / (2 * bins)] for c in numeric
        }
        # The other values are cut at their quantiles into the bins the atoms leave.
        edge_q = {c: np.linspace(0, 1, max(bins - len(atoms[c]), 1) + 1) for c in numeric}
        extracts = {c: functools.partial(numbers_except, column=c, atoms=atoms[c]) for c in numeric}
        cuts = quantiles(extracts, edge_q)
        edges = {c: np.unique(np.array(cuts[c][1:-1], dtype=float)) for c in numeric}
        binned = reduce(bin_counts, sum_arrays, {c: (atoms[c], edges[c]) for c in numeric})
    features: dict[str, Any] = {}
    for col in columns:
        if col in numeric:
            present, _, sketches = first["numeric"][col]
            if not present:
                qs: Any = []
            elif len(sketches) == 1 and grid is final_q:
                qs = sketches[0][0]
            else:
                qs = merge_sketches(sketches, grid, final_q)
            features[col] = {
                "kind": "numeric",
                "rows": rows,
                "missing": int(rows - present),
                "atoms": [float(a) for a in atoms[col]],
                "edges": [float(e) for e in edges[col]],
                "counts": [int(c) for c in binned[col]],
                "quantiles": [float(q) for q in qs],
            }
        else:
            value_counts, missing = first["categorical"][col]
            features[col] = {
                "kind": "categorical",
                "rows": rows,
                "missing": int(missing),
                "counts": {
                    str(k): int(v)
                    for k, v in sorted(value_counts.items(), key=lambda kv: str(kv[0]))
                },
            }
    return {"rows": rows, "bins": bins, "features": features}


def whole_frame(frame: pd.DataFrame) -> tuple[Reduce, Quantiles]:
    """:func:`profile`'s steps on ``frame`` as the one partition: each step once (the
    reduction of a single result is that result) and numpy's exact quantiles."""

    def reduce(step: Callable[..., Any], _combine: Callable[..., Any], *args: Any) -> Any:
        return step(frame, *args)

    def quantiles(extracts: dict[str, Extract], qs: dict[str, np.ndarray]) -> dict[str, Any]:
        values = {name: extract(frame) for name, extract in extracts.items()}
        return {name: np.quantile(v, qs[name]) if len(v) else [] for name, v in values.items()}

    return reduce, quantiles


def column_profile(values: pd.Series, kind: str, bins: int) -> dict[str, Any]:
    """The reference summary of one column: rows, missing, and the value distribution: for
    ``kind`` "numeric" its PSI bins (atoms and edges, see :func:`profile`), their counts and
    1,001 quantiles; else its category counts."""
    frame = values.to_frame(name="values")
    numeric = ["values"] if kind == "numeric" else []
    return profile(frame, numeric, bins, *whole_frame(frame))["features"]["values"]


def prediction_columns(output: np.ndarray, signature: Signature, decision: Decision) -> dict:
    """The columns prediction drift is measured on: binary, the positive class's probability
    (``score``) and the decided label (``class_mix``); multiclass, the top class's probability
    (``score``) and the label ``decision`` decides; regression, the predicted ``value``. A binary
    ``output`` may also be the positive class's probabilities alone."""
    task = tasks.get(signature.task)
    out = np.asarray(output, dtype=float)
    cols = {task.score_name: pd.Series(task.score(out))}
    if task.classification:
        classes = np.asarray(signature.classes, dtype=object)
        decided = classes[task.decide(out, decision)] if len(out) else np.array([], dtype=object)
        cols["class_mix"] = pd.Series(decided, dtype=object)
    return cols


def profile_decision(profile: dict) -> Decision:
    """The decision a reference profile was built with (profiles from before multiclass
    decisions hold a binary ``threshold``)."""
    return as_decision(profile.get("decision", profile.get("threshold")))


PREDICTION_KINDS = {"score": "numeric", "value": "numeric", "class_mix": "categorical"}


def build_profile(
    reference: pd.DataFrame,
    signature: Signature,
    bins: int,
    *,
    reference_output: np.ndarray | None = None,
    decision: Decision = None,
    performance: dict | None = None,
) -> dict[str, Any]:
    """The reference profile stored in the bundle: every raw input of ``reference`` (the
    training split), its target when present, and the model's predictions
    ``reference_output`` (on unseen rows: the test split) when given. ``performance`` holds the
    primary metric realised and estimated on those rows (see :mod:`mlcycle.estimate`)."""
    _require_columns(reference, signature, "the reference data")
    features = {f.name: column_profile(reference[f.name], f.kind, bins) for f in signature.inputs}
    target = None
    if signature.target in reference.columns:
        kind = "categorical" if signature.is_classification else "numeric"
        target = column_profile(reference[signature.target], kind, bins)
    predictions = None
    if reference_output is not None:
        cols = prediction_columns(reference_output, signature, decision)
        predictions = {
            name: column_profile(values, PREDICTION_KINDS[name], bins)
            for name, values in cols.items()
        }
    return {
        "version": PROFILE_VERSION,
        "rows": len(reference),
        "bins": bins,
        "task": signature.task,
        "decision": decision,
        "features": features,
        "target": target,
        "predictions": predictions,
        "performance": performance,
    }


def _require_columns(frame: pd.DataFrame, signature: Signature, name: str) -> None:
    missing = [c for c in signature.input_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lack column(s) {missing} that the model uses")


# --- comparing a batch with the profile -----------------------------------------------------------


def _ks_against_quantiles(
    quantiles: np.ndarray, n_ref: int, cur: np.ndarray
) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value of ``cur`` against a reference known by
    its quantiles (its ECDF to within 1 / (QUANTILES - 1))."""
    cur = np.sort(cur)
    grid = np.union1d(cur, quantiles)
    f_cur = np.searchsorted(cur, grid, side="right") / len(cur)
    probs = np.linspace(0, 1, len(quantiles))
    at = np.searchsorted(quantiles, grid, side="right") - 1
    f_ref = np.where(at >= 0, probs[np.clip(at, 0, None)], 0.0)
    d = float(np.max(np.abs(f_cur - f_ref))) if len(grid) else 0.0
    en = len(cur) * n_ref / (len(cur) + n_ref)
    from scipy import stats  # here: see the imports

    p = float(stats.kstwo.sf(d, max(int(round(en)), 1))) if d > 0 else 1.0
    return d, p


# A column's comparison: test, statistic, p-value, PSI, PSI noise, effect, histogram.
Compared = tuple[str, float, float, float, float, float, dict]


def _numeric(prof: dict, cur: np.ndarray) -> Compared:
    atoms, edges = np.asarray(prof["atoms"]), np.asarray(prof["edges"])
    ref_counts = np.asarray(prof["counts"], dtype=float)
    n_ref = int(ref_counts.sum())
    labels = _bin_labels(atoms, edges)
    cur_counts = np.bincount(_bin_ids(cur, atoms, edges), minlength=len(labels)).astype(float)
    ref_share = ref_counts / n_ref if n_ref else np.zeros(len(labels))
    cur_share = cur_counts / len(cur) if len(cur) else np.zeros(len(labels))
    hist = {"bins": labels, "reference": ref_share.tolist(), "current": cur_share.tolist()}
    if n_ref == 0 or len(cur) == 0:
        return "ks", 0.0, 1.0, 0.0, 0.0, 0.0, hist
    d, p = _ks_against_quantiles(np.asarray(prof["quantiles"]), n_ref, cur)
    noise = _psi_noise(int(((ref_counts + cur_counts) > 0).sum()), n_ref, len(cur))
    return "ks", d, p, psi(ref_share, cur_share), noise, d, hist


def _categorical(prof: dict, cur: pd.Series) -> Compared:
    ref_counts = pd.Series(prof["counts"], dtype=float)
    cur_counts = _texts(cur).value_counts(dropna=True).astype(float)
    cur_counts.index = cur_counts.index.astype(str)
    levels = sorted(set(ref_counts.index) | set(cur_counts.index))
    r = ref_counts.reindex(levels, fill_value=0.0)
    c = cur_counts.reindex(levels, fill_value=0.0)
    n_ref, n_cur = r.sum(), c.sum()
    r_share = (r / n_ref) if n_ref else r * 0
    c_share = (c / n_cur) if n_cur else c * 0
    hist = {"bins": levels, "reference": r_share.tolist(), "current": c_share.tolist()}
    if n_ref == 0 or n_cur == 0:
        return "chi2", 0.0, 1.0, 0.0, 0.0, 0.0, hist
    value = psi(r_share.to_numpy(), c_share.to_numpy())
    noise = _psi_noise(len(levels), int(n_ref), int(n_cur))
    effect = float(np.abs(c_share - r_share).sum() / 2)  # total variation distance
    # The test: categories new to the reference pooled into one, and reference categories
    # expected fewer than MIN_EXPECTED times in this batch into another, so the chi-square
    # approximation holds on a small batch.
    new = r == 0
    rare = ~new & (r_share * n_cur < MIN_EXPECTED)
    kept = ~new & ~rare
    table = [np.append(r[kept].to_numpy(), [r[rare].sum(), r[new].sum()])]
    table.append(np.append(c[kept].to_numpy(), [c[rare].sum(), c[new].sum()]))
    t = np.vstack(table)
    t = t[:, t.sum(axis=0) > 0]
    if t.shape[1] < 2:
        return "chi2", 0.0, 1.0, value, noise, effect, hist
    from scipy import stats  # here: see the imports

    res = stats.chi2_contingency(t, correction=False)
    return "chi2", float(res.statistic), float(res.pvalue), value, noise, effect, hist


def _psi_noise(bins: int, n_ref: int, n_cur: int) -> float:
    """The PSI two samples of one distribution show by chance: (bins - 1)(1/n + 1/N), its
    expectation (PSI is close to a chi-square statistic over the effective sample size). A
    200-row batch has ~0.05 from this alone over 10 bins, ~0.2 over Adult's 41 countries."""
    if n_ref == 0 or n_cur == 0:
        return 0.0
    return max(bins - 1, 0) * (1 / n_ref + 1 / n_cur)


def proportions_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a two-proportion z-test (1.0 when there is nothing to test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if k1 / n1 == k2 / n2 else 0.0
    z = (k2 / n2 - k1 / n1) / se
    from scipy import stats  # here: see the imports

    return float(2 * stats.norm.sf(abs(z)))


def compare_column(
    name: str, prof: dict, current: pd.Series, settings: MonitorConfig, tests: int = 1
) -> FeatureDrift:
    """Judge one column of a batch against its reference profile; ``tests`` is how many
    columns are judged together (the Bonferroni divisor of ``alpha``). The same rule at every
    batch size: a significant test and an effect of at least ``min_effect``."""
    kind = prof["kind"]
    n = len(current)
    level = settings.alpha / max(tests, 1)
    not_numbers = 0
    if kind == "numeric":
        numbers, not_numbers = as_numbers(current)
        missing = int(np.isnan(numbers).sum()) - not_numbers
        test, stat, p, shift, noise, effect, hist = _numeric(prof, numbers[~np.isnan(numbers)])
    else:
        missing = int(current.isna().sum())
        test, stat, p, shift, noise, effect, hist = _categorical(prof, current)
    reasons = []
    if p < level and effect >= settings.min_effect:
        reasons.append("distribution")
    ref_rows, ref_missing = prof["rows"], prof["missing"]
    ref_rate = ref_missing / ref_rows if ref_rows else 0.0
    cur_rate = missing / n if n else 0.0
    if abs(cur_rate - ref_rate) >= settings.missing_threshold and (
        proportions_p(ref_missing, ref_rows, missing, n) < level
    ):
        reasons.append("missing")
    not_numbers_rate = not_numbers / n if n else 0.0
    if not_numbers_rate >= settings.missing_threshold:
        reasons.append("type")
    if ref_missing or missing:
        hist = {
            "bins": [*hist["bins"], MISSING_BIN],
            "reference": [s * (1 - ref_rate) for s in hist["reference"]] + [ref_rate],
            "current": [s * (1 - cur_rate) for s in hist["current"]] + [cur_rate],
        }
    hist = {k: [round(x, 6) for x in v] if k != "bins" else v for k, v in hist.items()}
    return FeatureDrift(
        feature=name,
        kind=kind,
        test=test,
        statistic=round(stat, 6),
        p_value=float(f"{p:.6g}"),
        psi=round(shift, 6),
        psi_noise=round(noise, 6),
        drifted=bool(reasons),
        reference_missing_rate=round(ref_rate, 6),
        current_missing_rate=round(cur_rate, 6),
        reasons=tuple(reasons),
        not_numbers_rate=round(not_numbers_rate, 6),
        effect=round(effect, 6),
        rows=n,
        histogram=hist,
    )


def compare_features(
    profile: dict, current: pd.DataFrame, signature: Signature, settings: MonitorConfig,
    tests: int | None = None,
) -> list[FeatureDrift]:  # fmt: skip
    """Judge every raw input of the signature in ``current`` against the profile.

    Raw inputs, not derived features: they are what callers send and what changes upstream;
    a derived feature drifts only if its inputs do. ``tests`` (default: the number of inputs)
    is the Bonferroni divisor.
    """
    _require_columns(current, signature, "new records")
    m = tests if tests is not None else len(signature.inputs)
    return [
        compare_column(f.name, profile["features"][f.name], current[f.name], settings, m)
        for f in signature.inputs
    ]


def detect(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    signature: Signature,
    settings: MonitorConfig | None = None,
) -> list[FeatureDrift]:
    """Compare every raw input of ``current`` with a ``reference`` frame (profiled here)."""
    settings = settings or MonitorConfig()
    _require_columns(current, signature, "new records")
    profile = build_profile(reference, signature, settings.bins)
    return compare_features(profile, current, signature, settings)


def batch_rule(settings: MonitorConfig, rows: int, tests: int) -> str:
    """The whole-batch verdict's rule, in words, for a batch of ``rows`` rows."""
    return (
        f"A batch of {rows:,} rows drifts when any input, the predictions or the target drifts. "
        f"A column drifts when its test (KS for numbers, chi-square for categories) gives "
        f"p < {settings.alpha} / {tests} (Bonferroni over the {tests} columns judged, so a clean "
        f"batch raises a false alarm with probability at most {settings.alpha}) and the share of "
        f"rows of some range of its values (numbers up to a cut, a set of categories) moved by "
        f"{settings.min_effect:.0%} or more (KS distance, total variation distance); when its "
        f"missing share moves by {settings.missing_threshold:.0%} or more, significantly; or, "
        f"for a numeric input, when {settings.missing_threshold:.0%} or more of its values are "
        f"not numbers. The same rule at every batch size."
    )


def summary(results: list[FeatureDrift], n_reference: int, n_current: int) -> dict:
    """A JSON-ready summary: which features drifted, and each feature's figures."""
    drifted = [r.feature for r in results if r.drifted]
    return {
        "reference_rows": n_reference,
        "current_rows": n_current,
        "drifted_features": drifted,
        "drift_share": round(len(drifted) / len(results), 6) if results else 0.0,
        "features": [as_dict(r) for r in results],
    }


def as_dict(result: FeatureDrift) -> dict:
    """A verdict as JSON-ready data (reasons as a list)."""
    out = asdict(result)
    out["reasons"] = list(result.reasons)
    return out


# --- Training data between two revisions (``mlcycle report``) --------------------------------


def data_profile(
    frame: pd.DataFrame,
    bins: int,
    steps: tuple[Reduce, Quantiles] | None = None,
    partitions: int = 1,
) -> dict[str, Any]:
    """A split's profile, small enough for git: every column's :func:`column_profile` (numbers
    with 1,001 quantiles at 6 significant digits, categories cut by :func:`capped_counts`), so
    two revisions' training data can be compared from git alone. ``steps`` run
    :func:`profile`'s steps over ``partitions`` partitions elsewhere (``frame`` is then their
    empty meta); by default on ``frame``."""
    numeric = [
        str(c)
        for c in frame.columns
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    ]
    doc = profile(frame, numeric, bins, *(steps or whole_frame(frame)), partitions)
    for name, feature in doc["features"].items():
        if name in numeric:
            feature["quantiles"] = [float(f"{q:.6g}") for q in feature["quantiles"]]
        elif len(feature["counts"]) > PROFILE_CATEGORIES:
            feature.update(capped_counts(feature["counts"]))
    return doc


PROFILE_CATEGORIES = 100
"""A column of the data profile lists at most this many categories, the most frequent (ties:
in order of name); the others are counted together under :data:`OTHER_VALUES`, and
``distinct`` says how many there were. An identifier or free-text column would otherwise list
every value in git (a title column made the profile 1.7 MB); a real category beyond 100 levels
still compares: its rare levels move together."""
OTHER_VALUES = "(other values)"


def capped_counts(counts: dict[str, int]) -> dict[str, Any]:
    """``counts`` (category -> rows) cut to the :data:`PROFILE_CATEGORIES` most frequent, the
    rest added up under :data:`OTHER_VALUES`; with ``distinct``, how many categories there
    were."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    kept = dict(sorted(ranked[:PROFILE_CATEGORIES]))
    kept[OTHER_VALUES] = sum(n for _, n in ranked[PROFILE_CATEGORIES:])
    return {"counts": kept, "distinct": len(counts)}


def _ecdf_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest gap between the CDFs two quantile arrays describe (the KS distance)."""
    grid = np.union1d(a, b)
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb))) if len(grid) else 0.0


def compare_profiles(base: dict, head: dict, settings: MonitorConfig) -> dict[str, Any]:
    """How the data behind ``head`` differs from the data behind ``base`` (two
    :func:`data_profile` documents), column by column.

    Both are whole training splits, so every shift is "significant": what matters is its size:
    the PSI over the base's bins, minus the PSI two samples of one distribution show by chance,
    against ``monitor.psi_threshold``; and a move of the missing share of
    ``monitor.missing_threshold`` or more. A numeric head is placed in the base's bins through
    its quantiles (to within 0.1 % of its rows).
    """
    b_feats, h_feats = base.get("features") or {}, head.get("features") or {}
    columns = []
    for name in [n for n in b_feats if n in h_feats]:
        b, h = b_feats[name], h_feats[name]
        row: dict[str, Any] = {"column": name, "kind": b["kind"]}
        if b["kind"] != h["kind"]:
            row.update(drifted=True, reasons=[f"type {b['kind']} → {h['kind']}"], psi=None)
            columns.append(row)
            continue
        if b["kind"] == "numeric":
            atoms, edges = np.asarray(b["atoms"]), np.asarray(b["edges"])
            ref = np.asarray(b["counts"], dtype=float)
            q = np.asarray(h["quantiles"], dtype=float)
            cur = np.bincount(_bin_ids(q, atoms, edges), minlength=len(ref)).astype(float)
            n_levels = len(ref)
            row["ks"] = round(_ecdf_distance(np.asarray(b["quantiles"], dtype=float), q), 6)
            row["median"] = [_median(b), _median(h)]
        else:
            levels = sorted(set(b["counts"]) | set(h["counts"]))
            ref = np.asarray([b["counts"].get(k, 0) for k in levels], dtype=float)
            cur = np.asarray([h["counts"].get(k, 0) for k in levels], dtype=float)
            n_levels = len(levels)
            row["new"] = sorted(set(h["counts"]) - set(b["counts"]))[:10]
            row["gone"] = sorted(set(b["counts"]) - set(h["counts"]))[:10]
        n_b, n_h = ref.sum(), cur.sum()
        shift = psi(ref / n_b, cur / n_h) if n_b and n_h else 0.0
        noise = _psi_noise(n_levels, int(h["rows"] - h["missing"]), int(b["rows"] - b["missing"]))
        miss_b = b["missing"] / b["rows"] if b["rows"] else 0.0
        miss_h = h["missing"] / h["rows"] if h["rows"] else 0.0
        reasons = []
        if shift - noise >= settings.psi_threshold:
            reasons.append("distribution")
        if abs(miss_h - miss_b) >= settings.missing_threshold:
            reasons.append("missing")
        row.update(
            psi=round(shift, 6),
            psi_noise=round(noise, 6),
            missing=[round(miss_b, 6), round(miss_h, 6)],
            drifted=bool(reasons),
            reasons=reasons,
        )
        columns.append(row)
    return {
        "rows": [base.get("rows"), head.get("rows")],
        "added": [n for n in h_feats if n not in b_feats],
        "removed": [n for n in b_feats if n not in h_feats],
        "columns": sorted(columns, key=lambda r: -(r.get("psi") or float("inf"))),
        "rule": (
            f"a column moved if its PSI minus chance noise reaches {settings.psi_threshold}"
            f" or its missing share moves by {settings.missing_threshold} or more"
        ),
    }


def _median(prof: dict) -> float | None:
    q = prof.get("quantiles") or []
    return float(q[len(q) // 2]) if q else None

"""Per-feature drift between a reference sample (the training data) and new records.

Numeric features: two-sample Kolmogorov-Smirnov test. Categorical features: chi-square test of
the category counts. Large samples make tiny shifts "significant", so a feature is reported as
drifted only when the test is significant *and* the population stability index (PSI), an effect
size, is at least ``psi_threshold``. PSI bins give a heavy single value (the zeros of a
zero-inflated column) a bin of its own. A move of the missing share, and text arriving in a
numeric input, are alarms of their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mlcycle.features import Signature

EPS = 1e-4
MISSING_THRESHOLD = 0.05  # a move of the missing share (absolute) that is an alarm of its own


@dataclass(frozen=True)
class FeatureDrift:
    """The drift verdict for one feature."""

    feature: str
    kind: str
    test: str
    statistic: float
    p_value: float
    psi: float
    drifted: bool
    reference_missing_rate: float
    current_missing_rate: float
    # why it drifted: "distribution" (test and PSI), "missing" (the missing share moved),
    # "type" (values that are not numbers in a numeric input); empty when it did not
    reasons: tuple[str, ...] = ()
    not_numbers_rate: float = 0.0


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


def numeric_bins(ref: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """PSI bins learnt from the reference: values that hold at least half a bin's share on
    their own (the zero of a zero-inflated column, a default value) are bins of their own
    ("atoms"); the rest is cut at its quantiles. Quantile edges alone collapse on such a
    column: capital-gain is 92 % zeros, and every positive value fell into the zero's bin,
    so a rise from 8 % to 54 % non-zero gave PSI 0. Returns (atoms, inner edges)."""
    values, counts = np.unique(ref, return_counts=True)
    heavy = counts >= len(ref) / (2 * bins)
    atoms = values[heavy]
    rest = ref[~np.isin(ref, atoms)]
    n_bins = max(bins - len(atoms), 1)
    edges = (
        np.unique(np.quantile(rest, np.linspace(0, 1, n_bins + 1))[1:-1])
        if len(rest)
        else np.array([])
    )
    return atoms, edges


def _numeric(ref: pd.Series, cur: pd.Series, bins: int) -> tuple[str, float, float, float]:
    r, c = ref.dropna().to_numpy(float), cur.dropna().to_numpy(float)
    if len(r) == 0 or len(c) == 0:
        return "ks", 0.0, 1.0, 0.0
    res = stats.ks_2samp(r, c)
    atoms, edges = numeric_bins(r, bins)
    size = len(atoms) + len(edges) + 1
    r_share = np.bincount(_bin_ids(r, atoms, edges), minlength=size) / len(r)
    c_share = np.bincount(_bin_ids(c, atoms, edges), minlength=size) / len(c)
    return "ks", float(res.statistic), float(res.pvalue), psi(r_share, c_share)


def _proportions_p(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value of a two-proportion z-test (1.0 when there is nothing to test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if k1 / n1 == k2 / n2 else 0.0
    z = (k2 / n2 - k1 / n1) / se
    return float(2 * stats.norm.sf(abs(z)))


def _categorical(ref: pd.Series, cur: pd.Series) -> tuple[str, float, float, float]:
    r = ref.astype("string").fillna("<missing>")
    c = cur.astype("string").fillna("<missing>")
    levels = sorted(set(r.unique()) | set(c.unique()))
    r_counts = r.value_counts().reindex(levels, fill_value=0).to_numpy(float)
    c_counts = c.value_counts().reindex(levels, fill_value=0).to_numpy(float)
    value = psi(r_counts / r_counts.sum(), c_counts / c_counts.sum())
    table = np.vstack([r_counts, c_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return "chi2", 0.0, 1.0, value
    res = stats.chi2_contingency(table)
    return "chi2", float(res.statistic), float(res.pvalue), value


def detect(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    signature: Signature,
    alpha: float = 0.01,
    psi_threshold: float = 0.1,
    bins: int = 10,
    missing_threshold: float = MISSING_THRESHOLD,
) -> list[FeatureDrift]:
    """Compare every raw input of the signature in ``current`` with ``reference``.

    Raw inputs, not derived features: they are what callers send and what changes upstream;
    a derived feature drifts only if its inputs do. Besides the distribution of the values
    present, a feature drifts when its missing share moves by ``missing_threshold`` or more
    (and significantly, at ``alpha``), and a numeric input when values arrive that are not
    numbers (as much as ``missing_threshold`` of them): a column that turns all null or all
    text is an alarm of its own, not "no drift" because nothing is left to compare.
    """
    for name, frame in (("new records", current), ("the reference data", reference)):
        missing = [c for c in signature.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lack column(s) {missing} that the model uses")
    out = []
    for feat in signature.inputs:
        ref, cur = reference[feat.name], current[feat.name]
        not_numbers = 0.0
        if feat.kind == "numeric":
            present = cur.notna()
            cur = pd.to_numeric(cur, errors="coerce")
            not_numbers = float((present & cur.isna()).mean()) if len(cur) else 0.0
            test, stat, p, shift = _numeric(ref, cur, bins)
        else:
            test, stat, p, shift = _categorical(ref, cur)
        ref_missing = float(ref.isna().mean()) if len(ref) else 0.0
        cur_missing = float(cur.isna().mean()) if len(cur) else 0.0
        reasons = []
        if p < alpha and shift >= psi_threshold:
            reasons.append("distribution")
        moved = abs(cur_missing - ref_missing) >= missing_threshold
        k_ref, k_cur = int(ref.isna().sum()), int(cur.isna().sum())
        if moved and _proportions_p(k_ref, len(ref), k_cur, len(cur)) < alpha:
            reasons.append("missing")
        if not_numbers >= missing_threshold:
            reasons.append("type")
        out.append(
            FeatureDrift(
                feature=feat.name,
                kind=feat.kind,
                test=test,
                statistic=round(stat, 6),
                p_value=float(f"{p:.6g}"),
                psi=round(shift, 6),
                drifted=bool(reasons),
                reference_missing_rate=round(ref_missing, 6),
                current_missing_rate=round(cur_missing, 6),
                reasons=tuple(reasons),
                not_numbers_rate=round(not_numbers, 6),
            )
        )
    return out


def summary(results: list[FeatureDrift], n_reference: int, n_current: int) -> dict:
    """A JSON-ready summary: which features drifted, and each feature's figures."""
    drifted = [r.feature for r in results if r.drifted]
    return {
        "reference_rows": n_reference,
        "current_rows": n_current,
        "drifted_features": drifted,
        "drift_share": round(len(drifted) / len(results), 6) if results else 0.0,
        "features": [asdict(r) for r in results],
    }


def markdown_report(doc: dict, alpha: float, psi_threshold: float) -> str:
    """A readable report of :func:`summary`'s output."""
    lines = [
        "# Drift report",
        "",
        f"Reference: {doc['reference_rows']} rows; new batch: {doc['current_rows']} rows.",
        f"A feature drifts when its test's p-value < {alpha} and PSI >= {psi_threshold} "
        f"(distribution), when its missing share moves by {MISSING_THRESHOLD:.0%} or more "
        "(missing), or when a numeric input receives values that are not numbers (type).",
        "",
        f"**Drifted features ({len(doc['drifted_features'])}):** "
        + (", ".join(doc["drifted_features"]) or "none"),
        "",
        "| feature | kind | test | statistic | p-value | PSI | missing (ref → new) | drifted |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for f in sorted(doc["features"], key=lambda f: -f["psi"]):
        lines.append(
            f"| {f['feature']} | {f['kind']} | {f['test']} | {f['statistic']:.4f} | "
            f"{f['p_value']:.3g} | {f['psi']:.4f} | {f['reference_missing_rate']:.1%} → "
            f"{f['current_missing_rate']:.1%} | "
            + (f"**yes** ({', '.join(f.get('reasons') or ())})" if f["drifted"] else "no")
            + " |"
        )
    return "\n".join(lines) + "\n"

"""Per-feature drift between a reference sample (the training data) and new records.

Numeric features: two-sample Kolmogorov-Smirnov test. Categorical features: chi-square test of
the category counts. Large samples make tiny shifts "significant", so a feature is reported as
drifted only when the test is significant *and* the population stability index (PSI), an effect
size, is at least ``psi_threshold``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from mlcycle.features import Signature

EPS = 1e-4


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


def psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    """Population stability index between two distributions over the same bins."""
    ref = np.clip(ref_share, EPS, None)
    cur = np.clip(cur_share, EPS, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _numeric(ref: pd.Series, cur: pd.Series, bins: int) -> tuple[str, float, float, float]:
    r, c = ref.dropna().to_numpy(float), cur.dropna().to_numpy(float)
    if len(r) == 0 or len(c) == 0:
        return "ks", 0.0, 1.0, 0.0
    res = stats.ks_2samp(r, c)
    edges = np.unique(np.quantile(r, np.linspace(0, 1, bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    if len(edges) < 3:  # (nearly) constant reference: compare on/off its single value
        edges = np.array([-np.inf, float(np.median(r)), np.inf])
    r_share = np.histogram(r, edges)[0] / len(r)
    c_share = np.histogram(c, edges)[0] / len(c)
    return "ks", float(res.statistic), float(res.pvalue), psi(r_share, c_share)


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
) -> list[FeatureDrift]:
    """Compare every raw input of the signature in ``current`` with ``reference``.

    Raw inputs, not derived features: they are what callers send and what changes upstream;
    a derived feature drifts only if its inputs do.
    """
    for name, frame in (("new records", current), ("the reference data", reference)):
        missing = [c for c in signature.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{name} lack column(s) {missing} that the model uses")
    out = []
    for feat in signature.inputs:
        ref, cur = reference[feat.name], current[feat.name]
        if feat.kind == "numeric":
            cur = pd.to_numeric(cur, errors="coerce")
            test, stat, p, shift = _numeric(ref, cur, bins)
        else:
            test, stat, p, shift = _categorical(ref, cur)
        out.append(
            FeatureDrift(
                feature=feat.name,
                kind=feat.kind,
                test=test,
                statistic=round(stat, 6),
                p_value=float(f"{p:.6g}"),
                psi=round(shift, 6),
                drifted=bool(p < alpha and shift >= psi_threshold),
                reference_missing_rate=round(float(ref.isna().mean()), 6),
                current_missing_rate=round(float(cur.isna().mean()), 6),
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
        f"A feature drifts when its test's p-value < {alpha} and PSI >= {psi_threshold}.",
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
            f"{f['current_missing_rate']:.1%} | {'**yes**' if f['drifted'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"

"""Drift detection on Adult: false alarms on clean samples, and the shifts that must be seen.

Reference: Adult's training file (``data/external/adult/adult.data.gz``). Samples: Adult's test
file, resampled (with replacement for 10,000 rows). The model's raw inputs come from the bundle's
signature. Printed, per sample size, the share of 20 clean samples in which
:func:`mlcycle.drift.detect` flags any feature (the false-alarm rate), and the share of 20
shifted samples in which it flags the shifted feature (the detection rate), for:

- age + 5 years;
- occupation: one category's share doubled;
- capital-gain: non-zero share raised to 50 %;
- hours-per-week: 20 % missing;
- workclass: a new category in 10 % of the rows;

next to the same with the old quantile-only PSI bins (the baseline: a column's heavy value
shared a bin with its neighbours). Positives sampled twice as often is not measured: the monitor
does not compare predictions yet.

    python bench/bench_drift.py [--bundle models/bundle] [--samples 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle import config, drift
from mlcycle.bundle import load_bundle

ROOT = Path(__file__).resolve().parents[1]


def read_adult(name: str, columns: list[str]) -> pd.DataFrame:
    frame = pd.read_csv(
        ROOT / "data/external/adult" / name,
        header=None,
        names=columns,
        skipinitialspace=True,
        na_values="?",
        comment="|",
    )
    return frame.dropna(how="all")


def age(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return s.assign(age=s["age"] + 5)


def occupation(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    s = s.copy()
    share = (s["occupation"] == "Sales").mean()
    others = np.flatnonzero((s["occupation"] != "Sales").to_numpy())
    turn = rng.choice(others, size=int(share * len(s)), replace=False)
    s.iloc[turn, s.columns.get_loc("occupation")] = "Sales"
    return s


def capital_gain(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    s = s.copy()
    gain = s["capital-gain"].to_numpy(float)
    positive = gain[gain > 0]
    zeros = np.flatnonzero(gain == 0)
    need = max(int(0.5 * len(gain)) - int((gain > 0).sum()), 0)
    turn = rng.choice(zeros, size=min(need, len(zeros)), replace=False)
    gain[turn] = rng.choice(positive, size=len(turn))
    s["capital-gain"] = gain
    return s


def hours_missing(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    s = s.copy()
    s["hours-per-week"] = s["hours-per-week"].astype(float)
    turn = rng.choice(len(s), size=int(0.2 * len(s)), replace=False)
    s.iloc[turn, s.columns.get_loc("hours-per-week")] = np.nan
    return s


def new_category(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    s = s.copy()
    turn = rng.choice(len(s), size=int(0.1 * len(s)), replace=False)
    s.iloc[turn, s.columns.get_loc("workclass")] = "Space-agency"
    return s


SHIFTS: dict[str, tuple[str, Callable]] = {
    "age +5 years": ("age", age),
    "occupation: Sales doubled": ("occupation", occupation),
    "capital-gain 50 % non-zero": ("capital-gain", capital_gain),
    "hours-per-week 20 % missing": ("hours-per-week", hours_missing),
    "workclass: new category 10 %": ("workclass", new_category),
}


def quantile_only(monkey: bool) -> None:
    """Switch :func:`drift.numeric_bins` to the old quantile-only edges (the baseline)."""
    if not monkey:
        drift.numeric_bins = ORIGINAL_BINS
        return

    def old(ref: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))[1:-1]
        return np.array([]), edges

    drift.numeric_bins = old


ORIGINAL_BINS = drift.numeric_bins


def rate(
    args: argparse.Namespace,
    pool: pd.DataFrame,
    reference: pd.DataFrame,
    sig: object,
    rng: np.random.Generator,
    n: int,
    change: Callable | None,
    feature: str | None,
) -> float:
    """Share of samples of ``n`` rows (shifted by ``change``) in which drift is flagged: on
    any feature (``feature`` None), else on ``feature``."""
    hits = 0
    for _ in range(args.samples):
        sample = pool.iloc[rng.choice(len(pool), size=n, replace=n > len(pool))]
        if change is not None:
            sample = change(sample.reset_index(drop=True), rng)
        found = drift.detect(reference, sample, sig)
        hits += (
            any(r.drifted for r in found)
            if feature is None
            else any(r.drifted and r.feature == feature for r in found)
        )
    return hits / args.samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/bundle"))
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    sig = load_bundle(args.bundle).signature
    columns = list(config.load(ROOT / "params.yaml").data.columns)
    reference = read_adult("adult.data.gz", columns)
    pool = read_adult("adult.test.gz", columns)
    print(f"reference {len(reference):,} rows, sample pool {len(pool):,} rows, "
          f"{args.samples} samples per cell")  # fmt: skip
    header = f"{'':<40}" + "".join(f"{n:>10,}" for n in (200, 1000, 10000))
    for label, baseline in (("drift.detect", False), ("baseline: quantile-only bins", True)):
        quantile_only(baseline)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        print(f"\n{label}\n{header}")

        row = [rate(args, pool, reference, sig, rng, n, None, None) for n in (200, 1000, 10000)]
        print(f"{'false alarms (clean samples)':<40}" + "".join(f"{v:>10.0%}" for v in row))
        for name, (feature, change) in SHIFTS.items():
            row = [rate(args, pool, reference, sig, rng, n, change, feature) for n in (1000, 10000)]
            print(f"{'detected: ' + name:<40}{'':>10}" + "".join(f"{v:>10.0%}" for v in row))
        print(f"({time.perf_counter() - start:.0f} s)")
    quantile_only(False)


if __name__ == "__main__":
    main()

"""Drift detection on Adult: false alarms on clean samples, and the shifts that must be seen.

Reference: the bundle's reference profile (Adult's training split, and the model's predictions
on the test split). Samples: Adult's test file, resampled (with replacement for 10,000 rows),
scored by the bundle's model and judged by :func:`mlcycle.monitor.run`, the code behind
``mlcycle monitor``. Printed, per sample size, the share of 20 clean samples in which the batch
verdict is "drift" (the false-alarm rate), and the share of 20 shifted samples in which the
shifted column is flagged (the detection rate), for:

- age + 5 years;
- occupation: one category's share doubled;
- capital-gain: non-zero share raised to 50 %;
- hours-per-week: 20 % missing;
- workclass: a new category in 10 % of the rows;
- positives (income >50K) sampled twice as often, seen through the predictions;

under the sample-size rule of ``params.yaml`` (tests below ``monitor.large_batch`` rows, PSI from
there), next to the two rules it chooses between, each at every size: tests only, PSI only.

    python bench/bench_drift.py [--bundle models/bundle] [--samples 20]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle import config, monitor, predict
from mlcycle.bundle import Bundle, load_bundle

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


def positives_twice(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    weight = np.where(s["income"].astype(str).str.startswith(">50K"), 2.0, 1.0)
    pick = rng.choice(len(s), size=len(s), replace=True, p=weight / weight.sum())
    return s.iloc[pick].reset_index(drop=True)


SHIFTS: dict[str, tuple[str, Callable]] = {
    "age +5 years": ("age", age),
    "occupation: Sales doubled": ("occupation", occupation),
    "capital-gain 50 % non-zero": ("capital-gain", capital_gain),
    "hours-per-week 20 % missing": ("hours-per-week", hours_missing),
    "workclass: new category 10 %": ("workclass", new_category),
    "positives sampled twice (predictions)": ("(predictions)", positives_twice),
}


def flagged(doc: dict, feature: str | None) -> bool:
    """The batch verdict (``feature`` None), or whether ``feature`` was flagged."""
    if feature is None:
        return doc["drift"]
    if feature == "(predictions)":
        return bool(doc["predictions"] and doc["predictions"]["drifted"])
    return feature in doc["drifted_features"]


def rate(
    args: argparse.Namespace,
    pool: pd.DataFrame,
    bundle: Bundle,
    settings: config.MonitorConfig,
    rng: np.random.Generator,
    n: int,
    change: Callable | None,
    feature: str | None,
) -> float:
    """Share of samples of ``n`` rows (shifted by ``change``) in which drift is flagged."""
    objectives = monitor.objectives_from_bundle(bundle.metadata)
    hits = 0
    for _ in range(args.samples):
        sample = pool.iloc[rng.choice(len(pool), size=n, replace=n > len(pool))]
        sample = sample.reset_index(drop=True)
        if change is not None:
            sample = change(sample, rng)
        output = predict.score(bundle, sample).output
        doc = monitor.run(
            bundle.profile, bundle.signature, objectives, settings, sample, output, None,
            model={}, window={},
        )  # fmt: skip
        hits += flagged(doc, feature)
    return hits / args.samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "models/bundle"))
    ap.add_argument("--samples", type=int, default=20)
    args = ap.parse_args()
    bundle = load_bundle(args.bundle)
    params = config.load(ROOT / "params.yaml")
    pool = read_adult("adult.test.gz", list(params.data.columns))
    pool["income"] = pool["income"].str.rstrip(".")
    cfg = params.monitor
    print(
        f"reference {bundle.profile['rows']:,} rows (the training split), sample pool "
        f"{len(pool):,} rows (adult.test), {args.samples} samples per cell; alpha {cfg.alpha}, "
        f"psi_threshold {cfg.psi_threshold}, large_batch {cfg.large_batch:,}"
    )
    sizes = (200, 1000, 10000)
    header = f"{'':<44}" + "".join(f"{n:>10,}" for n in sizes)
    rules = {
        f"mlcycle monitor (tests below {cfg.large_batch:,} rows, PSI from there)": cfg,
        "baseline: tests at every size": cfg.model_copy(update={"large_batch": 10**12}),
        "baseline: PSI at every size": cfg.model_copy(update={"large_batch": 1}),
    }
    for label, settings in rules.items():
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        print(f"\n{label}\n{header}")
        row = [rate(args, pool, bundle, settings, rng, n, None, None) for n in sizes]
        print(f"{'false alarms (clean samples)':<44}" + "".join(f"{v:>10.0%}" for v in row))
        for name, (feature, change) in SHIFTS.items():
            row = [rate(args, pool, bundle, settings, rng, n, change, feature) for n in sizes[1:]]
            print(f"{'detected: ' + name:<44}{'':>10}" + "".join(f"{v:>10.0%}" for v in row))
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""Drift detection on Adult: false alarms on clean samples, and the shifts that must be seen.

Reference: the bundle's reference profile (Adult's training split, and the model's predictions
on the test split). Samples: Adult's test file, resampled (with replacement from 10,000 rows),
scored by the bundle's model and judged by :func:`mlcycle.monitor.run`, the code behind
``mlcycle monitor``. Printed, per sample size, the share of 20 clean samples in which the batch
verdict is "drift" (the false-alarm rate, beside its bound ``alpha``), and the share of 20
shifted samples in which the shifted column is flagged (the detection rate), for:

- age + 1 year (PSI under 0.01: the shift the previous rule lost from 5,000 rows);
- age + 5 years;
- occupation: one category's share doubled;
- capital-gain: non-zero share raised to 50 %;
- hours-per-week: 20 % missing;
- workclass: a new category in 10 % of the rows;
- positives (income >50K) sampled twice as often, seen through the predictions;

under the rule of ``params.yaml`` (at every size, a test at ``alpha`` / columns and an effect of
at least ``monitor.min_effect``), next to two baselines judged on the same samples: the test
alone, and the previous rule (tests below 5,000 rows, PSI less its chance part >= 0.025 from
there).

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


def age_1(s: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return s.assign(age=s["age"] + 1)


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
    "age +1 year": ("age", age_1),
    "age +5 years": ("age", age),
    "occupation: Sales doubled": ("occupation", occupation),
    "capital-gain 50 % non-zero": ("capital-gain", capital_gain),
    "hours-per-week 20 % missing": ("hours-per-week", hours_missing),
    "workclass: new category 10 %": ("workclass", new_category),
    "positives sampled twice (predictions)": ("(predictions)", positives_twice),
}


PREVIOUS_SIZE, PREVIOUS_PSI = 5000, 0.025  # the previous rule: PSI from 5,000 rows


def column_flags(f: dict, rule: str, rows: int, level: float) -> bool:
    """Whether one column of a tests-only run (min_effect 0) is flagged under ``rule``: "tests"
    (as run) or "previous" (the test below 5,000 rows, PSI less its noise from there)."""
    if rule == "tests" or f["drifted"] and set(f["reasons"]) - {"distribution"}:
        return f["drifted"]
    if rows < PREVIOUS_SIZE:
        return f["p_value"] < level
    return f["psi"] - f["psi_noise"] >= PREVIOUS_PSI


def flagged(doc: dict, feature: str | None, rule: str = "tests", level: float = 0.0) -> bool:
    """The batch verdict (``feature`` None), or whether ``feature`` was flagged, under
    ``rule`` (see :func:`column_flags`)."""
    n = doc["rows"]
    pred = doc["predictions"]
    parts = [pred, pred.get("class_mix")] if pred else []
    pred_flag = any(column_flags(p, rule, n, level) for p in parts if p)
    if feature == "(predictions)":
        return pred_flag
    cols = {f["feature"]: column_flags(f, rule, n, level) for f in doc["features"]}
    if feature is None:
        return any(cols.values()) or pred_flag
    return cols[feature]


RULES = ("mlcycle monitor", "baseline: the test alone", "baseline: the previous rule")


def rates(
    args: argparse.Namespace,
    pool: pd.DataFrame,
    bundle: Bundle,
    settings: config.MonitorConfig,
    rng: np.random.Generator,
    n: int,
    change: Callable | None,
    feature: str | None,
) -> list[float]:
    """Per rule of :data:`RULES`, the share of samples of ``n`` rows (shifted by ``change``)
    in which drift is flagged: the same samples, scored once, for every rule."""
    objectives = monitor.objectives_from_bundle(bundle.metadata)
    tests_only = settings.model_copy(update={"min_effect": 0.0})
    columns = len(bundle.signature.inputs) + len(bundle.profile.get("predictions") or {})
    level = settings.alpha / columns
    hits = np.zeros(len(RULES))
    for _ in range(args.samples):
        sample = pool.iloc[rng.choice(len(pool), size=n, replace=n > len(pool))]
        sample = sample.reset_index(drop=True)
        if change is not None:
            sample = change(sample, rng)
        output = predict.score(bundle, sample).output
        docs = [
            monitor.run(
                bundle.profile,
                bundle.signature,
                objectives,
                s,
                sample,
                output,
                None,
                model={},
                window={},
            )  # fmt: skip
            for s in (settings, tests_only)
        ]
        hits += [
            flagged(docs[0], feature),
            flagged(docs[1], feature),
            flagged(docs[1], feature, "previous", level),
        ]
    return list(hits / args.samples)


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
        f"min_effect {cfg.min_effect}"
    )
    sizes = (200, 1000, 4999, 5000, 10000)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    table = {"false alarms (clean samples)": [rates(args, pool, bundle, cfg, rng, n, None, None)
                                              for n in sizes]}  # fmt: skip
    for name, (feature, change) in SHIFTS.items():
        table["detected: " + name] = [
            rates(args, pool, bundle, cfg, rng, n, change, feature) for n in sizes[1:]
        ]
    header = f"{'':<48}" + "".join(f"{n:>10,}" for n in sizes)
    for r, label in enumerate(RULES):
        print(f"\n{label}\n{header}")
        for row, cells in table.items():
            pad = " " * 10 * (len(sizes) - len(cells))
            print(f"{row:<48}{pad}" + "".join(f"{c[r]:>10.0%}" for c in cells))
        print(f"{'bound on false alarms (alpha)':<48}" + f"{cfg.alpha:>10.0%}" * len(sizes))
    print(f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""The paired comparison's power on Adult: how many labelled records it needs to call a known
difference of about 0.01 ROC AUC, against the unpaired comparison of two groups a canary gives.

Two models score the test split (data/prepared/test.parquet): the project's tuned model
(models/bundle, from `dvc repro`) and a weaker XGBoost fitted here on the training split (depth
2, the number of rounds chosen from a short ladder so that its ROC AUC on the test split is
about 0.01 below the tuned model's; the difference is measured and printed). The tuned model
plays the challenger, the weaker one production.

For each n of a ladder of labelled records, ``--draws`` times: n records are drawn (with
replacement: the test split stands for the population) and

- **paired** (shadow): both models scored on the same n records, the interval of the gain from
  :func:`mlcycle.compare.paired_gains` (each resample scores both models);
- **unpaired** (canary): n/2 records answered by each model (two independent draws), the
  interval from :func:`mlcycle.compare.unpaired_gains`.

The power is the share of draws whose 95 % interval lies above zero (the difference called, in
the right direction); the n each needs for 80 % power is interpolated on the ladder (log n).
The same code and resamples (:data:`mlcycle.compare.RESAMPLES`) as `mlcycle monitor
--compare`.

    python bench/bench_compare.py [--root DIR] [--draws 100] [--ladder 250 500 ...]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from mlcycle.bundle import load_bundle
from mlcycle.compare import RESAMPLES, paired_gains, unpaired_gains
from mlcycle.features import encode_target, to_model_frame
from mlcycle.metrics import kpi, percentile_interval
from mlcycle.predict import score

ROOT = Path(__file__).resolve().parents[1]
METRIC = "roc_auc"
TARGET_GAP = 0.01
ROUNDS = (10, 20, 40, 80, 160, 320)  # the weaker model's rounds, tried in turn
POWER = 0.8


def weaker_model(
    train: pd.DataFrame, test: pd.DataFrame, bundle, strong_auc: float
) -> tuple[np.ndarray, int, float]:  # noqa: ANN001
    """Positive-class probabilities on ``test`` of a depth-2 XGBoost whose ROC AUC is the
    closest to ``strong_auc - TARGET_GAP``; its rounds and ROC AUC."""
    sig, task = bundle.signature, bundle.signature.task
    dtrain = xgb.DMatrix(
        to_model_frame(train, sig), encode_target(train[sig.target], sig), enable_categorical=True
    )
    dtest = xgb.DMatrix(to_model_frame(test, sig), enable_categorical=True)
    y = encode_target(test[sig.target], sig)
    params = {"objective": "binary:logistic", "max_depth": 2, "eta": 0.1, "nthread": 2,
              "seed": 0, "max_cat_to_onehot": 64}  # fmt: skip
    booster = xgb.train(params, dtrain, num_boost_round=max(ROUNDS))
    best = None
    for rounds in ROUNDS:
        p = booster.predict(dtest, iteration_range=(0, rounds))
        auc = kpi(task, METRIC, y, p)
        gap = abs(strong_auc - auc - TARGET_GAP)
        print(
            f"  weaker model, {rounds:>3} rounds: {METRIC} {auc:.4f} (gap {strong_auc - auc:.4f})"
        )
        if best is None or gap < best[0]:
            best = (gap, p, rounds, auc)
    return best[1], best[2], best[3]


def called(gains: np.ndarray) -> bool:
    """Whether the 95 % interval of the gains lies above zero."""
    low = percentile_interval(gains, 0.95)["low"]
    return low is not None and low > 0


def at_power(ladder: list[int], power: list[float]) -> float | None:
    """The n at which the power first reaches POWER, interpolated in log n; None if never."""
    for i, p in enumerate(power):
        if p >= POWER:
            if i == 0:
                return float(ladder[0])
            n0, n1, p0 = ladder[i - 1], ladder[i], power[i - 1]
            frac = (POWER - p0) / (p - p0)
            return math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=str(ROOT), help="the project (built with `dvc repro`)")
    ap.add_argument("--draws", type=int, default=100, help="random draws per n")
    ap.add_argument(
        "--ladder", type=int, nargs="+", default=[250, 500, 1000, 2000, 4000, 8000, 16000, 32000]
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.root)
    bundle = load_bundle(root / "models/bundle")
    sig, task = bundle.signature, bundle.signature.task
    if task != "binary_classification":
        raise SystemExit(f"this benchmark compares binary ROC AUC; the bundle's task is {task}")
    test = pd.read_parquet(root / "data/prepared/test.parquet")
    train = pd.read_parquet(root / "data/prepared/train.parquet")
    y = encode_target(test[sig.target], sig)
    strong = score(bundle, test).output
    strong_auc = kpi(task, METRIC, y, strong)
    print(f"tuned model (challenger): {METRIC} {strong_auc:.4f} on {len(test):,} test records")
    weak, rounds, weak_auc = weaker_model(train, test, bundle, strong_auc)
    weak = np.c_[1 - weak, weak]
    corr = np.corrcoef(strong[:, 1], weak[:, 1])[0, 1]
    print(
        f"weaker model (production): {rounds} rounds, {METRIC} {weak_auc:.4f}; true difference "
        f"{strong_auc - weak_auc:+.4f}; correlation of their scores {corr:.3f}"
    )
    print(f"{args.draws} draws per n, {RESAMPLES} bootstrap resamples per interval\n")
    rng = np.random.default_rng(args.seed)
    thresholds = (bundle.decision, bundle.decision)
    table = {"paired": [], "unpaired": []}
    print(f"{'n labelled':>10} | {'paired power':>12} | {'unpaired power':>14} | seconds")
    for n in args.ladder:
        start = time.perf_counter()
        hits = {"paired": 0, "unpaired": 0}
        for _ in range(args.draws):
            i = rng.integers(0, len(test), n)
            hits["paired"] += called(
                paired_gains(task, y[i], (weak[i], strong[i]), thresholds, METRIC)
            )
            a, b = rng.integers(0, len(test), n // 2), rng.integers(0, len(test), n - n // 2)
            groups = ((y[a], weak[a]), (y[b], strong[b]))
            hits["unpaired"] += called(unpaired_gains(task, groups, thresholds, METRIC))
        for key in table:
            table[key].append(hits[key] / args.draws)
        print(
            f"{n:>10,} | {table['paired'][-1]:>12.0%} | {table['unpaired'][-1]:>14.0%} | "
            f"{time.perf_counter() - start:.1f}",
            flush=True,
        )
    need = {key: at_power(args.ladder, power) for key, power in table.items()}
    shown = {k: f"{v:,.0f}" if v else f"> {args.ladder[-1]:,}" for k, v in need.items()}
    print(
        f"\nlabelled records for {POWER:.0%} power to call a {strong_auc - weak_auc:.4f} "
        f"{METRIC} difference: paired (shadow) {shown['paired']}, unpaired (canary, two "
        f"groups) {shown['unpaired']}"
        + (
            f"; the paired comparison needs {need['unpaired'] / need['paired']:.1f} times fewer"
            if all(need.values())
            else ""
        )
    )


if __name__ == "__main__":
    main()

"""Batch scoring: mlcycle's `score_frame` against bare XGBoost on the same rows, same run.

Both start from the same pandas frame of raw records (the Adult test split, resampled to
``--rows``). The baseline does only what XGBoost itself needs: cast to categories and predict.
Our path adds signature checks, typing and labels. Prints rows/s for each and the ratio.

    python bench/bench_predict.py [--bundle models/bundle] [--rows 500000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import xgboost as xgb

from mlcycle.bundle import load_bundle
from mlcycle.predict import score_frame


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="models/bundle")
    ap.add_argument("--data", default="data/prepared/test.parquet")
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    bundle = load_bundle(args.bundle)
    base = pd.read_parquet(args.data).drop(columns=[bundle.signature.target])
    rng = np.random.default_rng(0)
    records = base.iloc[rng.integers(0, len(base), args.rows)].reset_index(drop=True)

    def bare() -> np.ndarray:
        X = records[bundle.signature.columns].copy()
        for f in bundle.signature.features:
            if f.kind == "categorical":
                X[f.name] = pd.Categorical(X[f.name], categories=list(f.categories))
        return bundle.booster.predict(xgb.DMatrix(X, enable_categorical=True))

    def ours() -> pd.DataFrame:
        return score_frame(bundle, records, chunk_rows=len(records))

    same = np.array_equal(bare().astype(np.float64), ours()["probability"].to_numpy())
    t_bare, t_ours = best_of(args.repeat, bare), best_of(args.repeat, ours)
    print(f"rows: {args.rows}, best of {args.repeat}; identical probabilities: {same}")
    print(f"bare xgboost     : {t_bare:7.3f} s  {args.rows / t_bare:12,.0f} rows/s")
    print(f"mlcycle predict  : {t_ours:7.3f} s  {args.rows / t_ours:12,.0f} rows/s")
    print(f"ratio (ours/bare): {t_ours / t_bare:.2f}x")


if __name__ == "__main__":
    main()

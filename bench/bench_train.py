"""The train stage's final fit against bare XGBoost, same data and parameters, same run.

Tuning runs first, as in the stage (params.yaml's budget; ``--trials`` overrides it), and its
time is printed. Then the final XGBoost fit with the tuned parameters and rounds is timed on the
Adult training split:

- ours: ``to_model_frame`` (validation, typing, derived features) and ``mlcycle.models.fit``,
  which records the log loss on the training data each round (the learning curve the stage
  logs) and calls a progress callback each round;
- bare: pandas casts the columns XGBoost needs, then ``xgboost.train`` with the same native
  parameters, rounds and watch list (the training data), collecting the same curve;
- bare, no curve: the same without the watch list, to show what the curve itself costs.

Prints each (best of ``--repeat``), the ratios and whether the boosters predict the same.

    python bench/bench_train.py [--trials 10] [--repeat 3]
    python bench/bench_train.py --from-stage   # no tuning: the committed run's params
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

from mlcycle import config
from mlcycle.adapters.xgboost_model import CURVE_METRICS, booster_params
from mlcycle.features import Signature, encode_target, infer_signature, to_model_frame
from mlcycle.models import fit
from mlcycle.tuning import fit_options, tune


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bare_frame(records: pd.DataFrame, signature: Signature) -> pd.DataFrame:
    """What XGBoost itself needs: the derived differences, the columns, categorical dtypes."""
    X = records.copy()
    for step in signature.derived:
        a, b = step.columns
        X[step.name] = X[a].astype("float64") - X[b].astype("float64")
    X = X[signature.columns]
    for f in signature.features:
        if f.kind == "categorical":
            X[f.name] = pd.Categorical(X[f.name], categories=list(f.categories))
    return X


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="data/prepared/train.parquet")
    ap.add_argument("--trials", type=int, help="search trials per candidate (default: params)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--from-stage",
        action="store_true",
        help="skip tuning: time the final fit with the train stage's params and rounds "
        "(models/train/model.json)",
    )
    args = ap.parse_args()

    params = config.load()
    obj, cfg = params.objectives, params.train
    if args.trials is not None:
        tuning = cfg.tuning.model_copy(update={"trials": args.trials, "trials_by_candidate": {}})
        cfg = cfg.model_copy(update={"tuning": tuning})
    cfg = cfg.model_copy(update={"candidates": ("xgboost",), "baseline": None})
    records = pd.read_parquet(args.data)
    signature = infer_signature(
        records, obj.target, obj.positive_class, params.features, cfg.seed, task=obj.task
    )
    if any(s.op != "difference" for s in signature.derived):
        raise SystemExit("this benchmark's bare baseline only computes 'difference' features")
    y = encode_target(records[obj.target], signature)

    if args.from_stage:
        stage = json.loads(Path("models/train/model.json").read_text())
        if stage["kind"] != "xgboost":
            raise SystemExit(f"the train stage chose {stage['kind']}, not xgboost")
        best_params, rounds = stage["params"], stage["rounds"]
        print(f"params and {rounds} rounds from models/train/model.json (trial {stage['trial']})")
    else:
        start = time.perf_counter()
        result = tune(
            to_model_frame(records, signature),
            y,
            cfg,
            obj.primary_metric,
            task=obj.task,
            classes=signature.classes,
        )
        tuning = time.perf_counter() - start
        best = result.candidates["xgboost"]
        best_params, rounds = best.params, best.cv.final_rounds
        print(
            f"tuning xgboost: {best.trials} trials ({cfg.cv_folds}-fold CV, {len(y)} rows) in "
            f"{tuning:.1f} s; best cv {obj.primary_metric} {best.cv.mean:.4f} -> {rounds} rounds"
        )

    def ours() -> xgb.Booster:
        X = to_model_frame(records, signature)
        return fit(
            "xgboost",
            X,
            y,
            best_params,
            obj.task,
            len(signature.classes),
            rounds=rounds,
            on_round=lambda i: None,
            **fit_options(cfg),
        )

    native = {
        **booster_params(
            best_params,
            y,
            obj.task,
            len(signature.classes),
            seed=cfg.seed,
            threads=cfg.nthread,
            device=cfg.device,
            class_weight=cfg.class_weight,
        ),  # fmt: skip
        "eval_metric": list(CURVE_METRICS[obj.task]),
    }

    def bare(curve: bool = True) -> xgb.Booster:
        X = bare_frame(records, signature)
        d = xgb.DMatrix(X, label=y, enable_categorical=True, nthread=cfg.nthread)
        log: dict = {}
        watch = [(d, "train")] if curve else None
        return xgb.train(
            native, d, num_boost_round=rounds, evals=watch, evals_result=log, verbose_eval=False
        )

    bare()  # warm-up: imports, OpenMP threads
    t_plain, _ = best_of(args.repeat, lambda: bare(curve=False))
    t_bare, b_bare = best_of(args.repeat, bare)
    t_ours, r_ours = best_of(args.repeat, ours)
    X = to_model_frame(records, signature)
    same = np.array_equal(
        r_ours.model.predict_proba(X)[:, 1],
        b_bare.predict(xgb.DMatrix(bare_frame(records, signature), enable_categorical=True)),
    )
    print(f"final fit: {rounds} rounds on {len(y)} rows, best of {args.repeat}")
    print(f"bare xgboost.train, no curve : {t_plain:7.3f} s")
    print(f"bare xgboost.train           : {t_bare:7.3f} s  (training curve: log loss)")
    print(f"mlcycle final fit            : {t_ours:7.3f} s  (to_model_frame, fit, same curve)")
    print(f"ratio ours/bare              : {t_ours / t_bare:.3f}x  <- our overhead")
    print(f"ratio ours/bare without curve: {t_ours / t_plain:.3f}x  (the curve is XGBoost's cost)")
    print(f"identical predictions: {same}")
    if args.from_stage:
        same_bytes = r_ours.model.to_bytes() == Path("models/train/model.ubj").read_bytes()
        print(f"same bytes as the stage's models/train/model.ubj: {same_bytes}")


if __name__ == "__main__":
    main()

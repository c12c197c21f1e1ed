"""Scoring JSON records: today's path, the compiled encoder, and bare XGBoost, same run.

For batches of 1 and 1000 records (dicts, as a web request carries them, drawn from the Adult
test split) this times, per call:

  (a) today   ``pd.DataFrame(records)`` + ``features.to_model_frame`` + ``Model.output``
  (b) encoder ``Encoder.encode`` + ``Model.output_encoded`` (numpy + ``inplace_predict``)
  (c) bare    ``Booster.inplace_predict`` on an already-encoded float32 array: the floor

and prints the medians side by side with the ratios, after checking that (a) and (b) give
bit-identical outputs. The model is the bundle's if ``--bundle`` exists, else an XGBoost
model fitted here on the Adult training file with params.yaml's features and ``train.xgb``
settings for ``--rounds`` rounds.

    python bench/bench_encoder.py [--bundle models/bundle] [--rows 1 1000] [--repeat 1000]
        [--nthread N]  # XGBoost threads for all three (default: the model's; 0 = all cores)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle import config
from mlcycle.bundle import load_bundle
from mlcycle.encoder import compile_encoder
from mlcycle.features import Signature, encode_target, infer_signature, to_model_frame
from mlcycle.models import Model, fit
from mlcycle.tuning import fit_options

ROOT = Path(__file__).resolve().parents[1]


def medians(fns: list[Callable[[], object]], repeat: int, budget: float) -> list[float]:
    """Median seconds per call of each of ``fns``, called in turn ``repeat`` times (fewer if
    ``budget`` seconds run out), so a busy machine slows all of them alike."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    stop = time.perf_counter() + budget
    while len(times[0]) < repeat and (len(times[0]) < 5 or time.perf_counter() < stop):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def read_adult(name: str, columns: list[str], skip_rows: int) -> pd.DataFrame:
    df = pd.read_csv(
        ROOT / "data/external/adult" / name, header=None, names=columns, skiprows=skip_rows,
        na_values=["?"], skipinitialspace=True,
    )  # fmt: skip
    df["income"] = df["income"].str.rstrip(".")
    return df


def model_and_signature(args: argparse.Namespace) -> tuple[Model, Signature, str]:
    """The bundle's model, or one fitted here as params.yaml would (fixed rounds)."""
    if Path(args.bundle).exists():
        bundle = load_bundle(args.bundle)
        return bundle.model, bundle.signature, f"bundle {args.bundle}"
    params = config.load(ROOT / "params.yaml")
    train = read_adult("adult.data.gz", list(params.data.columns), 0)
    target, positive = params.objectives.target, params.objectives.positive_class
    sig = infer_signature(train, target, positive, params.features)
    xgb_params = {**params.train.xgb, "n_estimators": args.rounds}
    cfg = config.TrainConfig(seed=0, nthread=params.train.nthread, validation_fraction=0.1)
    X, y = to_model_frame(train, sig), encode_target(train[target], sig)
    model = fit("xgboost", X, y, xgb_params, rounds=args.rounds, **fit_options(cfg)).model
    model.estimator.set_param({"nthread": 0})  # as a loaded bundle is
    return model, sig, f"XGBoost fitted here, {args.rounds} rounds, params.yaml train.xgb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", default="models/bundle")
    ap.add_argument("--rounds", type=int, default=500, help="without a bundle")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 1000])
    ap.add_argument("--repeat", type=int, default=1000, help="calls timed per figure")
    ap.add_argument("--budget", type=float, default=30.0, help="seconds at most per batch size")
    ap.add_argument(
        "--nthread", type=int, default=None, help="XGBoost threads (default: the model's own)"
    )
    args = ap.parse_args()

    model, sig, source = model_and_signature(args)
    if model.kind != "xgboost":
        raise SystemExit(f"{source} holds a {model.kind} model; (c) needs XGBoost")
    columns = list(config.load(ROOT / "params.yaml").data.columns)
    test = read_adult("adult.test.gz", columns, 1)
    pool = test.drop(columns=[sig.target]).to_dict("records")
    encoder = compile_encoder(sig)
    booster = model.estimator
    if args.nthread is not None:
        booster.set_param({"nthread": args.nthread})
    threads = json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]
    print(f"model: {source}; {len(sig.columns)} features; XGBoost nthread {threads}")
    print(
        f"medians per call; (a), (b), (c) and (b)'s encode alone called in turn, "
        f"{args.repeat} times or for {args.budget:g} s"
    )
    print(f"{'rows':>6} {'(a) today':>12} {'(b) encoder':>12} {'(c) bare':>12}"
          f" {'a/b':>7} {'b/c':>6} {'encode':>12}  identical")  # fmt: skip
    rng = np.random.default_rng(0)
    for n in args.rows:
        records = [pool[i] for i in rng.integers(0, len(pool), n)]
        encoded32 = encoder.encode(records).astype(np.float32)

        def today(records: list = records) -> np.ndarray:
            frame = pd.DataFrame(records, columns=sig.input_columns)
            return model.output(to_model_frame(frame, sig))

        def fast(records: list = records) -> np.ndarray:
            return model.output_encoded(encoder.encode(records), sig)

        def bare(encoded32: np.ndarray = encoded32) -> np.ndarray:
            return booster.inplace_predict(encoded32)

        def encode(records: list = records) -> np.ndarray:
            return encoder.encode(records)

        identical = np.array_equal(today(), fast())
        t_a, t_b, t_c, t_e = medians([today, fast, bare, encode], args.repeat, args.budget)
        ms = [f"{t * 1e3:>9.3f} ms" for t in (t_a, t_b, t_c, t_e)]
        print(f"{n:>6} {ms[0]} {ms[1]} {ms[2]} {t_a / t_b:>6.1f}x {t_b / t_c:>5.2f}x {ms[3]}"
              f"  {identical}")  # fmt: skip


if __name__ == "__main__":
    main()

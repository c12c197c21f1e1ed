"""The default hyper-parameter search on Adult, before and after the faster search: time to score.

Runs :func:`mlcycle.tuning.tune` on the training split (data/prepared/train.parquet, from
`dvc repro prepare`) with params.yaml's `train` settings, back to back in this process:

- ``before``: the search as it was (``pruner: none``, ``patience: 0``, ``parallel_folds: 1``):
  every trial of the budget runs every fold, one fold at a time on ``nthread`` threads;
- ``pruning``: the median pruner alone (``patience: 0``, ``parallel_folds: 1``);
- ``after``: params.yaml as it is (the pruner, folds side by side, patience);
- ``derived``: params.yaml with the search ranges ``mlcycle init`` derives from this training
  split's figures (:func:`mlcycle.scaffold.search_space`) instead of its own.

With ``--test`` (data/prepared/test.parquet) each run's kept model is refitted on the training
split and scored on the test split, with its 95 % bootstrap interval (what `evaluate` reports).

For each run it prints the time until the best CV score so far first reaches the target
(default 0.9297: the tuned score 0.9300 less its 0.0003 tolerance), the best CV score, the
whole search's wall time and its ratio to ``before``, and writes the time-to-score curves (the
best CV score so far against the search's seconds) as bench/results/search_time_to_score.png
and .json (docs/images holds the one docs/training.md shows). The machine is shared: compare
the ratios of one run, not seconds across runs.

    python bench/bench_search.py [--target 0.9297] [--runs before pruning after derived] [--test]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlcycle import config, tasks
from mlcycle.features import encode_target, infer_signature, to_model_frame
from mlcycle.metrics import bootstrap_interval, kpi
from mlcycle.models import fit
from mlcycle.scaffold import data_shape, search_space
from mlcycle.tasks import DEFAULT_THRESHOLD, better
from mlcycle.tuning import fit_options, tune

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"


def curve(records: list, metric: str) -> list[dict]:
    """The best full-CV score so far after each trial, against the trials' summed wall seconds
    (a trial's ``duration_s`` is its wall time, folds side by side included)."""
    best, elapsed, out = None, 0.0, []
    for rec in records:
        elapsed += rec.duration_s
        if not rec.pruned and (best is None or better(metric, rec.cv_mean, best)):
            best = rec.cv_mean
        out.append(
            {
                "seconds": round(elapsed, 2),
                "best": None if best is None else round(best, 6),
                "candidate": rec.candidate,
                "trial": rec.trial,
                "pruned": rec.pruned,
            }
        )
    return out


RUNS = {  # changes to train, and to train.tuning
    "before": ({"parallel_folds": 1}, {"pruner": "none", "patience": 0}),
    "pruning": ({"parallel_folds": 1}, {"patience": 0}),
    "after": ({}, {}),
    "derived": ({}, {}),  # and the derived search ranges
}


def run(
    name: str, X: pd.DataFrame, y: np.ndarray, params: config.Params, classes, test=None
) -> dict:
    """One whole default search with ``RUNS[name]`` over params.yaml's train settings; with
    ``test`` (its X and y), the kept model refitted and scored on it."""
    train, tuning = RUNS[name]
    task = params.objectives.task
    if name == "derived":
        shape = data_shape(X, pd.Series(y), task)
        train = {**train, "search": search_space(shape)}
        print(f"  [{name}] ranges from {shape.text()}: {train['search']}", flush=True)
    cfg = params.train.model_copy(
        update={**train, "tuning": params.train.tuning.model_copy(update=tuning)}
    )

    def progress(msg: str) -> None:
        print(f"  [{name}] {msg}", flush=True)

    start = time.perf_counter()
    result = tune(X, y, cfg, params.objectives.primary_metric, progress, task, classes)
    total = time.perf_counter() - start
    print(f"  [{name}] whole search {total:.1f}s", flush=True)
    scored = {}
    if test is not None:
        win, metric = result.winner, result.metric
        k = tasks.get(task).output_width(len(classes))
        model = fit(win.name, X, y, win.params, task, k, rounds=win.cv.final_rounds,
                    **fit_options(cfg)).model  # fmt: skip
        out = model.output(test[0])
        scored = {
            "test": round(kpi(task, metric, test[1], out, DEFAULT_THRESHOLD), 6),
            "test_interval": bootstrap_interval(task, test[1], out, None, metric),
        }
    return {
        "run": name,
        "settings": {
            "parallel_folds": cfg.parallel_folds,
            "pruner": cfg.tuning_pruner,
            "patience": cfg.tuning_patience,
            "select": cfg.tuning.select,
        },
        "seconds": round(total, 1),
        "best": max(p["best"] for p in curve(result.records, result.metric) if p["best"]),
        "kept": round(result.winner.cv.mean, 6),
        "winner": f"{result.winner.name} trial {result.winner.best_trial}",
        "trials": len(result.records),
        "pruned": sum(r.pruned for r in result.records),
        "curve": curve(result.records, result.metric),
        "params": dict(result.winner.params),
        "rounds": result.winner.cv.final_rounds,
        **scored,
    }


def time_to(points: list[dict], target: float) -> float | None:
    for p in points:
        if p["best"] is not None and p["best"] >= target:
            return p["seconds"]
    return None


def plot(runs: list[dict], target: float, path: Path) -> None:
    import vl_convert as vlc

    rows = [{**p, "run": r["run"]} for r in runs for p in r["curve"] if p["best"]]
    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": "Adult, default search: best CV ROC AUC so far against time",
        "width": 560,
        "height": 300,
        "layer": [
            {
                "data": {"values": rows},
                "mark": {"type": "line", "interpolate": "step-after", "point": True},
                "encoding": {
                    "x": {"field": "seconds", "type": "quantitative", "title": "seconds"},
                    "y": {
                        "field": "best",
                        "type": "quantitative",
                        "title": "best CV ROC AUC",
                        "scale": {"zero": False},
                    },  # fmt: skip
                    "color": {"field": "run", "type": "nominal"},
                },
            },
            {
                "data": {"values": [{"target": target}]},
                "mark": {"type": "rule", "strokeDash": [4, 4]},
                "encoding": {"y": {"field": "target", "type": "quantitative"}},
            },
        ],
    }
    path.write_bytes(vlc.vegalite_to_png(json.dumps(spec), scale=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.9297)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--train", type=Path, default=ROOT / "data/prepared/train.parquet")
    parser.add_argument("--test", type=Path, nargs="?", const=ROOT / "data/prepared/test.parquet")
    args = parser.parse_args()
    params = config.load(ROOT / "params.yaml")
    obj = params.objectives
    train = pd.read_parquet(args.train)
    sig = infer_signature(train, obj.target, obj.positive_class, params.features,
                          seed=params.train.seed, task=obj.task)  # fmt: skip
    X, y = to_model_frame(train, sig), encode_target(train[obj.target], sig)
    test = None
    if args.test:
        frame = pd.read_parquet(args.test)
        test = (to_model_frame(frame, sig), encode_target(frame[obj.target], sig))
    runs = [run(name, X, y, params, sig.classes, test) for name in args.runs]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_time_to_score.json").write_text(json.dumps(runs, indent=1) + "\n")
    plot(runs, args.target, RESULTS / "search_time_to_score.png")
    print()
    first = runs[0]
    print(f"{'run':>8s} {'to ' + str(args.target):>10s} {'ratio':>6s} {'of ' + first['run']:>9s} "
          f"{'best CV':>9s} {'search':>8s} {'ratio':>6s} {'trials':>7s} {'pruned':>7s}  "
          "kept (CV)")  # fmt: skip
    t0 = time_to(first["curve"], args.target)
    for r in runs:
        t = time_to(r["curve"], args.target)
        shown = f"{t:9.1f}s" if t is not None else "    never"
        ratio = f"{t / t0:6.2f}" if t and t0 else "     -"
        share = f"{t / first['seconds']:9.2f}" if t else "        -"
        print(f"{r['run']:>8s} {shown:>10s} {ratio} {share} {r['best']:9.4f} {r['seconds']:7.1f}s "
              f"{r['seconds'] / first['seconds']:6.2f} {r['trials']:7d} {r['pruned']:7d}  "
              f"{r['winner']} ({r['kept']:.4f})")  # fmt: skip
        if "test" in r:
            i = r["test_interval"]
            print(f"{'':>8s} test {r['test']:.4f} [{i['low']:.4f}, {i['high']:.4f}] "
                  f"({r['rounds']} rounds)")  # fmt: skip
    print(
        f"ratios against {first['run']!r}, measured in this run (time to the target against its "
        f"time, and against its whole search); curves: {RESULTS / 'search_time_to_score.png'}"
    )


if __name__ == "__main__":
    main()

"""Does LightGBM earn a place among the pipeline's candidates? Bare LightGBM defaults against
bare XGBoost defaults (the pipeline's gradient-boosting candidate, untuned) and the pipeline,
on the breadth benchmark's sets, the same rows and folds.

It reads what ``bench/bench_breadth.py --keep DIR --out RESULTS`` left: each set's project
(its prepared split and the pipeline's folds) and the results (the pipeline's and XGBoost
defaults' figures). LightGBM (``LGBMClassifier()`` / ``LGBMRegressor()``, pandas categoricals)
runs in FLAML's venv (``make setup-bench``: FLAML pins LightGBM 4.7.0 there), fitted on the
training split and on each fold's training rows; its outputs are scored here by the pipeline's
own code (:func:`mlcycle.metrics.kpi`), as the breadth benchmark scores XGBoost and FLAML.

    python bench/bench_breadth.py --keep /tmp/breadth --out bench/results/breadth-after.json
    python bench/bench_lightgbm.py /tmp/breadth bench/results/breadth-after.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_breadth as breadth  # noqa: E402  (the benchmark's split, folds and scoring)

WORKER = r"""
import json, sys
import numpy as np, pandas as pd
import lightgbm as lgb
spec = json.load(open(sys.argv[1]))
x_train = pd.read_parquet(spec["x_train"]); x_test = pd.read_parquet(spec["x_test"])
y = np.load(spec["y_train"]); fold = np.load(spec["folds"]) if spec["folds"] else None
def output(x, y, rows):
    common = {"n_jobs": spec["n_jobs"], "verbose": -1, "random_state": 1}
    if spec["regression"]:
        return lgb.LGBMRegressor(**common).fit(x, y).predict(rows)
    return lgb.LGBMClassifier(**common).fit(x, y).predict_proba(rows)
np.save(spec["out"], np.asarray(output(x_train, y, x_test), dtype=np.float64))
if fold is not None:
    oof = None
    for i in range(int(fold.max()) + 1):
        fit, held = fold != i, fold == i
        part = np.asarray(output(x_train[fit], y[fit], x_train[held]), dtype=np.float64)
        if oof is None:
            oof = np.full((len(y), *part.shape[1:]), np.nan)
        oof[held] = part
    np.save(spec["oof"], oof)
"""


def lightgbm(split: breadth.Split, python: Path, work: Path) -> dict:
    """LightGBM defaults on ``split``: test score, same-folds CV, seconds."""
    files = {k: str(work / f"{k}.{ext}") for k, ext in
             (("x_train", "parquet"), ("x_test", "parquet"), ("y_train", "npy"),
              ("out", "npy"), ("oof", "npy"))}  # fmt: skip
    split.x_train.to_parquet(files["x_train"])
    split.x_test.to_parquet(files["x_test"])
    np.save(files["y_train"], split.y_train)
    folds = None
    if split.folds is not None:
        folds = str(work / "folds.npy")
        np.save(folds, split.folds)
    spec = {**files, "folds": folds, "n_jobs": 2, "regression": split.task == "regression"}
    (work / "spec.json").write_text(json.dumps(spec))
    start = time.perf_counter()
    subprocess.run([str(python), "-c", WORKER, str(work / "spec.json")], check=True)
    seconds = round(time.perf_counter() - start, 1)
    test = split.score(np.load(files["out"]))
    cv = None if folds is None else float(np.mean(split.fold_scores(np.load(files["oof"]))))
    return {"test": test, "cv": cv, "seconds": seconds}


def vs(a: float | None, b: float | None, lower: bool) -> str:
    """``a`` against ``b``: "ahead", "tie" or "behind" ("-" when either is missing)."""
    if a is None or b is None:
        return "-"
    return "tie" if a == b else "ahead" if breadth.better(a, b, lower) else "behind"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kept", type=Path, help="the folder bench_breadth.py --keep wrote")
    ap.add_argument("results", type=Path, help="the results JSON bench_breadth.py --out wrote")
    ap.add_argument("--python", type=Path, default=breadth.FLAML_PYTHON, help="LightGBM's Python")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    out: list[dict] = []
    print("| set | metric | pipeline CV / test | XGBoost defaults CV / test | LightGBM defaults "
          "CV / test | LightGBM vs XGBoost (test, CV) |\n|---|---|---|---|---|---|")  # fmt: skip
    for r in breadth.read_results(args.results):
        project = args.kept / r.name / "project"
        if not project.is_dir() or r.xgb_test is None:
            continue
        spec = breadth.BY_NAME[r.name]
        split = breadth.make_split(spec, spec.load(), project, r)
        breadth.same_folds(spec, project, split, r, breadth.ROOT)
        with tempfile.TemporaryDirectory() as tmp:
            got = lightgbm(split, args.python, Path(tmp))
        verdicts = (vs(got["test"], r.xgb_test, r.lower_is_better),
                    vs(got["cv"], r.xgb_cv, r.lower_is_better),
                    vs(got["cv"], r.pipeline_cv, r.lower_is_better))  # fmt: skip
        rows.append(verdicts)
        out.append({"set": r.name, "metric": r.metric, "lightgbm": got, "xgb_test": r.xgb_test,
                    "xgb_cv": r.xgb_cv, "pipeline_test": r.pipeline_test,
                    "pipeline_cv": r.pipeline_cv, "pipeline_interval": [r.pipeline_low,
                    r.pipeline_high]})  # fmt: skip
        f = breadth.fmt
        print(f"| {r.name} | {r.metric} | {f(r.pipeline_cv)} / {f(r.pipeline_test)} | "
              f"{f(r.xgb_cv)} / {f(r.xgb_test)} | {f(got['cv'])} / {f(got['test'])} | "
              f"{verdicts[0]}, {verdicts[1]} |", flush=True)  # fmt: skip
    ahead = [sum(v[k] == "ahead" for v in rows) for k in (0, 1)]
    beats = [r for r, v in zip(out, rows, strict=True) if v[2] == "ahead"]
    print(f"\nLightGBM defaults ahead of XGBoost defaults on {ahead[0]} of {len(rows)} sets on "
          f"test, {ahead[1]} on CV (the pipeline's folds); ahead of the pipeline's CV on "
          f"{len(beats)}: {', '.join(b['set'] for b in beats) or 'none'}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Each task type through the whole pipeline, next to a bare XGBoost model on the same split.

For every dataset a fresh project is made in a temporary folder (this project's code, dvc.yaml
and params), set up with `mlcycle init` alone, and built with `dvc repro` with the default
settings (tuning on). Then a bare `XGBClassifier` / `XGBRegressor` with default settings is
fitted on the very same prepared training split and scored on the same test split with the same
KPI code. Printed: the test KPIs of both, and the wall times.

    python bench/bench_tasks.py                 # wine (multiclass) and diabetes (regression)
    python bench/bench_tasks.py --with-adult    # and Adult (binary, the committed params: ~4 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.datasets import load_diabetes, load_wine

from mlcycle.features import Signature, encode_target, to_model_frame
from mlcycle.metrics import compute_kpis
from mlcycle.tasks import REGRESSION

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COPY = ("dvc.yaml", "params.yaml", "schema.yaml", "src", "data/external", "data/landing",
        "plot_templates")  # fmt: skip


def wine() -> tuple[pd.DataFrame, str]:
    data = load_wine(as_frame=True)
    frame = data.frame.drop(columns="target")
    frame["cultivar"] = np.asarray(data.target_names)[data.target]
    return frame, "cultivar"


def diabetes() -> tuple[pd.DataFrame, str]:
    return load_diabetes(as_frame=True).frame.rename(columns={"target": "progression"}), (
        "progression"
    )


def sh(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def project(where: Path) -> Path:
    for name in COPY:
        src, dst = ROOT / name, where / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        sh(cmd, where)
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "bench"]):
        sh(["git", "-c", "user.name=bench", "-c", "user.email=b@invalid", *cmd[1:]], where)
    return where


def bare_xgboost(p: Path) -> tuple[dict, float]:
    """XGBoost's scikit-learn estimator, default settings, on the pipeline's prepared split."""
    sig = Signature.from_dict(json.loads((p / "models/train/signature.json").read_text()))
    names = json.loads((p / "metrics/evaluate.json").read_text())
    train = pd.read_parquet(p / "data/prepared/train.parquet")
    test = pd.read_parquet(p / "data/prepared/test.parquet")
    X, y = to_model_frame(train, sig), encode_target(train[sig.target], sig)
    Xt, yt = to_model_frame(test, sig), encode_target(test[sig.target], sig)
    start = time.perf_counter()
    if sig.task == REGRESSION:
        model = xgb.XGBRegressor(enable_categorical=True, random_state=0)
        out = model.fit(X, y).predict(Xt).astype(np.float64)
    else:
        model = xgb.XGBClassifier(enable_categorical=True, random_state=0)
        out = model.fit(X, y).predict_proba(Xt).astype(np.float64)
        out /= out.sum(axis=1, keepdims=True)  # float32 rows: sum to 1 in float64, as ours
    elapsed = time.perf_counter() - start
    kpis = [k for k, v in names.items() if isinstance(v, float) and k != "threshold"]
    return compute_kpis(sig.task, yt, out, names.get("threshold"), kpis), elapsed


def run_one(name: str, frame: pd.DataFrame | None, target: str | None, tmp: Path) -> None:
    p = project(tmp / name)
    if frame is not None:
        data = tmp / f"{name}.csv"
        frame.to_csv(data, index=False)
        sh([str(BIN / "mlcycle"), "init", "--data", str(data), "--target", target, "--force"], p)
    start = time.perf_counter()
    sh(["dvc", "repro"], p)
    wall = time.perf_counter() - start
    ours = json.loads((p / "metrics/evaluate.json").read_text())
    train = json.loads((p / "metrics/train.json").read_text())
    bare, bare_s = bare_xgboost(p)
    print(f"\n## {name}: {ours['task']}, {ours['rows']} test rows")
    print(
        f"pipeline winner {train['winner']} (ranking {train['ranking']}); `dvc repro` {wall:.1f} s"
    )
    print(f"bare default XGBoost fit {bare_s:.2f} s")
    print("| KPI | pipeline | bare XGBoost |\n|---|---:|---:|")
    for k, v in bare.items():
        mine = ours.get(k)
        print(f"| {k} | {mine if mine is None else f'{mine:.4f}'} | "
              f"{v if v is None else f'{v:.4f}'} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--with-adult", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (frame, target) in (("wine", wine()), ("diabetes", diabetes())):
            run_one(name, frame, target, Path(tmp))
        if args.with_adult:
            run_one("adult", None, None, Path(tmp))


if __name__ == "__main__":
    main()

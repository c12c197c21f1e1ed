"""Whole pipeline: `dvc repro` from scratch and a no-op `dvc repro`, against a bare script.

The project is copied into a temporary git repository (default params unless ``--fast``).
The baseline is the same work with no pipeline around it, in one process: pandas reads both
Adult files, XGBoost trains with the same rounds the pipeline chose, and predicts the test
file. The ratio shows what DVC, the stage processes, checks and artifacts cost.

    python bench/bench_pipeline.py
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

import pandas as pd
import xgboost as xgb

ROOT = Path(__file__).resolve().parents[1]
COPY = ("dvc.yaml", "params.yaml", "src", "data/external")


def sh(args: list[str], cwd: Path, env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def bare_baseline(project: Path, rounds: int, params: dict) -> float:
    """Read, clean minimally, train and predict with pandas and XGBoost alone."""
    start = time.perf_counter()
    cols = params["data"]["columns"]
    frames = []
    for src, skip in (("adult.data.gz", 0), ("adult.test.gz", 1)):
        df = pd.read_csv(
            project / "data/external/adult" / src,
            header=None,
            names=cols,
            skiprows=skip,
            skipinitialspace=True,
            na_values=["?"],
        )
        df["income"] = df["income"].str.rstrip(".")
        frames.append(df)
    train, test = frames
    for df in (train, test):
        for c in df.columns:
            if df[c].dtype == object or str(df[c].dtype).startswith(("str", "string")):
                df[c] = df[c].astype("category")
    y = (train.pop("income") == ">50K").astype(int)
    test.pop("income")
    for c in test.columns:
        if isinstance(train[c].dtype, pd.CategoricalDtype):
            test[c] = pd.Categorical(test[c], categories=train[c].cat.categories)
    xp = {
        k: v
        for k, v in params["train"]["xgb"].items()
        if k not in ("n_estimators", "early_stopping_rounds")
    }
    xp["eta"] = xp.pop("learning_rate", 0.3)
    xp.update(objective="binary:logistic", tree_method="hist", nthread=params["train"]["nthread"])
    booster = xgb.train(xp, xgb.DMatrix(train, y, enable_categorical=True), rounds)
    booster.predict(xgb.DMatrix(test, enable_categorical=True))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args()
    import yaml

    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        for name in COPY:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(src, project / name)
        env["PYTHONPATH"] = str(project / "src")
        for cmd in (
            ["git", "init", "-q"],
            ["dvc", "init", "-q"],
            ["git", "add", "-A"],
            ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
        ):
            sh(cmd, project, env)
        t_full = sh(["dvc", "repro"], project, env)
        t_noop = sh(["dvc", "repro"], project, env)
        metrics = json.loads((project / "metrics/evaluate.json").read_text())
        rounds = json.loads((project / "models/train/signature.json").read_text())["best_rounds"]
        params = yaml.safe_load((project / "params.yaml").read_text())
        t_bare = bare_baseline(project, rounds, params)
    print(
        f"dvc repro from scratch : {t_full:6.1f} s   (roc_auc {metrics['roc_auc']:.4f}, "
        f"accuracy {metrics['accuracy']:.4f})"
    )
    print(f"no-op dvc repro        : {t_noop:6.1f} s")
    print(f"bare pandas + xgboost  : {t_bare:6.1f} s   (same {rounds} rounds, one process)")
    print(f"ratio (repro / bare)   : {t_full / t_bare:.2f}x")


if __name__ == "__main__":
    main()

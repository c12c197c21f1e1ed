"""Whether a change keeps every pipeline output byte for byte (a refactor's proof).

Runs ``dvc repro`` from scratch on a revision of this repository (``git archive`` into a
temporary git + DVC project) for one case, and prints the hash DVC locked for every output,
beside the same for ``--base`` when given, with the names of the outputs that differ:

- ``adult``: the shipped project on the bundled Adult data, default params (``make repro``);
- ``multiclass`` / ``regression``: a generated table (seeded, 4,000 rows, numbers, categories
  and missing values) made into a project by ``mlcycle init``, default params;
- ``dask``: Adult on the Dask engine (a LocalCluster), with quick training settings.

Per-trial seconds make ``metrics/tuning/trials.csv`` differ on every run; it is compared
without its seconds column. Takes minutes per case and revision.

    python bench/same_outputs.py adult --rev HEAD --base 77f0264
    python bench/same_outputs.py regression --rev f70ca5f > before.json   # once, then
    python bench/same_outputs.py regression --against before.json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK = {  # the Dask case: a model in seconds (the tests' settings)
    "engine": {"kind": "dask", "dashboard": ":0", "partition_rows": 20_000},
    "train": {
        "cv_folds": 2,
        "tuning": {"trials": 0, "trials_by_candidate": {"logistic_regression": 0}},
        "xgb": {"n_estimators": 60, "early_stopping_rounds": 10, "learning_rate": 0.3},
        "candidates": ["xgboost", "logistic_regression"],
    },
    "objectives": {"minimum": 0.9},
}


def generated(task: str, rows: int = 4000, seed: int = 7) -> pd.DataFrame:
    """A table whose target depends on its numbers and categories, with missing values."""
    rng = np.random.default_rng(seed)
    x1, x2, x3 = rng.normal(size=(3, rows))
    colour = rng.choice(["red", "green", "blue", "amber"], size=rows, p=[0.4, 0.3, 0.2, 0.1])
    size = rng.integers(1, 40, size=rows)
    signal = 1.5 * x1 - x2 + np.where(colour == "red", 1.0, 0.0) + size / 20
    if task == "regression":
        target = np.round(10 + 3 * signal + rng.normal(scale=1.0, size=rows), 3)
    else:
        noisy = signal + rng.normal(scale=0.8, size=rows)
        target = np.array(["low", "mid", "high", "top"])[np.digitize(noisy, [-1, 0.5, 2])]
    df = pd.DataFrame(
        {"x1": x1, "x2": x2, "x3": x3, "colour": colour, "size": size, "target": target}
    )
    df.loc[df.index % 13 == 0, "x2"] = np.nan
    df.loc[df.index % 29 == 0, "colour"] = None
    return df


def env(project: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project / "src"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "same-outputs",
        "GIT_AUTHOR_EMAIL": "bench@mlcycle.invalid",
        "GIT_COMMITTER_NAME": "same-outputs",
        "GIT_COMMITTER_EMAIL": "bench@mlcycle.invalid",
    }


def sh(args: list[str], project: Path) -> None:
    proc = subprocess.run(args, cwd=project, env=env(project), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")


def make(rev: str, case: str, where: Path) -> Path:
    """A fresh project of ``rev`` set up for ``case``, committed."""
    project = where / f"{case}-{rev[:12]}"
    project.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(project)], input=archive.stdout, check=True)
    sh(["git", "init", "-q", "-b", "main"], project)
    sh(["dvc", "init", "-q", "-f"], project)
    if case in ("multiclass", "regression"):
        data = project / "data/external/generated.csv"
        generated(case).to_csv(data, index=False)
        (project / "data/external/adult").rename(where / f"adult-{case}-{rev[:12]}")
        args = ["mlcycle", "init", "--data", str(data), "--target", "target", "--force"]
        task = "regression" if case == "regression" else "multiclass_classification"
        sh([*args, "--task", task, "--name", "generated"], project)
    elif case == "dask":
        path = project / "params.yaml"
        params = yaml.safe_load(path.read_text())
        for key, value in QUICK.items():
            params[key] = {**params.get(key, {}), **value}
        path.write_text(yaml.safe_dump(params, sort_keys=False))
    (project / "dvc.lock").unlink(missing_ok=True)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-q", "-m", "project"], project)
    return project


def _provenance_free(data: object) -> object:
    """A bundle's JSON without what names the run rather than the model: when it was made,
    the git commit, and the hashes of the code files it was made with."""
    if isinstance(data, dict):
        return {
            key: _provenance_free(
                {k: v for k, v in value.items() if not k.startswith("src/")}
                if key == "dvc_lock"
                else value
            )
            for key, value in data.items()
            if key not in ("created", "git")
        }
    if isinstance(data, list):
        return [_provenance_free(v) for v in data]
    return data


def _bundle_digests(bundle: Path) -> dict[str, str]:
    """Each bundle file's digest, provenance masked (SHA256SUMS covers the masked files, so it
    is left out: the other files stand for it)."""
    found = {}
    for path in sorted(bundle.iterdir()):
        if path.name == "SHA256SUMS":
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            data = json.dumps(_provenance_free(json.loads(data)), sort_keys=True).encode()
        elif path.suffix == ".md":
            lines = data.decode().splitlines()
            data = "\n".join(
                ln for ln in lines if not ln.startswith(("- git commit:", "- created:"))
            ).encode()
        found[f"{bundle.name}/{path.name}"] = hashlib.md5(data).hexdigest()
    return found


def outputs(project: Path) -> dict[str, str]:
    """Every output's locked hash; the bundle file by file without its provenance, and
    trials.csv without per-trial seconds."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    found = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == "models/bundle":
                found.update(_bundle_digests(project / out["path"]))
            else:
                found[out["path"]] = out.get("md5") or out.get("hash", "")
    trials = project / "metrics/tuning/trials.csv"
    if trials.exists():
        rows = list(csv.reader(io.StringIO(trials.read_text())))
        drop = [i for i, name in enumerate(rows[0]) if name.endswith("_s") or "second" in name]
        kept = [[v for i, v in enumerate(row) if i not in drop] for row in rows]
        digest = hashlib.md5(json.dumps(kept).encode()).hexdigest()
        found["metrics/tuning/trials.csv"] = f"{digest} (without seconds)"
    return found


def run(rev: str, case: str, where: Path) -> dict[str, str]:
    sha = subprocess.run(
        ["git", "rev-parse", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    project = make(sha, case, where)
    start = time.perf_counter()
    sh(["dvc", "repro"], project)
    took = time.perf_counter() - start
    print(f"{case} at {sha[:10]}: dvc repro in {took:.0f} s", file=sys.stderr, flush=True)
    return outputs(project)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["adult", "multiclass", "regression", "dask"])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--base", help="the revision to compare with")
    parser.add_argument("--against", type=Path, help="a JSON this script printed for a base")
    parser.add_argument("--keep", type=Path, help="keep the projects under this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        now = run(args.rev, args.case, where)
        base = run(args.base, args.case, where) if args.base else None
    if args.against:
        base = json.loads(args.against.read_text())
    if base is None:
        print(json.dumps(now, indent=1))
        return
    differ = sorted(p for p in set(now) | set(base) if now.get(p) != base.get(p))
    for path in sorted(set(now) | set(base)):
        mark = "DIFFERS" if path in differ else "same"
        print(f"{mark:8} {path}  {base.get(path)}  {now.get(path)}")
    print(f"{len(differ)} of {len(set(now) | set(base))} outputs differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()

"""The Dask engine at scale: `dvc repro` on 1M and 10M generated Adult-like rows.

Each size gets a fresh copy of the project in a temporary git repository whose one source is
a folder of Parquet parts (``data/external/big/part-*.parquet``) made by resampling the rows of
data/external/adult/adult.data.gz with noise: numbers get Gaussian noise (a tenth of the
column's spread, clipped to its observed range, integers stay integers), and 2 % of the
categories are replaced by another value of the same column; labels stay with their rows.
The split is stratified (33 % test); training is XGBoost alone with tuning off and small
settings (2-fold CV, at most 100 rounds at learning rate 0.3), the same for every run.

The cluster is started here as a user would start one: ``dask scheduler`` and
``--workers`` ``dask worker`` processes on 127.0.0.1, and the project points at it
(``engine.scheduler``). Each stage then runs with ``dvc repro --single-item <stage>``; its
wall time and the peak RSS of the stage's process tree (dvc and the stage's own Python
process: the driver; the workers are not its children) come from ``getrusage`` in a small
launcher process that starts the stage (a process forked from this one would start from this
one's peak, the generated rows included). The workers'
peak RSS is read from /proc at the end. The same 1M project is then run with
``engine.kind: local`` (pandas in the stage process) for the ratio.

    python bench/bench_dask.py [--rows 1000000 10000000] [--workers 2] [--no-local]
                               [--keep DIR]

Prints a table per size and the checks the issue asks for: t(10M) / t(1M) (<= 11), the
driver's peak memory at each size (flat in data size), and dask / local at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
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
COPY = ("dvc.yaml", "params.yaml", "schema.yaml", "src", "plot_templates", "metrics/monitor")
STAGES = ("gather", "validate", "prepare", "train", "evaluate", "gate", "package")
CHUNK_ROWS = 1_000_000
NUMERIC_NOISE = 0.1
CATEGORY_NOISE = 0.02


def adult() -> pd.DataFrame:
    """The Adult training file, named and cleaned as the project's gather stage reads it."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    df = pd.read_csv(
        ROOT / "data/external/adult/adult.data.gz",
        header=None,
        names=params["data"]["columns"],
        skipinitialspace=True,
        na_values=["?"],
    )
    return df


def generate(rows: int, folder: Path, seed: int = 0) -> int:
    """Write ``rows`` Adult-like rows as Parquet parts of at most CHUNK_ROWS rows."""
    base = adult()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    numeric = [c for c in base.columns if pd.api.types.is_numeric_dtype(base[c])]
    text = [c for c in base.columns if c not in numeric and c != "income"]
    values = {c: base[c].dropna().unique() for c in text}
    written = 0
    part = 0
    while written < rows:
        n = min(CHUNK_ROWS, rows - written)
        chunk = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
        for c in numeric:
            col = base[c]
            noisy = chunk[c] + rng.normal(0, NUMERIC_NOISE * col.std(), n)
            chunk[c] = np.clip(np.round(noisy), col.min(), col.max()).astype(col.dtype)
        for c in text:
            swap = rng.uniform(size=n) < CATEGORY_NOISE
            chunk.loc[swap, c] = rng.choice(values[c], int(swap.sum()))
        chunk.to_parquet(folder / f"part-{part:05d}.parquet", index=False)
        written += n
        part += 1
    return written


def make_project(dest: Path, rows: int, data: Path, engine: dict) -> Path:
    """A git + DVC project reading the generated parts, with the bench's fixed settings."""
    dest.mkdir(parents=True)
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / "data/external").mkdir(parents=True)
    (dest / "data/landing").mkdir(parents=True)
    os.symlink(data, dest / "data/external/big")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params["data"] = {
        "sources": [
            {
                "name": "generated",
                "kind": "file",
                "path": "data/external/big/*.parquet",
                "format": "parquet",
            }
        ]
    }
    params["prepare"]["split"] = {"method": "stratified", "test_size": 0.33, "seed": 42}
    params["objectives"]["minimum"] = 0.8
    params["objectives"]["minimums"] = {}
    params["train"].update(
        candidates=["xgboost"],
        baseline=None,
        cv_folds=2,
        tuning={"trials": 0, "trials_by_candidate": {}},
    )
    params["train"]["xgb"].update(n_estimators=100, early_stopping_rounds=10, learning_rate=0.3)
    params["engine"] = {**params.get("engine", {}), **engine}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "config", "user.name", "bench"],
        ["git", "config", "user.email", "bench@mlcycle.invalid"],
        ["dvc", "init", "-q"],
        ["dvc", "config", "core.analytics", "false"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "bench project"],
    ):
        subprocess.run(args, cwd=dest, check=True, env=env())
    return dest


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


# Runs argv[2:] and writes the peak RSS (KiB) of its descendants to argv[1]. A process forked
# from this one starts with this process's peak (Linux keeps it through fork and exec): the
# stage must be forked from a small launcher, not from here, where the generated rows live.
LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(code)"
)


def measure(cmd: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``cmd`` and its waited-for descendants (the largest
    one's), measured by a small launcher process (see ``LAUNCHER``)."""
    peak_file = log.with_suffix(".peak")
    start = time.perf_counter()
    with log.open("ab") as out:
        done = subprocess.run([sys.executable, "-c", LAUNCHER, str(peak_file), *cmd], cwd=cwd,
                              env=env(), stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}; see {log}")
    return wall, int(peak_file.read_text()) / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """``dask scheduler`` + ``dask worker`` processes on 127.0.0.1, as a user starts them."""

    def __init__(self, workers: int, memory: str, logs: Path) -> None:
        port = free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        logs.mkdir(parents=True, exist_ok=True)
        self.procs = [self._start(logs / "scheduler.log", ["scheduler", "--host", "127.0.0.1",
                      "--port", str(port), "--dashboard-address", ":0", "--no-show"])]  # fmt: skip
        self.workers = [
            self._start(
                logs / f"worker{i}.log",
                [
                    "worker",
                    self.address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    memory,
                    "--dashboard-address",
                    ":0",
                    "--local-directory",
                    str(logs / f"w{i}"),
                    "--no-nanny",  # the worker is this process: its VmHWM is the worker's
                ],
            )  # fmt: skip
            for i in range(workers)
        ]
        self.procs += self.workers
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(workers, timeout=120)

    @staticmethod
    def _start(log: Path, args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [str(BIN / "dask"), *args], stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def worker_peak_mib(self) -> float:
        """The largest peak RSS (VmHWM) over the worker processes and their children."""
        peak = 0.0
        for proc in self.workers:
            pids = [proc.pid, *_children(proc.pid)]
            for pid in pids:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) / 1024)
        return peak

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    out = [int(p) for p in text.split()]
    return out + [c for p in out for c in _children(p)]


def run_pipeline(project: Path, label: str) -> dict:
    """Every stage with `dvc repro --single-item`: seconds and driver peak MiB per stage."""
    log = project / "bench.log"
    result: dict = {"stages": {}}
    for stage in STAGES:
        wall, peak = measure(["dvc", "repro", "--single-item", stage], project, log)
        result["stages"][stage] = {"seconds": round(wall, 1), "driver_peak_mib": round(peak)}
        print(f"  {label} {stage:9s} {wall:8.1f} s  driver peak {peak:7.0f} MiB", flush=True)
    result["seconds"] = round(sum(s["seconds"] for s in result["stages"].values()), 1)
    result["driver_peak_mib"] = max(s["driver_peak_mib"] for s in result["stages"].values())
    evaluate = json.loads((project / "metrics/evaluate.json").read_text())
    result["roc_auc"] = evaluate.get("roc_auc")
    result["test_rows"] = evaluate.get("rows")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="6GiB", help="per worker")
    parser.add_argument("--partition-rows", type=int, default=500_000)
    parser.add_argument("--no-local", action="store_true", help="skip the local-engine run")
    parser.add_argument("--keep", type=Path, help="work here and keep the projects")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-dask-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    cluster = Cluster(args.workers, args.memory_limit, work / "cluster")
    print(f"cluster: {cluster.address}, {args.workers} worker(s) x 1 thread", flush=True)
    try:
        for rows in args.rows:
            data = work / f"data-{rows}"
            start = time.perf_counter()
            if not data.exists():
                generate(rows, data)
            print(f"{rows:,} rows generated in {time.perf_counter() - start:.0f} s", flush=True)
            engine = {
                "kind": "dask",
                "scheduler": cluster.address,
                "partition_rows": args.partition_rows,
            }
            project = make_project(work / f"dask-{rows}", rows, data, engine)
            results[f"dask {rows}"] = run_pipeline(project, f"dask {rows:>10,}")
        if not args.no_local:
            rows = min(args.rows)
            project = make_project(work / f"local-{rows}", rows, work / f"data-{rows}", {})
            results[f"local {rows}"] = run_pipeline(project, f"local {rows:>9,}")
        results["worker_peak_mib"] = round(cluster.worker_peak_mib())
    finally:
        cluster.close()
    report(results, args)
    (work / "results.json").write_text(json.dumps(results, indent=2))
    print(f"results: {work / 'results.json'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def report(results: dict, args: argparse.Namespace) -> None:
    print()
    print(f"{'run':>18s} {'seconds':>9s} {'driver peak MiB':>16s} {'test roc_auc':>13s}")
    for name, r in results.items():
        if isinstance(r, dict):
            auc = r["roc_auc"]
            print(f"{name:>18s} {r['seconds']:9.1f} {r['driver_peak_mib']:16d} {auc:13.4f}")
    print(f"dask workers' peak RSS: {results['worker_peak_mib']} MiB (each at most)")
    small, large = min(args.rows), max(args.rows)
    if small != large:
        a, b = results[f"dask {small}"], results[f"dask {large}"]
        ratio = b["seconds"] / a["seconds"]
        print(
            f"t({large:,}) / t({small:,}) = {ratio:.2f} (data x{large / small:.0f}; "
            f"the issue asks <= 11); driver peak {a['driver_peak_mib']} -> "
            f"{b['driver_peak_mib']} MiB (x{b['driver_peak_mib'] / a['driver_peak_mib']:.2f})"
        )
    if f"local {small}" in results:
        d, loc = results[f"dask {small}"], results[f"local {small}"]
        print(
            f"at {small:,} rows: dask {d['seconds']:.0f} s vs local {loc['seconds']:.0f} s "
            f"(x{d['seconds'] / loc['seconds']:.2f}); driver peak {d['driver_peak_mib']} vs "
            f"{loc['driver_peak_mib']} MiB"
        )


if __name__ == "__main__":
    main()

"""Gathering and preparation: time and peak memory against plain `pandas.read_csv`.

For the bundled Adult files and for 10x larger files made by resampling them (seeded), this runs
the `gather`, `validate` and `prepare` stages (each its own process, as `dvc repro` runs them)
in a temporary project, and, as the baseline in the same run, one process that only calls
`pandas.read_csv` on the same files. Peak memory is each process's maximum resident set size.

    python bench/bench_data.py [--scale 10]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("gather", "validate", "prepare")
READ_CSV = """
import sys, pandas as pd
for path, skip in zip(sys.argv[1::2], sys.argv[2::2]):
    pd.read_csv(path, header=None, skiprows=int(skip), skipinitialspace=True, na_values=["?"])
"""


def measure(args: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024


def resample(src: Path, dest: Path, scale: int, skip: int, seed: int) -> str:
    """Write ``scale`` times as many records, drawn with replacement; return the content hash."""
    lines = gzip.decompress(src.read_bytes()).decode().splitlines(keepends=True)
    head, records = lines[:skip], [ln for ln in lines[skip:] if ln.strip()]
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(records), len(records) * scale)
    content = ("".join(head) + "".join(records[i] for i in picked)).encode()
    dest.write_bytes(gzip.compress(content, mtime=0))
    return hashlib.sha256(content).hexdigest()


def run_case(project: Path, env: dict, files: list[tuple[Path, int]]) -> None:
    total_t, peak = 0.0, 0.0
    for stage in STAGES:
        t, m = measure([sys.executable, "-m", f"mlcycle.stages.{stage}"], project, env)
        total_t, peak = total_t + t, max(peak, m)
        print(f"    {stage:<9} {t:7.2f} s  {m:8.0f} MiB")
    args = [sys.executable, "-c", READ_CSV] + [str(a) for f in files for a in f]
    t_base, m_base = measure(args, project, env)
    print(f"    {'total':<9} {total_t:7.2f} s  {peak:8.0f} MiB peak")
    print(f"    read_csv  {t_base:7.2f} s  {m_base:8.0f} MiB   (baseline: plain pandas.read_csv)")
    print(f"    ratio     {total_t / t_base:7.2f}x time, {peak / m_base:.2f}x peak memory")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=int, default=10)
    args = ap.parse_args()
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(ROOT / "src"))
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        for name in ("params.yaml", "schema.yaml"):
            shutil.copy2(ROOT / name, project / name)
        shutil.copytree(ROOT / "data/external", project / "data/external")
        params = yaml.safe_load((project / "params.yaml").read_text())
        sources = params["data"]["sources"]
        files = [(project / s["path"], s.get("skip_rows", 0)) for s in sources]
        rows = sum(len(gzip.decompress(f.read_bytes()).splitlines()) for f, _ in files)
        print(f"Adult as bundled (~{rows:,} lines):")
        run_case(project, env, files)

        for i, source in enumerate(sources):
            big = project / "data/external" / f"big{i}.csv.gz"
            source["sha256"] = resample(
                project / source["path"], big, args.scale, source.get("skip_rows", 0), seed=i
            )
            source["path"] = str(big.relative_to(project))
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        files = [(project / s["path"], s.get("skip_rows", 0)) for s in sources]
        print(f"Adult resampled {args.scale}x (~{rows * args.scale:,} lines):")
        run_case(project, env, files)


if __name__ == "__main__":
    main()

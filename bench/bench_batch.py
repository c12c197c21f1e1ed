"""Streaming batch prediction: wall time and peak memory of `mlcycle predict` against a bare
pandas + XGBoost script doing the same chunked work, measured in the same run.

Adult-like files of each ``--rows`` size are made once in a temporary directory by resampling
the rows of data/external/adult/adult.data.gz (headerless; names from params.yaml
``data.columns``; the target dropped), as CSV and as Parquet. Each measurement runs in a fresh
process; its peak RSS is that process's own (``os.wait4``). Runs:

- ``mlcycle predict``: the command, streaming (``--chunk-rows``, no progress bar);
- ``bare``: pandas chunked read, the same encoding (category codes in training order, the
  derived features), ``xgboost.Booster.inplace_predict``, chunked write: nothing else;
- ``whole file`` (CSV only): what `mlcycle predict` did before, reading the whole file
  (``mlcycle.io.read_table`` + ``mlcycle.predict.score_frame`` + ``write_table``).

    python bench/bench_batch.py [--rows 1000000 4000000] [--bundle models/bundle]
                                [--chunk-rows 100000] [--no-whole-file] [--keep DIR]

Without ``--bundle`` it uses models/bundle if it exists, else builds one in a temporary copy
of the project with the tests' fast settings (``dvc repro``, a minute or two). Needs an
XGBoost bundle (the bare script reads model.ubj).
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
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ADULT = ROOT / "data/external/adult/adult.data.gz"

# The bare baseline: only pandas, pyarrow, numpy and XGBoost; no mlcycle code.
BARE = r"""
import json, sys
from pathlib import Path
import numpy as np, pandas as pd, pyarrow as pa, pyarrow.parquet as pq, xgboost as xgb

bundle, inp, out, chunk_rows = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
sig = json.loads((bundle / "signature.json").read_text())
threshold = json.loads((bundle / "metadata.json").read_text())["threshold"]
booster = xgb.Booster(model_file=str(bundle / "model.ubj"))
negative, positive = sig["classes"]
OPS = {"sum": np.add, "difference": np.subtract, "product": np.multiply, "ratio": np.divide}

def encode(df):
    cols = {}
    for f in sig["inputs"]:
        c = df[f["name"]]
        if f["kind"] == "numeric":
            cols[f["name"]] = c.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            codes = pd.Categorical(c.str.strip(), categories=f["categories"]).codes
            cols[f["name"]] = np.where(codes < 0, np.nan, codes)
    for d in sig["derived"]:
        names = d.get("columns") or [d["column"]]
        v = cols[names[0]]
        for n in names[1:]:
            v = OPS[d["op"]](v, cols[n])
        cols[d["name"]] = v
    return np.column_stack([cols[f["name"]] for f in sig["features"]]).astype(np.float32)

def predict(df):
    p = booster.inplace_predict(encode(df)).astype(np.float64)
    df[f"probability_{negative}"] = 1.0 - p
    df[f"probability_{positive}"] = p
    df["probability"] = p
    df["prediction"] = np.where(p >= threshold, positive, negative)
    return df

if inp.endswith(".csv"):
    with open(out, "w", newline="") as fh:
        for i, df in enumerate(pd.read_csv(inp, chunksize=chunk_rows, skipinitialspace=True)):
            predict(df).to_csv(fh, header=i == 0, index=False)
else:
    writer = None
    for batch in pq.ParquetFile(inp).iter_batches(batch_size=chunk_rows):
        table = pa.Table.from_pandas(predict(batch.to_pandas()), preserve_index=False)
        writer = writer or pq.ParquetWriter(out, table.schema)
        writer.write_table(table)
    writer.close()
"""

# What `mlcycle predict` did before streaming: the whole file in memory.
WHOLE = r"""
import sys
from mlcycle.bundle import load_bundle
from mlcycle.io import read_table, write_table
from mlcycle.predict import score_frame
bundle = load_bundle(sys.argv[1])
write_table(sys.argv[3], score_frame(bundle, read_table(sys.argv[2]), int(sys.argv[4])))
"""


def measure(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of ``cmd`` in a fresh process (its own rusage)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{err.read().decode()}")
    return wall, usage.ru_maxrss / 1024**2  # ru_maxrss is in KiB on Linux


def make_data(rows: int, directory: Path) -> tuple[Path, Path]:
    """Adult-like records, ``rows`` of them, as CSV and Parquet (written in parts)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    names, target = params["data"]["columns"], params["objectives"]["target"]
    adult = pd.read_csv(ADULT, header=None, names=names, skipinitialspace=True, na_values=["?"])
    adult = adult.drop(columns=target)
    csv, parquet = directory / f"adult_{rows}.csv", directory / f"adult_{rows}.parquet"
    rng = np.random.default_rng(rows)
    writer = None
    with open(csv, "w", newline="") as fh:
        for i, start in enumerate(range(0, rows, 500_000)):
            n = min(500_000, rows - start)
            part = adult.iloc[rng.integers(0, len(adult), n)].reset_index(drop=True)
            part.to_csv(fh, header=i == 0, index=False)
            table = pa.Table.from_pandas(part, preserve_index=False)
            writer = writer or pq.ParquetWriter(parquet, table.schema)
            writer.write_table(table)
    writer.close()
    return csv, parquet


def build_bundle(directory: Path) -> Path:
    """A bundle from a temporary copy of the project, with the tests' fast settings."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import make_project, run

    project = make_project(directory / "project")
    print(f"building a model bundle in {project} (dvc repro) ...", file=sys.stderr, flush=True)
    run(["dvc", "repro"], project)
    return project / "models/bundle"


def probabilities(path: Path) -> np.ndarray:
    if path.suffix == ".csv":
        return pd.read_csv(path, usecols=["probability"])["probability"].to_numpy()
    return pd.read_parquet(path, columns=["probability"])["probability"].to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--bundle", help="an XGBoost bundle (default: models/bundle, else built)")
    ap.add_argument("--chunk-rows", type=int, default=100_000)
    ap.add_argument("--no-whole-file", action="store_true", help="skip the whole-file run")
    ap.add_argument("--keep", help="make the files in this directory and keep them")
    args = ap.parse_args()

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_batch_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.bundle:
            bundle = Path(args.bundle).resolve()
        elif (ROOT / "models/bundle/model.ubj").exists():
            bundle = ROOT / "models/bundle"
        else:
            bundle = build_bundle(work)
        (work / "bare_predict.py").write_text(BARE)
        (work / "whole_file_predict.py").write_text(WHOLE)
        py, chunk = str(BIN / "python"), str(args.chunk_rows)
        results: dict[tuple[int, str, str], tuple[float, float]] = {}
        checks: list[str] = []
        for rows in args.rows:
            print(f"writing {rows:,} Adult-like rows as CSV and Parquet ...", file=sys.stderr)
            files = dict(zip(("csv", "parquet"), make_data(rows, work), strict=True))
            for fmt, src in files.items():
                outs = {}
                runs = {
                    "mlcycle predict": [str(BIN / "mlcycle"), "predict"],
                    "bare": [py, str(work / "bare_predict.py"), str(bundle)],
                }
                if fmt == "csv" and not args.no_whole_file:
                    runs["whole file (before)"] = [py, str(work / "whole_file_predict.py")]
                    runs["whole file (before)"].append(str(bundle))
                for name, cmd in runs.items():
                    out = work / f"out_{name.split()[0]}_{rows}.{fmt}"
                    if name == "mlcycle predict":
                        cmd = [*cmd, str(src), str(out), "--bundle", str(bundle), "--quiet"]
                        cmd += ["--chunk-rows", chunk]
                    else:
                        cmd = [*cmd, str(src), str(out), chunk]
                    print(f"  {fmt} {name} ...", file=sys.stderr, flush=True)
                    results[(rows, fmt, name)] = measure(cmd, ROOT)
                    outs[name] = out
                same = np.array_equal(
                    probabilities(outs["mlcycle predict"]), probabilities(outs["bare"])
                )
                checks.append(f"{rows:,} {fmt}: identical probabilities to bare: {same}")
                for out in outs.values():
                    out.unlink()
            for src in files.values():
                src.unlink()
        report(results, args, bundle, checks)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results: dict, args: argparse.Namespace, bundle: Path, checks: list[str]) -> None:
    meta = json.loads((bundle / "metadata.json").read_text())
    print(
        f"\nbundle {bundle} (model {meta['model_sha256'][:12]}); chunk rows {args.chunk_rows}; "
        f"{os.cpu_count()} CPU(s)"
    )
    print(f"{'rows':>10}  {'format':7}  {'run':20}  {'wall s':>7}  {'rows/s':>9}  {'peak GB':>7}")
    for (rows, fmt, name), (wall, gb) in results.items():
        print(f"{rows:>10,}  {fmt:7}  {name:20}  {wall:7.1f}  {rows / wall:9,.0f}  {gb:7.2f}")
    print("\nratios")
    sizes = sorted({r for r, _, _ in results})
    for rows in sizes:
        for fmt in ("csv", "parquet"):
            if (rows, fmt, "bare") in results:
                ours, bare = results[(rows, fmt, "mlcycle predict")], results[(rows, fmt, "bare")]
                print(
                    f"  {rows:>10,} {fmt:7}  time ours/bare {ours[0] / bare[0]:.2f}  "
                    f"memory ours/bare {ours[1] / bare[1]:.2f}"
                )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        for (rows, fmt, name), (_, gb) in results.items():
            if rows == large and (small, fmt, name) in results:
                print(
                    f"  memory {large:,} vs {small:,} rows, {fmt:7} {name:20}: "
                    f"{gb / results[(small, fmt, name)][1]:.2f}x"
                )
    for line in checks:
        print(line)


if __name__ == "__main__":
    main()

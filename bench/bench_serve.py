"""The model service under load, next to a minimal reference endpoint in the same run.

Starts `mlcycle serve` on a bundle (with the prediction log on, in a temporary SQLite file, and
off) and a reference: a plain FastAPI/uvicorn app that parses the same JSON body and calls
XGBoost's `inplace_predict` on the request's records encoded in advance (1 thread) with
the same uvicorn settings and workers. Both are driven by `wrk` (Debian's package; not Python)
on 127.0.0.1 with the same single-record and 100-record bodies, 50 connections, a bounded time.
Printed: requests/s, p50 and p99 of each (medians of alternating rounds), and the ratios
ours / reference. Also in process:
one-row `score` through the service's path (encoder + output_encoded) against `inplace_predict`
on the encoded row.

    python bench/bench_serve.py                  # models/bundle, 3 rounds of 10 s per run
    python bench/bench_serve.py --bundle DIR --seconds 20 --workers 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEST_FILE = ROOT / "data/external/adult/adult.test.gz"

REFERENCE_APP = textwrap.dedent(
    """
    import os
    import numpy as np
    import xgboost as xgb
    from fastapi import Body, FastAPI
    from fastapi.responses import ORJSONResponse

    booster = xgb.Booster()
    booster.load_model(os.environ["REF_MODEL"])
    booster.set_param({"nthread": 1})
    rows = np.load(os.environ["REF_ROW"]).astype(np.float32)
    app = FastAPI()

    @app.post("/predict")
    async def predict(body: dict = Body(...)):
        n = len(body["records"])
        p = booster.inplace_predict(rows[:n])
        return ORJSONResponse({"predictions": [{"probability": float(v)} for v in p]})
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer")


def records(n: int) -> list[dict]:
    from mlcycle import config

    cols = list(config.load(ROOT / "params.yaml").data.columns)
    frame = pd.read_csv(TEST_FILE, header=None, names=cols, skiprows=1, skipinitialspace=True)
    frame = frame.drop(columns=["income"]).head(n)
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")


def wrk(url: str, body: bytes, seconds: int, connections: int) -> dict[str, float]:
    """Requests/s, p50 and p99 (ms) of ``wrk`` posting ``body`` to ``url``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(body.decode())}\n"
        )
        script = fh.name
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script)

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    # requests not answered within wrk's timeout (2 s), or connections broken
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "p50": ms("50%"),
        "p99": ms("99%"),
        "non2xx": int(errors.group(1)) if errors else 0,
        "sockerr": sum(map(int, sock.groups())) if sock else 0,
    }


def start(cmd: list[str], env: dict, health: str) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_ready(health, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def in_process(bundle_dir: Path, rec: dict, reps: int = 3000) -> tuple[float, float]:
    """Median µs of one-row scoring on the service's path, and of inplace_predict alone."""
    from mlcycle.bundle import load_bundle
    from mlcycle.encoder import Encoder

    bundle = load_bundle(bundle_dir)
    enc = Encoder.compile(bundle.signature)
    row = enc.encode([rec]).astype(np.float32)
    booster = bundle.booster

    def timed(fn) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e6)

    ours = timed(lambda: bundle.model.output_encoded(enc.encode([rec]), bundle.signature))
    bare = timed(lambda: booster.inplace_predict(row))
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "models/bundle"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    bundle_dir = Path(args.bundle)
    recs = records(100)
    bodies = {
        "1 record": json.dumps({"records": recs[:1]}).encode(),
        "100 records": json.dumps({"records": recs}).encode(),
    }

    ours_us, bare_us = in_process(bundle_dir, recs[0])
    print(f"in process, one row: service path {ours_us:.0f} µs, bare inplace_predict "
          f"{bare_us:.0f} µs, ratio {ours_us / bare_us:.2f}")  # fmt: skip

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        from mlcycle.bundle import load_bundle
        from mlcycle.encoder import Encoder

        bundle = load_bundle(bundle_dir)
        # The very records the load sends, encoded once: the reference does the model's work
        # and nothing else.
        np.save(tmp / "row.npy", Encoder.compile(bundle.signature).encode(recs))
        (tmp / "ref_app.py").write_text(REFERENCE_APP)
        model_file = next(p for p in bundle_dir.iterdir() if p.suffix == ".ubj")
        env = dict(os.environ, REF_MODEL=str(model_file), REF_ROW=str(tmp / "row.npy"))
        env["PYTHONPATH"] = f"{tmp}{os.pathsep}{env.get('PYTHONPATH', '')}"
        uv = ["--workers", str(args.workers), "--http", "httptools", "--loop", "uvloop",
              "--no-access-log", "--log-level", "warning"]  # fmt: skip

        def ours(port: int) -> list[str]:
            workers = str(args.workers)
            return [str(BIN / "mlcycle"), "serve", "--bundle", str(bundle_dir), "--port",
                    str(port), "--workers", workers, "--log-level", "warning"]  # fmt: skip

        servers = {
            "reference": lambda port: [
                str(BIN / "uvicorn"),
                "ref_app:app",
                "--port",
                str(port),
                *uv,
            ],  # fmt: skip
            "mlcycle, log on": lambda port: [
                *ours(port),
                "--log-url",
                f"sqlite:///{tmp / 'log.db'}",
            ],  # fmt: skip
            "mlcycle, log off": lambda port: [*ours(port), "--no-log"],
        }
        # Every server up at once (idle ones cost nothing); then rounds that alternate them,
        # so a burst of noise on the shared machine falls on all of them, not on one.
        procs: dict[str, tuple[subprocess.Popen, int]] = {}
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        try:
            for name, cmd in servers.items():
                port = free_port()
                health = f"http://127.0.0.1:{port}/openapi.json"
                procs[name] = (start(cmd(port), dict(env, PWD=str(tmp)), health), port)
            for round_ in range(args.rounds):
                for label, body in bodies.items():
                    for name, (_, port) in procs.items():
                        print(f"  round {round_ + 1}/{args.rounds}: {name}, {label} ...",
                              file=sys.stderr, flush=True)  # fmt: skip
                        url = f"http://127.0.0.1:{port}/predict"
                        runs.setdefault((name, label), []).append(
                            wrk(url, body, args.seconds, args.connections)
                        )
        finally:
            for proc, _ in procs.values():
                stop(proc)
        results = {
            key: {k: float(np.median([r[k] for r in rs])) for k in ("rps", "p50", "p99")}
            | {k: sum(int(r[k]) for r in rs) for k in ("non2xx", "sockerr")}
            for key, rs in runs.items()
        }
        print(f"\nwrk -c{args.connections} -d{args.seconds}s, {args.workers} worker(s), "
              f"{os.cpu_count()} cores, median of {args.rounds} alternating rounds")  # fmt: skip
        print(f"{'server':<18}{'request':<13}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'non-2xx':>9}{'sock err':>9}{'rps ratio':>11}{'p99 ratio':>11}")  # fmt: skip
        for (name, label), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            ref = results[("reference", label)]
            rps_ratio, p99_ratio = r["rps"] / ref["rps"], r["p99"] / ref["p99"]
            print(f"{name:<18}{label:<13}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
                  f"{int(r['non2xx']):>9d}{int(r['sockerr']):>9d}"
                  f"{rps_ratio:>11.2f}{p99_ratio:>11.2f}")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

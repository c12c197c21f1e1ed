"""The model service under load, next to a minimal reference endpoint in the same run.

Starts `mlcycle serve` on a bundle (with the prediction log on, in a temporary SQLite file, and
off) and a reference: a plain FastAPI/uvicorn app that parses the same JSON body and calls
XGBoost's `inplace_predict` on the request's records encoded in advance (1 thread) with
the same uvicorn settings and workers. Both are driven by `wrk` (Debian's package; not Python)
on 127.0.0.1 with the same single-record and 100-record bodies, 50 connections, a bounded time.
Printed: requests/s, p50, p90 and p99 of each (medians of alternating rounds), requests not
answered within wrk's `--timeout` (5 s) and the ratios ours / reference; then the tail at 100
records per request against its target (none unanswered, p99 at most 2x the reference's).
Also in process: one-row `score` through the service's path (encoder + output_encoded) against
`inplace_predict` on the encoded row. Then a swap under load: the longest request (wrk's max)
while `POST /admin/reload` loads, verifies and tries the bundle again halfway through a run,
beside the longest under the same load without a swap (target: at most 2x, none failed).
Then a shadow model: the service with `--shadow-bundle` (the same bundle again: the shadow
scores production's input matrix) against the service without one, both logging, in
alternating rounds of the same run: requests/s, p99 and the server's CPU time per request
under wrk, then p50, p99 and CPU per request at a fixed rate (`--shadow-load` of the
capacity without a shadow: wrk's connections wait a random time between requests, Poisson
arrivals, as wrk's closed loop at capacity only tracks throughput; p50 and p99 of all the
rounds' requests pooled), each CPU figure split into the worker's and the shadow process's, and the
shadow's records dropped; the CPU the shadow adds at the fixed rate beside what its own work
costs in process (score, decide, serialise, write its log row) scored inline, right after
production, at the same rate (and back to back), and the ratios (target: the shadow adds at
most the CPU of its own work inline, p99 at the fixed rate at most 10 % higher, nothing
dropped).

With `--mlserver PATH/bin/mlserver` (MLServer 1.7 in a venv of its own: `python3 -m venv
/work/bench-envs/mlserver && /work/bench-envs/mlserver/bin/pip install 'mlserver==1.7.*' xgboost
pandas`), the server's CPU time per request at 100 records (utime + stime of the server's
processes in /proc, before and after a load, over the requests answered) on `/predict` and on
the Open Inference Protocol endpoint, beside MLServer running a custom runtime that does the
same encoding and XGBoost predict (one process, one thread), with the same OIP body.

    python bench/bench_serve.py                  # models/bundle, 3 rounds of 10 s per run
    python bench/bench_serve.py --bundle DIR --seconds 20 --workers 2 --rounds 5
    python bench/bench_serve.py --mlserver /work/bench-envs/mlserver/bin/mlserver
    python bench/bench_serve.py --skip-load --skip-swap --mlserver ...   # the CPU figures only
    python bench/bench_serve.py --skip-load --skip-swap --seconds 5      # the shadow's cost only
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
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlcycle.serve.runner import UVICORN_OPTIONS

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

MLSERVER_RUNTIME = textwrap.dedent(
    """
    import json
    import os

    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from mlserver import MLModel
    from mlserver.codecs import PandasCodec
    from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput

    OPS = {"sum": np.add, "difference": np.subtract, "product": np.multiply, "ratio": np.divide}


    class Runtime(MLModel):
        \"\"\"The bundle's XGBoost model behind MLServer: the signature's encoding (category
        codes in training order, unseen or missing as NaN; derived columns), one thread.\"\"\"

        async def load(self) -> bool:
            bundle = os.environ["BENCH_BUNDLE"]
            sig = json.load(open(os.path.join(bundle, "signature.json")))
            meta = json.load(open(os.path.join(bundle, "metadata.json")))
            self.codes = {
                f["name"]: {c: float(i) for i, c in enumerate(f["categories"])}
                for f in sig["inputs"] if f["kind"] != "numeric"
            }
            self.derived = {d["name"]: d for d in sig["derived"]}
            self.columns = [f["name"] for f in sig["features"]]
            self.classes = np.asarray(sig["classes"], dtype=object)
            self.threshold = meta.get("decision", meta.get("threshold"))
            self.booster = xgb.Booster()
            self.booster.load_model(os.path.join(bundle, "model.ubj"))
            self.booster.set_param({"nthread": 1})
            return True

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            \"\"\"Each tensor's values read with numpy (categories through a dict).\"\"\"
            values = {}
            nan = float("nan")
            for tensor in payload.inputs:
                codes = self.codes.get(tensor.name)
                if codes is None:
                    values[tensor.name] = np.asarray(tensor.data.root, dtype=np.float64)
                else:
                    values[tensor.name] = np.fromiter(
                        (codes.get(v.strip(), nan) if v is not None else nan
                         for v in tensor.data.root), dtype=np.float64
                    )
            return self.answer(values)

        def answer(self, values: dict) -> InferenceResponse:
            for name, step in self.derived.items():
                op = OPS[step["op"]]  # the ops of this benchmark's bundle
                cols = [values[c] for c in step["columns"]]
                out = cols[0]
                for col in cols[1:]:
                    out = op(out, col)
                values[name] = np.where(np.isfinite(out), out, np.nan)
            matrix = np.column_stack([values[c] for c in self.columns])
            p = self.booster.inplace_predict(matrix).astype(np.float64)
            probs = np.column_stack([1.0 - p, p])
            labels = self.classes[(p >= self.threshold).astype(int)].tolist()
            n = len(p)
            return InferenceResponse(
                model_name=self.name,
                outputs=[
                    ResponseOutput(name="label", shape=[n], datatype="BYTES", data=labels),
                    ResponseOutput(name="probabilities", shape=[n, 2], datatype="FP64",
                                   data=probs.ravel().tolist()),
                    ResponseOutput(name="probability", shape=[n], datatype="FP64",
                                   data=probs[:, 1].tolist()),
                ],
            )


    class PandasRuntime(Runtime):
        \"\"\"The request read as MLServer's docs show it (PandasCodec, a DataFrame), categories
        through pandas categoricals with the training categories.\"\"\"

        async def predict(self, payload: InferenceRequest) -> InferenceResponse:
            frame = PandasCodec.decode_request(payload)
            values = {}
            for name in frame.columns:
                codes = self.codes.get(name)
                if codes is None:
                    values[name] = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
                else:
                    cat = pd.Categorical(frame[name].str.strip(), categories=list(codes))
                    values[name] = np.where(cat.codes < 0, np.nan, cat.codes).astype(np.float64)
            return self.answer(values)
    """
)

TARGET_P99_RATIO = 2.0  # ours / reference at 100 records per request
TARGET_CPU_RATIO = 0.7  # ours / MLServer's CPU per request at 100 records


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


WRK_TIMEOUT = "5s"  # a request not answered within it counts as not answered


QUANTILES = 1000  # latency quantiles a paced run writes: its distribution, pooled over rounds


def wrk(
    url: str, body: bytes, seconds: int, connections: int, rate: float | None = None
) -> dict[str, float]:
    """Requests/s, p50, p90 and p99 (ms), non-2xx answers, requests not answered within
    :data:`WRK_TIMEOUT` and other socket errors, of ``wrk`` (one thread) posting ``body``.

    Without ``rate`` each connection sends its next request as soon as it has an answer
    (closed loop: the load is the server's capacity). With ``rate`` (requests/s) each waits a
    random time after each answer, exponential with mean ``connections / rate``: Poisson
    arrivals at about ``rate``, a little under it by the answers' own time (wrk's ``delay()``;
    Debian's wrk has no fixed-rate mode), and ``quantiles`` holds :data:`QUANTILES` evenly
    spaced quantiles of the latency (ms), so rounds can be pooled (:func:`pooled`)."""
    lua = ('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
           f"wrk.body = {json.dumps(body.decode())}\n")  # fmt: skip
    out_file = None
    if rate is not None:
        fd, out_file = tempfile.mkstemp(suffix=".txt")
        os.close(fd)
        lua += textwrap.dedent(
            f"""
            local mean = {connections * 1000.0 / rate}
            function delay() return -mean * math.log(1 - math.random()) end
            function done(summary, latency, requests)
              local f = io.open("{out_file}", "w")
              for i = 0, {QUANTILES - 1} do
                f:write(latency:percentile((i + 0.5) * 100 / {QUANTILES}) / 1000, "\\n")
              end
              f:close()
            end
            """
        )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
        script = fh.name
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", WRK_TIMEOUT,
         "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    os.unlink(script)

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        return to_ms(m.group(1), m.group(2)) if m else float("nan")

    # Thread Stats' latency line: avg, stdev, max, +/- stdev
    lat = re.search(r"Latency\s+[\d.]+(?:us|ms|s)\s+[\d.]+(?:us|ms|s)\s+([\d.]+)(us|ms|s)", out)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    connect, read, write, timeout = map(int, sock.groups()) if sock else (0, 0, 0, 0)
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": ms("50%"),
        "p90": ms("90%"),
        "p99": ms("99%"),
        "max": to_ms(lat.group(1), lat.group(2)) if lat else float("nan"),
        "non2xx": int(errors.group(1)) if errors else 0,
        "timeout": timeout,
        "sockerr": connect + read + write,
    }
    if out_file is not None:
        result["quantiles"] = np.loadtxt(out_file)
        os.unlink(out_file)
    return result


def pooled(runs: list[dict], q: float) -> float:
    """The ``q`` quantile (0 to 100) of the latency of paced ``runs`` taken together: each
    run's quantiles weighted by its number of requests (a median of per-round p99s would
    rest on a few requests each)."""
    values = np.concatenate([r["quantiles"] for r in runs])
    weights = np.concatenate([np.full(QUANTILES, r["requests"] / QUANTILES) for r in runs])
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, q / 100 * cumulative[-1])])


def to_ms(value: str, unit: str) -> float:
    """wrk's figure in milliseconds."""
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


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


def cpu_seconds(pid: int, only: bytes | None = None) -> float:
    """utime + stime of ``pid`` and its descendants (a server's worker processes, and their
    shadow processes), in s; with ``only``, of those whose command line holds it."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            counted = only is None or only in (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = (int(fields[11]) + int(fields[12])) * counted  # utime, stime
    tree, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def oip_body(signature, recs: list[dict]) -> bytes:
    """The Open Inference Protocol request of ``recs``: one tensor per raw input."""
    inputs = [
        {
            "name": f.name,
            "shape": [len(recs)],
            "datatype": "FP64" if f.kind == "numeric" else "BYTES",
            "data": [r[f.name] for r in recs],
        }
        for f in signature.inputs
    ]
    return json.dumps({"inputs": inputs}).encode()


def post(url: str, body: bytes) -> dict:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def cpu_per_request(
    args: argparse.Namespace, bundle_dir: Path, recs: list[dict], tmp: Path, env: dict
) -> None:
    """CPU ms per 100-record request: ours on /predict and OIP, MLServer on OIP."""
    from mlcycle.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    name = bundle.metadata.get("name", "model")
    oip = oip_body(bundle.signature, recs)
    predict = json.dumps({"records": recs}).encode()
    mls = tmp / "mlserver"
    runtimes = {"numpy": (name, "Runtime"), "pandas": (f"{name}-pandas", "PandasRuntime")}
    for folder, (model, cls) in runtimes.items():
        (mls / folder).mkdir(parents=True)
        (mls / folder / "runtime.py").write_text(MLSERVER_RUNTIME)
        (mls / folder / "model-settings.json").write_text(
            json.dumps({"name": model, "implementation": f"runtime.{cls}"})
        )
    mls_port = free_port()
    (mls / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": mls_port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
            }
        )  # fmt: skip
    )
    port = free_port()
    ours_cmd = [str(BIN / "mlcycle"), "serve", "--bundle", str(bundle_dir), "--port", str(port),
                "--workers", "1", "--log-level", "warning", "--no-log"]  # fmt: skip
    mls_env = {k: v for k, v in env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    mls_env["BENCH_BUNDLE"] = str(bundle_dir)
    procs = {
        "mlcycle": start(ours_cmd, dict(env, PWD=str(tmp)), f"http://127.0.0.1:{port}/health"),
    }
    try:
        procs["MLServer 1.7"] = start(
            [args.mlserver, "start", str(mls)],
            mls_env,
            f"http://127.0.0.1:{mls_port}/v2/models/{name}-pandas/ready",
        )
        cases = {
            ("mlcycle", "/predict"): (f"http://127.0.0.1:{port}/predict", predict),
            ("mlcycle", "OIP"): (f"http://127.0.0.1:{port}/v2/models/{name}/infer", oip),
            ("MLServer 1.7", "OIP"): (f"http://127.0.0.1:{mls_port}/v2/models/{name}/infer", oip),
            ("MLServer 1.7", "OIP pandas"): (
                f"http://127.0.0.1:{mls_port}/v2/models/{name}-pandas/infer",
                oip,
            ),
        }

        # the same answers: the runtimes encode as ours does
        def probabilities(url: str) -> np.ndarray:
            outputs = post(url, oip)["outputs"]
            return np.asarray(next(o["data"] for o in outputs if o["name"] == "probabilities"))

        ours = probabilities(cases["mlcycle", "OIP"][0])
        for key in (("MLServer 1.7", "OIP"), ("MLServer 1.7", "OIP pandas")):
            diff = float(np.max(np.abs(ours - probabilities(cases[key][0]))))
            print(f"\n{' '.join(key)} against ours on the 100 records: max |probability "
                  f"difference| {diff:.2g}", end="")  # fmt: skip
        print()
        per_request: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            for (server, route), (url, body) in cases.items():
                print(f"  CPU round {round_ + 1}/{args.rounds}: {server} {route} ...",
                      file=sys.stderr, flush=True)  # fmt: skip
                pid = procs[server].pid
                before = cpu_seconds(pid)
                r = wrk(url, body, args.seconds, args.cpu_connections)
                spent = cpu_seconds(pid) - before
                if r["non2xx"] or r["requests"] == 0:
                    raise SystemExit(f"{server} {route}: {r['non2xx']} non-2xx answers")
                per_request.setdefault((server, route), []).append(1000 * spent / r["requests"])
    finally:
        for proc in procs.values():
            stop(proc)
    med = {k: float(np.median(v)) for k, v in per_request.items()}
    base = med["MLServer 1.7", "OIP"]  # the leaner of its two runtimes
    print(
        f"server CPU per 100-record request (wrk -t1 -c{args.cpu_connections} "
        f"-d{args.seconds}s, median of {args.rounds} alternating rounds; one process each)"
    )
    print(f"{'server':<15}{'route':<11}{'CPU ms/req':>11}{'rounds':>26}{'/ MLServer':>12}"
          f"{'target':>9}")  # fmt: skip
    for (server, route), value in med.items():
        rounds = " ".join(f"{v:.2f}" for v in per_request[server, route])
        ratio = value / base
        target = "" if server != "mlcycle" else f"<= {TARGET_CPU_RATIO}"
        print(f"{server:<15}{route:<11}{value:>11.2f}{rounds:>26}{ratio:>12.2f}{target:>9}")
    pandas = med["MLServer 1.7", "OIP pandas"]
    ratios = ", ".join(
        f"{route} {med['mlcycle', route] / pandas:.2f}" for route in ("/predict", "OIP")
    )
    print(f"mlcycle / MLServer's PandasCodec runtime: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(ROOT / "models/bundle"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument(
        "--mlserver", help="MLServer 1.7's `mlserver` command: adds CPU per request beside it"
    )
    parser.add_argument("--cpu-connections", type=int, default=8, help="wrk -c for CPU rounds")
    parser.add_argument("--skip-load", action="store_true", help="no load beside the reference")
    parser.add_argument("--skip-swap", action="store_true", help="no swap under load")
    parser.add_argument("--skip-shadow", action="store_true", help="no shadow against none")
    parser.add_argument(
        "--shadow-priority", nargs="+", choices=("low", "idle"), default=["low"],
        help="the shadow process's priority (mlcycle serve --shadow-priority); several: a "
        "shadow case each, in the same alternating rounds",
    )  # fmt: skip
    parser.add_argument(
        "--paced-seconds", type=int, default=30,
        help="each round's time at the shadow's fixed rate: its p99 rests on 1 %% of the "
        "requests, so it needs more of them than a throughput figure",
    )  # fmt: skip
    parser.add_argument(
        "--shadow-load", type=float, default=0.4,
        help="the fixed rate of the shadow's latency case, a share of the capacity without one",
    )  # fmt: skip
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    bundle_dir = Path(args.bundle)
    recs = records(100)
    bodies = {
        "1 record": json.dumps({"records": recs[:1]}).encode(),
        "100 records": json.dumps({"records": recs}).encode(),
    }

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        env = dict(os.environ)
        if not args.skip_load:
            load(args, bundle_dir, recs, bodies, tmp, env)
        if not args.skip_swap:
            swap_under_load(args, bundle_dir, bodies["1 record"], tmp, env)
        if not args.skip_shadow:
            shadow_cost(args, bundle_dir, recs, bodies, tmp, env)
        if args.mlserver:
            cpu_per_request(args, bundle_dir, recs, tmp, env)
        else:
            print("\nCPU per request beside MLServer: skipped (give --mlserver PATH/bin/mlserver, "
                  "MLServer 1.7 in its own venv; see --help)")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(
    args: argparse.Namespace,
    bundle_dir: Path,
    recs: list[dict],
    bodies: dict[str, bytes],
    tmp: Path,
    env: dict,
) -> None:
    """Ours (log on, log off) and the reference under wrk, in alternating rounds."""
    from mlcycle.bundle import load_bundle
    from mlcycle.encoder import Encoder

    ours_us, bare_us = in_process(bundle_dir, recs[0])
    print(f"in process, one row: service path {ours_us:.0f} µs, bare inplace_predict "
          f"{bare_us:.0f} µs, ratio {ours_us / bare_us:.2f}")  # fmt: skip

    bundle = load_bundle(bundle_dir)
    # The very records the load sends, encoded once: the reference does the model's work
    # and nothing else.
    np.save(tmp / "row.npy", Encoder.compile(bundle.signature).encode(recs))
    (tmp / "ref_app.py").write_text(REFERENCE_APP)
    model_file = next(p for p in bundle_dir.iterdir() if p.suffix == ".ubj")
    env = dict(env, REF_MODEL=str(model_file), REF_ROW=str(tmp / "row.npy"))
    env["PYTHONPATH"] = f"{tmp}{os.pathsep}{env.get('PYTHONPATH', '')}"
    # the reference runs on the uvicorn settings the service uses
    uv = ["--workers", str(args.workers), "--no-access-log", "--log-level", "warning"]
    uv += [a for k, v in UVICORN_OPTIONS.items() for a in (f"--{k}", str(v))]

    def ours(port: int) -> list[str]:
        workers = str(args.workers)
        return [str(BIN / "mlcycle"), "serve", "--bundle", str(bundle_dir), "--port",
                str(port), "--workers", workers, "--log-level", "warning"]  # fmt: skip

    servers = {
        "reference": lambda port: [str(BIN / "uvicorn"), "ref_app:app", "--port", str(port), *uv],
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
        key: {k: float(np.median([r[k] for r in rs])) for k in ("rps", "p50", "p90", "p99")}
        | {k: sum(int(r[k]) for r in rs) for k in ("non2xx", "timeout", "sockerr")}
        for key, rs in runs.items()
    }
    print(f"\nwrk -t1 -c{args.connections} -d{args.seconds}s --timeout {WRK_TIMEOUT}, "
          f"{args.workers} worker(s), {os.cpu_count()} cores, median of {args.rounds} "
          "alternating rounds (non-2xx, not answered, socket errors: summed)")  # fmt: skip
    print(f"{'server':<18}{'request':<13}{'req/s':>8}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}"
          f"{'non-2xx':>8}{'not ans.':>9}{'sock err':>9}{'rps ratio':>10}"
          f"{'p99 ratio':>10}")  # fmt: skip
    for (name, label), r in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ref = results[("reference", label)]
        rps_ratio, p99_ratio = r["rps"] / ref["rps"], r["p99"] / ref["p99"]
        print(f"{name:<18}{label:<13}{r['rps']:>8.0f}{r['p50']:>8.1f}{r['p90']:>8.1f}"
              f"{r['p99']:>8.1f}{int(r['non2xx']):>8d}{int(r['timeout']):>9d}"
              f"{int(r['sockerr']):>9d}{rps_ratio:>10.2f}{p99_ratio:>10.2f}")  # fmt: skip
    for name in ("mlcycle, log on", "mlcycle, log off"):
        r, ref = results[(name, "100 records")], results[("reference", "100 records")]
        p99s = " ".join(f"{x['p99']:.0f}" for x in runs[(name, "100 records")])
        ok = r["timeout"] == 0 and r["p99"] <= TARGET_P99_RATIO * ref["p99"]
        print(f"100 records, {name}: p99 per round {p99s} ms; {int(r['timeout'])} not answered "
              f"within {WRK_TIMEOUT}; p99 {r['p99'] / ref['p99']:.2f}x the reference's "
              f"(target: none, <= {TARGET_P99_RATIO:g}x): "
              f"{'met' if ok else 'NOT met'}")  # fmt: skip


TARGET_SWAP_RATIO = 2.0  # longest request during a swap / longest without one


def swap_under_load(
    args: argparse.Namespace, bundle_dir: Path, body: bytes, tmp: Path, env: dict
) -> None:
    """The longest request while the service swaps its model (`POST /admin/reload`, as
    `mlcycle retrain --service` and `mlcycle release --service` call it, halfway through the
    run), beside the longest under the same load without a swap, in alternating rounds."""
    from mlcycle.bundle import load_bundle
    from mlcycle.constants import ADMIN_TOKEN_ENV
    from mlcycle.retrain import reload_service

    model_id = load_bundle(bundle_dir).model_id
    token = "bench-" + os.urandom(8).hex()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN / "mlcycle"), "serve", "--bundle", str(bundle_dir), "--port", str(port),
           "--workers", str(args.workers), "--no-log", "--log-level", "warning"]  # fmt: skip
    proc = start(cmd, dict(env, **{ADMIN_TOKEN_ENV: token}), f"{url}/health")
    runs: dict[str, list[dict[str, float]]] = {"no swap": [], "swap": []}
    reloads: list[float] = []

    def reload() -> None:
        started = time.perf_counter()
        reload_service(url, token, model_id)  # loads, verifies and tries the bundle again
        reloads.append(time.perf_counter() - started)

    try:
        for round_ in range(args.rounds):
            for case, result in runs.items():
                print(f"  round {round_ + 1}/{args.rounds}: {case} ...", file=sys.stderr,
                      flush=True)  # fmt: skip
                timer = threading.Timer(args.seconds / 2, reload) if case == "swap" else None
                if timer:
                    timer.start()
                result.append(wrk(f"{url}/predict", body, args.seconds, args.connections))
                if timer:
                    timer.join()
    finally:
        stop(proc)
    if len(reloads) != args.rounds:
        raise SystemExit(f"{args.rounds - len(reloads)} reload(s) failed")
    longest = {case: max(r["max"] for r in rs) for case, rs in runs.items()}
    p99 = {case: float(np.median([r["p99"] for r in rs])) for case, rs in runs.items()}
    failed = sum(int(r["non2xx"] + r["timeout"] + r["sockerr"]) for rs in runs.values() for r in rs)
    ratio = longest["swap"] / longest["no swap"]
    print(f"\nswap under load: wrk -t1 -c{args.connections} -d{args.seconds}s, 1 record, "
          f"{args.workers} worker(s), {args.rounds} rounds; a reload halfway through each swap "
          f"round took {np.median(reloads):.2f} s (median)")  # fmt: skip
    for case in runs:
        maxes = " ".join(f"{r['max']:.1f}" for r in runs[case])
        print(f"  {case:<8} longest request {longest[case]:7.1f} ms (per round {maxes}), "
              f"p99 {p99[case]:.1f} ms")  # fmt: skip
    print(f"  longest during a swap {ratio:.2f}x the longest without one; failed requests "
          f"{failed} (target: <= {TARGET_SWAP_RATIO:g}x, none): "
          f"{'met' if ratio <= TARGET_SWAP_RATIO and not failed else 'NOT met'}")  # fmt: skip


TARGET_SHADOW_P99 = 1.10  # p99 with a shadow / p99 without one
PACED_CONNECTIONS = 32  # wrk's connections at the fixed rate: each waits between requests


def shadow_work_ms(
    bundle_dir: Path, recs: list[dict], tmp: Path, rate: float, reps: int
) -> tuple[float, float]:
    """The shadow's own work for one request of ``recs``, in process, in CPU ms per request:
    what its process does (score_shadow: score production's matrix, decide, serialise the
    outputs) and what the worker does with it (Core.shadow_reported; its log row written by
    the log's writer thread). Two figures: requests scored back to back (a warm core and
    cache: the least it can cost), and the shadow scored inline, right after production, for
    requests arriving at ``rate`` (Poisson): what a second model in the request path costs
    at the benchmark's fixed rate, the target's measure. On this machine a model scoring 100
    rows 14 ms apart takes about 40 % more CPU than back to back (its cache gone cold, the
    core clocked down between requests), and so does the shadow's process."""
    from mlcycle.bundle import load_bundle
    from mlcycle.predlog import PredictionLog
    from mlcycle.serve.core import Core, ServeSettings
    from mlcycle.serve.shadow import Job
    from mlcycle.serve.shadow_process import score_shadow

    settings = ServeSettings(bundle_dir=str(bundle_dir), shadow_bundle=str(bundle_dir))
    log = PredictionLog(f"sqlite:///{tmp / f'work-{len(recs)}.db'}")
    core = Core(load_bundle(bundle_dir), settings, log)
    prod, shadow = core.current().prod, core.current().shadow
    writer = next(t for t in threading.enumerate() if t.name == "mlcycle-predlog")
    writer_clock = time.pthread_getcpuclockid(writer.ident)
    rng = np.random.default_rng(0)

    def run(paced: bool) -> float:
        log.flush()
        spent, written = 0.0, time.clock_gettime(writer_clock)
        for i in range(reps):
            if paced:  # the gap to the next arrival, then production scores it first
                time.sleep(rng.exponential(1 / rate))
                encoded = prod.encoder.encode_with_unseen(recs)
                prod.bundle.model.output_encoded(encoded.matrix, prod.signature)
                matrix = encoded.matrix
            else:
                matrix = shadow.encoder.encode(recs)
            start = time.thread_time()
            core.shadow_reported(score_shadow([Job(shadow, f"work-{i}", recs, matrix, len(recs))]))
            spent += time.thread_time() - start
        log.flush()
        spent += time.clock_gettime(writer_clock) - written
        return spent * 1e3 / reps

    run(False)  # warm-up
    back_to_back, inline = run(False), run(True)
    core.close()
    return back_to_back, inline


SHADOW_CMD = b"mlcycle.serve.shadow"  # a worker's shadow process: its command line holds it


def shadow_counts(port: int) -> tuple[float, float]:
    """The shadow's scored and dropped records so far (its metrics, every worker's)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{name} ([\d.e+]+)$", text, re.M))

    return total("mlcycle_shadow_scored_total"), total("mlcycle_shadow_dropped_total")


def measured(
    proc: subprocess.Popen, port: int, shadow: bool, run: Callable[..., dict], *args: Any
) -> dict:
    """``run(*args)``'s figures, with the server's CPU seconds over it (all its processes, and its
    shadow processes alone) and the shadow's records scored and dropped meanwhile."""
    before = (cpu_seconds(proc.pid), cpu_seconds(proc.pid, SHADOW_CMD))
    counts = shadow_counts(port) if shadow else (0.0, 0.0)
    r = run(*args)
    time.sleep(0.5)  # the shadow catches up with the last requests
    r["cpu"] = cpu_seconds(proc.pid) - before[0]
    r["cpu_shadow"] = cpu_seconds(proc.pid, SHADOW_CMD) - before[1]
    after = shadow_counts(port) if shadow else (0.0, 0.0)
    r["scored"], r["dropped"] = after[0] - counts[0], after[1] - counts[1]
    return r


def shadow_cost(
    args: argparse.Namespace,
    bundle_dir: Path,
    recs: list[dict],
    bodies: dict[str, bytes],
    tmp: Path,
    env: dict,
) -> None:
    """The service with a shadow model against the service without one, both logging to
    SQLite, in alternating rounds: throughput, p99 and CPU per request at full load (wrk),
    then p50 and p99 at a fixed rate of ``--shadow-load`` of the capacity without a shadow
    (:func:`wrk` paced, Poisson arrivals; the rounds' latencies pooled), with the CPU per
    request there too: all the server's processes, and
    the worker's alone (what the shadow costs the requests' own processes). The CPU target is
    taken at the fixed rate, where the shadow keeps up: at full load a shadow that falls
    behind drops records, and costs less than its work."""
    cases = {"no shadow": []}
    for priority in args.shadow_priority:  # one shadow case per priority asked for
        cases[f"shadow {priority}"] = ["--shadow-bundle", str(bundle_dir),
                                       "--shadow-priority", priority]  # fmt: skip
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    paced: dict[tuple[str, str], list[dict]] = {}
    try:
        for case, extra in cases.items():
            port = free_port()
            cmd = [str(BIN / "mlcycle"), "serve", "--bundle", str(bundle_dir), "--port",
                   str(port), "--workers", str(args.workers), "--log-level", "warning",
                   "--log-url", f"sqlite:///{tmp / f'shadow-{port}.db'}", *extra]  # fmt: skip
            procs[case] = (start(cmd, env, f"http://127.0.0.1:{port}/health"), port)
        for round_ in range(args.rounds):
            for label, body in bodies.items():
                for case, (proc, port) in procs.items():
                    print(f"  round {round_ + 1}/{args.rounds}: {case}, {label} ...",
                          file=sys.stderr, flush=True)  # fmt: skip
                    url = f"http://127.0.0.1:{port}/predict"
                    r = measured(proc, port, case != "no shadow", wrk, url, body, args.seconds,
                                 args.connections)  # fmt: skip
                    r["done"] = r["requests"]
                    runs.setdefault((case, label), []).append(r)
        capacity = {
            label: float(np.median([r["rps"] for r in runs[("no shadow", label)]]))
            for label in bodies
        }
        for round_ in range(args.rounds):
            for label, body in bodies.items():
                rate = args.shadow_load * capacity[label]
                for case, (proc, port) in procs.items():
                    print(f"  round {round_ + 1}/{args.rounds}: {case}, {label} at {rate:.0f}/s "
                          "...", file=sys.stderr, flush=True)  # fmt: skip
                    url = f"http://127.0.0.1:{port}/predict"
                    r = measured(proc, port, case != "no shadow", wrk, url, body,
                                 args.paced_seconds, PACED_CONNECTIONS, rate)  # fmt: skip
                    r["done"] = r["requests"]
                    paced.setdefault((case, label), []).append(r)
    finally:
        for proc, _ in procs.values():
            stop(proc)

    def summary(rs: list[dict], keys: tuple[str, ...]) -> dict:
        out = {k: float(np.median([r[k] for r in rs])) for k in keys}
        for k in ("cpu", "cpu_shadow"):  # ms per request
            out[k] = float(np.median([r[k] * 1e3 / r["done"] for r in rs]))
        out["dropped"] = sum(r["dropped"] for r in rs)
        out["failed"] = sum(int(r["non2xx"] + r["timeout"] + r["sockerr"]) for r in rs)
        return out

    med = {key: summary(rs, ("rps", "p99")) for key, rs in runs.items()}
    at_rate = {key: summary(rs, ("rps",)) for key, rs in paced.items()}
    for key, rs in paced.items():
        at_rate[key].update(p50=pooled(rs, 50), p99=pooled(rs, 99))
    print(f"\nshadow model: wrk -t1 -c{args.connections} -d{args.seconds}s, {args.workers} "
          f"worker(s), log on, median of {args.rounds} alternating rounds (CPU: ms per request, "
          "all the server's processes, and its shadow processes'; dropped: the shadow's "
          "records dropped, its queue full, over the rounds)")  # fmt: skip
    print(f"{'request':<13}{'case':<13}{'req/s':>8}{'p99 ms':>8}{'CPU':>8}{'shadow':>8}"
          f"{'dropped':>9}{'failed':>7}")  # fmt: skip
    for (case, label), r in sorted(med.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{label:<13}{case:<13}{r['rps']:>8.0f}{r['p99']:>8.1f}{r['cpu']:>8.3f}"
              f"{r['cpu_shadow']:>8.3f}{r['dropped']:>9.0f}{r['failed']:>7d}")  # fmt: skip
    print(
        f"at a fixed rate, {args.shadow_load:.0%} of the capacity without a shadow "
        f"(wrk -c{PACED_CONNECTIONS} -d{args.paced_seconds}s, Poisson arrivals; req/s: "
        "answered, median of the rounds; p50 and p99 of the rounds' requests pooled):"
    )
    print(f"{'request':<13}{'case':<13}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU':>8}"
          f"{'shadow':>8}{'dropped':>9}{'failed':>7}")  # fmt: skip
    for (case, label), r in sorted(at_rate.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        print(f"{label:<13}{case:<13}{r['rps']:>8.0f}{r['p50']:>8.1f}{r['p99']:>8.1f}{r['cpu']:>8.3f}"
              f"{r['cpu_shadow']:>8.3f}{r['dropped']:>9.0f}{r['failed']:>7d}")  # fmt: skip
    works = {  # the shadow's own work in process, per request size, at the fixed rate
        label: shadow_work_ms(
            bundle_dir,
            recs[: 1 if label == "1 record" else len(recs)],
            tmp,
            args.shadow_load * capacity[label],
            reps=max(300, int(10 * args.shadow_load * capacity[label])),  # about 10 s
        )
        for label in bodies
    }
    for (case, label), on in med.items():
        if case == "no shadow":
            continue
        off = med[("no shadow", label)]
        slow, fast = at_rate[("no shadow", label)], at_rate[(case, label)]
        back_to_back, work = works[label]
        added = fast["cpu"] - slow["cpu"]
        worker = (fast["cpu"] - fast["cpu_shadow"]) - slow["cpu"]
        p99 = fast["p99"] / slow["p99"]
        ok = added <= work and p99 <= TARGET_SHADOW_P99 and not fast["dropped"]
        print(f"{label}: {case} / none: at full load req/s {on['rps'] / off['rps']:.2f}x, p99 "
              f"{on['p99'] / off['p99']:.2f}x; at {args.shadow_load:.0%} load p99 {p99:.2f}x, "
              f"CPU added {added:.3f} ms/req (the worker's {worker:.3f}, the shadow process's "
              f"{fast['cpu_shadow']:.3f}), the shadow's own work in process: {work:.3f} ms "
              f"scored inline at the fixed rate ({back_to_back:.3f} back to back) (target at "
              f"the fixed rate: added <= its work inline, p99 <= {TARGET_SHADOW_P99:.2f}x, "
              f"none dropped): {'met' if ok else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()

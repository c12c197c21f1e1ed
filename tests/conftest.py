"""Shared fixtures: a copy of the project in a temporary git repository, driven by real `dvc`.

Tests run the pipeline with small, fast training settings (:data:`FAST_PARAMS`); the full
default run is `make repro`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pytest
import yaml

from mlcycle.features import Feature, Signature

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What a temporary project copies from this one: the pipeline, its code and the bundled data.
PROJECT_FILES = (
    "dvc.yaml",
    "params.yaml",
    "schema.yaml",
    "pyproject.toml",
    "src",
    "data/external",
    "data/landing",
    "plot_templates",
    "metrics/monitor",  # the (empty) monitoring history dvc.yaml's plots draw
)
# Every candidate, cross-validated on 2 folds with its fixed params only (no search), small
# models: the whole pipeline in seconds. Tests of tuning itself set `train.tuning.trials`.
FAST_PARAMS = {
    "train": {
        "cv_folds": 2,
        "tuning": {
            "trials": 0,
            "trials_by_candidate": {"logistic_regression": 0, "random_forest": 0},
        },
        "xgb": {"n_estimators": 60, "early_stopping_rounds": 10, "learning_rate": 0.3},
        "models": {"random_forest": {"n_estimators": 20}},
    },
    # Fast settings make a weaker model: lower the bar so the gate lets it through.
    "objectives": {"minimum": 0.9},
}


def project_env(project: Path) -> dict[str, str]:
    """Environment for commands in a temporary project: its own code, our virtualenv's tools."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(project / "src"),
        DVC_NO_ANALYTICS="1",
        GIT_AUTHOR_NAME="mlcycle tests",
        GIT_AUTHOR_EMAIL="tests@mlcycle.invalid",
        GIT_COMMITTER_NAME="mlcycle tests",
        GIT_COMMITTER_EMAIL="tests@mlcycle.invalid",
    )
    return env


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` (a temporary project) and capture its output."""
    proc = subprocess.run(args, cwd=cwd, env=project_env(cwd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def merge(base: dict, update: dict) -> dict:
    """Deep-merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def set_params(project: Path, update: dict) -> None:
    """Deep-merge ``update`` into the project's params.yaml."""
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(merge(params, update), sort_keys=False))


def git_commit(project: Path, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", message], project)


def make_project(dest: Path, params: dict | None = None) -> Path:
    """A fresh git + DVC repository holding a copy of this project, with ``params`` merged in."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    set_params(dest, merge(FAST_PARAMS, params or {}))
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.name", "mlcycle tests"], dest)
    run(["git", "config", "user.email", "tests@mlcycle.invalid"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    git_commit(dest, "project")
    return dest


HEALTH_RETRIES = 600  # x 0.1 s between attempts


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health_status(url: str) -> int:
    """The status of GET ``url``/health (a 4xx/5xx is returned, not raised)."""
    try:
        with urllib.request.urlopen(f"{url}/health") as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_healthy(url: str, proc: subprocess.Popen, output: Path) -> None:
    """Wait until the server at ``url`` answers /health with 200; fail the test with its
    ``output`` if it exits or never does."""
    for _ in range(HEALTH_RETRIES):
        if proc.poll() is not None:
            pytest.fail(f"mlcycle serve exited {proc.returncode}:\n{output.read_text()}")
        try:
            if health_status(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"mlcycle serve did not answer /health:\n{output.read_text()}")


@contextmanager
def serving(project: Path, bundle: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real `mlcycle serve` of ``bundle`` on 127.0.0.1, answering /health; yields its URL
    and process, and stops it afterwards."""
    port = free_port()
    log = project.parent / f"serve-{port}.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            [str(BIN / "mlcycle"), "serve", "--bundle", str(bundle), "--host", "127.0.0.1"]
            + ["--port", str(port), "--log-level", "warning"],
            cwd=project,
            env=project_env(project),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url, proc
        assert proc.poll() is None, f"the server died during the tests:\n{log.read_text()}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def unavailable(tests: str, message: str) -> NoReturn:
    """A real server or tool the tests need is missing: skip locally, fail under CI (where
    .ci/run provides it and ``tests`` must run)."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"under CI the {tests} must run: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the real PostgreSQL server `.ci/run` starts (skip locally without one; fail
    under CI, where the database tests must run)."""
    url = os.environ.get("MLCYCLE_TEST_POSTGRES_URL")
    if not url:
        unavailable(
            "PostgreSQL tests",
            "MLCYCLE_TEST_POSTGRES_URL is not set: no PostgreSQL server for the database tests "
            "(`.ci/run --postgres-only` starts one and prints the URL)",
        )
    return url


@pytest.fixture(scope="session")
def built_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary project after one full `dvc repro`, committed. Copy it before changing it."""
    project = make_project(tmp_path_factory.mktemp("built") / "project")
    run(["dvc", "repro"], project)
    git_commit(project, "repro")
    return project


@pytest.fixture
def project_copy(built_project: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`built_project` (git history and DVC cache included)."""
    dest = tmp_path / "project"
    shutil.copytree(built_project, dest, symlinks=True)
    return dest


# --- a tiny synthetic dataset for unit tests of models and bundles -----------------------------

TINY_SIGNATURE = Signature(
    features=(
        Feature("x", "numeric"),
        Feature("colour", "categorical", ("blue", "green", "red")),
        Feature("y", "numeric"),
    ),
    target="label",
    positive_class="yes",
    negative_class="no",
)


def synthetic_records(n: int, seed: int) -> pd.DataFrame:
    """Records of :data:`TINY_SIGNATURE` whose label depends on ``x`` and ``colour``, with a
    few missing values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    colour = rng.choice(["blue", "green", "red"], size=n)
    y = rng.uniform(0, 10, size=n)
    logit = 2.0 * x + np.where(colour == "red", 1.5, -0.5)
    label = np.where(rng.uniform(size=n) < 1 / (1 + np.exp(-logit)), "yes", "no")
    df = pd.DataFrame({"x": x, "colour": colour, "y": y, "label": label})
    df.loc[df.index % 17 == 0, "colour"] = None
    df.loc[df.index % 23 == 0, "x"] = np.nan
    return df


# --- Dask clusters for the dask engine -----------------------------------------------------


@pytest.fixture(scope="module")
def dask_local_client() -> Iterator[object]:
    """A client of a real LocalCluster (2 worker processes, 1 thread each) on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a real cluster: a `dask scheduler` and two `dask worker` processes on
    127.0.0.1, started from the command line as a user would."""
    logs = tmp_path_factory.mktemp("dask-cluster")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def start(name: str, args: list[str]) -> None:
        out = (logs / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT, cwd=logs
            )
        )

    start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--dashboard-address", ":0", "--no-show"])  # fmt: skip
    for i in range(2):
        start(f"worker{i}", ["worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                             "--nworkers", "1", "--dashboard-address", ":0",
                             "--local-directory", str(logs / f"w{i}")])  # fmt: skip
    try:
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

"""Shared fixtures: a copy of the project in a temporary git repository, driven by real `dvc`.

Tests run the pipeline with small, fast training settings (:data:`FAST_PARAMS`); the full
default run is `make repro`. Pipeline tests run on a stratified sample of Adult
(:func:`small_project`, ``make_project(..., rows=SAMPLE_ROWS)``), built once per test run and
shared by the xdist workers (:func:`build_once`); a test's expected figures are derived from
the run itself (its row counts, its test split), so none needs the whole of Adult built.

Tests run `mlcycle` through :func:`cli`: in the test's own process (no 1.5 to 2 s of imports),
or as the installed console script (``process=True``) where one test of a command runs it end
to end; `mlcycle serve` through :func:`start_serving`.

Tiers: a test that runs `dvc`, starts a server or a Dask cluster, opens a browser or needs the
PostgreSQL server carries the marker ``dvc``, ``server``, ``cluster``, ``browser`` or ``postgres``
(pyproject.toml registers them; `make test-fast` runs the tests without any). Tests using the
fixtures in :data:`FIXTURE_MARKERS` get theirs here; any other says so itself. :func:`run`,
:func:`serving` and :func:`pg_url` fail a test that runs dvc, serves or opens a PostgreSQL schema
without its marker, so the fast tier cannot quietly grow slow.
"""

from __future__ import annotations

import compileall
import contextlib
import gzip
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn, TextIO

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from filelock import FileLock

from mlcycle import cli as mlcycle_cli
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


# --- tiers: markers, given by fixture or declared, and checked where the work happens -----------

# A test using one of these fixtures (directly or through another fixture) gets the marker.
FIXTURE_MARKERS = {
    "small_project": "dvc",
    "project_copy": "dvc",
    "dask_local_client": "cluster",
    "dask_scheduler": "cluster",
    "postgres_url": "postgres",
    "pg_url": "postgres",
    "chromium": "browser",
}
_current: list[pytest.Item] = []  # the test being set up, run or torn down


SLOW_TIERS = ("dvc", "server", "cluster", "browser", "postgres")


# Seconds of one worker per file, fixtures included (the sum of its tests' setup, call and
# teardown in a whole run on 2 cores, `--durations=0`, 2026-12-06): the files of 15 s or more.
# They start first, longest first, so the last to start are short and both workers finish
# together; the two longest need different session fixtures (the README's own clone, then
# small_project), so neither worker waits for the other's build at the start. A file missing
# here (new, renamed) only starts later.
FILE_SECONDS = {
    "test_readme_commands.py": 108,
    "test_retrain.py": 90,
    "test_service.py": 84,
    "test_engine_pipeline.py": 58,
    "test_release.py": 54,
    "test_engine_faults.py": 49,
    "test_engine_prepare.py": 36,
    "test_tasks.py": 35,
    "test_train.py": 30,
    "test_pipeline.py": 29,
    "test_tuning_pruning.py": 26,
    "test_engine_data.py": 24,
    "test_bad_data.py": 23,
    "test_sources.py": 19,
    "test_engine_train.py": 18,
    "test_engine_evaluate.py": 18,
    "test_serve_rollout.py": 15,
    "test_monitor.py": 15,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test by the fixtures it uses (:data:`FIXTURE_MARKERS`), then order the files:
    the long ones of :data:`FILE_SECONDS`, longest first, then the rest, those with the most
    slow-tier tests first (each file keeps its order).

    xdist hands each worker a file at a time in this order (``--no-loadscope-reorder`` in
    pyproject.toml; its default puts the files with the most tests first, which left files of
    a few long end-to-end tests for last, one worker running them while the other idled): the
    long files first and the quick ones last fill both cores to the end."""
    slow: dict[str, int] = {}
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker in sorted({m for name, m in FIXTURE_MARKERS.items() if name in used}):
            item.add_marker(marker)
        is_slow = any(item.get_closest_marker(m) for m in SLOW_TIERS)
        slow[str(item.path)] = slow.get(str(item.path), 0) + is_slow

    def order(item: pytest.Item) -> tuple[int, int, str]:
        return -FILE_SECONDS.get(item.path.name, 0), -slow[str(item.path)], str(item.path)

    items.sort(key=order)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Remember the running test (fixtures included) for :func:`require_marker`."""
    _current.append(item)
    try:
        return (yield)
    finally:
        _current.pop()


def require_marker(marker: str, what: str) -> None:
    """Fail the running test if it does ``what`` without the ``marker`` that keeps it out of
    `make test-fast`."""
    if _current and _current[-1].get_closest_marker(marker) is None:
        pytest.fail(
            f"{_current[-1].nodeid} {what} but is not marked: add `@pytest.mark.{marker}` (or "
            f"use a fixture that tests/conftest.py's FIXTURE_MARKERS marks)",
            pytrace=False,
        )


# --- temporary projects ----------------------------------------------------------------------


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


def run(
    args: list[str], cwd: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a command in ``cwd`` (a temporary project; ``env`` added to its environment) and
    capture its output. A `dvc` command needs the test's ``dvc`` marker."""
    if Path(args[0]).name == "dvc":
        require_marker("dvc", f"runs `dvc {' '.join(args[1:2])}`")
    proc = subprocess.run(
        args, cwd=cwd, env={**project_env(cwd), **(env or {})}, capture_output=True, text=True
    )
    return checked(proc, check)


def checked(proc: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    """``proc``; given ``check``, an AssertionError with its output if it exited non-zero."""
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(proc.args)} exited {proc.returncode}\n"
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


# Rows of the Adult sample the pipeline tests run on (of 48,842; its train and test files keep
# their proportion: about 4,000 and 2,000), and the lower bar its weaker model must pass.
SAMPLE_ROWS = 6000
SAMPLE_PARAMS = {"objectives": {"minimum": 0.88, "minimums": {"accuracy": 0.83}}}


def adult_files(project: Path) -> tuple[dict, list[dict], dict[str, tuple]]:
    """The project's params, its Adult sources, and each source's file by name as (header
    lines, records, trailer), read from the gzipped file as the gather stage reads it."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    adult = [s for s in params["data"]["sources"] if s["path"].startswith("data/external/adult/")]
    files = {}
    for source in adult:
        content = gzip.decompress((project / source["path"]).read_bytes())
        body = content.rstrip(b"\n")
        lines = body.split(b"\n")
        skip = source.get("skip_rows", 0)
        files[source["name"]] = (lines[:skip], lines[skip:], content[len(body) :])
    return params, adult, files


def adult_records(project: Path) -> int:
    """The number of Adult records in the project's source files (what its snapshot holds),
    counted from the files themselves, not from what the pipeline reported."""
    return sum(len(records) for _, records, _ in adult_files(project)[2].values())


def sample_adult(project: Path, rows: int, seed: int = 0) -> None:
    """Cut the project's copy of Adult down to about ``rows`` records, as a user replacing the
    data would: each source file keeps a seeded sample stratified by label (its share of
    ``rows``), its first record, its header lines and its record order; the new SHA-256 goes
    into params.yaml. schema.yaml still fits: a sample holds no value the whole does not."""
    params, adult, files = adult_files(project)
    total = sum(len(records) for _, records, _ in files.values())
    rng = np.random.default_rng(seed)
    for source in adult:
        header, records, trailer = files[source["name"]]
        share = round(rows * len(records) / total)
        by_label: dict[bytes, list[int]] = {}
        for i, record in enumerate(records[1:], start=1):
            by_label.setdefault(record.rsplit(b",", 1)[-1].strip(), []).append(i)
        keep = {0}
        for label in sorted(by_label):
            group = by_label[label]
            n = round((share - 1) * len(group) / (len(records) - 1))
            keep.update(int(i) for i in rng.choice(group, size=n, replace=False))
        sample = b"\n".join([*header, *(records[i] for i in sorted(keep))]) + trailer
        (project / source["path"]).write_bytes(gzip.compress(sample, mtime=0))
        source["sha256"] = hashlib.sha256(sample).hexdigest()
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def compile_sources() -> None:
    """Compile this checkout's ``src`` to bytecode (only what changed), for the projects that
    copy it: every stage, `dvc repro` and `mlcycle` process in a temporary project imports its
    own copy of ``src``, and where PYTHONDONTWRITEBYTECODE is set (CI's images, for one) each
    would compile what it imports again (about 0.1 s of CPU a process, hundreds of them)."""
    compileall.compile_dir(ROOT / "src", quiet=1)


def make_project(dest: Path, params: dict | None = None, rows: int | None = None) -> Path:
    """A fresh git + DVC repository holding a copy of this project, with ``params`` merged in
    and, given ``rows``, Adult cut to a sample of that many rows (:func:`sample_adult`) held to
    :data:`SAMPLE_PARAMS`' bar."""
    dest.mkdir(parents=True, exist_ok=True)
    compile_sources()
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("*.egg-info"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    set_params(dest, merge(merge(FAST_PARAMS, SAMPLE_PARAMS if rows else {}), params or {}))
    if rows:
        sample_adult(dest, rows)
    run(["git", "init", "-q", "-b", "main"], dest)
    run(["git", "config", "user.name", "mlcycle tests"], dest)
    run(["git", "config", "user.email", "tests@mlcycle.invalid"], dest)
    (dest / ".git/info/exclude").write_text("__pycache__/\n")  # the compiled copies below
    run(["dvc", "init", "-q"], dest)  # no analytics: project_env sets DVC_NO_ANALYTICS
    git_commit(dest, "project")
    return dest


def copy_project(project: Path, dest: Path) -> Path:
    """A private copy of ``project`` at ``dest`` (git history and DVC cache included)."""
    shutil.copytree(project, dest, symlinks=True)
    return dest


def build_once(
    tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]
) -> Path:
    """``build(path)`` run once per test run, by whichever xdist worker asks first while the
    others wait on a file lock; each worker gets its own copy, so none can change another's."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is <run>/popen-gwN: <run> is shared by the run's workers.
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"once-{name}"
    failed = shared / "FAILED"
    with FileLock(f"{shared}.lock"):
        if failed.exists():
            pytest.fail(f"building {name} failed (in another worker):\n{failed.read_text()}")
        if not (shared / "DONE").exists():
            shutil.rmtree(shared, ignore_errors=True)
            shared.mkdir()
            try:
                build(shared / "project")
            except BaseException as exc:
                failed.write_text(str(exc))
                raise
            (shared / "DONE").touch()
    return copy_project(shared / "project", tmp_path_factory.mktemp(name) / "project")


def build_project(dest: Path, rows: int | None = None) -> None:
    """A project after one full `dvc repro` from scratch, committed."""
    make_project(dest, rows=rows)
    run(["dvc", "repro"], dest)
    git_commit(dest, "repro")


@pytest.fixture(scope="session")
def small_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary project after one full `dvc repro` on a sample of :data:`SAMPLE_ROWS` rows
    of Adult, committed: what pipeline tests start from. Copy it before changing it."""
    return build_once(tmp_path_factory, "small", lambda dest: build_project(dest, SAMPLE_ROWS))


@pytest.fixture
def project_copy(small_project: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`small_project`."""
    return copy_project(small_project, tmp_path / "project")


# --- the `mlcycle` command -------------------------------------------------------------------


def cli(
    project: Path,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """`mlcycle *args` in ``project`` with its environment (:func:`project_env`, ``env``
    added): its exit status and output, as :func:`run` gives them (``check`` fails the test on
    a non-zero status). It runs in this process, which has imported what the commands use (a
    new one spends 1.5 to 2 s of CPU importing pandas, scikit-learn and xgboost); ``process``
    runs the installed console script instead, for a test of the command end to end.
    `mlcycle serve` runs until stopped: :func:`start_serving` starts it."""
    argv = [str(arg) for arg in args]
    if process:
        return run([str(BIN / "mlcycle"), *argv], project, check=check, env=env)
    if argv[:1] == ["serve"]:
        pytest.fail("`mlcycle serve` runs until stopped: use start_serving or serving")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        with (
            environment({**project_env(project), **(env or {})}),
            contextlib.chdir(project),
            descriptors(out, err),
            open(1, "w", encoding="utf-8", buffering=1, closefd=False) as stdout,
            open(2, "w", encoding="utf-8", buffering=1, closefd=False) as stderr,
            redirect_stdout(stdout),
            redirect_stderr(stderr),
            logged_to(stderr),
        ):
            code = exit_status(argv)
        texts = []
        for file in (out, err):
            file.seek(0)
            texts.append(file.read().decode("utf-8", errors="replace"))
    return checked(subprocess.CompletedProcess(["mlcycle", *argv], code, *texts), check)


def exit_status(argv: list[str]) -> int:
    """`mlcycle.cli.main(argv)`'s exit status as the interpreter would make it: SystemExit's
    code (argparse's usage errors are 2), 1 with a traceback on stderr for an uncaught
    exception."""
    try:
        return mlcycle_cli.main(argv)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` for the block, then back as it was, whatever the
    block changed in it."""
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        for key in [k for k in os.environ if k not in saved]:
            del os.environ[key]
        for key, value in saved.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextmanager
def descriptors(out: IO[bytes], err: IO[bytes]) -> Iterator[None]:
    """File descriptors 1 and 2 onto ``out`` and ``err`` for the block: what a command's own
    child processes write (`dvc repro` under `mlcycle retrain`) is its output too, in order
    with its own, and neither is a terminal, as under :func:`run`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@contextmanager
def logged_to(stream: TextIO) -> Iterator[None]:
    """Warnings and errors logged during the block written to ``stream``, as Python's last
    resort handler writes them to stderr in a process where nothing configured logging (here
    pytest's handlers would take them)."""
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.WARNING)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


# --- servers ---------------------------------------------------------------------------------

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


def stop_server(proc: subprocess.Popen) -> int:
    """SIGTERM (the service's graceful stop), SIGKILL after a minute; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@dataclass
class Served:
    """A running `mlcycle serve`: its URL, process and output file."""

    url: str
    process: subprocess.Popen
    output: Path

    def stop(self) -> int:
        return stop_server(self.process)

    def ready(self) -> Served:
        """This server once it answers /health; stopped, and the error raised, if it never
        does."""
        try:
            wait_healthy(self.url, self.process, self.output)
        except BaseException:
            self.stop()
            raise
        return self


def start_serving(project: Path, *args: str, env: dict | None = None) -> Served:
    """Start `mlcycle serve *args` in ``project`` on a free port of 127.0.0.1 (``env`` added to
    the project's environment) and wait until it answers /health; :meth:`Served.stop` stops it.
    Needs the test's ``server`` marker."""
    require_marker("server", "starts `mlcycle serve`")
    port = free_port()
    output = project.parent / f"serve-{port}.out"
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlcycle"), "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ["--log-level", "warning", *args],
            cwd=project,
            env={**project_env(project), **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Served(f"http://127.0.0.1:{port}", proc, output).ready()


@contextmanager
def serving(project: Path, *args: str, env: dict | None = None) -> Iterator[Served]:
    """:func:`start_serving` for the ``with`` block; afterwards the server must still be up."""
    served = start_serving(project, *args, env=env)
    try:
        yield served
        assert served.process.poll() is None, (
            f"the server died during the tests:\n{served.output.read_text()}"
        )
    finally:
        served.stop()


# --- PostgreSQL ------------------------------------------------------------------------------


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


def in_schema(url: str, schema: str, **changes: object) -> str:
    """``url`` with ``schema`` first on the search path (and other parts changed)."""
    scoped = (
        sa.make_url(url).set(**changes).update_query_dict({"options": f"-csearch_path={schema}"})
    )
    return scoped.render_as_string(hide_password=False)


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A URL of the PostgreSQL server whose tables live in a fresh schema, dropped afterwards.
    A fixture choosing it by parameter marks that parameter ``postgres``."""
    require_marker("postgres", "uses the PostgreSQL server")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield in_schema(postgres_url, schema)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


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

# Dask's monitoring while a cluster waits (the event loop's tick every 20 ms, the profiler every
# 10 ms, the system and memory monitors) costs a scheduler and two workers about 5 s of CPU a
# minute doing nothing, and the suite's clusters wait most of the run: about a tenth of the
# suite's CPU on 2 cores. These intervals cut that tenfold; no test needs the finer ones. Set in
# the environment, they reach every cluster: the fixtures' and those the stages start.
QUIET_DASK = {
    "DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL": "1s",
    "DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL": "5s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
    "DASK_DISTRIBUTED__WORKER__MEMORY__MONITOR_INTERVAL": "2s",
}


def pytest_configure(config: pytest.Config) -> None:
    """Quiet Dask monitoring (:data:`QUIET_DASK`) for the whole run, before any Dask import."""
    os.environ.update(QUIET_DASK)


@pytest.fixture(scope="session")
def dask_local_client() -> Iterator[object]:
    """A client of a real LocalCluster (2 worker processes, 1 thread each) on 127.0.0.1, one
    per test run and xdist worker: starting its workers costs seconds of CPU, so the test files
    that need one share it."""
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
        stop_cluster(procs)


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    """Stop a scheduler (``procs[0]``) and its workers: the workers first, each waited for,
    while the scheduler is there to see them leave (stopped together, the workers waited 8 s
    for the scheduler that had gone)."""
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

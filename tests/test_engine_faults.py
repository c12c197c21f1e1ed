"""The Dask engine under faults: every blocking call on the cluster has a deadline, a worker
killed (by PID, with its nanny and without) during the final xgboost.dask fit or during
evaluate either leaves the stage complete, the loss reported, or fails it with a message
naming the worker, the work and the setting; never a hang (each run has an outer timeout)."""

from __future__ import annotations

import contextvars
import json
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlcycle.config import EngineConfig
from mlcycle.engines import EngineError
from mlcycle.engines.dask.cluster import bounded, connect_budget, dask_client, guarded
from tests.conftest import BIN, free_port, stop_cluster
from tests.test_engine_train import adult_like, params, write_parts

OUTER = 300  # seconds a run may take before the test calls it a hang


def within(fn: Callable[[], Any], seconds: float = OUTER) -> Any:
    """``fn()`` in a thread joined with a timeout: a hang fails the test instead of blocking."""
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # the current guarded() settings

    def call() -> None:
        try:
            box["value"] = context.run(fn)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"hung: still running after {seconds}s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_a_call_past_its_deadline_names_the_work_and_the_setting(dask_local_client) -> None:
    """A future that can never finish (bound to a worker that does not exist) is given up
    after engine.task_timeout, with an error naming what was computed and the setting."""
    never = dask_local_client.submit(
        len, [1], workers=["tcp://127.0.0.1:9"], allow_other_workers=False, pure=False
    )
    cfg = EngineConfig(kind="dask", task_timeout=1)
    with guarded(dask_local_client, cfg, 10**9, print) as guard:
        assert guard.timeout == 1  # the setting, not the per-row default
        with pytest.raises(EngineError, match=r"^trial 7 fold 2 did not finish within 1s "
                           r"\(engine.task_timeout\)"):  # fmt: skip
            within(lambda: bounded("trial 7 fold 2", never.result), 60)
        assert bounded("a sum", lambda: dask_local_client.submit(sum, [1, 2]).result()) == 3
    never.cancel()
    with guarded(dask_local_client, EngineConfig(kind="dask"), 2_000_000, print) as guard:
        assert guard.timeout == 600 + 2_000  # null: the floor plus a second per 1,000 rows


def test_connecting_counts_the_stages_start_up() -> None:
    """engine.connect_timeout runs from the process's start: what start-up spent is not given
    to the connection again; none left is an error naming the setting, before any attempt."""
    address = f"tcp://127.0.0.1:{free_port()}"
    assert connect_budget(EngineConfig(kind="dask", scheduler=address, connect_timeout=1e6)) < 1e6
    cfg = EngineConfig(kind="dask", scheduler=address, connect_timeout=0.01)
    with (
        pytest.raises(EngineError, match="start-up took .* of engine.connect_timeout=0.01s"),
        dask_client(cfg, print),
    ):
        pass


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A scheduler and one-thread workers on 127.0.0.1 for one test (its workers get killed):
    two with nannies (``request.param``), which restart a killed one; else three, so that one
    is left after two are killed."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen(
        [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0", "--no-show"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    n = 2 if request.param else 3
    for i in range(n):
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
             "--dashboard-address", ":0", "--local-directory", str(tmp_path / f"w{i}"),
             *([] if request.param else ["--no-nanny"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
    try:
        yield address, n
    finally:
        stop_cluster(procs)


def killer(
    client: Any, when: str, said: list[str], killed: list[str], delay: float = 0.5
) -> Callable[[str], None]:
    """A ``say`` that records the lines and, at the first starting with ``when``, kills the
    first worker's process by PID (SIGKILL) ``delay`` seconds later."""
    pids = client.run(os.getpid)

    def say(msg: str) -> None:
        said.append(msg)
        if msg.startswith(when) and not killed:
            address, pid = sorted(pids.items())[0]
            killed.append(address)
            threading.Timer(delay, os.kill, (pid, signal.SIGKILL)).start()

    return say


FIT = {"train": {"candidates": ["xgboost"], "baseline": None, "cv_folds": 2,
                 "tuning": {"trials": 0},
                 "xgb": {"n_estimators": 800, "early_stopping_rounds": 800,
                         "learning_rate": 0.01, "max_depth": 8}},
       "engine": {"kind": "dask", "task_timeout": 25, "retries": 1}}  # fmt: skip


@pytest.mark.cluster
@pytest.mark.parametrize("cluster", [True, False], ids=["nanny", "no-nanny"], indirect=True)
def test_a_worker_killed_during_the_final_fit_and_evaluate(
    cluster: tuple[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final xgboost.dask fit with a worker killed half a second in: the stage completes
    (the fit run again on the workers left; the loss in its lines and train.json) or fails
    with the message; then evaluate with a worker killed once the predictions are written: it
    completes (Dask recomputes the lost partitions) or fails with the message."""
    from distributed import Client

    from mlcycle.engines.dask.evaluate import evaluate_dask
    from mlcycle.engines.dask.train import train_dask
    from mlcycle.stages import evaluate as evaluate_stage
    from mlcycle.stages import train as train_stage

    split = write_parts(tmp_path / "train.parquet", adult_like(3000), 2)
    test = write_parts(tmp_path / "data/prepared/test.parquet", adult_like(1000, seed=1), 2)
    monkeypatch.chdir(tmp_path)
    address, workers = cluster
    p = params(FIT, {"engine": {"scheduler": address}})
    said: list[str] = []
    killed: list[str] = []
    with Client(address, timeout="60s") as client:
        client.wait_for_workers(workers, timeout=120)
        say = killer(client, "final fit:", said, killed)
        try:
            trained = within(lambda: train_dask(p, client, split, say))
        except EngineError as exc:
            print(exc, *said, sep="\n")  # shown with -s: which way the run went
            assert f"worker(s) {killed[0]}" in str(exc), said
            assert "the final fit (xgboost, xgboost.dask)" in str(exc)
            assert "engine.retries" in str(exc) or "engine.task_timeout" in str(exc)
            return
        assert killed[0] in trained.cluster["workers_lost"]
        assert any(killed[0] in line and "lost during the final fit" in line for line in said)
        train_stage.write(p, trained, Path("models/train"))
        assert json.loads(Path("metrics/train.json").read_text())["cluster"] == trained.cluster

        client.wait_for_workers(2, timeout=60)  # a nanny's restart, or the third worker
        said.clear()
        killed.clear()
        say = killer(client, "wrote ", said, killed, delay=0)
        paths = evaluate_stage.PATHS
        assert Path(paths.test) == test.relative_to(tmp_path)
        try:
            evaluated = within(lambda: evaluate_dask(p, trained.signature, client, paths, say))
        except EngineError as exc:
            assert f"worker(s) {killed[0]}" in str(exc) and "engine." in str(exc)
            return
        assert evaluated.evaluation.rows == 1000
        assert any(f"worker(s) {killed[0]} lost during" in line for line in said), said

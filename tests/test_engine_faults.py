"""The Dask engine under faults: every blocking call on the cluster has a deadline, a worker
killed (by PID, with its nanny and without) during the final xgboost.dask fit or during
evaluate either leaves the stage complete, the loss reported, or fails it with a message
naming the worker, the work and the setting; never a hang (each run has an outer timeout). A
worker killed during the trial search (small data: the workers' copies of the split; large:
a fold boosted across the cluster) leaves the stage complete, with the same trials on small
data."""

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

import pandas as pd
import pytest

from mlcycle.config import EngineConfig
from mlcycle.engines import EngineError
from mlcycle.engines.dask.cluster import (
    bounded,
    connect_budget,
    dask_client,
    guarded,
    worker_info,
)
from mlcycle.engines.dask.evaluate import evaluate_dask
from mlcycle.engines.dask.train import train_dask
from mlcycle.features import encode_target, infer_signature, to_model_frame
from mlcycle.stages import evaluate as evaluate_stage
from mlcycle.stages import train as train_stage
from mlcycle.tuning import trials_csv, tune
from tests.conftest import BIN, free_port, merge, stop_cluster
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


class Cluster:
    """A scheduler and one-thread workers on 127.0.0.1 shared by the module's kill tests: one
    with a nanny (which restarts it under a new address when killed) and ``LONE`` without (a
    killed one is gone: :meth:`ready` starts another before the next test)."""

    LONE = 2

    def __init__(self, folder: Path) -> None:
        self.folder, port = folder, free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        self.lone: list[subprocess.Popen] = []  # the workers without a nanny
        self.procs = [subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0", "--no-show"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
        self._start(nanny=True)
        for _ in range(self.LONE):
            self._start(nanny=False)

    def _start(self, nanny: bool) -> None:
        self.procs.append(proc := subprocess.Popen(
            [str(BIN / "dask"), "worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
             "--dashboard-address", ":0", "--local-directory",
             str(self.folder / f"w{len(self.procs)}"), *([] if nanny else ["--no-nanny"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        if not nanny:
            self.lone.append(proc)

    def ready(self, client: Any) -> None:
        """Start workers without a nanny in place of those killed; wait for all of them (and
        a killed nanny's worker restarted)."""
        self.lone = [p for p in self.lone if p.poll() is None]
        for _ in range(self.LONE - len(self.lone)):
            self._start(nanny=False)
        client.wait_for_workers(1 + self.LONE, timeout=120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The module's :class:`Cluster` (its workers get killed)."""
    running = Cluster(tmp_path_factory.mktemp("killed-cluster"))
    try:
        yield running
    finally:
        stop_cluster(running.procs)


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Any]:
    """A client of the module's cluster, all its workers there."""
    from distributed import Client

    with Client(cluster.address, timeout="60s") as client:
        cluster.ready(client)
        yield client


def killer(
    client: Any, when: str, said: list[str], killed: list[str], nanny: bool, delay: float = 0.5
) -> Callable[[str], None]:
    """A ``say`` that records the lines and, at the first starting with ``when``, kills the
    process of the first worker with a nanny (or without) by PID (SIGKILL) ``delay`` seconds
    later."""
    pids = client.run(os.getpid)
    info = worker_info(client)
    address = min(a for a in pids if bool(info[a].get("nanny")) == nanny)

    def say(msg: str) -> None:
        said.append(msg)
        if msg.startswith(when) and not killed:
            killed.append(address)
            threading.Timer(delay, os.kill, (pids[address], signal.SIGKILL)).start()

    return say


FIT = {"train": {"candidates": ["xgboost"], "baseline": None, "cv_folds": 2,
                 "tuning": {"trials": 0},
                 "xgb": {"n_estimators": 800, "early_stopping_rounds": 800,
                         "learning_rate": 0.01, "max_depth": 8}},
       "engine": {"kind": "dask", "task_timeout": 25, "retries": 1}}  # fmt: skip


@pytest.mark.cluster
@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
def test_a_worker_killed_during_the_final_fit_and_evaluate(
    client: Any, cluster: Cluster, nanny: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final xgboost.dask fit with a worker killed half a second in: the stage completes
    (the fit run again on the workers left; the loss in its lines and train.json) or fails
    with the message; then evaluate with a worker killed once the predictions are written: it
    completes (Dask recomputes the lost partitions) or fails with the message."""
    split = write_parts(tmp_path / "train.parquet", adult_like(3000), 2)
    test = write_parts(tmp_path / "data/prepared/test.parquet", adult_like(1000, seed=1), 2)
    monkeypatch.chdir(tmp_path)
    p = params(FIT, {"engine": {"scheduler": cluster.address}})
    said: list[str] = []
    killed: list[str] = []
    say = killer(client, "final fit:", said, killed, nanny)
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

    client.wait_for_workers(2, timeout=60)  # a nanny's restart, or the workers left
    said.clear()
    killed.clear()
    say = killer(client, "wrote ", said, killed, nanny, delay=0)
    paths = evaluate_stage.PATHS
    assert Path(paths.test) == test.relative_to(tmp_path)
    try:
        evaluated = within(lambda: evaluate_dask(p, trained.signature, client, paths, say))
    except EngineError as exc:
        assert f"worker(s) {killed[0]}" in str(exc) and "engine." in str(exc)
        return
    assert evaluated.evaluation.rows == 1000
    assert any(f"worker(s) {killed[0]} lost during" in line for line in said), said


# Small data: trial 0 and a batch of four, 300 rounds a fold on one thread: about 2 s of
# search for a worker to be killed in.
SEARCH = merge(FIT, {"train": {"tuning": {"trials": 4}, "xgb": {"n_estimators": 300}}})


@pytest.fixture(scope="module")
def search_split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    """A training split of 1,500 rows, and the local engine's trials.csv rows on it (no
    durations): what the Dask engine's search must give, worker killed or not."""
    split = write_parts(tmp_path_factory.mktemp("search") / "train.parquet", adult_like(1500), 2)
    p = params(SEARCH)
    frame = pd.read_parquet(split)
    obj = p.objectives
    sig = infer_signature(frame, obj.target, obj.positive_class, p.features, seed=p.train.seed,
                          task=obj.task)  # fmt: skip
    X, y = to_model_frame(frame, sig), encode_target(frame["income"], sig)
    local = tune(X, y, p.train, "roc_auc", task=sig.task, classes=sig.classes)
    return split, trial_rows(trials_csv(local.records, "roc_auc"))


def trial_rows(csv: str) -> list[list[str]]:
    """trials.csv's rows without the durations."""
    return [line.split(",")[:5] + line.split(",")[-1:] for line in csv.splitlines()]


@pytest.mark.cluster
@pytest.mark.parametrize("nanny", [True, False], ids=["nanny", "no-nanny"])
def test_a_worker_killed_during_the_small_data_search(
    client: Any, cluster: Cluster, nanny: bool, search_split: tuple[Path, list[list[str]]]
) -> None:
    """The trial search on small data (every worker holds a copy of the split) with a worker
    killed during the first round of four trials (a fold of each, on every worker): the round
    is run again on copies loaded on the workers left,
    and the trials, their scores and the winner are the local engine's, as undisturbed; the
    loss is in the progress lines and in ``trained.cluster``."""
    split, local = search_split
    p = params(SEARCH, {"engine": {"scheduler": cluster.address}})
    said: list[str] = []
    killed: list[str] = []
    say = killer(client, "xgboost trial 0 (untuned): cv", said, killed, nanny, delay=0.1)
    trained = within(lambda: train_dask(p, client, split, say))
    assert killed[0] in trained.cluster["workers_lost"] and trained.cluster["retries"] == 1
    lost = f"worker(s) {killed[0]} lost during xgboost: fold 0 of 4 trial(s); running it again"
    assert any(line.startswith(f"dask: {lost}") for line in said), said
    assert trial_rows(trials_csv(trained.result.records, "roc_auc")) == local


@pytest.mark.cluster
def test_a_worker_killed_during_a_fold_boosted_across_the_cluster(
    client: Any, cluster: Cluster, search_split: tuple[Path, list[list[str]]]
) -> None:
    """Above engine.trial_max_rows a fold of a trial is boosted by xgboost.dask on the pinned
    partitions: a worker killed during it, the frame is pinned again on the workers left (the
    same folds) and the fold run again; the stage completes, the loss reported."""
    split, _ = search_split
    p = params(FIT, {"engine": {"scheduler": cluster.address, "trial_max_rows": 500},
                     "train": {"xgb": {"n_estimators": 100}}})  # fmt: skip
    said: list[str] = []
    killed: list[str] = []
    say = killer(client, "xgboost: trial 0 (untuned)", said, killed, nanny=False)
    trained = within(lambda: train_dask(p, client, split, say))
    assert killed[0] in trained.cluster["workers_lost"]
    assert any(f"worker(s) {killed[0]} lost during xgboost: fold" in line for line in said), said
    (record,) = trained.result.records
    assert record.trial == 0 and record.pruned_after is None and record.rounds

"""The Dask engine's gather, validate and prepare under a deadline: with every worker of a real
LocalCluster busy, each stage's first blocking call on the cluster gives up after
``engine.task_timeout`` with an error naming its work and the setting, instead of waiting for
the workers (an outer timeout turns a wait into a failure)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from distributed import Event

from mlcycle import config
from mlcycle.engines import Engine, EngineError
from mlcycle.engines.dask.cluster import worker_info
from mlcycle.engines.gather import read_sources
from mlcycle.engines.prepare import prepare
from mlcycle.engines.validate import check_snapshot
from mlcycle.schema import parse_schema
from tests.conftest import merge
from tests.test_engine_faults import within
from tests.test_engine_prepare import OBJ, params, snapshot, write_parts

PAST = r" did not finish within 1s \(engine\.task_timeout\)\. Raise engine\.task_timeout"
SCHEMA = parse_schema({"target": "label", "columns": {
    "x": {"type": "float"}, "colour": {"type": "category"}, "size": {"type": "float"},
    "label": {"type": "category"},
}})  # fmt: skip


def hold(started: str, release: str) -> None:
    """A task that takes its worker's thread until ``release`` is set (on the worker)."""
    Event(started).set()
    Event(release).wait()


@pytest.fixture
def busy_workers(dask_local_client) -> Iterator[object]:
    """The test cluster's client with every worker thread taken by :func:`hold` (one thread
    per worker there), released after the test."""
    name = f"mlcycle-hold-{uuid.uuid4().hex}"
    release = Event(name, client=dask_local_client)
    held = []
    for i, worker in enumerate(sorted(worker_info(dask_local_client))):
        held.append(dask_local_client.submit(hold, f"{name}-{i}", name, workers=[worker],
                                             allow_other_workers=False, pure=False))  # fmt: skip
        within(Event(f"{name}-{i}", client=dask_local_client).wait, 60)
    try:
        yield dask_local_client
    finally:
        release.set()
        within(lambda: dask_local_client.gather(held), 60)


def test_gather_validate_and_prepare_give_up_at_their_deadline(
    tmp_path: Path, busy_workers, monkeypatch
) -> None:
    """Each stage's first blocking call (reading a source's files, counting the snapshot's
    rows, the cleaning's counts) fails after engine.task_timeout=1 naming its work."""
    monkeypatch.chdir(tmp_path)
    lines: list[str] = []
    p = params(merge(OBJ, {"engine": {"kind": "dask", "task_timeout": 1}}))
    engine = Engine(p.engine, lines.append, busy_workers)
    frame = snapshot(200)
    frame.drop(columns="_source").to_csv("a.csv", index=False)
    source = config.Source(name="a", path="a.csv")
    with pytest.raises(EngineError, match=r"^reading source 'a' \(1 file\(s\)\)" + PAST):
        within(lambda: read_sources(engine, (source,), tmp_path, ()), 60)
    write_parts(tmp_path / "snapshot", frame, 2)
    with pytest.raises(EngineError, match=r"^the snapshot's rows" + PAST):
        within(lambda: check_snapshot(engine, "snapshot", SCHEMA, p.validate, "label", True), 60)
    with pytest.raises(EngineError, match=r"^the numbers in the text columns" + PAST):
        within(lambda: prepare(engine, p, "snapshot", "train", "test"), 60)
    assert lines == [f"snapshot: {len(frame)} rows in 2 partition(s)"]  # prepare: no loss

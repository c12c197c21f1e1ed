"""Production and a challenger in one service, in process (no server): the canary's share and
its stable assignment per key, shadow scoring off the request path and logged beside
production's outputs, a full shadow queue, and an incompatible challenger refused while
production keeps serving."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from fastapi import HTTPException

from mlcycle.bundle import load_bundle
from mlcycle.predict import decide
from mlcycle.predlog import PredictionLog, read_log
from mlcycle.serve.core import Core, ServeSettings, canary_point, prediction_dicts
from mlcycle.serve.oip import served_model
from mlcycle.serve.shadow import BATCH_RECORDS, NICE, Job, ShadowQueue
from mlcycle.serve.shadow_process import score_shadow
from tests.test_service import tiny_bundle

RECORD = {"x": 0.5, "colour": "red", "y": 1.0}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Production, a truly different challenger (other data, a category more) and one that
    takes other requests (``z`` instead of ``y``)."""
    root = tmp_path_factory.mktemp("bundles")
    return {
        "prod": tiny_bundle(root / "prod", ("blue", "green", "red")),
        "other": tiny_bundle(root / "other", ("blue", "green", "red", "violet"), seed=3),
        "z": tiny_bundle(root / "z", ("blue", "green", "red"), number="z"),
    }


def core_of(bundles: dict[str, Path], log: PredictionLog | None = None, **settings) -> Core:
    prod = str(bundles["prod"])
    return Core(load_bundle(prod), ServeSettings(bundle_dir=prod, **settings), log)


def test_the_canary_answers_its_share_and_a_key_keeps_its_model(bundles) -> None:
    """Over 20,000 request ids the canary answers 20 % of requests, within 1 point (the
    binomial standard deviation is 0.28 points); a request id, or the key field's value,
    meets the same model every time, and the records of a request go to one model."""
    core = core_of(bundles, canary_bundle=str(bundles["other"]), canary_share=0.2)
    served = core.current()
    ids = [f"request-{i}" for i in range(20_000)]
    chosen = [core.route(served, rid) for rid in ids]
    share = sum(m is served.challenger for m in chosen) / len(ids)
    assert abs(share - 0.2) <= 0.01, share
    assert [core.route(served, rid) for rid in ids[:500]] == chosen[:500]
    canary_id = ids[[m is served.challenger for m in chosen].index(True)]
    model, output, *_ = core.score([RECORD, {**RECORD, "x": 2.0}], canary_id)
    assert model is served.challenger and model.role == "canary" and len(output) == 2
    model, *_ = core.score([RECORD], ids[[m is served.prod for m in chosen].index(True)])
    assert model is served.prod and model.role == "prod"
    assert core.telemetry.canary_requests._value.get() == 1

    keyed = core_of(bundles, canary_bundle=str(bundles["other"]), canary_share=0.5, canary_key="x")
    pair = keyed.current()
    for x in (0.1, 0.25, 3.0, -7.5):  # whatever the request id, the value decides
        key = keyed.key_of([{**RECORD, "x": x}])
        models = {keyed.route(pair, uuid.uuid4().hex, key) for _ in range(20)}
        assert len(models) == 1
        columns = {"x": [x, 9.0], "colour": ["red", "red"], "y": [1.0, 1.0]}  # the OIP's form
        assert keyed.route(pair, "any", keyed.key_of(columns)) in models
    # the protocol's model endpoints answer for either version
    canary = served.challenger
    assert served_model(core, "tiny", canary.bundle.model_id) is canary
    assert served_model(core, "tiny", served.prod.bundle.model_id) is served.prod
    assert served_model(core, "tiny", None) is served.prod
    with pytest.raises(HTTPException, match="404"):
        served_model(core, "tiny", "v9")
    for wrong, message in (
        ({"canary_bundle": "b", "canary_share": 0}, "--canary-share must be above 0"),
        ({"canary_bundle": "b", "canary_share": 1.5}, "at most 100 .* got 150"),
        ({"canary_share": 0.2}, "--canary-share goes with --canary-bundle"),
        ({"shadow_bundle": "a", "canary_bundle": "b", "canary_share": 0.2}, "one challenger"),
        ({"shadow_queue": 0}, "--shadow-queue must be at least 1"),
        ({"shadow_priority": "high"}, "--shadow-priority must be one of .*'low', 'idle'"),
    ):
        with pytest.raises(ValueError, match=message):
            ServeSettings(bundle_dir="x", **wrong)
    with pytest.raises(ValueError, match="--shadow-bundle and --canary-bundle go with --bundle"):
        ServeSettings(shadow_bundle="a")
    with pytest.raises(
        ValueError, match="--canary-key 'nope' is not a field a request's records may hold"
    ):
        core_of(bundles, canary_bundle=str(bundles["other"]), canary_share=0.5, canary_key="nope")


def test_the_canary_point_of_a_key_is_the_same_in_every_process() -> None:
    """Not salted by process, worker or time (Python's own hash of a string is): the same
    value in this process, in another one, and as pinned here."""
    keys = ["client-7", "request-0", "é"]
    other = subprocess.run(
        [sys.executable, "-c",
         "import sys; from mlcycle.serve.core import canary_point; "
         f"print(*[canary_point(k) for k in {keys!r}])"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert [float(v) for v in other] == [canary_point(k) for k in keys]
    assert all(0 <= canary_point(k) < 1 for k in keys)


def test_shadow_outputs_are_logged_beside_productions(bundles, tmp_path: Path) -> None:
    """Production answers every request; the shadow scores the same records in its own process
    (its own encoder: it knows a category production does not), and the log holds its output
    record by record beside production's, for the same request ids."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval=0.05)
    core = core_of(bundles, log, shadow_bundle=str(bundles["other"]))
    served = core.current()
    assert not served.same_encoding
    batches = {
        f"r{i}": [{**RECORD, "x": i / 10, "colour": c} for c in ("red", "violet")[: 1 + i % 2]]
        for i in range(30)
    }

    async def answer(rid: str, records: list[dict]) -> None:
        model, output, labels, _ = core.score(records, rid)
        assert model is served.prod
        preds = prediction_dicts(output, labels, model.signature)
        await core.log_request(model, rid, records, preds, len(records))

    for rid, records in batches.items():
        asyncio.run(answer(rid, records))
    assert core.shadows.wait_idle(30)
    core.close()
    frame = read_log(url)
    assert len(frame) == sum(map(len, batches.values()))
    assert set(frame["role"]) == {"prod"}
    shadow = served.shadow
    assert set(frame["shadow_model_id"]) == {shadow.bundle.model_id}
    for rid, records in batches.items():
        matrix = shadow.encoder.encode(records)
        out = shadow.bundle.model.output_encoded(matrix, shadow.signature)
        labels = decide(out, shadow.signature, shadow.bundle.decision)
        expected = orjson.loads(orjson.dumps(prediction_dicts(out, labels, shadow.signature)))
        assert frame[frame["request_id"] == rid]["shadow_output"].tolist() == expected
    assert core.telemetry.shadow_scored._value.get() == len(frame)
    assert core.telemetry.shadow_dropped._value.get() == 0


def test_a_full_shadow_queue_drops_and_counts_without_failing_requests(bundles) -> None:
    """A request the shadow's queue has no room for is answered all the same; its shadow
    scoring is dropped and counted, never waited for."""
    core = core_of(bundles, shadow_bundle=str(bundles["prod"]), shadow_queue=2)
    assert core.current().same_encoding  # the same signature: production's matrix is reused
    model, output, *_ = core.score([RECORD] * 3, "too-big")
    assert model.role == "prod" and len(output) == 3
    assert core.telemetry.shadow_dropped._value.get() == 3
    core.score([RECORD] * 2, "fits")
    assert core.shadows.wait_idle(30)
    assert core.telemetry.shadow_scored._value.get() == 2
    core.close()


def test_waiting_requests_go_to_the_shadow_together_and_at_once_when_a_batch_waits(
    bundles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feeder holds requests for the shadow until its gathering window ends or a batch of
    records waits (half the queue's bound here), and sends them together: one call of the
    shadow model. With the window made longer than the test, only the batch can send them."""
    monkeypatch.setattr("mlcycle.serve.shadow.GATHER_SECONDS", 3600.0)
    core = core_of(bundles, shadow_bundle=str(bundles["prod"]), shadow_queue=8)
    assert core.shadows.batch == 4
    for i in range(3):
        core.score([RECORD], f"waits-{i}")
    assert not core.shadows.wait_idle(1.0)  # 3 records, fewer than a batch: still gathering
    assert core.shadows.depth == 3 and core.shadows.started == 0
    core.score([RECORD], "the fourth")
    assert core.shadows.wait_idle(60)
    assert core.telemetry.shadow_scored._value.get() == 4
    calls = core.telemetry.registry.get_sample_value(
        "mlcycle_scoring_seconds_count", {"role": "shadow"}
    )
    assert calls == 1  # the four requests in one call of the model
    core.close()
    assert ShadowQueue(10**6, print, print, print).batch == BATCH_RECORDS


def test_an_idle_priority_shadow_process_runs_under_sched_idle(bundles) -> None:
    """``--shadow-priority idle``: the shadow runs only on what the machine leaves idle
    (Linux's SCHED_IDLE, a waking worker preempts it at once), and still scores."""
    core = core_of(bundles, shadow_bundle=str(bundles["prod"]), shadow_priority="idle")
    core.score([RECORD], "idle")
    assert core.shadows.wait_idle(60)
    assert os.sched_getscheduler(core.shadows.pid) == os.SCHED_IDLE
    assert core.telemetry.shadow_scored._value.get() == 1
    core.close()


def test_the_shadow_process_scores_with_the_pair_answered_and_its_loss_is_counted(
    bundles, tmp_path: Path
) -> None:
    """The shadow scores in a process of its own: a request is scored by the shadow its pair
    held when it was answered (a reload between two requests hands the process the new one);
    the records the process holds count against the queue's bound; a process that dies loses
    them, counted dropped, production answering all the while, and the next request starts
    another, which scores it."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, flush_interval=0.05)
    moving = tmp_path / "shadow"
    shutil.copytree(bundles["prod"], moving)
    core = core_of(bundles, log, shadow_bundle=str(moving), shadow_queue=3)
    first = core.current().shadow
    core.score([RECORD], "before")
    shutil.rmtree(moving)
    shutil.copytree(bundles["other"], moving)
    second = core.reload(touch=True).shadow
    core.score([{**RECORD, "colour": "violet"}], "after")
    assert core.shadows.wait_idle(60)
    pid = core.shadows.pid
    assert pid is not None and core.shadows.started == 1
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER  # the default, low: niceness 10 above
    assert os.getpriority(os.PRIO_PROCESS, pid) == (os.getpriority(os.PRIO_PROCESS, 0) + NICE)

    os.kill(pid, signal.SIGSTOP)  # the process holds what it is sent, scoring nothing
    core.score([RECORD] * 2, "held")
    while core.shadows._jobs:  # sent to the process (after the feeder's gathering wait)
        time.sleep(0.01)
    model, output, *_ = core.score([RECORD] * 2, "over the bound")  # 2 held + 2 > 3
    assert model.role == "prod" and len(output) == 2
    assert core.telemetry.shadow_dropped._value.get() == 2 and core.shadows.depth == 2
    os.kill(pid, signal.SIGKILL)
    assert core.shadows.wait_idle(60)  # the held records are counted lost
    assert core.telemetry.shadow_dropped._value.get() == 4 and core.shadows.lost == 1
    assert core.telemetry.shadow_lost._value.get() == 1
    core.score([RECORD], "next")
    assert core.shadows.wait_idle(60)
    assert core.shadows.started == 2 and core.shadows.pid not in (None, pid)
    assert core.telemetry.shadow_scored._value.get() == 3
    core.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = dict(
            conn.exec_driver_sql("SELECT request_id, model_id FROM prediction_shadows").all()
        )
    engine.dispose()
    assert rows == {
        "before": first.bundle.model_id,
        "after": second.bundle.model_id,
        "next": second.bundle.model_id,
    }
    assert first.bundle.model_id != second.bundle.model_id


def test_an_incompatible_challenger_is_refused_and_production_keeps_serving(
    bundles, tmp_path: Path
) -> None:
    """A challenger that takes other requests is refused at start, naming the difference; at
    a reload the whole pair is refused and the pair in service keeps answering."""
    with pytest.raises(ValueError, match=r"the shadow model takes other requests .*new input 'z'"):
        core_of(bundles, shadow_bundle=str(bundles["z"]))
    moving = tmp_path / "canary"
    shutil.copytree(bundles["other"], moving)
    core = core_of(bundles, canary_bundle=str(moving), canary_share=0.5)
    before = core.current()
    shutil.rmtree(moving)
    shutil.copytree(bundles["z"], moving)
    with pytest.raises(ValueError, match=r"the canary model takes other requests"):
        core.reload(touch=True)
    assert core.current() is before
    assert core.score([RECORD], "still")[0] in before.models
    info = before.info.model_dump(exclude_unset=True)
    assert info["challenger"]["stage"] == "canary" and info["challenger"]["share"] == 0.5
    assert info["id"] == before.prod.bundle.model_id
    assert "challenger" not in core_of(bundles).current().info.model_dump(exclude_unset=True)


def test_the_shadow_scores_waiting_requests_at_once_as_it_would_one_by_one(
    bundles, tmp_path: Path
) -> None:
    """Requests waiting for the shadow are scored in one call of the model (records and
    columns alike, one it cannot take dropped); each request's logged outputs are those it
    gets alone."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url)
    core = core_of(bundles, log, shadow_bundle=str(bundles["other"]))
    shadow = core.current().shadow
    records = [{**RECORD, "x": 0.3}, {**RECORD, "colour": "violet"}, {**RECORD, "x": -1.0}]
    columns = {"x": [2.0, 0.1], "colour": ["blue", None], "y": [3.0, 4.0]}
    jobs = [
        Job(shadow, "a", records, None, 3),
        Job(shadow, "bad", [{**RECORD, "x": "not a number"}], None, 1),
        Job(shadow, "b", columns, None, 2),
        Job(shadow, "c", records[:1], None, 1),
    ]
    report = score_shadow(jobs)
    core.shadow_reported(report)  # what the worker does with it: the log, the metrics
    log.close()
    frame = read_log_shadows(url)
    for job in (jobs[0], jobs[2], jobs[3]):
        out = shadow.bundle.model.output_encoded(
            shadow.encoder.encode(job.records), shadow.signature
        )
        labels = decide(out, shadow.signature, shadow.bundle.decision)
        assert frame[job.request_id] == orjson.loads(
            orjson.dumps(prediction_dicts(out, labels, shadow.signature))
        )
    assert "bad" not in frame
    assert (report.records, report.scored, report.dropped) == (7, 6, 1)
    assert len(report.observed) == 1  # one call of the model
    assert core.telemetry.shadow_dropped._value.get() == 1
    assert core.telemetry.shadow_scored._value.get() == 6


def read_log_shadows(url: str) -> dict[str, list]:
    """The shadow outputs the log holds, by request id."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT request_id, outputs FROM prediction_shadows").all()
    engine.dispose()
    return {rid: orjson.loads(text) for rid, text in rows}

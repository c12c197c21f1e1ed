"""The shadow model's process: one per service worker, started by the worker's
:class:`~mlcycle.serve.shadow.ShadowQueue` (``python -m mlcycle.serve.shadow_process FD``).

It takes the requests the worker sends on its pipe, every one waiting at once, scores them
with the shadow model the worker sent before them (:func:`score_shadow`) and sends back a
:class:`~mlcycle.serve.shadow.Report`: the log rows and the metrics' figures, which the worker
records. It runs at a lower CPU priority and holds its own interpreter lock, so the
shadow's work never delays production's answers.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import orjson

from mlcycle import tasks
from mlcycle.features import SchemaError
from mlcycle.predict import decide
from mlcycle.serve.core import metric_scores, prediction_dicts
from mlcycle.serve.shadow import NICE, Job, Report
from mlcycle.serve.telemetry import predicted, score_bounds

logger = logging.getLogger("mlcycle.serve")


def score_shadow(jobs: list[Job]) -> Report:
    """Score ``jobs`` (the requests waiting for the shadow) in one call of the model per
    shadow (a reload may have swapped it between two jobs), and say what was scored, dropped
    and predicted, with each request's outputs as the log stores them: under load the shadow
    scores many requests at once, cheaper than one by one. A request whose values the shadow
    cannot take is dropped (counted, not logged); so are all of them if the model fails
    (logged)."""
    report = Report(records=sum(job.n for job in jobs))
    for model, group in itertools.groupby(jobs, key=lambda job: job.model):
        start = time.perf_counter()
        kept, matrices = [], []
        for job in group:
            try:
                matrices.append(
                    job.matrix
                    if job.matrix is not None
                    else model.encoder.encode_with_unseen(job.records).matrix
                )
                kept.append(job)
            except SchemaError as exc:
                logger.warning("the shadow model cannot score request %r: %s", job.request_id, exc)
                report.dropped += job.n
        if not kept:
            continue
        try:
            matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
            output = model.bundle.model.output_encoded(matrix, model.signature)
            labels = decide(output, model.signature, model.bundle.decision)
        except Exception:  # a shadow that cannot score must not stop the process
            logger.exception(
                "the shadow model could not score %d request(s) from %r on",
                len(kept),
                kept[0].request_id,
            )
            report.dropped += sum(job.n for job in kept)
            continue
        seconds = time.perf_counter() - start
        bounds = score_bounds(tasks.get(model.signature.task).thresholded)
        summed = predicted(labels, metric_scores(model.signature, output), bounds)
        report.observed.append((model.bundle.model_id, model.role, seconds, summed))
        report.scored += sum(job.n for job in kept)
        answers = prediction_dicts(output, labels, model.signature)
        at = 0
        for job in kept:
            report.rows.append(
                (job.request_id, orjson.dumps(answers[at : at + job.n]), model.name,
                 model.bundle.model_id, model.version, job.n)
            )  # fmt: skip
            at += job.n
    return report


def lower_priority(priority: str) -> None:
    """Let production's requests have the core first. ``idle``: Linux's ``SCHED_IDLE``, the
    process runs on what the others leave (a worker that wakes preempts it at once; on a host
    busy with other work it scores little and its queue drops the rest, counted); ``low``, or
    where there is no ``SCHED_IDLE``: niceness :data:`~mlcycle.serve.shadow.NICE` above the
    worker's (Linux weighs it about a tenth of theirs, so it keeps scoring on a busy host,
    taking that share from production)."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(NICE)


def main(fd: int, priority: str) -> None:
    """The shadow process: take the requests the worker sends on the pipe ``fd``, all those
    waiting at once, score them (:func:`score_shadow`) and report back, until the worker says
    stop (None) or is gone. Signals to stop are the worker's: it stops this process once its
    requests are scored."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    lower_priority(priority)
    conn = Connection(fd)
    model: Any = None
    stopping = False
    while not stopping:
        try:
            messages = [conn.recv()]
            while conn.poll():
                messages.append(conn.recv())
        except (EOFError, OSError):  # the worker is gone
            break
        jobs: list[Job] = []
        for message in messages:
            if message is None:
                stopping = True
            elif isinstance(message, list):
                jobs.extend(Job(model, *job) for job in message)
            else:  # the model the requests after it are scored with
                model = message
                model.bundle.model.set_threads(1)
        if jobs:
            conn.send(score_shadow(jobs))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])

"""Shadow scoring off the request path and off the worker's interpreter lock: a bounded queue
of requests in the worker, and a process of its own that scores them with the shadow model.

Production answers a request; :meth:`ShadowQueue.offer` then puts the request's records (and
production's input matrix, when the shadow encodes them the same way) on a queue bounded in
records and returns at once. A feeder thread sends the requests waiting, in order, to the
worker's shadow process (:mod:`mlcycle.serve.shadow_process`, started with the first request,
at a lower CPU priority: :data:`PRIORITIES`), those that come within :data:`GATHER_SECONDS`
together (sooner when :data:`BATCH_RECORDS` records wait); the model a request must be scored
with (the one its pair held when it was answered) goes first whenever it changes, so a reload
swaps the shadow between two requests. The process takes every request waiting, scores them in
one call of the model (:func:`~mlcycle.serve.shadow_process.score_shadow`: the cost per request
falls, as a batch job's does), makes each request's outputs the JSON the log stores, and sends
back a :class:`Report`; a reader thread in the worker hands it to ``on_report``
(:meth:`~mlcycle.serve.core.Core.shadow_reported`: the outputs to the worker's own prediction
log, the figures to its metrics).

The worker's threads only pass messages: the shadow's encoding, scoring, deciding and
serialising hold another interpreter's lock, so they do not delay an answer (a shadow thread
in the worker doubled p99 at 40 % of capacity, docs/serving.md). When the queue is full a
request's shadow scoring is dropped and counted (``on_dropped``): a shadow that falls behind
never holds up an answer, it scores fewer requests. A shadow process that dies loses the
requests it held (counted dropped, and logged); the next request starts another, at most one
a second.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import numpy as np

from mlcycle.serve.telemetry import Predicted

logger = logging.getLogger("mlcycle.serve")

DEFAULT_RECORDS = 10_000  # records waiting for the shadow, at most (mlcycle serve --shadow-queue)
# The shadow process's CPU priority (mlcycle serve --shadow-priority): ``low`` gives it a share
# of a busy core (niceness NICE above its worker's); ``idle`` runs it only on a core the
# machine's other processes leave idle (Linux's SCHED_IDLE: a worker that wakes takes the core
# at once; on a busy host the shadow scores little and drops the rest).
PRIORITIES = ("low", "idle")
DEFAULT_PRIORITY = "low"
NICE = 10
# The feeder sends a request once GATHER_SECONDS have passed since the first of those waiting, or
# once BATCH_RECORDS records wait (at most half the queue's bound), whichever comes first: the
# shadow's scoring is off the answers' path, so it waits to score many records in one call. A
# call of an XGBoost model costs about what 15 rows do, and a row costs less in a large batch:
# 24 us a row at 100 rows, 19 at 1,000, 18 at 3,000 (Adult's bundle, one thread).
GATHER_SECONDS = 0.2
BATCH_RECORDS = 2048
RESTART_DELAY = 1.0  # seconds between two starts of a worker's shadow process, at least
SOURCE = Path(__file__).resolve().parents[2]  # the folder this mlcycle package is in


@dataclass(frozen=True)
class Job:
    """One request for the shadow: the model that scores it, its id, its records (what the
    encoder takes), production's input matrix when the shadow's encoding is the same (else
    None), and the number of records."""

    model: Any  # a mlcycle.serve.core.Loaded
    request_id: str
    records: Any
    matrix: np.ndarray | None
    n: int


@dataclass
class Report:
    """What the shadow process did with the requests it took at once: their ``records`` (all
    of them, scored or not), the records it ``scored`` and ``dropped`` (values it could not
    take), per call of a model what the metrics observe (its id, role, the seconds it took,
    and what it predicted, summed: :class:`~mlcycle.serve.telemetry.Predicted`), and per
    request scored what the prediction log stores: its
    id, its outputs as JSON, the model's name, id and version, and its number of records."""

    records: int = 0
    scored: int = 0
    dropped: int = 0
    observed: list[tuple[str, str, float, Predicted]] = field(default_factory=list)
    rows: list[tuple[str, bytes, str, str, str | None, int]] = field(default_factory=list)


class _Child:
    """One shadow process, the worker's end of its pipe and the records it holds."""

    def __init__(self, priority: str) -> None:
        ours, theirs = Pipe()
        # the process imports mlcycle from where this worker did
        path = os.pathsep.join(filter(None, (str(SOURCE), os.environ.get("PYTHONPATH"))))
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlcycle.serve.shadow_process",
                    str(theirs.fileno()),
                    priority,
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = ours
        self.model: Any = None  # the model last sent: the one the next requests are scored with
        self.inflight = 0  # records sent and not reported on yet
        self.alive = True


class ShadowQueue:
    """At most ``max_records`` records of requests waiting for the shadow or being scored by
    it, in the worker's shadow process (see the module's docstring).
    ``on_report`` takes each :class:`Report` of the process; ``on_dropped(n)`` counts the
    records of a request refused because the queue was full, or lost with a process that
    died; ``on_lost()`` counts a process that died before it was closed. ``priority`` is
    the process's CPU priority, one of :data:`PRIORITIES`."""

    def __init__(
        self,
        max_records: int,
        on_report: Callable[[Report], None],
        on_dropped: Callable[[int], None],
        on_lost: Callable[[], None],
        priority: str = DEFAULT_PRIORITY,
    ) -> None:
        if max_records < 1:
            raise ValueError(f"--shadow-queue must be at least 1 record, got {max_records}")
        if priority not in PRIORITIES:
            raise ValueError(f"--shadow-priority must be one of {PRIORITIES}, got {priority!r}")
        self.max_records = max_records
        self.priority = priority
        self._on_report = on_report
        self._on_dropped = on_dropped
        self._on_lost = on_lost
        self._jobs: deque[Job] = deque()
        self._depth = 0  # records queued, or sent to the process and not reported on
        self._queued = 0  # records queued, not sent yet
        # records the feeder sends without waiting longer: a batch, or half the bound (the
        # other half keeps taking requests while the batch is scored)
        self.batch = max(1, min(BATCH_RECORDS, max_records // 2))
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._closing = False
        self._feeder_waits = False  # the feeder waits for a request: offer wakes it
        self._gathering = False  # the feeder waits for more requests: offer wakes it at a batch
        self._feeder: threading.Thread | None = None
        self._child: _Child | None = None
        self._readers: list[threading.Thread] = []
        self._next_start = 0.0  # monotonic time the next process may start
        self.started = 0  # shadow processes started
        self.lost = 0  # shadow processes that died before they were closed

    @property
    def depth(self) -> int:
        """Records waiting for the shadow or being scored: the queue gauge."""
        return self._depth

    @property
    def pid(self) -> int | None:
        """The running shadow process's id, if there is one."""
        child = self._child
        return child.process.pid if child is not None and child.alive else None

    def offer(self, job: Job) -> bool:
        """Queue ``job`` unless it does not fit (then count it dropped); never waits."""
        with self._lock:
            if self._closing or self._depth + job.n > self.max_records:
                accepted = False
            else:
                self._jobs.append(job)
                self._depth += job.n
                self._queued += job.n
                accepted = True
                if self._feeder is None:
                    self._feeder = threading.Thread(
                        target=self._feed, name="mlcycle-shadow", daemon=True
                    )
                    self._feeder.start()
                elif self._feeder_waits or (self._gathering and self._queued >= self.batch):
                    self._feeder_waits = self._gathering = False  # one wake-up is enough
                    self._wake.notify()
        if not accepted:
            self._on_dropped(job.n)
        return accepted

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued job is scored and reported (True), or ``timeout`` seconds
        (False)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._depth == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued for up to ``timeout`` seconds, then stop the process (what is
        left is dropped and counted)."""
        self.wait_idle(timeout)
        with self._lock:
            self._closing = True
            left = sum(job.n for job in self._jobs)
            self._jobs.clear()
            self._queued = 0
            self._wake.notify_all()
        if left:
            self._drop(left)
        if self._feeder is not None:
            self._feeder.join(timeout)
        child = self._child
        if child is not None:
            try:
                child.process.wait(timeout)
            except subprocess.TimeoutExpired:
                child.process.kill()
        for reader in self._readers:
            reader.join(timeout)

    # -- the feeder thread: requests to the process ---------------------------------------------

    def _feed(self) -> None:
        """Send the requests waiting to the shadow process, those that came within
        :data:`GATHER_SECONDS` of the first together, or fewer once :attr:`batch` records wait
        (one message, one call of the model, one report: a wake-up of this thread and of the
        process per request would cost the worker and the shadow more than the scoring
        itself), starting a process when there is none; when closing, tell it to stop."""
        while True:
            with self._lock:
                while not self._jobs and not self._closing:
                    self._feeder_waits = True
                    self._wake.wait()
                self._feeder_waits = False
                self._gathering = True  # offer wakes it once a batch waits
                self._wake.wait_for(
                    lambda: self._closing or self._queued >= self.batch, GATHER_SECONDS
                )
                self._gathering = False
                jobs = list(self._jobs)
                self._jobs.clear()
                self._queued = 0
                closing = self._closing
            if closing:  # close() took what was queued and counted it
                break
            child = self._running()
            if child is None:  # closing meanwhile, or the process cannot start
                n = sum(job.n for job in jobs)
                self._drop(n)
                continue
            self._send(child, jobs)
        child = self._child
        if child is not None and child.alive:
            with contextlib.suppress(OSError):  # it died meanwhile: its reader counts
                child.conn.send(None)  # stop once the requests sent are scored

    def _running(self) -> _Child | None:
        """The live shadow process, started (at most one start per :data:`RESTART_DELAY`)
        if there is none; None when closing, or if it cannot start (logged)."""
        child = self._child
        if child is not None and child.alive:
            return child
        with self._lock:
            self._wake.wait_for(
                lambda: self._closing, max(0.0, self._next_start - time.monotonic())
            )
            if self._closing:
                return None
        self._next_start = time.monotonic() + RESTART_DELAY
        try:
            child = _Child(self.priority)
        except OSError:
            logger.exception("the shadow process could not start; its requests are dropped")
            return None
        self.started += 1
        self._child = child
        reader = threading.Thread(
            target=self._read, args=(child,), name="mlcycle-shadow-reports", daemon=True
        )
        self._readers = [r for r in self._readers if r.is_alive()] + [reader]
        reader.start()
        return child

    def _send(self, child: _Child, jobs: list[Job]) -> None:
        """Send ``jobs`` in order, each run of one model as a message, the model first when
        it is not the one the process scores with; the reader counts what a process that
        died held, these included."""
        start = 0
        while start < len(jobs):
            model = jobs[start].model
            end = start
            while end < len(jobs) and jobs[end].model is model:
                end += 1
            run = jobs[start:end]
            n = sum(job.n for job in run)
            with self._lock:
                if child.alive:
                    child.inflight += n
                    sent = True
                else:
                    sent = False
            if not sent:  # it died: what is left is lost
                left = sum(job.n for job in jobs[start:])
                self._drop(left)
                return
            try:
                if model is not child.model:
                    child.conn.send(model)
                    child.model = model
                child.conn.send(
                    [
                        (job.request_id, job.records if job.matrix is None else None,
                         job.matrix, job.n)
                        for job in run
                    ]
                )  # fmt: skip
            except OSError:  # it died: its reader counts what it held
                return
            start = end

    # -- the reader thread: reports from the process --------------------------------------------

    def _read(self, child: _Child) -> None:
        """Take the process's reports until it exits; then count what it held as dropped."""
        while True:
            try:
                report: Report = child.conn.recv()
            except (EOFError, OSError):
                break
            self._on_report(report)
            with self._lock:
                child.inflight -= report.records
            self._settle(report.records)
        with self._lock:
            child.alive = False
            lost, child.inflight = child.inflight, 0
            closing = self._closing
            self._wake.notify_all()
        code = child.process.wait()
        child.conn.close()
        if lost or not closing:
            self.lost += 1
            self._on_lost()
            logger.error(
                "the shadow process %d stopped (exit code %s), %d record(s) unscored; %s",
                child.process.pid,
                code,
                lost,
                "the service is stopping" if closing else "the next request starts another",
            )
        if lost:
            self._drop(lost)

    def _drop(self, n: int) -> None:
        """``n`` records queued or sent leave unscored: counted dropped."""
        self._on_dropped(n)
        self._settle(n)

    def _settle(self, n: int) -> None:
        """``n`` records leave the queue (scored, or counted dropped)."""
        with self._lock:
            self._depth -= n
            if self._depth == 0:
                self._idle.notify_all()

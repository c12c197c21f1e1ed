"""Shadow scoring off the request path: a bounded queue of requests and the thread that scores
them with the shadow model.

Production answers a request; :meth:`ShadowQueue.offer` then puts the request's records (and
production's input matrix, when the shadow encodes them the same way) on a queue bounded in
records and returns at once. A thread of its own takes every request waiting, in order, and
hands them to the ``score`` function it was built with
(:meth:`mlcycle.serve.core.Core.score_shadow`, which scores them in one call of the model:
under load the shadow's cost per request falls, as a batch job's does). When the
queue is full the request's shadow scoring is dropped and counted (``on_dropped``): a shadow
that falls behind never holds up an answer, it scores fewer requests.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger("mlcycle.serve")

DEFAULT_RECORDS = 10_000  # records waiting for the shadow, at most (mlcycle serve --shadow-queue)


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


class ShadowQueue:
    """At most ``max_records`` records of requests waiting for the shadow, scored in order by
    a daemon thread (started with the first request) through ``score``, given every job
    waiting at once; ``on_dropped(n)`` counts the records of a request refused because the
    queue was full (or whose scoring failed)."""

    def __init__(
        self,
        max_records: int,
        score: Callable[[list[Job]], None],
        on_dropped: Callable[[int], None],
    ) -> None:
        if max_records < 1:
            raise ValueError(f"--shadow-queue must be at least 1 record, got {max_records}")
        self.max_records = max_records
        self._score = score
        self._on_dropped = on_dropped
        self._jobs: deque[Job] = deque()
        self._depth = 0  # records queued or being scored
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._closing = False
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Records waiting for the shadow or being scored: the queue gauge."""
        return self._depth

    def offer(self, job: Job) -> bool:
        """Queue ``job`` unless it does not fit (then count it dropped); never waits."""
        with self._lock:
            if self._closing or self._depth + job.n > self.max_records:
                accepted = False
            else:
                self._jobs.append(job)
                self._depth += job.n
                accepted = True
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="mlcycle-shadow", daemon=True
                    )
                    self._thread.start()
                self._wake.notify()
        if not accepted:
            self._on_dropped(job.n)
        return accepted

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued job is scored (True), or ``timeout`` seconds (False)."""
        with self._lock:
            return self._idle.wait_for(lambda: self._depth == 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Score what is queued for up to ``timeout`` seconds, then stop the thread (what is
        left is dropped and counted)."""
        self.wait_idle(timeout)
        with self._lock:
            self._closing = True
            left = sum(job.n for job in self._jobs)
            self._jobs.clear()
            self._wake.notify_all()
        if left:
            self._on_dropped(left)
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._jobs and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                jobs = list(self._jobs)
                self._jobs.clear()
            n = sum(job.n for job in jobs)
            try:
                self._score(jobs)
            except Exception:  # a shadow that cannot score must not stop the thread
                logger.exception(
                    "the shadow model could not score %d request(s) from %r on",
                    len(jobs),
                    jobs[0].request_id,
                )
                self._on_dropped(n)
            finally:
                with self._lock:
                    self._depth -= n
                    if self._depth == 0:
                        self._idle.notify_all()

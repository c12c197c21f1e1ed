"""The Dask cluster connection: a running scheduler (``engine.scheduler``) or a
``LocalCluster`` started here and shut down on exit; and every blocking call on it bounded
(:func:`bounded`): a deadline (``engine.task_timeout``), work lost with a worker run again
(``engine.retries``), the lost workers reported."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from asyncio import CancelledError
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from mlcycle.config import EngineConfig
from mlcycle.engines.base import EngineError, Say

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
DEADLINE_FLOOR = 600.0  # seconds a blocking call gets with engine.task_timeout: null ...
SECONDS_PER_ROW = 0.001  # ... plus this per row of the stage's data set
LOSS_GRACE = 3.0  # seconds the scheduler is given to notice a lost worker after an error


@contextlib.contextmanager
def dask_client(cfg: EngineConfig, say: Say) -> Iterator[Client]:
    """A Dask client for ``cfg``: connected to ``cfg.scheduler``, or to a LocalCluster started
    (and shut down on exit) here. Prints the workers and the dashboard link."""
    import logging

    from distributed import Client, LocalCluster

    # The P2P shuffle logs every shuffle it starts and ends at WARNING: noise in a stage's log.
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout=f"{connect_budget(cfg)}s")
        except (OSError, TimeoutError) as exc:
            raise EngineError(
                f"engine.scheduler {cfg.scheduler}: cannot connect ({exc}); is `dask "
                "scheduler` running there, and is its port reachable from this machine?"
            ) from None
        with client:
            workers = worker_info(client)
            if not workers:
                say(f"dask: waiting for a worker at {cfg.scheduler}")
                client.wait_for_workers(1, timeout=connect_budget(cfg))
                workers = worker_info(client)
            threads = sum(w.get("nthreads", 0) for w in workers.values())
            say(
                f"dask: scheduler {cfg.scheduler}, {len(workers)} worker(s), {threads} "
                f"thread(s); dashboard {client.dashboard_link}"
            )
            yield client
        return
    with (
        LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            dashboard_address=cfg.dashboard,
            processes=True,
        ) as cluster,
        Client(cluster) as client,
    ):
        say(
            f"dask: LocalCluster of {cfg.workers} worker(s) x {cfg.threads_per_worker} "
            f"thread(s), memory {cfg.memory_limit} each; dashboard {client.dashboard_link}"
        )
        yield client


def worker_info(client: Client) -> dict[str, dict[str, Any]]:
    """The scheduler's workers now (address: info), asked of it directly:
    ``client.scheduler_info()`` can return the client's periodic refresh instead, which lists
    no workers."""
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


def connect_budget(cfg: EngineConfig) -> float:
    """The seconds left of ``engine.connect_timeout``, counted from this process's start (its
    imports and settings included), so an unreachable scheduler fails within the setting; an
    error naming it when none are left."""
    spent = time.time() - psutil.Process().create_time()
    left = cfg.connect_timeout - spent
    if left <= 0:
        raise EngineError(
            f"engine.scheduler {cfg.scheduler}: cannot connect: the stage's start-up took "
            f"{spent:.1f}s of engine.connect_timeout={cfg.connect_timeout:g}s, leaving none; "
            "raise engine.connect_timeout"
        )
    return left


def task_deadline(cfg: EngineConfig, rows: int) -> float:
    """Seconds one blocking call on the cluster may take: ``engine.task_timeout``, or when it
    is null ``DEADLINE_FLOOR`` plus ``SECONDS_PER_ROW`` per row of the stage's data set."""
    if cfg.task_timeout is not None:
        return cfg.task_timeout
    return DEADLINE_FLOOR + SECONDS_PER_ROW * rows


class WorkerLost(Exception):
    """Workers were lost while a call that cannot survive it (a collective fit) ran."""

    def __init__(self, workers: list[str]) -> None:
        super().__init__(f"worker(s) {', '.join(workers)} lost")
        self.workers = workers


class Guard:
    """Blocking calls on the cluster under a deadline (:meth:`run`), work failed by a lost
    worker run again up to ``retries`` times; the workers lost and the retries, for the stage's
    metrics (:meth:`report`)."""

    def __init__(self, client: Client, timeout: float, retries: int, say: Say) -> None:
        self.client, self.timeout, self.retries, self.say = client, timeout, retries, say
        self.known = self._workers()
        self.lost: list[str] = []
        self.retried = 0

    def _workers(self) -> set[str]:
        return set(worker_info(self.client))

    def _newly_lost(self, wait: float) -> list[str]:
        """Workers gone since the last look (waiting up to ``wait`` s for the scheduler to see
        one go: an error from a worker's peers can come before it does)."""
        end = time.monotonic() + wait
        while True:
            now = self._workers()
            gone = sorted(self.known - now)
            if gone or time.monotonic() >= end:
                self.known = now
                self.lost += [w for w in gone if w not in self.lost]
                return gone
            time.sleep(0.1)

    def _within(self, what: str, fn: Callable[[], T], watch: bool = False) -> T:
        """``fn()`` in a thread, waited for at most ``timeout`` seconds (a hung call is left
        behind: the stage fails, and closing its client releases the work). With ``watch``,
        a worker lost meanwhile ends the wait at once (:class:`WorkerLost`): the call cannot
        survive it, and may wait for the lost worker's data until the deadline."""
        box: dict[str, Any] = {}
        context = contextvars.copy_context()

        def call() -> None:
            try:
                box["value"] = context.run(fn)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=call, name=f"mlcycle: {what}", daemon=True)
        thread.start()
        end = time.monotonic() + self.timeout
        while thread.is_alive() and (left := end - time.monotonic()) > 0:
            thread.join(min(left, 1.0) if watch else left)
            if watch and thread.is_alive() and (gone := self._newly_lost(0)):
                raise WorkerLost(gone)
        if thread.is_alive():
            self._newly_lost(0)
            raise EngineError(
                f"{what} did not finish within {self.timeout:.0f}s (engine.task_timeout)"
                + (f"; worker(s) {', '.join(self.lost)} lost" if self.lost else "")
                + ". Raise engine.task_timeout if the work needs longer; else see the "
                "workers' logs"
            )
        if "error" in box:
            raise box["error"]
        return box["value"]

    def run(self, what: str, fn: Callable[[], T], reset: Callable[[], None] | None = None) -> T:
        """``fn()`` within the deadline; when it fails and a worker was lost, ``reset()`` (if
        given: e.g. place the data again on the workers left) and ``fn()`` again, up to
        ``retries`` times, then an :class:`EngineError` naming the workers, ``what`` and the
        settings. A worker lost while ``fn`` still succeeded is reported too (and ``reset()``
        called: the guard sees a loss once, and the next call would wait for the lost data)."""
        from distributed.comm import CommClosedError
        from distributed.scheduler import KilledWorker

        for attempt in range(self.retries + 1):
            try:
                value = self._within(what, fn, watch=reset is not None)
            except EngineError:
                raise
            except (Exception, CancelledError) as exc:  # Dask's cancellations are the latter
                lost_now = isinstance(exc, WorkerLost)
                gone = exc.workers if lost_now else self._newly_lost(LOSS_GRACE)
                lossy = isinstance(exc, (WorkerLost, KilledWorker, CommClosedError, CancelledError))
                if not gone and not lossy:
                    raise
                lost = ", ".join(gone or self.lost) or "unknown"
                if attempt == self.retries:
                    cause = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                    raise EngineError(
                        f"{what} failed: worker(s) {lost} lost, {attempt + 1} attempt(s) "
                        f"(engine.retries={self.retries}); {type(exc).__name__}: {cause}. "
                        "Raise engine.retries, or see why the workers died (memory: "
                        "engine.memory_limit or the workers' --memory-limit; their logs)"
                    ) from exc
                self.retried += 1
                self.say(f"dask: worker(s) {lost} lost during {what}; running it again "
                         f"(retry {attempt + 1} of engine.retries={self.retries})")  # fmt: skip
                if reset is not None:
                    reset()
                continue
            gone = self._newly_lost(0)
            if gone and reset is not None:  # the next call must not wait for their data
                self.say(f"dask: worker(s) {', '.join(gone)} lost during {what}; its data "
                         "placed again on the workers left")  # fmt: skip
                reset()
            elif gone:
                self.say(f"dask: worker(s) {', '.join(gone)} lost during {what}; Dask "
                         "recomputed their part")  # fmt: skip
            return value
        raise AssertionError("unreachable")  # the loop returns or raises

    def report(self) -> dict[str, Any]:
        """``{"workers_lost": [...], "retries": n}`` for the stage's metrics."""
        return {"workers_lost": list(self.lost), "retries": self.retried}


_GUARD: ContextVar[Guard | None] = ContextVar("mlcycle_guard", default=None)


@contextlib.contextmanager
def guarded(client: Client, cfg: EngineConfig, rows: int, say: Say) -> Iterator[Guard]:
    """Bound every :func:`bounded` call inside by ``cfg`` (the deadline for ``rows`` rows,
    the retries), reporting through ``say``."""
    guard = Guard(client, task_deadline(cfg, rows), cfg.retries, say)
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def peer_timeout() -> int:
    """Seconds a worker in a collective (an ``xgboost.dask`` fit) waits for a peer: half the
    current deadline, so that a fit whose peer was lost fails, and is retried, within it."""
    guard = _GUARD.get()
    timeout = guard.timeout if guard is not None else task_deadline(EngineConfig(), 0)
    return max(1, int(timeout / 2))


def bounded(what: str, fn: Callable[[], T], reset: Callable[[], None] | None = None) -> T:
    """``fn()``, a blocking call on the cluster computing ``what`` ("the final xgboost.dask
    fit"), under the current :func:`guarded` settings (outside one: the defaults, on the
    default client). See :meth:`Guard.run`."""
    guard = _GUARD.get()
    if guard is None:
        from distributed import default_client

        cfg = EngineConfig()
        guard = Guard(default_client(), task_deadline(cfg, 0), cfg.retries, lambda _: None)
    return guard.run(what, fn, reset)


def computed(what: str, *collections: Any) -> tuple[Any, ...]:
    """``dask.compute(*collections)`` as a :func:`bounded` call computing ``what``."""
    import dask

    return bounded(what, lambda: dask.compute(*collections))

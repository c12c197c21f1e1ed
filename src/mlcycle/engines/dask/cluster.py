"""The Dask cluster connection: a running scheduler (``engine.scheduler``) or a
``LocalCluster`` started here and shut down on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mlcycle.config import EngineConfig
from mlcycle.engines.base import EngineError, Say

if TYPE_CHECKING:
    from distributed import Client


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
            client = Client(cfg.scheduler, timeout=f"{cfg.connect_timeout}s")
        except (OSError, TimeoutError) as exc:
            raise EngineError(
                f"engine.scheduler {cfg.scheduler}: cannot connect ({exc}); is `dask "
                "scheduler` running there, and is its port reachable from this machine?"
            ) from None
        with client:
            workers = client.scheduler_info().get("workers", {})
            if not workers:
                say(f"dask: waiting for a worker at {cfg.scheduler}")
                client.wait_for_workers(1, timeout=cfg.connect_timeout)
                workers = client.scheduler_info().get("workers", {})
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

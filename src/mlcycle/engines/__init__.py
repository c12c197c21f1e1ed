"""Where the stages compute: :func:`open_engine`, and one step module per stage.

``engine.kind`` in params.yaml picks the local engine (pandas in one process, each data set one
Parquet file) or the Dask engine (a Dask cluster, each data set a folder of Parquet parts). A
stage opens one with :func:`open_engine` and passes it to its step module
(:mod:`~mlcycle.engines.gather`, :mod:`~mlcycle.engines.validate`,
:mod:`~mlcycle.engines.prepare`, :mod:`~mlcycle.engines.train`,
:mod:`~mlcycle.engines.evaluate`, :mod:`~mlcycle.engines.gate`) for the steps whose algorithms
differ between engines; it writes the typed results it gets back once, the same way for both.
Stages import this package and their step module, never the Dask engine's internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mlcycle.config import EngineConfig
from mlcycle.engines.base import Engine, EngineError, Say
from mlcycle.engines.dask.cluster import dask_client

__all__ = ["Engine", "EngineError", "Say", "open_engine"]


@contextlib.contextmanager
def open_engine(cfg: EngineConfig, say: Say) -> Iterator[Engine]:
    """The engine ``cfg`` names, reporting through ``say``: the Dask one connects to (or starts)
    its cluster here and closes it on exit; the local one needs nothing."""
    if not cfg.is_dask:
        yield Engine(cfg, say)
        return
    with dask_client(cfg, say) as client:
        yield Engine(cfg, say, client)

"""Where the stages compute: the engine interface and the one function that opens an engine.

``engine.kind`` in params.yaml picks :class:`~mlcycle.engines.local.LocalEngine` (pandas in
one process, each data set one Parquet file) or :class:`~mlcycle.engines.dask.DaskEngine` (a
Dask cluster, each data set a folder of Parquet parts). A stage opens one with
:func:`open_engine`, asks it for the steps whose algorithms differ between engines (see
:class:`~mlcycle.engines.base.Engine`) and writes the typed results it gets back once, the
same way for both. Stages import this module only, never an engine's internals.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from mlcycle.config import EngineConfig
from mlcycle.engines.base import (
    Checked,
    Engine,
    EngineError,
    Evaluated,
    EvaluatePaths,
    PreparedSplits,
    Say,
    SourceSet,
    Trained,
)
from mlcycle.engines.dask import DaskEngine, dask_client
from mlcycle.engines.local import LocalEngine

__all__ = [
    "Checked",
    "Engine",
    "EngineError",
    "EvaluatePaths",
    "Evaluated",
    "PreparedSplits",
    "Say",
    "SourceSet",
    "Trained",
    "open_engine",
]


@contextlib.contextmanager
def open_engine(cfg: EngineConfig, say: Say) -> Iterator[Engine]:
    """The engine ``cfg`` names, reporting through ``say``: the Dask one connects to (or starts)
    its cluster here and closes it on exit; the local one needs nothing."""
    if not cfg.is_dask:
        yield LocalEngine(cfg, say)
        return
    with dask_client(cfg, say) as client:
        yield DaskEngine(cfg, say, client)

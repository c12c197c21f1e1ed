"""The prepare stage's step: clean the snapshot, split it, remove training rows, write both
splits."""

from __future__ import annotations

import pandas as pd

from mlcycle import config, tasks
from mlcycle.drift import data_profile
from mlcycle.engines.base import Engine, PreparedSplits
from mlcycle.engines.dask import prepare as on_dask
from mlcycle.io import write_parquet
from mlcycle.prepare import prepare as prepare_frame

__all__ = ["PreparedSplits", "prepare"]


def prepare(
    engine: Engine, params: config.Params, snapshot: str, train: str, test: str
) -> PreparedSplits:
    """Clean the snapshot at ``snapshot``, split it, remove training rows; write both splits at
    ``train`` and ``test``."""
    if engine.client is not None:
        return on_dask.prepare_dask(params, engine.client, snapshot, train, test, engine.say)
    obj = params.objectives
    task = tasks.get(obj.task)
    frame = pd.read_parquet(snapshot)
    engine.say(f"snapshot: {len(frame)} rows")
    result = prepare_frame(frame, params.prepare, obj, progress=engine.say)
    write_parquet(train, result.train)
    write_parquet(test, result.test)
    return PreparedSplits(
        report=result.report,
        train_rows_split=result.report["split"]["train_rows"],
        train_rows=len(result.train),
        train_target=task.target_summary(result.train[obj.target], obj.positive_class),
        test_rows=len(result.test),
        test_target=task.target_summary(result.test[obj.target], obj.positive_class),
        profile=data_profile(result.train, params.monitor.bins),
    )

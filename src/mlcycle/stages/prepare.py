"""Stage `prepare`: clean the snapshot, split it into train and test, and remove duplicates,
conflicting labels and outliers from the training split only.

Inputs: data/raw/snapshot.parquet; params `prepare`, `objectives.task`, `objectives.target`,
`objectives.positive_class`, `monitor.bins`.
Outputs: data/prepared/{train,test}.parquet; metrics/prepare.json (what every step changed);
metrics/data_profile.json (the training split's distributions, binned by `monitor.bins`: kept
in git, so `mlcycle report` can tell how the training data moved between two revisions).
"""

from __future__ import annotations

import pandas as pd

from mlcycle import config, tasks
from mlcycle.drift import data_profile
from mlcycle.engines import dask_client
from mlcycle.engines.prepare import main_dask
from mlcycle.io import write_json, write_parquet
from mlcycle.prepare import prepare
from mlcycle.stages import METRICS, SNAPSHOT, TEST, TRAIN, log, run


def target_summary(target: pd.Series, obj: config.Objectives) -> dict:
    """The target's make-up on one side: the positive rate (binary), the share of each class
    (multiclass) or the mean and std (regression); see :meth:`mlcycle.tasks.Task.target_summary`."""
    return tasks.get(obj.task).target_summary(target, obj.positive_class)


def main() -> None:
    params = config.load()
    if params.engine.is_dask:
        with dask_client(params.engine, lambda msg: log("prepare", msg)) as client:
            main_dask(params, client)
        return
    obj = params.objectives
    snapshot = pd.read_parquet(SNAPSHOT)
    log("prepare", f"snapshot: {len(snapshot)} rows")
    result = prepare(
        snapshot, params.prepare, params.objectives, progress=lambda msg: log("prepare", msg)
    )
    train, test = result.train, result.test
    write_parquet(TRAIN, train)
    write_parquet(TEST, test)

    write_json(
        f"{METRICS}/prepare.json",
        {
            **result.report,
            "train": {
                "rows_split": result.report["split"]["train_rows"],
                "rows": len(train),
                **target_summary(train[obj.target], obj),
            },
            "test": {"rows": len(test), **target_summary(test[obj.target], obj)},
        },
    )
    write_json(f"{METRICS}/data_profile.json", data_profile(train, params.monitor.bins))
    log("prepare", f"train {len(train)} rows, test {len(test)} rows")


if __name__ == "__main__":
    run("prepare", main)

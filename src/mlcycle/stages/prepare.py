"""Stage `prepare`: clean the snapshot, split it into train and test, and remove duplicates,
conflicting labels and outliers from the training split only.

Inputs: data/raw/snapshot.parquet; params `prepare`, `objectives.task`, `objectives.target`,
`objectives.positive_class`, `monitor.bins`.
Outputs: data/prepared/{train,test}.parquet; metrics/prepare.json (what every step changed);
metrics/data_profile.json (the training split's distributions, binned by `monitor.bins`: kept
in git, so `mlcycle report` can tell how the training data moved between two revisions).
"""

from __future__ import annotations

from mlcycle import config
from mlcycle.engines import Engine, open_engine
from mlcycle.engines.prepare import PreparedSplits, prepare
from mlcycle.io import write_json
from mlcycle.stages import METRICS, SNAPSHOT, TEST, TRAIN, log, run


def main() -> None:
    params = config.load()
    with open_engine(params.engine, lambda msg: log("prepare", msg)) as engine:
        execute(params, engine)


def execute(params: config.Params, engine: Engine) -> None:
    """Clean and split the snapshot (the engine writes both splits); write their figures."""
    write(prepare(engine, params, SNAPSHOT, TRAIN, TEST))


def write(prepared: PreparedSplits) -> None:
    """metrics/prepare.json (what every step changed) and metrics/data_profile.json."""
    write_json(
        f"{METRICS}/prepare.json",
        {
            **prepared.report,
            "train": {
                "rows_split": prepared.train_rows_split,
                "rows": prepared.train_rows,
                **prepared.train_target,
            },
            "test": {"rows": prepared.test_rows, **prepared.test_target},
        },
    )
    write_json(f"{METRICS}/data_profile.json", prepared.profile)
    log("prepare", f"train {prepared.train_rows} rows, test {prepared.test_rows} rows")


if __name__ == "__main__":
    run("prepare", main)

"""Stage `prepare`: clean the snapshot, split it into train and test, and remove duplicates,
conflicting labels and outliers from the training split only.

Inputs: data/raw/snapshot.parquet; params `prepare`, `objectives.target`,
`objectives.positive_class`.
Outputs: data/prepared/{train,test}.parquet; metrics/prepare.json (what every step changed).
"""

from __future__ import annotations

import pandas as pd

from mlcycle import config
from mlcycle.io import write_json, write_parquet
from mlcycle.prepare import prepare
from mlcycle.stages import METRICS, SNAPSHOT, TEST, TRAIN, log, run


def main() -> None:
    params = config.load()
    target, positive = params.objectives.target, params.objectives.positive_class
    snapshot = pd.read_parquet(SNAPSHOT)
    log("prepare", f"snapshot: {len(snapshot)} rows")
    result = prepare(
        snapshot, params.prepare, params.objectives, progress=lambda msg: log("prepare", msg)
    )
    train, test = result.train, result.test
    write_parquet(TRAIN, train)
    write_parquet(TEST, test)

    def positive_rate(frame: pd.DataFrame) -> float:
        return round(float((frame[target] == positive).mean()), 6)

    write_json(
        f"{METRICS}/prepare.json",
        {
            **result.report,
            "train": {
                "rows_split": result.report["split"]["train_rows"],
                "rows": len(train),
                "positive_rate": positive_rate(train),
            },
            "test": {"rows": len(test), "positive_rate": positive_rate(test)},
        },
    )
    log("prepare", f"train {len(train)} rows, test {len(test)} rows")


if __name__ == "__main__":
    run("prepare", main)

"""Stage `prepare`: clean the snapshot and split it into train and test.

Inputs: data/raw/snapshot.parquet; params `prepare`, `objectives.target`,
`objectives.positive_class`.
Outputs: data/prepared/{train,test}.parquet; metrics/prepare.json (what cleaning changed).
"""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from mlcycle import config
from mlcycle.io import write_json, write_parquet
from mlcycle.prepare import clean, split
from mlcycle.stages import METRICS, SNAPSHOT, TEST, TRAIN, log, run


def main() -> None:
    params = config.load()
    target = params.objectives.target
    snapshot = pd.read_parquet(SNAPSHOT)
    cleaned, report = clean(snapshot, params.objectives)
    train, test = split(cleaned, params.prepare, target)
    write_parquet(TRAIN, train)
    write_parquet(TEST, test)
    positive = params.objectives.positive_class

    def positive_rate(frame: pd.DataFrame) -> float:
        return round(float((frame[target] == positive).mean()), 6)

    write_json(
        f"{METRICS}/prepare.json",
        {
            "clean": asdict(report),
            "train": {"rows": len(train), "positive_rate": positive_rate(train)},
            "test": {"rows": len(test), "positive_rate": positive_rate(test)},
        },
    )
    log("prepare", f"train {len(train)} rows, test {len(test)} rows")


if __name__ == "__main__":
    run("prepare", main)
